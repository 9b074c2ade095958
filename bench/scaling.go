package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/internal/testbed/baseline"
	"github.com/xdplb/xdplb/loader"
)

// ScalingOptions tune the scaling benchmark.
type ScalingOptions struct {
	Rounds int  // interleaved rounds per series; the median is reported
	Repeat int  // BPF_PROG_TEST_RUN repeats per round
	Quick  bool // fewer points per series
}

// DefaultScalingOptions are used by `xdplb bench`.
func DefaultScalingOptions() ScalingOptions { return ScalingOptions{Rounds: 5, Repeat: 4_000_000} }

// QuickScalingOptions finish in well under a minute.
func QuickScalingOptions() ScalingOptions {
	return ScalingOptions{Rounds: 2, Repeat: 1_000_000, Quick: true}
}

// ScalingTargetPct is how far from the first row a services or backends row may be.
const ScalingTargetPct = 10

// ScalingResult is one point of a series, or (Series "eviction") the conntrack LRU eviction check.
// In flows-cold rows, Median, Min and Max are of the per-round difference wrapper+xdplb -
// wrapper+swap-MAC.
type ScalingResult struct {
	Series string  `json:"series"` // services, backends, flows, flows-cold, eviction
	Path   string  `json:"path"`   // conntrack hit, new flow
	N      int     `json:"n"`      // services, backends in the service, or live flows in conntrack
	Median float64 `json:"ns_per_packet,omitempty"`
	Min    float64 `json:"ns_min,omitempty"`
	Max    float64 `json:"ns_max,omitempty"`
	Ratio  float64 `json:"ratio_to_first,omitempty"` // Median / the first row's median of the same series and path
	// TargetPct: the row must be within this many % of the first row (0: no target).
	TargetPct float64 `json:"target_pct,omitempty"`
	OK        *bool   `json:"target_ok,omitempty"`

	// Flows-cold only: medians of the two timed programs, and what xdplb's stats counters
	// counted over the timed calls (every timed packet must be a conntrack hit).
	XdplbNs    float64 `json:"xdplb_ns,omitempty"`    // wrapper + xdplb
	BaselineNs float64 `json:"baseline_ns,omitempty"` // wrapper + swap-MAC XDP_TX
	Repeat     int     `json:"repeat,omitempty"`      // runs of wrapper+xdplb's long call (see coldRefNs)
	BaseRepeat int     `json:"baseline_repeat,omitempty"`
	TimedRuns  uint64  `json:"timed_runs,omitempty"` // xdplb packets in the timed calls
	CtHits     uint64  `json:"ct_hits,omitempty"`
	NewFlows   uint64  `json:"new_flows,omitempty"`

	// Eviction only.
	Size           int `json:"conntrack_size,omitempty"`
	FirstEvictedAt int `json:"first_eviction_after_inserts,omitempty"` // 0: none seen
	GoneAtSize     int `json:"first_entries_gone_at_size,omitempty"`
	Inserted       int `json:"inserted,omitempty"`
	GoneAtEnd      int `json:"first_entries_gone_at_end,omitempty"` // of the first Size entries
}

type scaleCase struct {
	series, path string
	n            int
	prog         *ebpf.Program
	pkt          []byte
	wantMAC      *[6]byte // destination MAC the forwarded frame must carry, if set
}

