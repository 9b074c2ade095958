package bench

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// tpRequireRoot fails (never skips): CI runs these as root, and a skip would hide them.
func tpRequireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (BPF, netlink, nftables): run `sudo go test ./bench/`, as CI does")
	}
}

// tpTestVeth creates a veth pair in this namespace with unique names, both ends up and IPv6
// off (no stray neighbour discovery in the counts); it is deleted on every exit path.
func tpTestVeth(t *testing.T) (string, string) {
	t.Helper()
	a := "xbt" + netns.RandomID()
	b := a + "p"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}); err != nil {
		t.Fatalf("add veth %s/%s: %v", a, b, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(a); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete veth %s: %v", a, err)
			}
		}
	})
	for _, n := range []string{a, b} {
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+n+"/disable_ipv6", []byte("1"), 0o644)
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
	}
	return a, b
}

// tpTestAttach attaches p to dev in native mode, detached on every exit path.
func tpTestAttach(t *testing.T, dev string, p *ebpf.Program) {
	t.Helper()
	l, err := netlink.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	xl, err := link.AttachXDP(link.XDPOptions{Program: p, Interface: l.Attrs().Index, Flags: link.XDPDriverMode})
	if err != nil {
		t.Fatalf("attach XDP to %s: %v", dev, err)
	}
	t.Cleanup(func() { _ = xl.Close() })
}

// tpMACCounter counts frames whose destination MAC is dst in slot 0 and every other frame in
// slot 1 (per-CPU), and drops them all: a receiver for native XDP_TX on the veth peer.
func tpMACCounter(t *testing.T, dst net.HardwareAddr) (*ebpf.Program, func() (match, other uint64)) {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	be32 := int64(uint32(dst[0]) | uint32(dst[1])<<8 | uint32(dst[2])<<16 | uint32(dst[3])<<24)
	be16 := int64(uint32(dst[4]) | uint32(dst[5])<<8)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "tp_test_rx", Type: ebpf.XDP, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 1, asm.Word), // slot: other
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 6),
			asm.JGT.Reg(asm.R4, asm.R3, "count"),
			asm.LoadMem(asm.R4, asm.R2, 0, asm.Word),
			asm.LoadImm(asm.R5, be32, asm.DWord),
			asm.JNE.Reg(asm.R4, asm.R5, "count"),
			asm.LoadMem(asm.R4, asm.R2, 4, asm.Half),
			asm.JNE.Imm(asm.R4, int32(be16), "count"),
			asm.StoreImm(asm.RFP, -4, 0, asm.Word), // slot: match
			asm.Mov.Reg(asm.R2, asm.RFP).WithSymbol("count"),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load the counting program: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	read := func(k uint32) uint64 {
		var per []uint64
		if err := m.Lookup(k, &per); err != nil {
			t.Errorf("read counter: %v", err)
		}
		var s uint64
		for _, v := range per {
			s += v
		}
		return s
	}
	return p, func() (uint64, uint64) { return read(0), read(1) }
}

// tpNoLeftovers checks that nothing of the bench stays on dev or in nftables.
func tpNoLeftovers(t *testing.T, dev string) {
	t.Helper()
	l, err := netlink.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && (x.Attached || x.ProgId != 0) {
		t.Errorf("expected no XDP program left on %s, seen id %d", dev, x.ProgId)
	}
	out, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	if strings.Contains(string(out), "xdplb_tp_") {
		t.Errorf("expected the bench's nftables table deleted, seen:\n%s", out)
	}
}

