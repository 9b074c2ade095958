//go:build linux

package vrrp

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/xdplb/xdplb/internal/testbed/netns"
	"github.com/xdplb/xdplb/internal/wait"
)

// ioTestWriter sends log lines to t.Log until the test ends.
type ioTestWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *ioTestWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func ioTestLogger(t *testing.T) *slog.Logger {
	w := &ioTestWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	var out io.Writer = w
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ioRunning is an Instance running in a node's namespace.
type ioRunning struct {
	*Instance
	node   *netns.Node
	cancel context.CancelFunc
	done   chan error
}

func ioStartIn(t *testing.T, node *netns.Node, cfg InstanceConfig) *ioRunning {
	t.Helper()
	var in *Instance
	err := node.Do(func() error {
		var err error
		in, err = NewInstance(cfg, ioTestLogger(t).With("node", node.Role))
		return err
	})
	if err != nil {
		t.Fatalf("NewInstance in %s: %v", node.Role, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &ioRunning{Instance: in, node: node, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- in.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and waits for it; safe to call twice.
func (r *ioRunning) stop(t *testing.T) {
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
			if err != nil {
				t.Errorf("Run in %s: %v", r.node.Role, err)
			}
		}
	case <-time.After(10 * time.Second):
		t.Errorf("Run in %s did not return", r.node.Role)
	}
}

func (r *ioRunning) peer(addr netip.Addr) (Peer, bool) {
	for _, p := range r.Status().Peers {
		if p.Addr == addr {
			return p, true
		}
	}
	return Peer{}, false
}

// ioHasAddr reports whether eth0 of node holds a.
func ioHasAddr(t *testing.T, node *netns.Node, a netip.Addr) bool {
	t.Helper()
	found, err := node.HasAddr(a)
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// ioGARPs returns the times of gratuitous ARPs for vip from mac among frames.
func ioGARPs(frames []netns.Frame, mac net.HardwareAddr, vip netip.Addr) []time.Time {
	var out []time.Time
	v := vip.As4()
	for _, f := range frames {
		d := f.Data
		if len(d) < 42 || binary.BigEndian.Uint16(d[12:14]) != 0x0806 {
			continue
		}
		arp := d[14:]
		if bytes.Equal(arp[8:14], mac) && bytes.Equal(arp[14:18], v[:]) && bytes.Equal(arp[24:28], v[:]) {
			out = append(out, f.Time)
		}
	}
	return out
}

// ioVRRPFrames counts IPv4 VRRP frames to dst among frames.
func ioVRRPFrames(frames []netns.Frame, dst netip.Addr) int {
	n := 0
	for _, f := range frames {
		p, ok := parseFrame(f.Data)
		if ok && p.Dst == dst {
			n++
		}
	}
	return n
}

// ioHandover runs the scenario shared by the multicast and unicast tests on a LAN with nodes a,
// b and an observer c: b starts alone and becomes Master; a (higher priority, preempting) starts
// and takes over; both report each other as peers with the right MACs; the VIP moves and is
// announced; a stops and b takes over within Skew_Time (priority-0 handover).
func ioHandover(t *testing.T, unicast bool) {
	lan := netns.NewLAN(t)
	a := lan.AddNode("a", "10.77.0.1/24")
	b := lan.AddNode("b", "10.77.0.2/24")
	c := lan.AddNode("c", "10.77.0.3/24")
	vip := netip.MustParseAddr("10.77.0.100")
	capt := c.StartCapture(t, netns.NodeLink)

	cfg := func(prio uint8, peer netip.Addr) InstanceConfig {
		ic := InstanceConfig{
			Name: "vi-" + peer.String(), Iface: netns.NodeLink, Version: V3, VRID: 42, Priority: prio,
			Interval: 100 * time.Millisecond, Preempt: true, VIPs: []netip.Addr{vip},
			GARPRepeat: 2, GARPDelay: 300 * time.Millisecond,
		}
		if unicast {
			ic.UnicastPeers = []netip.Addr{peer}
		}
		return ic
	}

	rb := ioStartIn(t, b, cfg(100, a.Addr()))
	wait.Until(t, 3*time.Second, "b Master", func() bool { return rb.Status().State == Master })
	if !ioHasAddr(t, b, vip) {
		t.Fatal("b is Master without the VIP")
	}
	wait.Until(t, time.Second, "GARP from b", func() bool { return len(ioGARPs(capt.Frames(), b.MAC, vip)) >= 2 })

	ra := ioStartIn(t, a, cfg(150, b.Addr()))
	wait.Until(t, 3*time.Second, "a Master, b Backup following a", func() bool {
		sb := rb.Status()
		return ra.Status().State == Master && sb.State == Backup && sb.MasterAddr == a.Addr()
	})
	if !ioHasAddr(t, a, vip) || ioHasAddr(t, b, vip) {
		t.Fatalf("VIP on a: %v, on b: %v; want a only", ioHasAddr(t, a, vip), ioHasAddr(t, b, vip))
	}
	wait.Until(t, time.Second, "GARP from a", func() bool { return len(ioGARPs(capt.Frames(), a.MAC, vip)) >= 2 })
	if p, ok := ra.peer(b.Addr()); !ok || !bytes.Equal(p.MAC, b.MAC) || p.Priority != 100 {
		t.Errorf("a's peers %+v: want b %s %s priority 100", ra.Status().Peers, b.Addr(), b.MAC)
	}
	if p, ok := rb.peer(a.Addr()); !ok || !bytes.Equal(p.MAC, a.MAC) || p.Priority != 150 {
		t.Errorf("b's peers %+v: want a %s %s priority 150", rb.Status().Peers, a.Addr(), a.MAC)
	}

	// Priority-0 handover: b takes over Skew_Time (61 ms) after a resigns, well before its
	// Master_Down_Interval (361 ms).
	ra.stop(t)
	stopped := time.Now()
	wait.Until(t, 3*time.Second, "b Master after a stopped", func() bool { return rb.Status().State == Master })
	took := time.Since(stopped)
	skew := time.Duration(256-100) * 100 * time.Millisecond / 256
	t.Logf("b took over %v after a stopped (Skew_Time %v)", took, skew)
	if took > skew+200*time.Millisecond {
		t.Errorf("b took over %v after a stopped, want about Skew_Time %v (priority-0 handover)", took, skew)
	}
	if ioHasAddr(t, a, vip) {
		t.Error("a kept the VIP after stopping")
	}
	if !ioHasAddr(t, b, vip) {
		t.Error("b is Master again without the VIP")
	}
	wait.Until(t, time.Second, "GARP from b after the handover", func() bool {
		return slices.ContainsFunc(ioGARPs(capt.Frames(), b.MAC, vip), func(x time.Time) bool { return x.After(stopped) })
	})
	if p, ok := rb.peer(a.Addr()); !ok || p.Priority != 0 {
		t.Errorf("b's view of a after its resignation: %+v, want priority 0", p)
	}
	// The observer's neighbour entry for the VIP (if it has one) follows the GARPs.
	if mac, _, err := c.Neighbour(netns.NodeLink, vip); err == nil && mac != nil && !bytes.Equal(mac, b.MAC) {
		t.Errorf("observer's neighbour entry for %s: %s, want b's %s", vip, mac, b.MAC)
	}

	multicast := ioVRRPFrames(capt.Frames(), GroupV4)
	if unicast && multicast != 0 {
		t.Errorf("unicast mode: the observer saw %d adverts to %s", multicast, GroupV4)
	}
	if !unicast && multicast == 0 {
		t.Errorf("multicast mode: the observer saw no adverts to %s", GroupV4)
	}
	st := rb.Status()
	if len(st.Rejected) != 0 {
		t.Errorf("b rejected packets: %v", st.Rejected)
	}
}

func TestNetnsMulticastHandover(t *testing.T) { ioHandover(t, false) }

func TestNetnsUnicastHandover(t *testing.T) { ioHandover(t, true) }

// TestNetnsObserverNeighbourFollowsGARP: a host that talked to the VIP on the old Master has its
// neighbour entry moved to the new Master's MAC by the gratuitous ARPs.
func TestNetnsObserverNeighbourFollowsGARP(t *testing.T) {
	lan := netns.NewLAN(t)
	a := lan.AddNode("a", "10.78.0.1/24")
	b := lan.AddNode("b", "10.78.0.2/24")
	c := lan.AddNode("c", "10.78.0.3/24")
	vip := netip.MustParseAddr("10.78.0.100")
	cfg := InstanceConfig{Iface: netns.NodeLink, VRID: 9, Interval: 100 * time.Millisecond, Preempt: true,
		VIPs: []netip.Addr{vip}, GARPRepeat: 3, GARPDelay: 200 * time.Millisecond}
	cfg.Priority = 200
	ra := ioStartIn(t, a, cfg)
	cfg.Priority = 100
	rb := ioStartIn(t, b, cfg)
	wait.Until(t, 3*time.Second, "a Master", func() bool {
		return ra.Status().State == Master && rb.Status().State == Backup
	})
	// A UDP datagram to the VIP makes the observer resolve it (no ping binary needed).
	if err := c.Do(func() error {
		conn, err := net.Dial("udp4", netip.AddrPortFrom(vip, 9).String())
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write([]byte("x"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 3*time.Second, "observer resolves the VIP to a", func() bool {
		mac, _, _ := c.Neighbour(netns.NodeLink, vip)
		return bytes.Equal(mac, a.MAC)
	})
	ra.stop(t)
	wait.Until(t, 3*time.Second, "observer's entry for the VIP moves to b", func() bool {
		mac, _, _ := c.Neighbour(netns.NodeLink, vip)
		return bytes.Equal(mac, b.MAC)
	})
}

// TestNetlinkVIPs: Add/Remove are idempotent; a configured VIP left on the interface by an
// earlier run is adopted and removed; an address that appears later and was not added by us is
// never removed.
func TestNetlinkVIPs(t *testing.T) {
	lan := netns.NewLAN(t)
	n := lan.AddNode("n", "10.79.0.1/24")
	mine := netip.MustParseAddr("10.79.0.100")
	leftover := netip.MustParseAddr("10.79.0.101")
	foreign := netip.MustParseAddr("10.79.0.102")
	if err := n.AddAddr(netns.NodeLink, netip.PrefixFrom(leftover, 32)); err != nil {
		t.Fatal(err)
	}
	var m *NetlinkVIPs
	if err := n.Do(func() error {
		var err error
		m, err = NewNetlinkVIPs(ioTestLogger(t), netns.NodeLink, []netip.Addr{mine, leftover, foreign}, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := n.AddAddr(netns.NodeLink, netip.PrefixFrom(foreign, 32)); err != nil { // by someone else
		t.Fatal(err)
	}
	for range 2 {
		if err := m.Add(); err != nil {
			t.Fatal(err)
		}
	}
	if !ioHasAddr(t, n, mine) || !ioHasAddr(t, n, leftover) || !ioHasAddr(t, n, foreign) {
		t.Fatal("after Add: a VIP is missing")
	}
	if got := m.Added(); !slices.Equal(got, []netip.Addr{mine, leftover}) {
		t.Errorf("Added() = %v, want [%s %s]", got, mine, leftover)
	}
	for range 2 {
		if err := m.Remove(); err != nil {
			t.Fatal(err)
		}
	}
	if ioHasAddr(t, n, mine) || ioHasAddr(t, n, leftover) {
		t.Error("our VIP (or the adopted leftover) is still there after Remove")
	}
	if !ioHasAddr(t, n, foreign) {
		t.Error("Remove took off an address someone else added")
	}
	// Someone else removes ours between Add and Remove: no error.
	if err := m.Add(); err != nil {
		t.Fatal(err)
	}
	if err := n.Do(func() error {
		l, _ := netlink.LinkByName(netns.NodeLink)
		return netlink.AddrDel(l, &netlink.Addr{IPNet: &net.IPNet{IP: mine.AsSlice(), Mask: net.CIDRMask(32, 32)}})
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(); err != nil {
		t.Errorf("Remove after the address vanished: %v", err)
	}
}

// TestNetnsIPv6Handover: VRRPv3 over IPv6 (link-local sources, ff02::12), VIP /128 moves, peers
// are learnt with their MACs and unsolicited neighbour advertisements are sent.
func TestNetnsIPv6Handover(t *testing.T) {
	lan := netns.NewLAN(t)
	a := lan.AddNode("a", "fd77::1/64")
	b := lan.AddNode("b", "fd77::2/64")
	c := lan.AddNode("c", "fd77::3/64")
	vip := netip.MustParseAddr("fd77::100")
	capt := c.StartCapture(t, netns.NodeLink)
	cfg := InstanceConfig{Iface: netns.NodeLink, VRID: 6, Interval: 100 * time.Millisecond, Preempt: true,
		VIPs: []netip.Addr{vip}, GARPRepeat: 1, GARPDelay: -1}
	// The link-local addresses are tentative for a while (DAD): retry until usable.
	start := func(n *netns.Node, prio uint8) *ioRunning {
		cfg.Priority = prio
		var r *ioRunning
		wait.Until(t, 10*time.Second, "NewInstance in "+n.Role+" (link-local address usable)", func() bool {
			var in *Instance
			err := n.Do(func() error {
				var err error
				in, err = NewInstance(cfg, ioTestLogger(t).With("node", n.Role))
				return err
			})
			if err != nil {
				t.Logf("NewInstance in %s: %v (retrying)", n.Role, err)
				time.Sleep(200 * time.Millisecond)
				return false
			}
			in.Close()
			r = ioStartIn(t, n, cfg)
			return true
		})
		return r
	}
	ra := start(a, 200)
	rb := start(b, 100)
	wait.Until(t, 5*time.Second, "a Master, b Backup", func() bool {
		return ra.Status().State == Master && rb.Status().State == Backup
	})
	if !ioHasAddr(t, a, vip) || ioHasAddr(t, b, vip) {
		t.Fatalf("VIP on a: %v, on b: %v", ioHasAddr(t, a, vip), ioHasAddr(t, b, vip))
	}
	if src := ra.Config().SourceAddr; !src.IsLinkLocalUnicast() {
		t.Errorf("a's source address %s is not link-local", src)
	}
	wait.Until(t, 2*time.Second, "b hears a", func() bool { _, ok := rb.peer(ra.Config().SourceAddr); return ok })
	if p, ok := rb.peer(ra.Config().SourceAddr); !ok || !bytes.Equal(p.MAC, a.MAC) {
		t.Errorf("b's peers %+v: want a (%s, %s)", rb.Status().Peers, ra.Config().SourceAddr, a.MAC)
	}
	ra.stop(t)
	wait.Until(t, time.Second, "b Master", func() bool { return rb.Status().State == Master })
	if !ioHasAddr(t, b, vip) || ioHasAddr(t, a, vip) {
		t.Fatalf("after handover VIP on a: %v, on b: %v", ioHasAddr(t, a, vip), ioHasAddr(t, b, vip))
	}
	wait.Until(t, time.Second, "unsolicited NA from b", func() bool {
		for _, f := range capt.Frames() {
			d := f.Data
			// Ethernet, IPv6 next header ICMPv6 (58), type 136, target = VIP.
			if len(d) >= 14+40+24 && bytes.Equal(d[6:12], b.MAC) && d[12] == 0x86 && d[13] == 0xdd &&
				d[14+6] == 58 && d[14+40] == 136 && bytes.Equal(d[14+40+8:14+40+24], vip.AsSlice()) {
				return true
			}
		}
		return false
	})
	if n := ioVRRPFrames(capt.Frames(), GroupV6); n == 0 {
		t.Error("observer saw no adverts to ff02::12")
	}
}