// Scaling times the conntrack-hit and new-flow paths as the number of services, backends in one
// service and live conntrack flows grows, then checks where the conntrack LRU starts evicting.
func Scaling(opts ScalingOptions) ([]ScalingResult, error) {
	if opts.Rounds < 1 || opts.Repeat < 100 {
		return nil, errors.New("rounds must be >= 1 and repeat >= 100")
	}
	svcN, beN := []int{1, 10, 100, 1000}, []int{1, 100, 1000, 10000}
	ctSize := int(loader.DefaultSizes().Conntrack)
	flowN := []int{1, 1000, 100_000, ctSize}
	coldN := []int{1, 1000, 10_000, 100_000, 1_000_000}
	if opts.Quick {
		svcN, beN, flowN, coldN = []int{1, 1000}, []int{1, 10000}, []int{1, 100_000}, []int{1, 100_000}
	}
	var objs []*loader.Objects
	defer func() {
		for _, o := range objs {
			o.Close()
		}
	}()
	load := func(s loader.Sizes, bypass bool) (*loader.Objects, error) {
		var lo []loader.LoadOption
		if bypass {
			lo = append(lo, loader.WithConntrackBypass())
		}
		o, err := loader.Load(s, 0, lo...)
		if err == nil {
			objs = append(objs, o)
		}
		return o, err
	}
	paths := []struct {
		name   string
		bypass bool
	}{{"conntrack hit", false}, {"new flow", true}}

	var out []ScalingResult
	// (a) services
	var cases []scaleCase
	for _, n := range svcN {
		for _, p := range paths {
			s := loader.DefaultSizes()
			s.Services = max(s.Services, uint32(n))
			o, err := load(s, p.bypass)
			if err != nil {
				return nil, err
			}
			pkt, err := configureServices(o, n)
			if err != nil {
				return nil, fmt.Errorf("services %d: %w", n, err)
			}
			cases = append(cases, scaleCase{series: "services", path: p.name, n: n, prog: o.Program, pkt: pkt})
		}
	}
	res, err := timeSeries(cases, opts, ScalingTargetPct)
	if err != nil {
		return nil, err
	}
	out = append(out, res...)

	// (b) backends in one service
	cases = nil
	for _, n := range beN {
		for _, p := range paths {
			s := loader.DefaultSizes()
			s.Backends = max(s.Backends, uint32(n+1))
			o, err := load(s, p.bypass)
			if err != nil {
				return nil, err
			}
			if err := configureBackends(o, n); err != nil {
				return nil, fmt.Errorf("backends %d: %w", n, err)
			}
			cases = append(cases, scaleCase{series: "backends", path: p.name, n: n, prog: o.Program,
				pkt: frame(clientMAC, directorMAC, client, vip, 40000, 3306)})
		}
	}
	if res, err = timeSeries(cases, opts, ScalingTargetPct); err != nil {
		return nil, err
	}
	out = append(out, res...)
	for _, o := range objs { // free the kernel memory before the conntrack fills
		o.Close()
	}
	objs = nil

	// (c) live flows in conntrack
	cases = nil
	for _, n := range flowN {
		o, err := load(loader.DefaultSizes(), false)
		if err != nil {
			return nil, err
		}
		be, err := configure(o)
		if err != nil {
			return nil, err
		}
		if err := fillConntrack(o.Conntrack, 0, n, be); err != nil {
			return nil, fmt.Errorf("fill conntrack with %d flows: %w", n, err)
		}
		// Time a hit on one of the filled flows, preferably from the middle.
		j := n / 2
		var f loader.Flow
		if err := o.Conntrack.Lookup(flowKey(j), &f); err != nil {
			j = n - 1
			if err := o.Conntrack.Lookup(flowKey(j), &f); err != nil {
				return nil, fmt.Errorf("flows %d: entry %d gone after the fill: %w", n, j, err)
			}
		}
		src, sport := flowSrc(j)
		cases = append(cases, scaleCase{series: "flows", path: "conntrack hit", n: n, prog: o.Program,
			pkt: frame(clientMAC, directorMAC, src, vip, sport, 3306), wantMAC: &flowMAC})
	}
	if res, err = timeSeries(cases, opts, 0); err != nil {
		return nil, err
	}
	out = append(out, res...)
	for _, o := range objs {
		o.Close()
	}
	objs = nil

	// (d) live flows in conntrack, each packet a different one
	if res, err = flowsCold(coldN, opts); err != nil {
		return nil, fmt.Errorf("flows-cold: %w", err)
	}
	out = append(out, res...)

	if opts.Quick {
		return out, nil // the eviction check fills 1.3 million entries: full runs only
	}
	ev, err := evictionCheck()
	if err != nil {
		return nil, fmt.Errorf("eviction: %w", err)
	}
	return append(out, ev), nil
}

