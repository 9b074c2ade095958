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
	"reflect"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/xdplb/xdplb/internal/testbed/netns"
	"github.com/xdplb/xdplb/internal/wait"
	"golang.org/x/sys/unix"
)

// Names of the veth ends; each is alone in its namespace.
const (
	helloLinkA = "hello-a"
	helloLinkB = "hello-b"
)

// helloEnd is one end of a veth pair, in its own namespace.
type helloEnd struct {
	ns   *netns.NS
	link string
	mac  net.HardwareAddr
}

// helloVethPair creates two namespaces (random names, removed in t.Cleanup) joined by a veth
// pair, both ends up. It skips the test when not root.
func helloVethPair(t *testing.T) (a, b helloEnd) {
	t.Helper()
	a = helloEnd{ns: netns.New(t), link: helloLinkA}
	b = helloEnd{ns: netns.New(t), link: helloLinkB}
	peerNS, err := os.Open(b.ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer peerNS.Close()
	err = a.ns.Do(func() error {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: helloLinkA},
			PeerName:      helloLinkB,
			PeerNamespace: netlink.NsFd(int(peerNS.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s (peer %s in %s): %w", helloLinkA, helloLinkB, b.ns.Name, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*helloEnd{&a, &b} {
		err := e.ns.Do(func() error {
			l, err := netlink.LinkByName(e.link)
			if err != nil {
				return err
			}
			e.mac = l.Attrs().HardwareAddr
			return netlink.LinkSetUp(l)
		})
		if err != nil {
			t.Fatalf("%s in %s: %v", e.link, e.ns.Name, err)
		}
	}
	return a, b
}

// open opens a HelloConn on the end's link, closed in t.Cleanup.
func (e helloEnd) open(t *testing.T) *HelloConn {
	t.Helper()
	var c *HelloConn
	err := e.ns.Do(func() error {
		var err error
		c, err = OpenHelloConn(e.link)
		return err
	})
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("AF_PACKET sockets need CAP_NET_RAW: %v", err)
	}
	if err != nil {
		t.Fatalf("OpenHelloConn(%s) in %s: %v", e.link, e.ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawSender sends arbitrary frames on the end's link, through an AF_PACKET socket that receives
// nothing (protocol 0, never bound).
type rawSender struct {
	fd      int
	ifindex int
}

func (e helloEnd) rawSender(t *testing.T) *rawSender {
	t.Helper()
	s := &rawSender{fd: -1}
	err := e.ns.Do(func() error {
		ifi, err := net.InterfaceByName(e.link)
		if err != nil {
			return err
		}
		s.ifindex = ifi.Index
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatalf("raw AF_PACKET socket in %s: %v", e.ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func (s *rawSender) send(t *testing.T, frame []byte) {
	t.Helper()
	to := &unix.SockaddrLinklayer{Protocol: htons(HelloEtherType), Ifindex: s.ifindex, Halen: 6}
	copy(to.Addr[:], frame[:6])
	if err := unix.Sendto(s.fd, frame, 0, to); err != nil {
		t.Fatalf("send raw frame: %v", err)
	}
}

// helloFrame builds an Ethernet frame of EtherType 0x88b5.
func helloFrame(dst, src net.HardwareAddr, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], HelloEtherType)
	return append(f, payload...)
}

// mustHello marshals h.
func mustHello(t *testing.T, h Hello) []byte {
	t.Helper()
	b, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recvWithin calls c.Recv with a deadline.
func recvWithin(t *testing.T, c *HelloConn, d time.Duration) (net.HardwareAddr, Hello) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	src, h, err := c.Recv(ctx)
	if err != nil {
		t.Fatalf("Recv on %s: %v", c.Interface().Name, err)
	}
	return src, h
}

// TestHelloConnNetns: a hello crosses the veth as a 60-byte broadcast frame from the sender's
// MAC; the sender does not receive its own frame (the first thing it receives is the answer).
func TestHelloConnNetns(t *testing.T) {
	a, b := helloVethPair(t)
	capt := b.ns.StartCapture(t, b.link)
	ca, cb := a.open(t), b.open(t)
	if !bytes.Equal(ca.Interface().HardwareAddr, a.mac) {
		t.Fatalf("conn's MAC %s, want %s", ca.Interface().HardwareAddr, a.mac)
	}

	sent := Hello{Solicit: true, VRIDs: []uint8{7, 42}}
	if err := ca.Send(sent); err != nil {
		t.Fatal(err)
	}
	src, h := recvWithin(t, cb, 5*time.Second)
	if !bytes.Equal(src, a.mac) || !reflect.DeepEqual(h, sent) {
		t.Fatalf("b received %+v from %s, want %+v from %s", h, src, sent, a.mac)
	}
	answer := Hello{VRIDs: []uint8{42}}
	if err := cb.Send(answer); err != nil {
		t.Fatal(err)
	}
	// a's own hello, had it been queued to a's socket, would come before b's answer.
	src, h = recvWithin(t, ca, 5*time.Second)
	if !bytes.Equal(src, b.mac) || !reflect.DeepEqual(h, answer) {
		t.Fatalf("a received %+v from %s, want b's answer %+v from %s", h, src, answer, b.mac)
	}
	if s := ca.Stats(); s != (HelloConnStats{Received: 1}) {
		t.Errorf("a's stats %+v, want 1 received", s)
	}
	if s := cb.Stats(); s != (HelloConnStats{Received: 1}) {
		t.Errorf("b's stats %+v, want 1 received", s)
	}

	// The capture reads on its own goroutine: wait for it to see the frame b received.
	var in []netns.Frame
	wait.Until(t, 5*time.Second, "b's capture of the hello", func() bool {
		in = in[:0]
		for _, f := range capt.Frames() {
			if len(f.Data) >= 14 && binary.BigEndian.Uint16(f.Data[12:14]) == HelloEtherType && !f.Outgoing() {
				in = append(in, f)
			}
		}
		return len(in) > 0
	})
	if len(in) != 1 {
		t.Fatalf("b captured %d incoming hello frames, want 1", len(in))
	}
	f := in[0].Data
	if want := helloFrame(helloBroadcast, a.mac, mustHello(t, sent)); !bytes.Equal(f, want) {
		t.Errorf("frame on the wire:\n got % x\nwant % x", f, want)
	}
	if len(f) != 60 {
		t.Errorf("frame of %d bytes, want 60", len(f))
	}
}

// TestHelloConnNetnsSkips: malformed 0x88b5 frames and frames from our own MAC are counted and
// skipped; Recv goes on to the next valid hello.
func TestHelloConnNetnsSkips(t *testing.T) {
	a, b := helloVethPair(t)
	ca := a.open(t)
	raw := b.rawSender(t)

	type rx struct {
		src net.HardwareAddr
		h   Hello
	}
	got := make(chan rx, 8)
	ctx, cancel := context.WithCancel(context.Background())
	readerDone := make(chan error, 1)
	go func() {
		for {
			src, h, err := ca.Recv(ctx)
			if err != nil {
				readerDone <- err
				return
			}
			got <- rx{src, h}
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-readerDone; !errors.Is(err, context.Canceled) {
			t.Errorf("Recv after cancel: %v, want context.Canceled", err)
		}
	})

	valid := mustHello(t, Hello{VRIDs: []uint8{9}})
	badMagic := bytes.Clone(valid)
	copy(badMagic, "XLBX")
	vrid0 := mustHello(t, Hello{VRIDs: []uint8{9}})
	vrid0[7] = 0
	for _, f := range [][]byte{
		helloFrame(helloBroadcast, b.mac, badMagic),
		helloFrame(helloBroadcast, b.mac, []byte{'X', 'L', 'B'}), // short, unpadded
		helloFrame(helloBroadcast, b.mac, vrid0),
		helloFrame(helloBroadcast, net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}, valid), // group source MAC
		helloFrame(helloBroadcast, a.mac, valid),                                    // a's own MAC
	} {
		raw.send(t, f)
	}
	want := Hello{Solicit: true, VRIDs: []uint8{9, 10}}
	raw.send(t, helloFrame(helloBroadcast, b.mac, mustHello(t, want)))

	select {
	case r := <-got:
		if !bytes.Equal(r.src, b.mac) || !reflect.DeepEqual(r.h, want) {
			t.Fatalf("received %+v from %s, want %+v from %s", r.h, r.src, want, b.mac)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for the valid hello")
	}
	// The frames are delivered in order in practice, but nothing promises it: wait for the
	// counters rather than read them once.
	wait.Until(t, 5*time.Second, "4 malformed and 1 own frame counted", func() bool {
		return ca.Stats() == HelloConnStats{Received: 1, Malformed: 4, Own: 1}
	})
	select {
	case r := <-got:
		t.Errorf("received another hello: %+v from %s", r.h, r.src)
	default:
	}
}

// TestHelloConnNetnsUnblock: cancelling the context and closing the conn both end a Recv; a Recv
// after a cancelled one still receives.
func TestHelloConnNetnsUnblock(t *testing.T) {
	a, b := helloVethPair(t)
	ca, cb := a.open(t), b.open(t)
	recv := func(ctx context.Context) chan error {
		errc := make(chan error, 1)
		go func() {
			_, _, err := ca.Recv(ctx)
			errc <- err
		}()
		return errc
	}
	wait := func(what string, errc chan error, want error) {
		t.Helper()
		select {
		case err := <-errc:
			if !errors.Is(err, want) {
				t.Fatalf("%s: Recv = %v, want %v", what, err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Recv did not return", what)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	errc := recv(ctx)
	cancel()
	wait("cancel", errc, context.Canceled)

	// The cancelled call's read deadline must not end the next call.
	errc = recv(context.Background())
	if err := cb.Send(Hello{VRIDs: []uint8{3}}); err != nil {
		t.Fatal(err)
	}
	wait("after cancel", errc, nil)

	errc = recv(context.Background())
	if err := ca.Close(); err != nil {
		t.Fatal(err)
	}
	wait("close", errc, ErrClosed)
	if err := ca.Send(Hello{VRIDs: []uint8{3}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
}

// TestHelloRunnerNetns: two runners on real sockets and the system clock. b starts after a's
// first hello, so it learns a only from a's answer to its Solicit: the 10 s interval is far
// longer than the test waits.
func TestHelloRunnerNetns(t *testing.T) {
	a, b := helloVethPair(t)
	type runner struct {
		r     *HelloRunner
		found chan net.HardwareAddr
	}
	start := func(e helloEnd, vrids []uint8) runner {
		c := e.open(t)
		found := make(chan net.HardwareAddr, 16)
		r, err := NewHelloRunner(ioTestLogger(t).With("node", e.link), c,
			HelloConfig{Iface: e.link, VRIDs: vrids, Interval: 10 * time.Second}, nil,
			func(mac net.HardwareAddr) { found <- mac })
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run on %s: %v", e.link, err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run on %s did not return", e.link)
			}
		})
		return runner{r, found}
	}
	waitFound := func(who string, x runner, want net.HardwareAddr) {
		t.Helper()
		select {
		case mac := <-x.found:
			if !bytes.Equal(mac, want) {
				t.Fatalf("%s found %s, want %s", who, mac, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s found no director", who)
		}
	}

	ra := start(a, []uint8{10, 20})
	wait.Until(t, 5*time.Second, "a's first hello sent", func() bool { return ra.r.Stats().Sent == 1 })
	rb := start(b, []uint8{20, 30})
	waitFound("a", ra, b.mac) // b's Solicit at start
	waitFound("b", rb, a.mac) // a's answer
	wait.Until(t, 5*time.Second, "a's answer counted", func() bool { return ra.r.Stats().Answers == 1 })
	if s := rb.r.Stats(); s.Received != 1 || s.Answers != 0 || s.Malformed != 0 || s.Own != 0 {
		t.Errorf("b's stats %+v: want 1 received, no answer (a's answer does not solicit)", s)
	}
}
