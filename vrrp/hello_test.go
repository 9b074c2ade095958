//go:build linux

package vrrp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/clock/clocktest"
	"github.com/xdplb/xdplb/internal/wait"
)

// helloPad returns n zero bytes: the padding up to HelloMinPayload.
func helloPad(n int) []byte { return make([]byte, n) }

var helloGoldens = []struct {
	name  string
	hello Hello
	wire  []byte
}{
	{
		name:  "solicit, two VRIDs, padded",
		hello: Hello{Solicit: true, VRIDs: []uint8{7, 42}},
		wire: slices.Concat([]byte{
			'X', 'L', 'B', 'H', // magic
			0x01,  // version 1
			0x01,  // flags: Solicit
			0x02,  // N = 2
			7, 42, // VRIDs
		}, helloPad(46-9)), // zeros up to 46 bytes: a 60-byte frame
	},
	{
		name:  "no solicit, VRID 255",
		hello: Hello{VRIDs: []uint8{255}},
		wire: slices.Concat([]byte{
			'X', 'L', 'B', 'H', // magic
			0x01, // version 1
			0x00, // flags: none
			0x01, // N = 1
			0xff, // VRID 255
		}, helloPad(46-8)),
	},
	{
		name:  "60 VRIDs, longer than the minimum: no padding",
		hello: Hello{VRIDs: helloSeq(1, 60)},
		wire: slices.Concat([]byte{
			'X', 'L', 'B', 'H', // magic
			0x01, // version 1
			0x00, // flags: none
			60,   // N = 60
		}, helloSeq(1, 60)), // VRIDs 1..60: 67 bytes in all
	},
}

// helloSeq returns the VRIDs from..to.
func helloSeq(from, to int) []uint8 {
	var v []uint8
	for i := from; i <= to; i++ {
		v = append(v, uint8(i))
	}
	return v
}

func TestHelloMarshalGolden(t *testing.T) {
	for _, g := range helloGoldens {
		t.Run(g.name, func(t *testing.T) {
			b, err := g.hello.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, g.wire) {
				t.Errorf("Marshal:\n got % x\nwant % x", b, g.wire)
			}
			if len(b)+14 < 60 {
				t.Errorf("frame would be %d bytes, want at least 60", len(b)+14)
			}
			h, err := ParseHello(g.wire)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h, g.hello) {
				t.Errorf("ParseHello = %+v, want %+v", h, g.hello)
			}
		})
	}
}

// TestHelloParseLenient: what a receiver accepts beyond what Marshal writes.
func TestHelloParseLenient(t *testing.T) {
	for _, tc := range []struct {
		name string
		wire []byte
		want Hello
	}{
		{
			name: "unpadded",
			wire: []byte{'X', 'L', 'B', 'H', 1, 0, 2, 3, 4},
			want: Hello{VRIDs: []uint8{3, 4}},
		},
		{
			name: "reserved flag bits ignored",
			wire: []byte{'X', 'L', 'B', 'H', 1, 0xff, 1, 9},
			want: Hello{Solicit: true, VRIDs: []uint8{9}},
		},
		{
			name: "reserved flag bits without Solicit",
			wire: []byte{'X', 'L', 'B', 'H', 1, 0xfe, 1, 9},
			want: Hello{VRIDs: []uint8{9}},
		},
		{
			name: "trailing bytes ignored",
			wire: []byte{'X', 'L', 'B', 'H', 1, 0, 1, 9, 0xde, 0xad, 0, 0},
			want: Hello{VRIDs: []uint8{9}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := bytes.Clone(tc.wire)
			h, err := ParseHello(in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h, tc.want) {
				t.Errorf("ParseHello = %+v, want %+v", h, tc.want)
			}
			in[7] = 0xaa // the result does not alias the input
			if h.VRIDs[0] == 0xaa {
				t.Error("VRIDs alias the input")
			}
		})
	}
}

func TestHelloParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wire    []byte
		want    error
		wantMsg string
	}{
		{"empty", nil, ErrHelloShort, "0 bytes"},
		{"6 bytes", []byte{'X', 'L', 'B', 'H', 1, 0}, ErrHelloShort, "6 bytes"},
		{"bad magic", []byte{'X', 'L', 'B', 'X', 1, 0, 1, 1}, ErrHelloMagic, "58 4c 42 58"},
		{"version 0", []byte{'X', 'L', 'B', 'H', 0, 0, 1, 1}, ErrHelloVersion, "0, want 1"},
		{"version 2", []byte{'X', 'L', 'B', 'H', 2, 0, 1, 1}, ErrHelloVersion, "2, want 1"},
		{"N past the end", []byte{'X', 'L', 'B', 'H', 1, 0, 3, 1, 2}, ErrHelloTruncated, "3 VRIDs in 9 bytes"},
		{"N 255 in a padded frame", slices.Concat([]byte{'X', 'L', 'B', 'H', 1, 0, 255}, helloSeq(1, 39)), ErrHelloTruncated, "255 VRIDs in 46 bytes"},
		{"no VRIDs", slices.Concat([]byte{'X', 'L', 'B', 'H', 1, 0, 0}, helloPad(39)), ErrHelloVRID, "0 VRIDs"},
		{"VRID 0", []byte{'X', 'L', 'B', 'H', 1, 0, 2, 5, 0}, ErrHelloVRID, "VRID 0 at index 1"},
		{"duplicate VRID", []byte{'X', 'L', 'B', 'H', 1, 0, 3, 5, 6, 5}, ErrHelloVRID, "VRID 5 twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHello(tc.wire)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseHello(% x) = %+v, %v; want %v", tc.wire, h, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not say %q", err, tc.wantMsg)
			}
		})
	}
}

func TestHelloMarshalErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		vrids []uint8
	}{
		{"nil", nil},
		{"empty", []uint8{}},
		{"256 VRIDs", append(helloSeq(1, 255), 1)},
		{"VRID 0", []uint8{1, 0}},
		{"duplicate", []uint8{3, 4, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := (Hello{VRIDs: tc.vrids}).Marshal(); !errors.Is(err, ErrHelloVRID) {
				t.Errorf("Marshal = % x, %v; want %v", b, err, ErrHelloVRID)
			}
		})
	}
	// 255 distinct VRIDs is the most there can be.
	b, err := Hello{VRIDs: helloSeq(1, 255)}.Marshal()
	if err != nil || len(b) != 7+255 {
		t.Fatalf("255 VRIDs: %d bytes, %v", len(b), err)
	}
}

// FuzzParseHello checks that ParseHello never panics nor changes its input, and that what it
// accepts marshals to bytes that parse to the same Hello and repeat the header and VRIDs.
func FuzzParseHello(f *testing.F) {
	for _, g := range helloGoldens {
		f.Add(g.wire)
	}
	f.Add([]byte{'X', 'L', 'B', 'H', 1, 0xff, 1, 9, 1, 2, 3})
	f.Add([]byte{'X', 'L', 'B', 'H', 1, 0, 3, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		h, err := ParseHello(b)
		if !bytes.Equal(in, b) {
			t.Fatal("ParseHello modified its input")
		}
		if err != nil {
			for _, e := range []error{ErrHelloShort, ErrHelloMagic, ErrHelloVersion, ErrHelloTruncated, ErrHelloVRID} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("error %v wraps none of the hello errors", err)
		}
		out, err := h.Marshal()
		if err != nil {
			t.Fatalf("Marshal of accepted %+v: %v", h, err)
		}
		h2, err := ParseHello(out)
		if err != nil {
			t.Fatalf("re-parse of % x (from % x): %v", out, b, err)
		}
		if !reflect.DeepEqual(h, h2) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", h2, h)
		}
		// Only the reserved flag bits and what follows the VRIDs may differ.
		n := helloHeaderLen + len(h.VRIDs)
		if !bytes.Equal(out[:5], b[:5]) || out[5] != b[5]&helloSolicit || !bytes.Equal(out[6:n], b[6:n]) {
			t.Fatalf("re-marshalled header or VRIDs differ:\n got % x\nwant % x", out, b)
		}
		if len(out) < HelloMinPayload {
			t.Fatalf("Marshal wrote %d bytes, want at least %d", len(out), HelloMinPayload)
		}
	})
}