// timeSeries checks every case's verdict, then times them interleaved, and computes each row's
// ratio to the first row of the same series and path.
func timeSeries(cases []scaleCase, opts ScalingOptions, targetPct float64) ([]ScalingResult, error) {
	for _, c := range cases {
		// Twice: the first run of a conntrack-hit case inserts the flow, the second must hit it.
		for range 2 {
			outBuf := make([]byte, len(c.pkt)+64)
			got, err := c.prog.Run(&ebpf.RunOptions{Data: slices.Clone(c.pkt), DataOut: outBuf})
			if err != nil {
				return nil, fmt.Errorf("%s %d %s: test run: %w", c.series, c.n, c.path, err)
			}
			if got != xdpTX {
				return nil, fmt.Errorf("%s %d %s: verdict %s, want TX: the benchmark would time the wrong path",
					c.series, c.n, c.path, verdictNames[got])
			}
			if c.wantMAC != nil && [6]byte(outBuf[:6]) != *c.wantMAC {
				return nil, fmt.Errorf("%s %d %s: forwarded to %s, not the pre-filled flow's backend %s: not a conntrack hit",
					c.series, c.n, c.path, net.HardwareAddr(outBuf[:6]), net.HardwareAddr(c.wantMAC[:]))
			}
		}
	}
	samples := make([][]float64, len(cases))
	for range opts.Rounds {
		for i, c := range cases {
			ns, err := timeRun(c.prog, c.pkt, opts.Repeat)
			if err != nil {
				return nil, fmt.Errorf("%s %d %s: %w", c.series, c.n, c.path, err)
			}
			samples[i] = append(samples[i], ns)
		}
	}
	res := make([]ScalingResult, len(cases))
	first := map[string]float64{}
	for i, c := range cases {
		s := slices.Clone(samples[i])
		slices.Sort(s)
		r := ScalingResult{Series: c.series, Path: c.path, N: c.n, Median: s[len(s)/2], Min: s[0], Max: s[len(s)-1]}
		if _, ok := first[c.path]; !ok {
			first[c.path] = r.Median
		}
		r.Ratio = r.Median / first[c.path]
		if targetPct > 0 {
			r.TargetPct = targetPct
			ok := (r.Ratio-1)*100 <= targetPct && (1-r.Ratio)*100 <= targetPct
			r.OK = &ok
		}
		res[i] = r
	}
	// Group by path, then size, for reading.
	slices.SortStableFunc(res, func(a, b ScalingResult) int {
		if a.Path != b.Path {
			if a.Path == "conntrack hit" {
				return -1
			}
			return 1
		}
		return 0
	})
	return res, nil
}

// configureServices adds n TCP services through the control plane, each on its own VIP
// (10.1.x.y:3306), and returns a packet to the last one. Only that service gets a backend and so a
// Maglev ring: the others are never looked up past the services map by the timed packet and
// would need 256 KiB of ring each.
func configureServices(o *loader.Objects, n int) ([]byte, error) {
	m := control.NewMaps(o)
	var last control.ServiceKey
	for i := range n {
		last = control.ServiceKey{VIP: netip.AddrFrom4([4]byte{10, 1, byte((i + 1) >> 8), byte(i + 1)}), Port: 3306, Proto: control.TCP}
		if err := m.AddService(control.ServiceSpec{Key: last}); err != nil {
			return nil, err
		}
	}
	be := control.BackendSpec{Addr: netip.AddrFrom4([4]byte{10, 2, byte(n >> 8), byte(n)}), MAC: backendMAC[:], Weight: 1}
	if _, err := m.SetBackends(last, []control.BackendSpec{be}, nil); err != nil {
		return nil, err
	}
	return frame(clientMAC, directorMAC, client, last.VIP, 40000, 3306), nil
}

