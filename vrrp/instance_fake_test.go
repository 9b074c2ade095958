//go:build linux

package vrrp

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// ioFakeClock is a manual Clock: timers fire only in Advance.
type ioFakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*ioFakeTimer
}

type ioFakeTimer struct {
	c      *ioFakeClock
	ch     chan time.Time
	when   time.Time
	active bool
}

func newIOFakeClock() *ioFakeClock {
	return &ioFakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *ioFakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *ioFakeClock) NewTimer(d time.Duration) Timer {
	t := &ioFakeTimer{c: c, ch: make(chan time.Time, 1)}
	c.mu.Lock()
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	t.Reset(d)
	return t
}

// Advance moves the clock and fires the timers that are due.
func (c *ioFakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		t.fireLocked()
	}
}

func (t *ioFakeTimer) fireLocked() {
	if t.active && !t.when.After(t.c.now) {
		t.active = false
		select {
		case t.ch <- t.c.now:
		default:
		}
	}
}

func (t *ioFakeTimer) C() <-chan time.Time { return t.ch }

func (t *ioFakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.drain()
	t.when, t.active = t.c.now.Add(d), true
	t.fireLocked()
	return was
}

func (t *ioFakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	t.drain()
	return was
}

func (t *ioFakeTimer) drain() {
	select {
	case <-t.ch:
	default:
	}
}

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

// ioEventually polls cond for up to 5 s.
func ioEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