// helloFakeConn is a HelloPacketConn: inject delivers a received hello (or an error), sent
// receives what the runner sent.
type helloFakeConn struct {
	in      chan helloRx
	sent    chan Hello
	closed  chan struct{}
	once    sync.Once
	mu      sync.Mutex
	sendErr error
	stats   HelloConnStats
}

func newHelloFakeConn() *helloFakeConn {
	return &helloFakeConn{in: make(chan helloRx), sent: make(chan Hello, 64), closed: make(chan struct{})}
}

func (c *helloFakeConn) Send(h Hello) error {
	c.mu.Lock()
	err := c.sendErr
	c.mu.Unlock()
	if err != nil {
		return err
	}
	h.VRIDs = slices.Clone(h.VRIDs)
	c.sent <- h
	return nil
}

func (c *helloFakeConn) Recv(ctx context.Context) (net.HardwareAddr, Hello, error) {
	select {
	case m := <-c.in:
		return m.src, m.h, m.err
	case <-ctx.Done():
		return nil, Hello{}, ctx.Err()
	case <-c.closed:
		return nil, Hello{}, ErrClosed
	}
}

func (c *helloFakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *helloFakeConn) Stats() HelloConnStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

var (
	helloMAC1 = net.HardwareAddr{0x02, 0, 0, 0, 0x11, 0x01}
	helloMAC2 = net.HardwareAddr{0x02, 0, 0, 0, 0x11, 0x02}
	helloMAC3 = net.HardwareAddr{0x02, 0, 0, 0, 0x11, 0x03}
	helloMAC4 = net.HardwareAddr{0x02, 0, 0, 0, 0x11, 0x04}
)

// helloRig runs a HelloRunner on a fake conn and the fake clock.
type helloRig struct {
	t      *testing.T
	r      *HelloRunner
	conn   *helloFakeConn
	clock  *clocktest.Fake
	found  chan net.HardwareAddr
	cancel context.CancelFunc
	done   chan error
}

func newHelloRig(t *testing.T, cfg HelloConfig) *helloRig {
	t.Helper()
	g := &helloRig{t: t, conn: newHelloFakeConn(), clock: clocktest.NewFake(ioT0), found: make(chan net.HardwareAddr, 64),
		done: make(chan error, 1)}
	r, err := NewHelloRunner(ioTestLogger(t), g.conn, cfg, g.clock, func(mac net.HardwareAddr) { g.found <- slices.Clone(mac) })
	if err != nil {
		t.Fatal(err)
	}
	g.r = r
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go func() { g.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-g.done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return")
		}
	})
	return g
}

// nextSent waits for the runner to send a hello.
func (g *helloRig) nextSent() Hello {
	g.t.Helper()
	select {
	case h := <-g.conn.sent:
		return h
	case <-time.After(5 * time.Second):
		g.t.Fatal("timed out waiting for a hello to be sent")
		return Hello{}
	}
}

// noneSent fails if a hello is waiting in the sent queue.
func (g *helloRig) noneSent(when string) {
	g.t.Helper()
	select {
	case h := <-g.conn.sent:
		g.t.Fatalf("%s: unexpected hello sent: %+v", when, h)
	default:
	}
}