// configureBackends writes the service VIP:3306 with n backends through the control plane.
func configureBackends(o *loader.Objects, n int) error {
	m := control.NewMaps(o)
	key := control.ServiceKey{VIP: vip, Port: 3306, Proto: control.TCP}
	if err := m.AddService(control.ServiceSpec{Key: key}); err != nil {
		return err
	}
	specs := make([]control.BackendSpec, n)
	for j := range n {
		specs[j] = control.BackendSpec{Addr: netip.AddrFrom4([4]byte{10, 3, byte(j >> 8), byte(j)}), Weight: 1,
			MAC: net.HardwareAddr{0x02, 0, 0, 0x10, byte(j >> 8), byte(j)}}
	}
	_, err := m.SetBackends(key, specs, nil)
	return err
}

// flowMAC is the MAC of the draining backend of configure(), which pre-filled flows point at; the
// Maglev ring holds only the other backend, so a frame sent to flowMAC proves a conntrack hit.
var flowMAC = [6]byte{0x02, 0, 0, 0, 0, 0x0c}

// flowSrc is the client address and port of pre-filled flow i: 10.128.0.0 + i, port 40000.
func flowSrc(i int) (netip.Addr, uint16) {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], 0x0a800000+uint32(i))
	return netip.AddrFrom4(a), 40000
}

func flowKey(i int) loader.FlowKey {
	src, sport := flowSrc(i)
	return loader.FlowKey{Src: loader.Addr16(src), Dst: loader.Addr16(vip),
		Sport: wire16(sport), Dport: wire16(3306), Proto: loader.ProtoTCP}
}

// wire16 is the in-memory form of a port kept in network byte order.
func wire16(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}

// coldSport is the source port of the flows-cold frame; the wrapper changes only the address.
const coldSport = 40000

// coldSrc is the source address flowWrapperProg writes for flow n: tpFlowBase|n, as it computes it.
func coldSrc(n int) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], tpFlowBase|uint32(n))
	return netip.AddrFrom4(a)
}

// coldFlowKey is the conntrack key of the wrapper's flow n: coldSrc(n):coldSport to VIP:3306/TCP.
func coldFlowKey(n int) loader.FlowKey {
	return loader.FlowKey{Src: loader.Addr16(coldSrc(n)), Dst: loader.Addr16(vip),
		Sport: wire16(coldSport), Dport: wire16(3306), Proto: loader.ProtoTCP}
}

