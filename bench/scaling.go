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

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/control"
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
	return ScalingOptions{Rounds: 3, Repeat: 1_000_000, Quick: true}
}

// ScalingTargetPct is how far from the first row a services or backends row may be.
const ScalingTargetPct = 10

// ScalingResult is one point of a series, or (Series "eviction") the conntrack LRU eviction check.
type ScalingResult struct {
	Series string  `json:"series"` // services, backends, flows, eviction
	Path   string  `json:"path"`   // conntrack hit, new flow
	N      int     `json:"n"`      // services, backends in the service, or live flows in conntrack
	Median float64 `json:"ns_per_packet,omitempty"`
	Min    float64 `json:"ns_min,omitempty"`
	Max    float64 `json:"ns_max,omitempty"`
	Ratio  float64 `json:"ratio_to_first,omitempty"` // Median / the first row's median of the same series and path
	// TargetPct: the row must be within this many % of the first row (0: no target).
	TargetPct float64 `json:"target_pct,omitempty"`
	OK        *bool   `json:"target_ok,omitempty"`

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
	if opts.Quick {
		svcN, beN, flowN = []int{1, 1000}, []int{1, 10000}, []int{1, 100_000}
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
		if err := configure(o); err != nil {
			return nil, err
		}
		if err := o.Backends.Put(uint32(2), flowBackend()); err != nil {
			return nil, err
		}
		if err := fillConntrack(o.Conntrack, 0, n); err != nil {
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

// configureServices writes n TCP services, each on its own VIP (10.1.x.y:3306) with its own
// backend, and returns a packet to the last one. Only that service gets a Maglev ring: the others
// are never looked up by the timed packet and would need 256 KiB of ring each.
func configureServices(o *loader.Objects, n int) ([]byte, error) {
	var last netip.Addr
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, 1, byte((i + 1) >> 8), byte(i + 1)})
		last = a
		k := loader.Addr16(a)
		if err := o.VIPs.Put(k, loader.VIP{Services: 1}); err != nil {
			return nil, err
		}
		sk := loader.ServiceKey{Addr: k, Port: 3306, Proto: loader.ProtoTCP}
		if err := o.Services.Put(sk, loader.Service{Id: uint32(i)}); err != nil {
			return nil, err
		}
		be := loader.Backend{Addr: loader.Addr16(netip.AddrFrom4([4]byte{10, 2, byte((i + 1) >> 8), byte(i + 1)})),
			Mac: backendMAC, Flags: loader.BackendUsed, Service: uint32(i), Weight: 1}
		if err := o.Backends.Put(uint32(i+1), be); err != nil {
			return nil, err
		}
	}
	ring, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: o.Layout.RingSize})
	if err != nil {
		return nil, err
	}
	defer ring.Close()
	keys := make([]uint32, o.Layout.RingSize)
	vals := make([]uint32, o.Layout.RingSize)
	for i := range keys {
		keys[i], vals[i] = uint32(i), uint32(n)
	}
	if _, err := ring.BatchUpdate(keys, vals, nil); err != nil {
		return nil, fmt.Errorf("fill ring: %w", err)
	}
	if err := o.Maglev.Put(uint32(2*(n-1)), ring); err != nil {
		return nil, err
	}
	return frame(clientMAC, directorMAC, client, last, 40000, 3306), nil
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

// flowMAC is the MAC of backend 2, which pre-filled flows point at; the Maglev ring of
// configure() only holds backend 1, so a frame sent to flowMAC proves a conntrack hit.
var flowMAC = [6]byte{0x02, 0, 0, 0, 0, 0x0c}

func flowBackend() loader.Backend {
	return loader.Backend{Addr: loader.Addr16(netip.MustParseAddr("10.0.0.12")), Mac: flowMAC,
		Flags: loader.BackendUsed, Service: 0, Weight: 1}
}

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

// fillConntrack inserts flows [from, to) with BatchUpdate. Chunks are inserted from each CPU in
// turn, as traffic spread over NIC queues would: the map has one common LRU list, but each CPU
// keeps a small cache of free entries, which is where spreading shows.
func fillConntrack(m *ebpf.Map, from, to int) error {
	return fillConntrackStep(m, from, to, 0, nil)
}

// fillConntrackStep calls after(inserted so far) every step flows when step > 0.
func fillConntrackStep(m *ebpf.Map, from, to, step int, after func(int) error) error {
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
			keys = append(keys, flowKey(i))
			vals = append(vals, loader.Flow{Backend: 2})
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
	err = fillConntrackStep(o.Conntrack, 0, r.Inserted, step, func(done int) error {
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
	for i, r := range res {
		if r.Series == "eviction" {
			ev = &res[i]
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