// inject hands a hello to the runner's reader.
func (g *helloRig) inject(src net.HardwareAddr, h Hello) {
	g.t.Helper()
	select {
	case g.conn.in <- helloRx{src: src, h: h}:
	case <-time.After(5 * time.Second):
		g.t.Fatal("timed out injecting a hello: the runner is not receiving")
	}
}

// nextFound waits for found to be called.
func (g *helloRig) nextFound() net.HardwareAddr {
	g.t.Helper()
	select {
	case mac := <-g.found:
		return mac
	case <-time.After(5 * time.Second):
		g.t.Fatal("timed out waiting for found()")
		return nil
	}
}

// parked waits until the runner is parked on its hello timer again. The runner rearms the timer
// before it sends, so after parked and a barrier a hello that the last Advance fired has been
// sent; without parked, the runner's select may take the barrier before the timer.
func (g *helloRig) parked() {
	g.t.Helper()
	g.clock.WaitParked(g.t, 1)
}

// barrier injects a matching hello without Solicit from helloMAC4 and waits until found is called
// with it: the runner handles received hellos in order, so everything injected before it has been
// handled (answers sent, counters moved).
func (g *helloRig) barrier(vrid uint8) {
	g.t.Helper()
	g.inject(helloMAC4, Hello{VRIDs: []uint8{vrid}})
	if mac := g.nextFound(); !bytes.Equal(mac, helloMAC4) {
		g.t.Fatalf("found(%s) before the barrier, want %s", mac, helloMAC4)
	}
}

// TestHelloRunnerSolicitThenPeriodic: a Solicit hello at start, one each Interval, Solicit only
// in the first SolicitFor (defaults: 1 s and 3 s).
func TestHelloRunnerSolicitThenPeriodic(t *testing.T) {
	g := newHelloRig(t, HelloConfig{Iface: "eth0", VRIDs: []uint8{5, 9}})
	if c := g.r.Config(); c.Interval != time.Second || c.SolicitFor != 3*time.Second {
		t.Fatalf("defaults: interval %v, solicit for %v; want 1s, 3s", c.Interval, c.SolicitFor)
	}
	want := func(at string, solicit bool) {
		t.Helper()
		h := g.nextSent()
		if h.Solicit != solicit || !slices.Equal(h.VRIDs, []uint8{5, 9}) {
			t.Fatalf("hello at %s: %+v, want Solicit %v VRIDs [5 9]", at, h, solicit)
		}
	}
	want("start", true)
	g.clock.Advance(999 * time.Millisecond)
	g.parked()
	g.barrier(5)
	g.noneSent("at 999ms")
	g.clock.Advance(time.Millisecond)
	want("1s", true)
	g.clock.Advance(time.Second)
	want("2s", true)
	g.clock.Advance(time.Second)
	want("3s", false)
	g.clock.Advance(time.Second)
	want("4s", false)
	// A stall of 2.5 intervals: one hello, then the schedule goes on from the start.
	g.clock.Advance(2500 * time.Millisecond)
	want("6.5s", false)
	g.clock.Advance(499 * time.Millisecond)
	g.parked()
	g.barrier(5)
	g.noneSent("at 6.999s")
	g.clock.Advance(time.Millisecond)
	want("7s", false)
	g.barrier(5) // the counters move after Send returns
	if s := g.r.Stats(); s.Sent != 7 || s.Answers != 0 {
		t.Errorf("stats %+v: want 7 sent, no answers", s)
	}
}

// TestHelloRunnerSolicitForNegative: no Solicit at all, even at start.
func TestHelloRunnerSolicitForNegative(t *testing.T) {
	g := newHelloRig(t, HelloConfig{VRIDs: []uint8{5}, Interval: 200 * time.Millisecond, SolicitFor: -1})
	if h := g.nextSent(); h.Solicit {
		t.Errorf("start hello %+v has Solicit", h)
	}
	g.clock.Advance(200 * time.Millisecond)
	if h := g.nextSent(); h.Solicit {
		t.Errorf("hello at 200ms %+v has Solicit", h)
	}
}