func TestThroughputIface(t *testing.T) {
	tpRequireRoot(t)
	a, b := tpTestVeth(t)
	dst := net.HardwareAddr{0x02, 0xbe, 0xef, 0, 0, 0x01}
	rx, counts := tpMACCounter(t, dst)
	tpTestAttach(t, b, rx) // native XDP_TX frames out of a arrive only with a program on b

	// What the peer counted during each path's measured slices: read when the bench reads a's
	// tx_packets at the start and end of a slice.
	var mu sync.Mutex
	peer := map[string]uint64{}
	starts := map[string]uint64{}
	slices := map[string]int{}
	tpCountHook = func(path string, end bool) {
		m, _ := counts()
		mu.Lock()
		defer mu.Unlock()
		if !end {
			starts[path] = m
			return
		}
		peer[path] += m - starts[path]
		slices[path]++
	}
	t.Cleanup(func() { tpCountHook = nil })

	start := time.Now()
	// 1 s per case: (a) and (b) alternate in two slices each.
	res, err := Throughput(ThroughputOptions{Duration: time.Second, Warmup: 100 * time.Millisecond, Repeat: 1 << 16,
		Backends: []int{1}, Flows: []int{1}, Iface: a, IfaceDst: dst})
	if err != nil {
		t.Fatalf("expected the section to run on %s, seen: %v", a, err)
	}
	t.Logf("%v:\n%s", time.Since(start).Round(time.Millisecond), tpTable(t, res))
	tpNoLeftovers(t, a)
	if res.Iface != a || res.IfaceDst != dst.String() {
		t.Errorf("expected iface %s and dst %s in the result, seen %q %q", a, dst, res.Iface, res.IfaceDst)
	}

	seen := map[string]bool{}
	for _, r := range res.Rows {
		seen[r.Path[:2]] = true
		peer := peer[r.Path]
		if want := map[byte]int{'a': 2, 'b': 2, 'c': 1}[r.Path[0]]; slices[r.Path] != want {
			t.Errorf("%s: expected %d measured slices, seen %d", r.Path, want, slices[r.Path])
		}
		if r.Offered == 0 || r.DeliveredUnknown || r.Delivered == 0 {
			t.Errorf("%s: expected frames offered and delivered, seen offered %d, delivered %d (unknown %v)", r.Path, r.Offered, r.Delivered, r.DeliveredUnknown)
			continue
		}
		// tx_packets of a veth is what its peer received; allow 1% and a few stray frames.
		if diff := int64(r.Delivered) - int64(peer); diff > int64(peer/100)+16 || -diff > int64(peer/100)+16 {
			t.Errorf("%s: expected delivered (%d, a's tx_packets) close to what the peer counted to %s (%d)", r.Path, r.Delivered, dst, peer)
		}
		// Frames offered at the end of one slice can still sit in the veth's queue when its
		// counters are read and be counted in the next slice's delivered: allow a few batches
		// (seen: 64 and 128 over with both cores busy).
		if r.Delivered > r.Offered+4*64 {
			t.Errorf("%s: expected delivered <= offered, seen %d > %d", r.Path, r.Delivered, r.Offered)
		}
	}
	for _, p := range []string{"a:", "b:", "c:"} {
		if !seen[p] {
			t.Errorf("expected a %s row, seen rows %v", p, res.Rows)
		}
	}
	if _, other := counts(); other > 64 {
		t.Errorf("expected every frame at the peer addressed to %s, seen %d others", dst, other)
	}
	for _, r := range res.Rows {
		if r.Path == "b: xdplb" && (r.RatioA <= 0 || r.PairedAMpps <= 0 || r.RatioC <= 0 || r.TargetOK == nil) {
			t.Errorf("expected the xdplb row paired with (a) and (c), seen %+v", r)
		}
	}
}

func TestThroughputIfaceErrors(t *testing.T) {
	tpRequireRoot(t)
	a, b := tpTestVeth(t)
	down, _ := tpTestVeth(t)
	l, err := netlink.LinkByName(down)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	pass, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "tp_test_pass", Type: ebpf.XDP, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pass.Close() })
	tpTestAttach(t, b, pass)
	pl, err := netlink.LinkByName(b)
	if err != nil || pl.Attrs().Xdp == nil || pl.Attrs().Xdp.ProgId == 0 {
		t.Fatalf("expected an XDP program on %s: %v", b, err)
	}
	progID := pl.Attrs().Xdp.ProgId

	dst := net.HardwareAddr{0x02, 0xbe, 0xef, 0, 0, 0x01}
	for _, c := range []struct {
		name, iface string
		dst         net.HardwareAddr
		want        string
	}{
		{"no destination MAC", a, nil, "--iface-dst"},
		{"broadcast destination", a, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "multicast or broadcast"},
		{"no such interface", "xbt" + netns.RandomID() + "x", dst, "does not exist"},
		{"interface down", down, dst, "is down"},
		{"XDP program attached", b, dst, "already has an XDP program attached"},
		{"destination without interface", "", dst, "only used with an interface"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := QuickThroughputOptions()
			o.Iface, o.IfaceDst = c.iface, c.dst
			start := time.Now()
			_, err := Throughput(o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("expected an error with %q, seen %v", c.want, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("expected the refusal before any measurement, took %v", d)
			}
			t.Log(err)
		})
	}
	if pl, err = netlink.LinkByName(b); err != nil || pl.Attrs().Xdp == nil || pl.Attrs().Xdp.ProgId != progID {
		t.Errorf("expected the refused interface's own XDP program (id %d) left in place, seen %+v (%v)", progID, pl.Attrs().Xdp, err)
	}
	tpNoLeftovers(t, a)
}

