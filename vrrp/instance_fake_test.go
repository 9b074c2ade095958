//go:build linux

package vrrp

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// ioT0 is when the fake clocks of the I/O tests start.
var ioT0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// ioLimit bounds every wait of the I/O tests for what the instance goroutine does.
const ioLimit = 5 * time.Second

// ioFakeConn is a PacketConn: Inject delivers a packet, Sent returns what was sent.
type ioFakeConn struct {
	in     chan Packet
	mu     sync.Mutex
	sent   []ioSent
	closed chan struct{}
	once   sync.Once
}

type ioSent struct {
	Payload []byte
	Dst     netip.Addr
}

func newIOFakeConn() *ioFakeConn {
	return &ioFakeConn{in: make(chan Packet), closed: make(chan struct{})}
}

func (c *ioFakeConn) Send(b []byte, dst netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, ioSent{slices.Clone(b), dst})
	return nil
}

func (c *ioFakeConn) Recv(ctx context.Context) (Packet, error) {
	select {
	case p := <-c.in:
		return p, nil
	case <-ctx.Done():
		return Packet{}, ctx.Err()
	case <-c.closed:
		return Packet{}, ErrClosed
	}
}

func (c *ioFakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *ioFakeConn) Sent() []ioSent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sent)
}

// ioFakeVIPs records Add and Remove.
type ioFakeVIPs struct {
	mu            sync.Mutex
	on            bool
	adds, removes int
}

func (v *ioFakeVIPs) Add() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.on = true
	v.adds++
	return nil
}

func (v *ioFakeVIPs) Remove() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.on = false
	v.removes++
	return nil
}

func (v *ioFakeVIPs) Close() error { return nil }

func (v *ioFakeVIPs) On() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.on
}

// ioFakeAnnouncer counts rounds.
type ioFakeAnnouncer struct {
	mu     sync.Mutex
	rounds int
}

func (a *ioFakeAnnouncer) Announce([]netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rounds++
	return nil
}

func (a *ioFakeAnnouncer) Close() error { return nil }

func (a *ioFakeAnnouncer) Rounds() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rounds
}
