//go:build linux

package vrrp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// helloBroadcast is the destination of every hello.
var helloBroadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// HelloConn is the [HelloPacketConn] of one Ethernet interface: an AF_PACKET SOCK_RAW socket
// bound to the interface and EtherType 0x88b5. It sends with the interface's MAC as it was when
// opened (reopen after a MAC change). Make it in the network namespace of the interface; it may
// be used from any goroutine after.
type HelloConn struct {
	ifi *net.Interface

	f    *os.File
	raw  syscall.RawConn
	rmu  sync.Mutex // one Recv at a time (buffer)
	buf  []byte
	once sync.Once
	// closed is set before the file is closed: the RawConn's "use of closed file" error is
	// internal/poll's ErrFileClosing, which is not os.ErrClosed.
	closed atomic.Bool

	received, malformed, own atomic.Uint64
}

var _ HelloPacketConn = (*HelloConn)(nil)

// OpenHelloConn opens a HelloConn on iface in the calling thread's network namespace. iface must
// have a 6-byte MAC.
func OpenHelloConn(iface string) (*HelloConn, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("vrrp: hello: interface %q: %w", iface, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("vrrp: hello: %s has no Ethernet address", iface)
	}
	// Protocol 0 until bound: no frame of another interface is queued before the bind.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vrrp: hello: AF_PACKET socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(HelloEtherType), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vrrp: hello: bind AF_PACKET socket to %s: %w", iface, err)
	}
	c := &HelloConn{ifi: ifi, f: os.NewFile(uintptr(fd), "vrrp-hello:"+iface), buf: make([]byte, 2048)}
	if c.raw, err = c.f.SyscallConn(); err != nil {
		c.f.Close()
		return nil, fmt.Errorf("vrrp: hello: %w", err)
	}
	return c, nil
}

// Interface is the interface the conn is on, as it was when opened.
func (c *HelloConn) Interface() *net.Interface { return c.ifi }

// Send broadcasts h from the interface's MAC.
func (c *HelloConn) Send(h Hello) error {
	payload, err := h.Marshal()
	if err != nil {
		return err
	}
	frame := make([]byte, 14+len(payload))
	copy(frame[0:6], helloBroadcast)
	copy(frame[6:12], c.ifi.HardwareAddr)
	binary.BigEndian.PutUint16(frame[12:14], HelloEtherType)
	copy(frame[14:], payload)
	to := &unix.SockaddrLinklayer{Protocol: htons(HelloEtherType), Ifindex: c.ifi.Index, Halen: 6}
	copy(to.Addr[:], helloBroadcast)
	var serr error
	err = c.raw.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), frame, 0, to)
		return !errors.Is(serr, unix.EAGAIN)
	})
	if err == nil {
		err = serr
	}
	if err != nil && c.closed.Load() {
		return ErrClosed
	}
	if err != nil {
		return fmt.Errorf("vrrp: hello: send on %s: %w", c.ifi.Name, err)
	}
	return nil
}

// Recv returns the next valid hello from another host and its Ethernet source. It skips frames
// we sent (PACKET_OUTGOING), frames for other hosts, frames whose source is the interface's MAC
// (counted as Own) and malformed frames (counted as Malformed: a payload ParseHello rejects, a
// short frame, a group or zero source MAC). It returns ctx.Err() when ctx ends and [ErrClosed]
// once the conn is closed.
func (c *HelloConn) Recv(ctx context.Context) (net.HardwareAddr, Hello, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, Hello{}, err
	}
	_ = c.f.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { _ = c.f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := c.raw.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), c.buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return nil, Hello{}, cerr
			}
			if c.closed.Load() {
				return nil, Hello{}, ErrClosed
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Left by the AfterFunc of an earlier call's context, which ended as that call
				// returned: not ours.
				_ = c.f.SetReadDeadline(time.Time{})
				continue
			}
			return nil, Hello{}, fmt.Errorf("vrrp: hello: receive on %s: %w", c.ifi.Name, err)
		}
		if rerr != nil {
			return nil, Hello{}, fmt.Errorf("vrrp: hello: receive on %s: %w", c.ifi.Name, rerr)
		}
		if sll, ok := from.(*unix.SockaddrLinklayer); ok {
			switch sll.Pkttype {
			case unix.PACKET_OUTGOING, unix.PACKET_OTHERHOST, unix.PACKET_LOOPBACK:
				continue
			}
		}
		src, h, err := c.parse(c.buf[:n])
		if err != nil {
			continue
		}
		c.received.Add(1)
		return src, h, nil
	}
}

// errHelloOwn marks a frame from our own MAC.
var errHelloOwn = errors.New("vrrp: hello: from our own MAC")

// parse takes a received frame apart and counts what it skips.
func (c *HelloConn) parse(f []byte) (net.HardwareAddr, Hello, error) {
	if len(f) < 14 || binary.BigEndian.Uint16(f[12:14]) != HelloEtherType {
		c.malformed.Add(1)
		return nil, Hello{}, errors.New("vrrp: hello: short frame or not EtherType 0x88b5")
	}
	src := net.HardwareAddr(f[6:12])
	if bytes.Equal(src, c.ifi.HardwareAddr) {
		c.own.Add(1)
		return nil, Hello{}, errHelloOwn
	}
	if src[0]&1 != 0 || bytes.Equal(src, make([]byte, 6)) {
		c.malformed.Add(1)
		return nil, Hello{}, fmt.Errorf("vrrp: hello: source MAC %s", src)
	}
	h, err := ParseHello(f[14:])
	if err != nil {
		c.malformed.Add(1)
		return nil, Hello{}, err
	}
	return slices.Clone(src), h, nil
}

// Stats returns the conn's counters. Safe for concurrent use.
func (c *HelloConn) Stats() HelloConnStats {
	return HelloConnStats{Received: c.received.Load(), Malformed: c.malformed.Load(), Own: c.own.Load()}
}

// Close closes the socket; a blocked Recv returns [ErrClosed].
func (c *HelloConn) Close() error {
	var err error
	c.once.Do(func() {
		c.closed.Store(true)
		err = c.f.Close()
	})
	return err
}