// TestHelloRunnerFoundMatchingOnly: found is called for every hello sharing a VRID with ours,
// each time; others are counted as foreign and ignored.
func TestHelloRunnerFoundMatchingOnly(t *testing.T) {
	g := newHelloRig(t, HelloConfig{VRIDs: []uint8{5, 9}})
	g.nextSent()
	g.inject(helloMAC1, Hello{VRIDs: []uint8{6, 7}})    // foreign
	g.inject(helloMAC2, Hello{VRIDs: []uint8{7, 9}})    // shares 9
	g.inject(helloMAC3, Hello{VRIDs: []uint8{1, 2, 3}}) // foreign
	g.inject(helloMAC2, Hello{VRIDs: []uint8{5}})       // again: found again
	for i := range 2 {
		if mac := g.nextFound(); !bytes.Equal(mac, helloMAC2) {
			t.Fatalf("found #%d: %s, want %s", i+1, mac, helloMAC2)
		}
	}
	g.barrier(9)
	select {
	case mac := <-g.found:
		t.Errorf("found(%s) for a hello with no VRID of ours", mac)
	default:
	}
	if s := g.r.Stats(); s.Received != 5 || s.Foreign != 2 {
		t.Errorf("stats %+v: want 5 received, 2 foreign", s)
	}
	g.noneSent("no Solicit received")
}

// TestHelloRunnerAnswersSolicit: a matching Solicit is answered at once, without Solicit; a
// foreign one is not answered.
func TestHelloRunnerAnswersSolicit(t *testing.T) {
	g := newHelloRig(t, HelloConfig{VRIDs: []uint8{5}, SolicitFor: -1})
	g.nextSent()
	g.inject(helloMAC1, Hello{Solicit: true, VRIDs: []uint8{6}})
	g.barrier(5)
	g.noneSent("after a foreign Solicit")
	g.inject(helloMAC2, Hello{Solicit: true, VRIDs: []uint8{5}})
	if mac := g.nextFound(); !bytes.Equal(mac, helloMAC2) {
		t.Fatalf("found(%s), want %s", mac, helloMAC2)
	}
	if h := g.nextSent(); h.Solicit || !slices.Equal(h.VRIDs, []uint8{5}) {
		t.Errorf("answer %+v: want no Solicit, VRIDs [5]", h)
	}
	g.barrier(5)
	if s := g.r.Stats(); s.Sent != 2 || s.Answers != 1 || s.Foreign != 1 {
		t.Errorf("stats %+v: want 2 sent, 1 answer, 1 foreign", s)
	}
}

// TestHelloRunnerAnswerRateLimit: at most one answer per Interval/4; the others are counted.
func TestHelloRunnerAnswerRateLimit(t *testing.T) {
	g := newHelloRig(t, HelloConfig{VRIDs: []uint8{5}, Interval: time.Second})
	g.nextSent()
	solicit := func(src net.HardwareAddr) {
		t.Helper()
		g.inject(src, Hello{Solicit: true, VRIDs: []uint8{5}})
		g.nextFound()
	}
	solicit(helloMAC1)
	if h := g.nextSent(); h.Solicit {
		t.Errorf("answer %+v has Solicit", h)
	}
	solicit(helloMAC2) // same instant
	g.barrier(5)
	g.noneSent("second Solicit at once")
	g.clock.Advance(249 * time.Millisecond)
	solicit(helloMAC3)
	g.barrier(5)
	g.noneSent("Solicit 249ms after the answer")
	g.clock.Advance(time.Millisecond)
	solicit(helloMAC2)
	g.nextSent()
	g.barrier(5)
	if s := g.r.Stats(); s.Answers != 2 || s.AnswersSuppressed != 2 || s.Sent != 3 {
		t.Errorf("stats %+v: want 2 answers, 2 suppressed, 3 sent", s)
	}
}

