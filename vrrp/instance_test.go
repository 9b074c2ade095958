//go:build linux

package vrrp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/clock/clocktest"
	"github.com/xdplb/xdplb/internal/wait"
)

var (
	ioVIP      = netip.MustParseAddr("10.0.0.100")
	ioLocal    = netip.MustParseAddr("10.0.0.1")
	ioPeer     = netip.MustParseAddr("10.0.0.2")
	ioPeerMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	ioPeer2    = netip.MustParseAddr("10.0.0.3")
	ioPeer2MAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x03}
)

type ioRig struct {
	t      *testing.T
	in     *Instance
	clock  *clocktest.Fake
	conn   *ioFakeConn
	vips   *ioFakeVIPs
	ann    *ioFakeAnnouncer
	cancel context.CancelFunc
	errc   chan error

	pmu   sync.Mutex
	peers [][]Peer // every call of the peer func
	n     uint64   // adverts injected
}

func newIORig(t *testing.T, mod func(*InstanceConfig)) *ioRig {
	t.Helper()
	cfg := InstanceConfig{
		Name: "vi1", Iface: "eth0", Version: V3, VRID: 7, Priority: 100, Interval: time.Second,
		Preempt: true, VIPs: []netip.Addr{ioVIP}, SourceAddr: ioLocal,
	}
	if mod != nil {
		mod(&cfg)
	}
	r := &ioRig{t: t, clock: clocktest.NewFake(ioT0), conn: newIOFakeConn(), vips: &ioFakeVIPs{}, ann: &ioFakeAnnouncer{}}
	in, err := NewInstance(cfg, nil, WithClock(r.clock), WithPacketConn(r.conn), WithVIPManager(r.vips),
		WithAnnouncer(r.ann), WithPeerFunc(func(p []Peer) {
			r.pmu.Lock()
			r.peers = append(r.peers, p)
			r.pmu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	r.in = in
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.errc = make(chan error, 1)
	go func() { r.errc <- in.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.errc:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return")
		}
	})
	return r
}

// stop cancels Run and waits for it.
func (r *ioRig) stop() {
	r.t.Helper()
	r.cancel()
	select {
	case err := <-r.errc:
		if err != nil {
			r.t.Fatalf("Run: %v", err)
		}
		r.errc <- nil // for Cleanup
	case <-time.After(5 * time.Second):
		r.t.Fatal("Run did not return")
	}
}

func (r *ioRig) advert(src netip.Addr, prio uint8) []byte {
	r.t.Helper()
	b, err := Advert{Version: V3, VRID: 7, Priority: prio, Interval: time.Second, Addrs: []netip.Addr{ioVIP}}.
		Marshal(src, GroupV4, true)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

// inject delivers a valid advert and waits until the instance has handled it.
func (r *ioRig) inject(src netip.Addr, mac net.HardwareAddr, prio uint8) {
	r.t.Helper()
	r.conn.in <- Packet{SrcMAC: mac, Src: src, Dst: GroupV4, TTL: 255, Payload: r.advert(src, prio)}
	r.n++
	wait.Until(r.t, ioLimit, "advert handled", func() bool { return r.in.Status().Received == r.n })
}

// parked waits until the instance goroutine is parked on its timer again, so that whatever the
// last Advance fired has been handled: an assertion that nothing changed then sees the
// instance's answer, not the state from before the goroutine ran. (The instance always has a
// timer running outside Init and Fault.)
func (r *ioRig) parked() {
	r.t.Helper()
	r.clock.WaitParked(r.t, 1)
}

func (r *ioRig) waitState(s State) {
	r.t.Helper()
	wait.Until(r.t, ioLimit, "state "+s.String(), func() bool { return r.in.Status().State == s })
}

func (r *ioRig) lastPeers() ([]Peer, int) {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if len(r.peers) == 0 {
		return nil, 0
	}
	return r.peers[len(r.peers)-1], len(r.peers)
}

// sentPriorities parses what the instance sent.
func (r *ioRig) sentPriorities() []uint8 {
	var out []uint8
	for _, s := range r.conn.Sent() {
		a, err := Parse(s.Payload, ioLocal, s.Dst, ParseOptions{Version: V3, VRID: 7, TTL: 255, PseudoHeader: true})
		if err != nil {
			r.t.Fatalf("instance sent an invalid advert to %s: %v", s.Dst, err)
		}
		if s.Dst != GroupV4 {
			r.t.Errorf("advert sent to %s, want %s", s.Dst, GroupV4)
		}
		out = append(out, a.Priority)
	}
	return out
}

// TestInstanceBackupToMasterWhenAdvertsStop: a Backup hearing a higher-priority Master stays
// Backup; when the adverts stop it becomes Master after Master_Down_Interval, adds the VIPs,
// announces (GARPRepeat now, GARPRepeat more after GARPDelay), advertises; the peer expires after
// PeerTimeout; on cancel it resigns with priority 0 and removes the VIPs.
func TestInstanceBackupToMasterWhenAdvertsStop(t *testing.T) {
	r := newIORig(t, nil)
	r.waitState(Backup)
	for range 5 {
		r.inject(ioPeer, ioPeerMAC, 200)
		r.clock.Advance(time.Second)
	}
	if st := r.in.Status(); st.State != Backup || st.MasterAddr != ioPeer {
		t.Fatalf("status %+v, want Backup following %s", st, ioPeer)
	}
	if r.vips.On() || len(r.conn.Sent()) != 0 {
		t.Fatalf("Backup added VIPs or sent adverts")
	}
	peers, calls := r.lastPeers()
	if calls != 1 || len(peers) != 1 || peers[0].Addr != ioPeer || !bytes.Equal(peers[0].MAC, ioPeerMAC) || peers[0].Priority != 200 {
		t.Fatalf("peer func: %d calls, last %+v; want one call with %s %s prio 200", calls, peers, ioPeer, ioPeerMAC)
	}

	// Master_Down_Interval = 3 s + (256-100)/256 s = 3.609 s after the last advert (1 s ago).
	r.clock.Advance(2500 * time.Millisecond)
	r.parked()
	if s := r.in.Status().State; s != Backup {
		t.Fatalf("state %v 3.5 s after the last advert, want Backup until 3.609 s", s)
	}
	r.clock.Advance(200 * time.Millisecond)
	r.waitState(Master)
	wait.Until(t, ioLimit, "first advert as Master", func() bool { return len(r.conn.Sent()) >= 1 })
	if !r.vips.On() {
		t.Error("VIPs not added on becoming Master")
	}
	wait.Until(t, ioLimit, "first GARP burst", func() bool { return r.ann.Rounds() == 5 })
	if p := r.sentPriorities(); p[0] != 100 {
		t.Errorf("advert priority %d, want 100", p[0])
	}
	st := r.in.Status()
	if st.Transitions != 2 || st.MasterAddr != ioLocal {
		t.Errorf("status %+v, want 2 transitions (init→backup→master), master %s", st, ioLocal)
	}

	// Second burst GARPDelay (5 s) later; meanwhile one advert per second.
	r.clock.Advance(4900 * time.Millisecond)
	r.parked()
	if n := r.ann.Rounds(); n != 5 {
		t.Fatalf("%d announce rounds 4.9 s after becoming Master, want 5", n)
	}
	r.clock.Advance(100 * time.Millisecond)
	wait.Until(t, ioLimit, "second GARP burst", func() bool { return r.ann.Rounds() == 10 })

	// The last advert was at 4 s, PeerTimeout is 3 × 3.609 s = 10.83 s: expiry at 14.83 s.
	r.clock.Advance(2 * time.Second) // 14.7 s
	r.parked()
	if peers, _ := r.lastPeers(); len(peers) != 1 {
		t.Fatalf("peer expired early: %+v", peers)
	}
	r.clock.Advance(200 * time.Millisecond)
	wait.Until(t, ioLimit, "peer expiry", func() bool { p, n := r.lastPeers(); return n == 2 && len(p) == 0 })
	if len(r.in.Status().Peers) != 0 {
		t.Error("Status().Peers still lists the expired peer")
	}

	before := len(r.conn.Sent())
	r.stop()
	prios := r.sentPriorities()
	if len(prios) != before+1 || prios[len(prios)-1] != 0 {
		t.Fatalf("adverts after stop: %v (before %d), want one more with priority 0", prios, before)
	}
	if r.vips.On() {
		t.Error("VIPs still on after stop")
	}
	if s := r.in.Status().State; s != Init {
		t.Errorf("state after stop %v, want init", s)
	}
}

// TestInstancePriorityZeroTakeover: a Backup takes over Skew_Time after the Master resigns.
func TestInstancePriorityZeroTakeover(t *testing.T) {
	r := newIORig(t, nil)
	r.waitState(Backup)
	r.inject(ioPeer, ioPeerMAC, 200)
	r.clock.Advance(500 * time.Millisecond)
	r.inject(ioPeer, ioPeerMAC, 0)
	// Skew_Time = 156/256 s = 609 ms.
	r.clock.Advance(600 * time.Millisecond)
	r.parked()
	if s := r.in.Status().State; s != Backup {
		t.Fatalf("state %v 600 ms after priority 0, want Backup until Skew_Time", s)
	}
	r.clock.Advance(10 * time.Millisecond)
	r.waitState(Master)
	peers, _ := r.lastPeers()
	if len(peers) != 1 || peers[0].Priority != 0 {
		t.Errorf("peer after resignation: %+v, want priority 0", peers)
	}
}

// TestInstanceMasterYieldsAndSplitBrain: an owner-less Master yields to a higher priority and
// counts a lower-priority Master as a split brain (re-asserting at once).
func TestInstanceMasterYieldsAndSplitBrain(t *testing.T) {
	r := newIORig(t, nil)
	r.waitState(Backup)
	r.clock.Advance(4 * time.Second)
	r.waitState(Master)
	wait.Until(t, ioLimit, "advert", func() bool { return len(r.conn.Sent()) == 1 })

	r.inject(ioPeer2, ioPeer2MAC, 50)
	wait.Until(t, ioLimit, "re-assertion", func() bool { return len(r.conn.Sent()) == 2 })
	if st := r.in.Status(); st.SplitBrains != 1 || st.State != Master {
		t.Fatalf("status %+v, want 1 split brain, still Master", st)
	}

	r.inject(ioPeer, ioPeerMAC, 200)
	r.waitState(Backup)
	if r.vips.On() {
		t.Error("VIPs still on after yielding")
	}
	peers, _ := r.lastPeers()
	if len(peers) != 2 || peers[0].Addr != ioPeer || peers[1].Addr != ioPeer2 ||
		!bytes.Equal(peers[1].MAC, ioPeer2MAC) {
		t.Errorf("peers %+v, want %s and %s sorted", peers, ioPeer, ioPeer2)
	}
}

// TestInstanceRejects: invalid packets are counted by reason and change nothing.
func TestInstanceRejects(t *testing.T) {
	r := newIORig(t, nil)
	r.waitState(Backup)
	good := r.advert(ioPeer, 200)
	badSum := bytes.Clone(good)
	badSum[7] ^= 0xff
	otherVRID, err := Advert{Version: V3, VRID: 8, Priority: 200, Interval: time.Second, Addrs: []netip.Addr{ioVIP}}.
		Marshal(ioPeer, GroupV4, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []Packet{
		{SrcMAC: ioPeerMAC, Src: ioPeer, Dst: GroupV4, TTL: 64, Payload: good},
		{SrcMAC: ioPeerMAC, Src: ioPeer, Dst: GroupV4, TTL: 255, Payload: badSum},
		{SrcMAC: ioPeerMAC, Src: ioPeer, Dst: GroupV4, TTL: 255, Payload: otherVRID},
		{SrcMAC: ioPeerMAC, Src: ioPeer, Dst: GroupV4, TTL: 255, Payload: good[:5]},
	} {
		r.conn.in <- p
	}
	want := map[string]uint64{"ttl": 1, "checksum": 1, "vrid": 1, "truncated": 1}
	wait.Until(t, ioLimit, "4 rejects", func() bool {
		var n uint64
		for _, v := range r.in.Status().Rejected {
			n += v
		}
		return n == 4
	})
	st := r.in.Status()
	for k, v := range want {
		if st.Rejected[k] != v {
			t.Errorf("Rejected[%q] = %d, want %d (all: %v)", k, st.Rejected[k], v, st.Rejected)
		}
	}
	if st.Received != 0 || len(st.Peers) != 0 {
		t.Errorf("rejected packets counted as adverts or peers: %+v", st)
	}
}

// TestInstanceUnicastAndNotify: adverts go to each unicast peer; the notify command gets
// keepalived's arguments on every state change, in order, STOP last.
func TestInstanceUnicastAndNotify(t *testing.T) {
	out := filepath.Join(t.TempDir(), "notify")
	peers := []netip.Addr{ioPeer, ioPeer2}
	r := newIORig(t, func(c *InstanceConfig) {
		c.UnicastPeers = peers
		c.Priority = 255 // owner: Master at once
		c.NotifyCmd = []string{"/bin/sh", "-c", `echo "$@" >> "$0"`, out}
	})
	r.waitState(Master)
	wait.Until(t, ioLimit, "adverts to both peers", func() bool { return len(r.conn.Sent()) == 2 })
	for i, s := range r.conn.Sent() {
		if s.Dst != peers[i] {
			t.Errorf("advert %d sent to %s, want %s", i, s.Dst, peers[i])
		}
		a, err := Parse(s.Payload, ioLocal, s.Dst, ParseOptions{Version: V3, VRID: 7, TTL: 255, PseudoHeader: true})
		if err != nil || a.Priority != 255 {
			t.Errorf("advert %d: %+v, %v", i, a, err)
		}
	}
	r.stop()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(string(b))
	want := "INSTANCE vi1 MASTER 255\nINSTANCE vi1 STOP 255"
	if got != want {
		t.Errorf("notify calls:\n%s\nwant:\n%s", got, want)
	}
}

// TestInstanceTrackingFault: tracking down makes a Master resign and drop its VIPs.
func TestInstanceTrackingFault(t *testing.T) {
	r := newIORig(t, nil)
	r.waitState(Backup)
	r.clock.Advance(4 * time.Second)
	r.waitState(Master)
	r.in.SetTracking(false)
	r.waitState(Fault)
	if r.vips.On() {
		t.Error("VIPs on in Fault")
	}
	r.in.SetTracking(true)
	r.waitState(Backup)
}

func TestInstanceConfigValidate(t *testing.T) {
	base := InstanceConfig{Iface: "eth0", VRID: 1, VIPs: []netip.Addr{ioVIP}}
	if err := base.Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	d := base.withDefaults()
	if d.GARPRepeat != 5 || d.GARPDelay != 5*time.Second || d.Priority != 100 || d.Version != V3 ||
		!d.pseudoHeader() || d.Name != "eth0-1" {
		t.Errorf("defaults: %+v", d)
	}
	// 3 × (3 s + 156/256 s)
	if want := 3 * (3*time.Second + 609375*time.Microsecond); d.PeerTimeout != want {
		t.Errorf("PeerTimeout %v, want %v", d.PeerTimeout, want)
	}
	for name, mod := range map[string]func(*InstanceConfig){
		"no vrid":       func(c *InstanceConfig) { c.VRID = 0 },
		"no iface":      func(c *InstanceConfig) { c.Iface = "" },
		"no vips":       func(c *InstanceConfig) { c.VIPs = nil },
		"mixed family":  func(c *InstanceConfig) { c.VIPs = append(c.VIPs, netip.MustParseAddr("2001:db8::1")) },
		"peer family":   func(c *InstanceConfig) { c.UnicastPeers = []netip.Addr{netip.MustParseAddr("2001:db8::2")} },
		"v2 over IPv6":  func(c *InstanceConfig) { c.Version = V2; c.VIPs = []netip.Addr{netip.MustParseAddr("2001:db8::1")} },
		"v2 interval":   func(c *InstanceConfig) { c.Version = V2; c.Interval = 500 * time.Millisecond },
		"bad auth type": func(c *InstanceConfig) { c.Version = V2; c.Auth = 2 },
		"prefix length": func(c *InstanceConfig) { c.VIPPrefixLen = 33 },
	} {
		c := base
		c.VIPs = append([]netip.Addr(nil), base.VIPs...)
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}

func TestPeerTable(t *testing.T) {
	now := time.Unix(1000, 0)
	pt := newPeerTable(10 * time.Second)
	if !pt.seen(ioPeer, ioPeerMAC, 100, now) {
		t.Error("new peer: no change reported")
	}
	if pt.seen(ioPeer, ioPeerMAC, 100, now.Add(time.Second)) {
		t.Error("same peer again: change reported")
	}
	if !pt.seen(ioPeer, ioPeer2MAC, 100, now.Add(2*time.Second)) {
		t.Error("new MAC: no change reported")
	}
	if !pt.seen(ioPeer, ioPeer2MAC, 0, now.Add(3*time.Second)) {
		t.Error("new priority: no change reported")
	}
	pt.seen(ioPeer2, ioPeerMAC, 50, now.Add(5*time.Second))
	if at, _ := pt.next(); !at.Equal(now.Add(13 * time.Second)) {
		t.Errorf("next expiry %v", at)
	}
	if pt.expire(now.Add(12 * time.Second)) {
		t.Error("expired early")
	}
	if !pt.expire(now.Add(13*time.Second)) || len(pt.list()) != 1 || pt.list()[0].Addr != ioPeer2 {
		t.Errorf("after expiry: %+v", pt.list())
	}
}

// TestInstanceFaultBeforeRun: an interface reported down before Run makes the instance start
// in Fault (one transition, never Backup), and it starts as usual when the interface is up.
func TestInstanceFaultBeforeRun(t *testing.T) {
	clock := clocktest.NewFake(ioT0)
	in, err := NewInstance(InstanceConfig{
		Name: "vi1", Iface: "eth0", VRID: 7, Preempt: true, VIPs: []netip.Addr{ioVIP}, SourceAddr: ioLocal,
	}, nil, WithClock(clock), WithPacketConn(newIOFakeConn()), WithVIPManager(&ioFakeVIPs{}), WithAnnouncer(&ioFakeAnnouncer{}))
	if err != nil {
		t.Fatal(err)
	}
	in.SetInterface(false)
	in.SetTracking(true) // no fault: changes nothing
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- in.Run(ctx) }()
	defer func() { cancel(); <-errc }()
	waitState := func(s State) {
		t.Helper()
		wait.For(t, ioLimit, "state "+s.String(), func() error {
			if st := in.Status().State; st != s {
				return fmt.Errorf("state %v", st)
			}
			return nil
		})
	}
	waitState(Fault)
	if n := in.Status().Transitions; n != 1 {
		t.Errorf("%d transitions to Fault, want 1 (Init → Fault)", n)
	}
	in.SetInterface(true)
	waitState(Backup)
	if n := in.Status().Transitions; n != 2 {
		t.Errorf("%d transitions, want 2", n)
	}
}

// TestInstanceClearsLeftoverVIPs: VIPs still on the interface when Run starts (a killed run left
// them) are removed as the instance starts as Backup, so it never answers for them beside the
// real Master.
func TestInstanceClearsLeftoverVIPs(t *testing.T) {
	clock, conn := clocktest.NewFake(ioT0), newIOFakeConn()
	vips := &ioFakeVIPs{on: true}
	cfg := InstanceConfig{Name: "vi1", Iface: "eth0", Version: V3, VRID: 7, Priority: 100,
		Interval: time.Second, Preempt: true, VIPs: []netip.Addr{ioVIP}, SourceAddr: ioLocal}
	in, err := NewInstance(cfg, nil, WithClock(clock), WithPacketConn(conn), WithVIPManager(vips),
		WithAnnouncer(&ioFakeAnnouncer{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wait.Until(t, ioLimit, "Backup", func() bool { return in.Status().State == Backup })
	if vips.On() {
		t.Error("leftover VIPs still on after starting as Backup")
	}
}
