package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/health"
	"github.com/xdplb/xdplb/control/maglev"
	"github.com/xdplb/xdplb/loader"
)

// MaglevResult is one control-plane size: ring build alone, and build + write into the maps.
type MaglevResult struct {
	Backends int     `json:"backends"`
	BuildMs  float64 `json:"build_ms"`
	ApplyMs  float64 `json:"apply_ms"`          // SetBackends, idle ring rewritten in place (the daemon's steady state)
	NewMs    float64 `json:"apply_new_ring_ms"` // SetBackends installing a new ring map (bursts, the CLI): adds an RCU wait
	TargetMs float64 `json:"target_ms,omitempty"`
}

// Maglev times ring builds and map applies for 10, 1,000 and 10,000 real servers.
func Maglev(rounds int) ([]MaglevResult, error) {
	sizes := loader.DefaultSizes()
	sizes.Backends = 1 << 15
	o, err := loader.Load(sizes, 0)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	m := control.NewMaps(o)
	var out []MaglevResult
	for i, n := range []int{10, 1000, 10000} {
		key := control.ServiceKey{VIP: netip.AddrFrom4([4]byte{10, 0, 0, byte(100 + i)}), Port: 3306, Proto: control.TCP}
		if err := m.AddService(control.ServiceSpec{Key: key}); err != nil {
			return nil, err
		}
		ids := make([]maglev.Backend, n)
		specs := make([]control.BackendSpec, n)
		for j := range n {
			a := netip.AddrFrom4([4]byte{10, byte(1 + j>>16), byte(j >> 8), byte(j)})
			ids[j] = maglev.Backend{ID: uint32(j + 1), Key: a.String(), Weight: 1}
			specs[j] = control.BackendSpec{Addr: a, Weight: 1,
				MAC: net.HardwareAddr{0x02, 0, 0, byte(j >> 16), byte(j >> 8), byte(j)}}
		}
		r := MaglevResult{Backends: n}
		if n == 1000 {
			r.TargetMs = 20
		}
		var build, apply, fresh []float64
		for round := range 2 * rounds {
			start := time.Now()
			if _, err := maglev.Build(ids, sizes.RingSize); err != nil {
				return nil, err
			}
			build = append(build, ms(time.Since(start)))
			// Alternate weights so every round really rewrites the ring.
			for j := range specs {
				specs[j].Weight = uint32(1 + round%2)
			}
			// Even rounds: a Maps with no history installs a new ring map. Odd rounds: the
			// daemon's case, the idle ring left alone long enough to be rewritten in place.
			mm := control.NewMaps(o)
			if round%2 == 1 {
				mm = m
				time.Sleep(1100 * time.Millisecond)
			}
			start = time.Now()
			changed, err := mm.SetBackends(key, specs, nil)
			if err != nil {
				return nil, fmt.Errorf("apply %d backends: %w", n, err)
			}
			if !changed {
				return nil, fmt.Errorf("apply %d backends changed nothing: the benchmark would time a no-op", n)
			}
			if round%2 == 1 {
				apply = append(apply, ms(time.Since(start)))
			} else {
				fresh = append(fresh, ms(time.Since(start)))
			}
		}
		r.BuildMs, r.ApplyMs, r.NewMs = median(build), median(apply), median(fresh)
		out = append(out, r)
		if err := m.DeleteService(key); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// HealthResult is the CPU cost of TCP health checks.
type HealthResult struct {
	Targets      int     `json:"targets"`
	Interval     string  `json:"interval"`
	Seconds      float64 `json:"seconds"`
	Checks       uint64  `json:"checks"`
	CPUPercent   float64 `json:"cpu_percent_of_one_core"`
	TargetPct    float64 `json:"target_percent"`
	ChecksPerSec float64 `json:"checks_per_second"`
}

// HealthCPU runs TCP checks against n loopback listeners at a 1 s interval for d and reports the
// CPU this process used (user + system) as a share of one core. The listeners never accept: the
// kernel completes each handshake, so the figure is the checker's cost, not a server's.
func HealthCPU(n int, d time.Duration) (HealthResult, error) {
	res := HealthResult{Targets: n, Interval: "1s", TargetPct: 5}
	var specs []health.Spec
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return res, fmt.Errorf("listener %d: %w (raise `ulimit -n`?)", i, err)
		}
		defer ln.Close()
		ap := netip.MustParseAddrPort(ln.Addr().String())
		specs = append(specs, health.Spec{
			Target:   health.Target{Service: "bench", Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})},
			Prober:   health.NewTCP(ap),
			Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3,
		})
	}
	mon := health.NewMonitor(slog.New(slog.DiscardHandler), health.RealClock{})
	defer mon.Close()
	mon.Set(specs)
	go func() { // the daemon drains events; so does the benchmark
		for range mon.Events() {
		}
	}()
	// Let every target pass its random start offset before measuring.
	time.Sleep(1100 * time.Millisecond)
	checks0 := totalChecks(mon)
	cpu0, err := cpuTime()
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	<-ctx.Done()
	wall := time.Since(start)
	cpu1, err := cpuTime()
	if err != nil {
		return res, err
	}
	res.Checks = totalChecks(mon) - checks0
	res.Seconds = wall.Seconds()
	res.CPUPercent = 100 * (cpu1 - cpu0).Seconds() / wall.Seconds()
	res.ChecksPerSec = float64(res.Checks) / wall.Seconds()
	if res.ChecksPerSec < 0.9*float64(n) {
		return res, fmt.Errorf("only %.0f checks/s of %d expected: the figure would flatter the checker", res.ChecksPerSec, n)
	}
	return res, nil
}

func totalChecks(m *health.Monitor) (n uint64) {
	for _, s := range m.Status() {
		n += s.Checks
	}
	return n
}

func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// PrintControlPlane writes the control-plane results as tables.
func PrintControlPlane(w io.Writer, mg []MaglevResult, h HealthResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "real servers\tMaglev build ms\tbuild + apply ms\ttarget\tapply with a new ring map ms\t")
	for _, r := range mg {
		target := "-"
		if r.TargetMs > 0 {
			target = fmt.Sprintf("< %.0f ms %s", r.TargetMs, okMissed(r.ApplyMs < r.TargetMs))
		}
		fmt.Fprintf(tw, "%d\t%.2f\t%.2f\t%s\t%.2f\t\n", r.Backends, r.BuildMs, r.ApplyMs, target, r.NewMs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nhealth checks: %d TCP targets every %s for %.1f s: %.0f checks/s, %.2f%% of one core (target < %.0f%% %s)\n",
		h.Targets, h.Interval, h.Seconds, h.ChecksPerSec, h.CPUPercent, h.TargetPct, okMissed(h.CPUPercent < h.TargetPct))
	return nil
}

func okMissed(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}