// coldWrapper is flowWrapperProg over n flows in front of prog, with its own counter and
// prog-array, so two wrappers can be timed in turn. Unlike program(), it wraps n = 1 too: the
// wrapper's cost must be in every row for the subtraction.
func coldWrapper(prog *ebpf.Program, n int) (*ebpf.Program, func(), error) {
	ctr, err := ebpf.NewMap(&ebpf.MapSpec{Name: "sc_flowctr", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return nil, nil, err
	}
	jump, err := ebpf.NewMap(&ebpf.MapSpec{Name: "sc_jump", Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		ctr.Close()
		return nil, nil, err
	}
	if err := jump.Put(uint32(0), prog); err != nil {
		jump.Close()
		ctr.Close()
		return nil, nil, fmt.Errorf("tail-call slot: %w", err)
	}
	w, err := flowWrapperProg(ctr, jump, n)
	if err != nil {
		jump.Close()
		ctr.Close()
		return nil, nil, fmt.Errorf("load the flow wrapper: %w", err)
	}
	return w, func() {
		w.Close()
		jump.Close()
		ctr.Close()
	}, nil
}

// flowsCold times a conntrack hit when every packet is a different flow, for each count of live
// flows in ns (ascending, at most the conntrack size): the one conntrack map is filled up to each
// count in turn with the wrapper's flows. Each row is wrapper+xdplb minus wrapper+swap-MAC,
// timed in the same interleaved rounds, so the wrapper's own cost cancels.
func flowsCold(ns []int, opts ScalingOptions) ([]ScalingResult, error) {
	if opts.Rounds < 1 || opts.Repeat < 100 {
		return nil, errors.New("rounds must be >= 1 and repeat >= 100")
	}
	base, err := baseline.Load()
	if err != nil {
		return nil, err
	}
	defer base.Close()
	o, err := loader.Load(loader.DefaultSizes(), 0)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	flowBE, err := configure(o)
	if err != nil {
		return nil, err
	}
	size := int(o.Conntrack.MaxEntries())
	pkt := frame(clientMAC, directorMAC, client, vip, coldSport, 3306)
	var out []ScalingResult
	filled := 0
	for _, n := range ns {
		if n < max(1, filled) || n > size {
			return nil, fmt.Errorf("flow counts %v: want ascending, 1..%d", ns, size)
		}
		if err := fillConntrackStep(o.Conntrack, filled, n, 0, flowBE, coldFlowKey, nil); err != nil {
			return nil, fmt.Errorf("fill conntrack with %d flows: %w", n, err)
		}
		filled = n
		r, err := flowsColdPoint(o, base.SwapMacTx, pkt, n, opts)
		if err != nil {
			return nil, fmt.Errorf("%d flows: %w", n, err)
		}
		out = append(out, r)
	}
	for i := range out {
		out[i].Ratio = out[i].Median / out[0].Median
	}
	return out, nil
}

// coldRefNs sizes the flows-cold calls: each program's long call lasts about as long as
// opts.Repeat runs of a coldRefNs program (about a cached conntrack hit). A call's wall time
// carries a fixed cost of some 15-25 ms here that moves in 4 ms steps (scheduler ticks), so the
// difference of two calls is good to a few ms only: calls of equal length keep that error the
// same small fraction of each program's cost, where equal runs left the 10 ns wrapper+swap-MAC
// within the noise. It also bounds the time of the costliest (many-flow) rows.
const coldRefNs = 50

// flowsColdPoint checks that the wrapped xdplb forwards each of the n flows as a conntrack hit,
// then times it and the wrapped swap-MAC program in turn.
func flowsColdPoint(o *loader.Objects, swap *ebpf.Program, pkt []byte, n int, opts ScalingOptions) (ScalingResult, error) {
	r := ScalingResult{Series: "flows-cold", Path: "conntrack hit", N: n}
	lb, closeLB, err := coldWrapper(o.Program, n)
	if err != nil {
		return r, err
	}
	defer closeLB()
	sw, closeSW, err := coldWrapper(swap, n)
	if err != nil {
		return r, err
	}
	defer closeSW()

	for _, c := range []struct {
		name string
		prog *ebpf.Program
		mac  *[6]byte
	}{{"wrapper + xdplb", lb, &flowMAC}, {"wrapper + swap-MAC", sw, nil}} {
		outBuf := make([]byte, len(pkt)+64)
		got, err := c.prog.Run(&ebpf.RunOptions{Data: slices.Clone(pkt), DataOut: outBuf})
		if err != nil {
			return r, fmt.Errorf("%s: test run: %w", c.name, err)
		}
		if got != xdpTX {
			return r, fmt.Errorf("%s: verdict %s, want TX: the benchmark would time the wrong path", c.name, verdictNames[got])
		}
		if c.mac != nil && [6]byte(outBuf[:6]) != *c.mac {
			return r, fmt.Errorf("%s: forwarded to %s, not the pre-filled flows' backend %s: not a conntrack hit",
				c.name, net.HardwareAddr(outBuf[:6]), net.HardwareAddr(c.mac[:]))
		}
	}
	// At least one pass over all n flows in one call, as the timed calls run: all hits, no
	// inserts. The kernel's time per run (whole ns) of this and of a call of the other program
	// sizes the timed calls.
	before, err := tpCounters(o)
	if err != nil {
		return r, err
	}
	pass := max(n, 100_000)
	got, lbPer, err := lb.Benchmark(slices.Clone(pkt), pass, nil)
	if err != nil {
		return r, err
	}
	if got != xdpTX {
		return r, fmt.Errorf("wrapper + xdplb, one pass over the flows: verdict %s, want TX", verdictNames[got])
	}
	after, err := tpCounters(o)
	if err != nil {
		return r, err
	}
	if err := allHits(before, after, uint64(pass)); err != nil {
		return r, fmt.Errorf("one pass over the flows: %w", err)
	}
	got, swPer, err := sw.Benchmark(slices.Clone(pkt), 100_000, nil)
	if err != nil {
		return r, err
	}
	if got != xdpTX {
		return r, fmt.Errorf("wrapper + swap-MAC: verdict %s, want TX", verdictNames[got])
	}
	sized := func(per time.Duration) int {
		return max(100, int(float64(opts.Repeat)*coldRefNs/float64(max(per, 1))))
	}
	r.Repeat, r.BaseRepeat = sized(lbPer), sized(swPer)

	var x, b, d []float64
	if before, err = tpCounters(o); err != nil {
		return r, err
	}
	for range opts.Rounds {
		xs, err := timeRun(lb, pkt, r.Repeat)
		if err != nil {
			return r, fmt.Errorf("wrapper + xdplb: %w", err)
		}
		bs, err := timeRun(sw, pkt, r.BaseRepeat)
		if err != nil {
			return r, fmt.Errorf("wrapper + swap-MAC: %w", err)
		}
		x, b, d = append(x, xs), append(b, bs), append(d, xs-bs)
	}
	if after, err = tpCounters(o); err != nil {
		return r, err
	}
	r.TimedRuns, r.CtHits, r.NewFlows = after.Packets-before.Packets, after.CtHit-before.CtHit, after.NewFlow-before.NewFlow
	// timeRun runs at least one call of repeat packets per round.
	if err := allHits(before, after, uint64(opts.Rounds*r.Repeat)); err != nil {
		return r, fmt.Errorf("timed calls: %w", err)
	}
	slices.Sort(x)
	slices.Sort(b)
	slices.Sort(d)
	r.XdplbNs, r.BaselineNs = x[len(x)/2], b[len(b)/2]
	r.Median, r.Min, r.Max = d[len(d)/2], d[0], d[len(d)-1]
	return r, nil
}

// allHits checks that xdplb counted at least least packets between two counter reads, every one
// of them a conntrack hit and none a new flow.
func allHits(before, after loader.Counters, least uint64) error {
	pk, hit, nf := after.Packets-before.Packets, after.CtHit-before.CtHit, after.NewFlow-before.NewFlow
	if pk < least || hit != pk || nf != 0 {
		return fmt.Errorf("%d packets (want at least %d), %d conntrack hits, %d new flows: want every packet a hit of a pre-filled flow",
			pk, least, hit, nf)
	}
	return nil
}

// fillConntrack inserts flows [from, to) with BatchUpdate. Chunks are inserted from each CPU in
// turn, as traffic spread over NIC queues would: the map has one common LRU list, but each CPU
// keeps a small cache of free entries, which is where spreading shows.
func fillConntrack(m *ebpf.Map, from, to int, backend uint32) error {
	return fillConntrackStep(m, from, to, 0, backend, flowKey, nil)
}

// fillConntrackStep inserts key(i) for i in [from, to) and calls after(inserted so far) every
// step flows when step > 0.
func fillConntrackStep(m *ebpf.Map, from, to, step int, backend uint32, key func(int) loader.FlowKey, after func(int) error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return err
	}
	defer unix.SchedSetaffinity(0, &all)
	var cpus []int
	for c := range 1024 {
		if all.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	const chunk = 4096
	keys := make([]loader.FlowKey, 0, chunk)
	vals := make([]loader.Flow, 0, chunk)
	for i, k := from, 0; i < to; k++ {
		var one unix.CPUSet
		one.Set(cpus[k%len(cpus)])
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			return err
		}
		end := min(to, i+chunk)
		if step > 0 {
			end = min(end, (i/step+1)*step)
		}
		keys, vals = keys[:0], vals[:0]
		for ; i < end; i++ {
			keys = append(keys, key(i))
			vals = append(vals, loader.Flow{Backend: backend})
		}
		if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
			return err
		}
		if step > 0 && i%step == 0 && after != nil {
			if err := after(i); err != nil {
				return err
			}
		}
	}
	return nil
}

