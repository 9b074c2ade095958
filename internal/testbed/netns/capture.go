//go:build linux

package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Frame is one captured Ethernet frame.
type Frame struct {
	Time    time.Time
	PktType uint8 // unix.PACKET_HOST, PACKET_OUTGOING, PACKET_OTHERHOST, ...
	Data    []byte
}

// Outgoing reports whether the frame was sent by the capturing namespace.
func (f Frame) Outgoing() bool { return f.PktType == unix.PACKET_OUTGOING }

// Capture records every frame sent and received on one interface of a namespace, through an
// AF_PACKET socket (what tcpdump does, without tcpdump).
type Capture struct {
	ns     *NS
	dev    string
	file   *os.File
	mu     sync.Mutex
	frames []Frame
	err    error
	done   chan struct{}
	once   sync.Once
}

// StartCapture opens an AF_PACKET socket bound to dev in ns and records frames until Stop (or
// tb.Cleanup).
func (ns *NS) StartCapture(tb TB, dev string) *Capture {
	tb.Helper()
	c := &Capture{ns: ns, dev: dev, done: make(chan struct{})}
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ALL)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifc.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind AF_PACKET socket to %s: %w", dev, err)
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		c.file = os.NewFile(uintptr(fd), "packet:"+dev)
		return nil
	})
	if err != nil {
		tb.Fatalf("capture on %s in %s: %v", dev, ns.Name, err)
	}
	go c.run()
	tb.Cleanup(func() { c.Stop() })
	return c
}

func (c *Capture) run() {
	defer close(c.done)
	rc, err := c.file.SyscallConn()
	if err != nil {
		c.setErr(err)
		return
	}
	buf := make([]byte, 65536)
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil { // closed by Stop
			return
		}
		if rerr != nil {
			c.setErr(rerr)
			return
		}
		f := Frame{Time: time.Now(), Data: append([]byte(nil), buf[:min(n, len(buf))]...)}
		if sll, ok := from.(*unix.SockaddrLinklayer); ok {
			f.PktType = sll.Pkttype
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
	}
}

func (c *Capture) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = fmt.Errorf("capture on %s in %s: %w", c.dev, c.ns.Name, err)
}

// Frames returns the frames recorded so far.
func (c *Capture) Frames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.frames...)
}

// Stop closes the socket and returns every frame recorded, and the error that ended the capture
// early, if any. Safe to call twice.
func (c *Capture) Stop() ([]Frame, error) {
	c.once.Do(func() {
		_ = c.file.Close()
		<-c.done
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.frames...), c.err
}

// htons converts to network byte order, as AF_PACKET wants the protocol.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