// TestHelloRunnerCancel: Run returns nil when its context ends, and its reader stops receiving.
func TestHelloRunnerCancel(t *testing.T) {
	g := newHelloRig(t, HelloConfig{VRIDs: []uint8{5}})
	g.nextSent()
	g.cancel()
	select {
	case err := <-g.done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		g.done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	select {
	case g.conn.in <- helloRx{src: helloMAC1, h: Hello{VRIDs: []uint8{5}}}:
		t.Error("a Recv is still running after Run returned")
	default:
	}
}

// TestHelloRunnerConnClosed: Run returns ErrClosed when the conn is closed under it.
func TestHelloRunnerConnClosed(t *testing.T) {
	g := newHelloRig(t, HelloConfig{VRIDs: []uint8{5}})
	g.nextSent()
	g.conn.Close()
	select {
	case err := <-g.done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Run = %v, want ErrClosed", err)
		}
		g.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

// TestHelloRunnerErrors: send and receive errors are counted and the runner goes on; the conn's
// counters show in Stats.
func TestHelloRunnerErrors(t *testing.T) {
	g := newHelloRig(t, HelloConfig{VRIDs: []uint8{5}})
	g.nextSent()
	g.conn.mu.Lock()
	g.conn.sendErr = errors.New("no buffer space")
	g.conn.stats = HelloConnStats{Received: 1, Malformed: 3, Own: 2}
	g.conn.mu.Unlock()
	g.inject(helloMAC1, Hello{Solicit: true, VRIDs: []uint8{5}})
	g.nextFound()
	g.barrier(5) // the answer has failed
	g.conn.mu.Lock()
	g.conn.sendErr = nil
	g.conn.mu.Unlock()

	select {
	case g.conn.in <- helloRx{err: errors.New("network is down")}:
	case <-time.After(5 * time.Second):
		t.Fatal("timed out injecting a receive error")
	}
	wait.Until(t, ioLimit, "receive error counted", func() bool { return g.r.Stats().RecvErrors == 1 })
	g.clock.Advance(helloRecvBackoff) // the pause after the error (and not yet a periodic hello)
	g.barrier(5)
	s := g.r.Stats()
	if s.SendErrors != 1 || s.Sent != 1 || s.Answers != 0 || s.RecvErrors != 1 || s.Malformed != 3 || s.Own != 2 {
		t.Errorf("stats %+v: want 1 send error, 1 sent, 0 answers, 1 receive error, 3 malformed, 2 own", s)
	}
}

func TestHelloConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  HelloConfig
		ok   bool
	}{
		{"defaults", HelloConfig{VRIDs: []uint8{1}}, true},
		{"no VRIDs", HelloConfig{}, false},
		{"VRID 0", HelloConfig{VRIDs: []uint8{0}}, false},
		{"duplicate", HelloConfig{VRIDs: []uint8{4, 4}}, false},
		{"negative interval", HelloConfig{VRIDs: []uint8{1}, Interval: -time.Second}, false},
		{"negative solicit", HelloConfig{VRIDs: []uint8{1}, SolicitFor: -time.Second}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate = %v, want ok %v", err, tc.ok)
			}
			_, nerr := NewHelloRunner(nil, newHelloFakeConn(), tc.cfg, nil, nil)
			if (nerr == nil) != tc.ok {
				t.Errorf("NewHelloRunner = %v, want ok %v", nerr, tc.ok)
			}
		})
	}
	if _, err := NewHelloRunner(nil, nil, HelloConfig{VRIDs: []uint8{1}}, nil, nil); err == nil {
		t.Error("NewHelloRunner without a conn: no error")
	}
}

// TestHelloRunOnce: a runner runs once.
func TestHelloRunOnce(t *testing.T) {
	g := newHelloRig(t, HelloConfig{VRIDs: []uint8{5}})
	g.nextSent()
	if err := g.r.Run(context.Background()); err == nil {
		t.Error("second Run: no error")
	}
}