// TestThroughputVeth runs the default topology briefly: groups, pairing and cleanup.
func TestThroughputVeth(t *testing.T) {
	tpRequireRoot(t)
	before := tpNamespaces(t)
	res, err := Throughput(ThroughputOptions{Duration: time.Second, Warmup: 100 * time.Millisecond, Repeat: 1 << 16,
		Backends: []int{1}, Flows: []int{1, 1000}})
	if err != nil {
		t.Fatalf("expected the veth section to run, seen: %v", err)
	}
	t.Logf("\n%s", tpTable(t, res))
	for ns := range tpNamespaces(t) {
		if !before[ns] {
			t.Errorf("expected the bench's namespaces removed, seen %s", ns)
		}
	}
	if res.Where != "veth" || len(res.Rows) != 2+2+4 {
		t.Fatalf("expected 2 (a), 2 (b) and 4 (c) rows on veth, seen %q %d", res.Where, len(res.Rows))
	}
	for _, r := range res.Rows {
		if r.Offered == 0 || r.Delivered == 0 || r.DeliveredUnknown || r.Loss == nil {
			t.Errorf("%s, %d flows: expected frames offered and delivered, seen %+v", r.Path, r.Flows, r)
		}
		if r.Path[0] != 'a' && (r.PairedAMpps <= 0 || r.RatioA <= 0) {
			t.Errorf("%s, %d flows: expected a ratio to its group's (a), seen %+v", r.Path, r.Flows, r)
		}
	}
}

// tpNamespaces lists the throughput section's namespaces (other benches may run beside).
func tpNamespaces(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	m := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) && strings.Contains(f[0], "-tp-") {
			m[f[0]] = true
		}
	}
	return m
}

func tpTable(t *testing.T, r ThroughputResult) string {
	t.Helper()
	var sb strings.Builder
	if err := PrintThroughput(&sb, r); err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

// TestThroughputDeliveredUnknown: with --iface, a tx_packets that did not count the frames
// gives "n/a", never 0% or 100% loss, and ratios fall back to offered rates, marked.
func TestThroughputDeliveredUnknown(t *testing.T) {
	bed := &tpBed{opts: ThroughputOptions{Iface: "nic0"}}
	a := bed.row(&tpCase{path: "a: set-MAC XDP_TX", flows: 1, off: 8_000_000, del: 3, el: 2 * time.Second})
	b := bed.row(&tpCase{path: "b: xdplb", backends: 1, flows: 1, off: 6_000_000, del: 0, el: 2 * time.Second})
	c := bed.row(&tpCase{path: "c: nft numgen + fwd", backends: 1, flows: 1, off: 2_000_000, del: 2_000_000, el: 2 * time.Second})
	for _, r := range []ThroughputRow{a, b} {
		if !r.DeliveredUnknown || r.Loss != nil || r.Delivered != 0 {
			t.Errorf("%s: expected delivered unknown and no loss, seen %+v", r.Path, r)
		}
	}
	if c.DeliveredUnknown || c.Loss == nil || *c.Loss != 0 {
		t.Errorf("expected the counted row known with 0 loss, seen %+v", c)
	}
	b.pairA(a)
	if !b.RatiosOnOffered || b.RatioA != 0.75 || b.PairedAMpps != 4 {
		t.Errorf("expected (b)/(a) on offered rates = 0.75 against 4 Mpps, seen %+v", b)
	}
	agg := tpAggregate([]ThroughputRow{a, a})
	if !agg.DeliveredUnknown || agg.Loss != nil || agg.OfferedMpps != 4 {
		t.Errorf("expected the (a) aggregate unknown at 4 Mpps offered, seen %+v", agg)
	}
	out := tpTable(t, ThroughputResult{Rows: []ThroughputRow{agg, b, c}})
	if !strings.Contains(out, "n/a") || !strings.Contains(out, "0.75*") || strings.Contains(out, "100.0%") {
		t.Errorf("expected n/a for delivered and loss and a starred ratio, seen:\n%s", out)
	}

	// On veth nothing is unknown: a sink that saw nothing is 100% loss.
	veth := &tpBed{}
	if r := veth.row(&tpCase{path: "a", off: 1000, el: time.Second}); r.DeliveredUnknown || r.Loss == nil || *r.Loss != 1 {
		t.Errorf("expected 100%% loss on veth, seen %+v", r)
	}
}