// countGone counts the flows in [from, to) no longer in the map. Lookups from user space do not
// set the LRU reference bit, so counting does not change what is evicted next.
func countGone(m *ebpf.Map, from, to int) (int, error) {
	gone := 0
	var f loader.Flow
	for i := from; i < to; i++ {
		if err := m.Lookup(flowKey(i), &f); errors.Is(err, ebpf.ErrKeyNotExist) {
			gone++
		} else if err != nil {
			return 0, err
		}
	}
	return gone, nil
}

// evictionCheck fills a fresh conntrack map to 125% of its size, checking after every 4,096
// inserts whether the oldest flows of each CPU's list are still there, and counts how many of the
// first size flows are gone when the map is exactly full and at the end.
func evictionCheck() (ScalingResult, error) {
	s := loader.DefaultSizes()
	o, err := loader.Load(s, 0)
	if err != nil {
		return ScalingResult{}, err
	}
	defer o.Close()
	size := int(s.Conntrack)
	r := ScalingResult{Series: "eviction", Path: "conntrack insert", N: size, Size: size, Inserted: size + size/4}
	const step = 4096
	ncpu := runtime.NumCPU()
	err = fillConntrackStep(o.Conntrack, 0, r.Inserted, step, 1, flowKey, func(done int) error {
		if r.FirstEvictedAt == 0 {
			// The oldest 64 flows of the first chunk of every CPU (chunk c of 4,096 went to CPU c).
			for c := 0; c < ncpu && c*step < done; c++ {
				g, err := countGone(o.Conntrack, c*step, c*step+64)
				if err != nil {
					return err
				}
				if g > 0 {
					r.FirstEvictedAt = done
					break
				}
			}
		}
		if done == size {
			g, err := countGone(o.Conntrack, 0, size)
			if err != nil {
				return err
			}
			r.GoneAtSize = g
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	if r.GoneAtEnd, err = countGone(o.Conntrack, 0, size); err != nil {
		return r, err
	}
	return r, nil
}

// PrintScaling writes the scaling results as tables.
func PrintScaling(w io.Writer, res []ScalingResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "series\tpath\tN\tns/pkt\tmin\tmax\tx first row\ttarget\t")
	var ev *ScalingResult
	var cold []ScalingResult
	for i, r := range res {
		if r.Series == "eviction" {
			ev = &res[i]
			continue
		}
		if r.Series == "flows-cold" {
			cold = append(cold, r)
			continue
		}
		target := "-"
		if r.OK != nil {
			mark := "ok"
			if !*r.OK {
				mark = "MISSED"
			}
			target = fmt.Sprintf("%+.1f%% (within %g%%) %s", (r.Ratio-1)*100, r.TargetPct, mark)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%.2f\t%s\t\n",
			r.Series, r.Path, r.N, r.Median, r.Min, r.Max, r.Ratio, target)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(cold) > 0 {
		fmt.Fprintf(w, "\nconntrack hit, each packet a different one of N live flows (wrapper: source %s+n, n cycling, tail call); "+
			"xdplb = (wrapper+xdplb) - (wrapper+swap-MAC); no target, where the cost grows:\n", coldSrc(0))
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "N\twrapper+xdplb\twrapper+swap-MAC\txdplb ns/pkt\tmin\tmax\tx first row\truns/call\tct hits/packets\t")
		for _, r := range cold {
			fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%d\t%d/%d\t\n",
				r.N, r.XdplbNs, r.BaselineNs, r.Median, r.Min, r.Max, r.Ratio, r.Repeat, r.CtHits, r.TimedRuns)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if ev != nil {
		first := "none seen"
		if ev.FirstEvictedAt > 0 {
			first = fmt.Sprintf("after %d inserts (%.1f%% of the size; checked every 4,096)",
				ev.FirstEvictedAt, 100*float64(ev.FirstEvictedAt)/float64(ev.Size))
		}
		_, err := fmt.Fprintf(w, "conntrack LRU (size %d, one common list, inserts spread over %d CPUs): first eviction %s;\n"+
			"of the first %d flows, %d gone when %d were inserted, %d gone after %d inserts (%d beyond the size)\n",
			ev.Size, runtime.NumCPU(), first, ev.Size, ev.GoneAtSize, ev.Size, ev.GoneAtEnd, ev.Inserted, ev.Inserted-ev.Size)
		return err
	}
	return nil
}
