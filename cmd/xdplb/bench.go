package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/bench"
)

// benchRun holds one invocation's settings and results while the sections run.
type benchRun struct {
	e       *env
	c       *cli.Context
	quick   bool
	jsonOut bool
	bin     string // xdplb binary for the failover and vrrp-load daemons
	out     map[string]any
	printed bool
	took    []sectionTime
}

type sectionTime struct {
	Section string  `json:"section"`
	Seconds float64 `json:"seconds"`
}

func (e *env) benchCmd() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure xdplb beside baselines and the kernel's own balancing, in one run (needs root)",
		Description: "Sections, in order: dataplane (BPF_PROG_TEST_RUN per path, ratio to a minimal swap-MAC XDP_TX\n" +
			"program, and where the time goes), control-plane (Maglev build + apply, health-check CPU), scaling\n" +
			"(services, backends, flows), failover (VRRP against keepalived), vrrp-load (no flap under load),\n" +
			"throughput (live frames: swap-MAC vs xdplb vs nftables), sysbench (MySQL through the VIP vs direct).\n" +
			"Everything runs in network namespaces it creates and removes, except --iface, which sends the\n" +
			"throughput section's frames out of a real interface. See bench/README.md.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "quick", Usage: "fewer rounds, shorter runs, no failover or vrrp-load unless named (under a minute): a smoke test, not figures to publish"},
			&cli.StringFlag{Name: "only", Usage: "run these sections only, comma-separated: " + strings.Join(benchSectionNames(), ", ")},
			&cli.IntFlag{Name: "rounds", Usage: "interleaved rounds per data-path and scaling case (median reported)"},
			&cli.IntFlag{Name: "repeat", Usage: "runs per round of a data-path and scaling case"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of tables"},
			&cli.BoolFlag{Name: "dataplane", Value: true, Usage: "per-packet cost of every path (--dataplane=false: skip)"},
			&cli.BoolFlag{Name: "control-plane", Value: true, Usage: "Maglev build + apply and health-check CPU (--control-plane=false: skip)"},
			&cli.BoolFlag{Name: "scaling", Value: true, Usage: "per-packet cost as services, backends and conntrack flows grow (--scaling=false: skip)"},
			&cli.BoolFlag{Name: "failover", Value: true, Usage: "VRRP failover time against keepalived in network namespaces (--failover=false: skip)"},
			&cli.IntFlag{Name: "failover-rounds", Usage: "failovers per router and interval (default 3, --quick 1)"},
			&cli.StringFlag{Name: "keepalived", Value: "/usr/sbin/keepalived", Usage: "keepalived binary for the failover comparison ('' skips it)"},
			&cli.StringFlag{Name: "xdplb", Usage: "xdplb binary run as the daemon in the failover and vrrp-load sections (default: this executable)"},
			&cli.BoolFlag{Name: "vrrp-load", Value: true, Usage: "VRRP at 30 ms adverts must not flap while live frames load the Master (--vrrp-load=false: skip)"},
			&cli.DurationFlag{Name: "vrrp-load-duration", Usage: "how long the vrrp-load section loads the Master (default 1m, --quick 20s; 5m is the soak test)"},
			&cli.IntFlag{Name: "vrrp-load-threads", Usage: "live-frame generator threads of the vrrp-load section (default 2)"},
			&cli.BoolFlag{Name: "throughput", Value: true, Usage: "live-frame throughput: swap-MAC XDP_TX vs xdplb vs nftables netdev fwd (--throughput=false: skip)"},
			&cli.DurationFlag{Name: "throughput-duration", Usage: "measured time per throughput case (default 3s, --quick 1s)"},
			&cli.StringFlag{Name: "iface", Usage: "run the throughput section on this existing interface instead of a veth pair: frames are really sent out of it (needs --iface-dst)"},
			&cli.StringFlag{Name: "iface-dst", Usage: "with --iface: destination MAC of the frames sent, a host that may receive and drop them"},
			&cli.BoolFlag{Name: "sysbench", Value: true, Usage: "sysbench oltp_read_only through the VIP vs straight to a MariaDB real server (--sysbench=false: skip)"},
			&cli.DurationFlag{Name: "sysbench-duration", Usage: "length of each sysbench run"},
			&cli.StringFlag{Name: "out", Usage: "write the results to `FILE` (never overwritten), or to FILE/<date>.json when FILE is a directory or ends in / (default: xdplb-bench-<date>.json in the current directory)"},
			&cli.StringFlag{Name: "results-dir", Usage: "same as --out `DIR`/ (kept for scripts)"},
			&cli.BoolFlag{Name: "no-results", Usage: "do not write the results file"},
		},
		Action: func(c *cli.Context) error {
			if _, err := positional(c); err != nil {
				return err
			}
			run, todo, err := e.newBenchRun(c)
			if err != nil {
				return err
			}
			start := time.Now()
			for _, s := range todo {
				t0 := time.Now()
				if err := run.section(s); err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
				run.took = append(run.took, sectionTime{s.name, time.Since(t0).Seconds()})
			}
			run.out["elapsed"] = map[string]any{"total_seconds": time.Since(start).Seconds(), "sections": run.took}
			if run.jsonOut {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(run.out); err != nil {
					return err
				}
			} else {
				parts := make([]string, len(run.took))
				for i, t := range run.took {
					parts[i] = fmt.Sprintf("%s %s", t.Section, time.Duration(t.Seconds*float64(time.Second)).Round(time.Second))
				}
				fmt.Fprintf(e.stdout, "\nbench took %s: %s\n", time.Since(start).Round(time.Second), strings.Join(parts, ", "))
			}
			return e.writeBenchResults(c, run.out)
		},
	}
}

// newBenchRun checks the flags and returns the sections to run.
func (e *env) newBenchRun(c *cli.Context) (*benchRun, []benchSection, error) {
	if n := c.Int("rounds"); c.IsSet("rounds") && n < 1 {
		return nil, nil, usagef("--rounds must be >= 1")
	}
	if n := c.Int("repeat"); c.IsSet("repeat") && n < 100 {
		return nil, nil, usagef("--repeat must be >= 100")
	}
	for _, f := range []string{"vrrp-load-duration", "throughput-duration", "sysbench-duration"} {
		if c.IsSet(f) && c.Duration(f) <= 0 {
			return nil, nil, usagef("--%s must be positive", f)
		}
	}
	if c.IsSet("failover-rounds") && c.Int("failover-rounds") < 1 {
		return nil, nil, usagef("--failover-rounds must be >= 1")
	}
	if c.IsSet("vrrp-load-threads") && c.Int("vrrp-load-threads") < 1 {
		return nil, nil, usagef("--vrrp-load-threads must be >= 1")
	}
	if c.String("out") != "" && c.String("results-dir") != "" {
		return nil, nil, usagef("--out and --results-dir say the same thing: give one")
	}
	if out := c.String("out"); out != "" && !strings.HasSuffix(out, "/") {
		if fi, err := os.Stat(out); err == nil && !fi.IsDir() {
			return nil, nil, usagef("--out %s exists: results are never overwritten (choose another file, or a directory)", out)
		}
	}
	var todo []benchSection
	if only := c.String("only"); only != "" {
		names := strings.Split(only, ",")
		for i := range names {
			names[i] = strings.TrimSpace(names[i])
			if !slices.Contains(benchSectionNames(), names[i]) {
				return nil, nil, usagef("--only: unknown section %q; want one or more of %s", names[i], strings.Join(benchSectionNames(), ", "))
			}
		}
		// Run in the usual order whatever order they were given in.
		for _, s := range benchSections {
			if slices.Contains(names, s.name) {
				todo = append(todo, s)
			}
		}
	} else {
		for _, s := range benchSections {
			// --quick stays under a minute: the two VRRP sections take minutes, so they run
			// only when asked for.
			if c.Bool(s.name) && (!c.Bool("quick") || !s.slow || c.IsSet(s.name)) {
				todo = append(todo, s)
			}
		}
	}
	if len(todo) == 0 {
		return nil, nil, usagef("no section left to run")
	}
	if c.IsSet("iface-dst") && !c.IsSet("iface") {
		return nil, nil, usagef("--iface-dst needs --iface")
	}
	if c.IsSet("iface") {
		if !slices.ContainsFunc(todo, func(s benchSection) bool { return s.name == "throughput" }) {
			return nil, nil, usagef("--iface is used by the throughput section, which is not run")
		}
		if c.String("iface-dst") == "" {
			return nil, nil, usagef("--iface sends frames out of %s: give --iface-dst MAC, a host that may receive and drop them", c.String("iface"))
		}
		if _, err := net.ParseMAC(c.String("iface-dst")); err != nil {
			return nil, nil, usagef("bad --iface-dst %q: want a MAC, six hex bytes like 02:00:00:00:00:0b", c.String("iface-dst"))
		}
	}
	if os.Geteuid() != 0 {
		return nil, nil, fmt.Errorf("xdplb bench needs root (BPF_PROG_TEST_RUN, network namespaces): run it with sudo")
	}
	var names []string
	daemons := false // the failover and vrrp-load sections run xdplb as a daemon
	for _, s := range todo {
		names = append(names, s.name)
		daemons = daemons || s.name == "failover" || s.name == "vrrp-load"
	}
	run := &benchRun{e: e, c: c, quick: c.Bool("quick"), jsonOut: c.Bool("json"),
		out: map[string]any{"cpus": runtime.NumCPU(), "sections_run": names}}
	if daemons {
		run.bin = c.String("xdplb")
		if run.bin == "" {
			exe, err := os.Executable()
			if err != nil {
				return nil, nil, fmt.Errorf("find this executable: %w (use --xdplb PATH)", err)
			}
			run.bin = exe
		}
	}
	return run, todo, nil
}

// progress is where sections narrate while they run: stderr, unless the output is JSON.
func (r *benchRun) progress() io.Writer {
	if r.jsonOut {
		return nil
	}
	return r.e.stderr
}

// heading prints a section's title, with a blank line before all but the first.
func (r *benchRun) heading(format string, args ...any) {
	if r.printed {
		fmt.Fprintln(r.e.stdout)
	}
	r.printed = true
	fmt.Fprintf(r.e.stdout, format, args...)
}

// benchSection is one section of `xdplb bench`: run measures and returns what it found.
type benchSection struct {
	name string
	slow bool // takes minutes: --quick runs it only when it is named
	run  func(r *benchRun) (benchOutput, error)
}

// benchOutput is what a section measured: its entries in the JSON output and results file, the
// heading of its table and the table.
type benchOutput struct {
	results map[string]any
	heading string
	print   func(io.Writer) error
}

// section runs one section, keeps its results and prints its table (unless --json).
func (r *benchRun) section(s benchSection) error {
	o, err := s.run(r)
	if err != nil {
		return err
	}
	maps.Copy(r.out, o.results)
	if r.jsonOut {
		return nil
	}
	r.heading("%s", o.heading)
	return o.print(r.e.stdout)
}

// roundsRepeat applies --rounds and --repeat.
func (r *benchRun) roundsRepeat(rounds, repeat *int) {
	if r.c.IsSet("rounds") {
		*rounds = r.c.Int("rounds")
	}
	if r.c.IsSet("repeat") {
		*repeat = r.c.Int("repeat")
	}
}

// benchSections in the order they run. Each has a --NAME=false flag to skip it, and --only
// picks a subset.
var benchSections = []benchSection{
	{name: "dataplane", run: func(r *benchRun) (benchOutput, error) {
		opts := bench.DefaultOptions()
		if r.quick {
			opts = bench.QuickOptions()
		}
		r.roundsRepeat(&opts.Rounds, &opts.Repeat)
		res, err := bench.DataPlane(opts)
		return benchOutput{
			results: map[string]any{"dataplane_options": opts, "dataplane": res},
			heading: fmt.Sprintf("data path, BPF_PROG_TEST_RUN, %d rounds x at least %d runs (more for fast paths: 40 ms of program time at least), median per path:\n", opts.Rounds, opts.Repeat),
			print:   func(w io.Writer) error { return bench.Print(w, res) },
		}, err
	}},
	{name: "control-plane", run: func(r *benchRun) (benchOutput, error) {
		rounds, healthFor := 5, 10*time.Second
		if r.quick {
			rounds, healthFor = 1, 2*time.Second
		}
		mg, err := bench.Maglev(rounds)
		if err != nil {
			return benchOutput{}, err
		}
		hc, err := bench.HealthCPU(1000, healthFor)
		if err != nil {
			return benchOutput{}, fmt.Errorf("health checks: %w", err)
		}
		return benchOutput{
			results: map[string]any{"maglev": mg, "health_checks": hc},
			heading: fmt.Sprintf("control plane (median of %d rounds, ring size 65537):\n", rounds),
			print:   func(w io.Writer) error { return bench.PrintControlPlane(w, mg, hc) },
		}, nil
	}},
	{name: "scaling", run: func(r *benchRun) (benchOutput, error) {
		opts := bench.DefaultScalingOptions()
		if r.quick {
			opts = bench.QuickScalingOptions()
		}
		r.roundsRepeat(&opts.Rounds, &opts.Repeat)
		sc, err := bench.Scaling(opts)
		return benchOutput{
			results: map[string]any{"scaling": sc},
			heading: "scaling, BPF_PROG_TEST_RUN, median per row; target: services and backends rows within 10% of the first row:\n",
			print:   func(w io.Writer) error { return bench.PrintScaling(w, sc) },
		}, err
	}},
	{name: "failover", slow: true, run: func(r *benchRun) (benchOutput, error) {
		opts := bench.DefaultFailoverOptions(r.bin)
		if r.quick {
			opts = bench.QuickFailoverOptions(r.bin)
		}
		opts.Keepalived = r.c.String("keepalived")
		if r.c.IsSet("failover-rounds") {
			opts.Rounds = r.c.Int("failover-rounds")
		}
		opts.Progress = r.progress()
		fo, err := bench.Failover(opts)
		return benchOutput{
			results: map[string]any{"failover": fo},
			heading: fmt.Sprintf("failover: Master A (priority 150) link down + kill -9 -> first answer from B (priority 100) through the VIP,\n"+
				"client probes every %v; the kill falls at a random phase of A's advert period, so 'from last advert' (A's last advert\n"+
				"-> first answer) is the phase-free figure: target 3 x interval + Skew_Time(100) + 20 ms on the max of both; VRRPv2 at 1s, v3 below:\n", opts.ProbeEvery),
			print: func(w io.Writer) error { return bench.PrintFailover(w, fo) },
		}, err
	}},
	{name: "vrrp-load", slow: true, run: func(r *benchRun) (benchOutput, error) {
		opts := bench.DefaultVRRPLoadOptions(r.bin)
		if r.quick {
			opts = bench.QuickVRRPLoadOptions(r.bin)
		}
		if r.c.IsSet("vrrp-load-duration") {
			opts.Duration = r.c.Duration("vrrp-load-duration")
		}
		if r.c.IsSet("vrrp-load-threads") {
			opts.Generators = r.c.Int("vrrp-load-threads")
		}
		opts.Progress = r.progress()
		vl, err := bench.VRRPUnderLoad(opts)
		if err != nil {
			return benchOutput{}, err
		}
		return benchOutput{
			results: map[string]any{"vrrp_under_load": vl},
			heading: fmt.Sprintf("VRRP under load: A (priority 150, Master) and B (100), VRRPv3 at %v; live frames (XDP_TX on A's bridge-side\n"+
				"veth peer) to VIP:%d straight into A's XDP program, balanced to B and XDP_TX'd; both states sampled every interval:\n",
				time.Duration(vl.IntervalMs*float64(time.Millisecond)), 3306),
			print: func(w io.Writer) error { return bench.PrintVRRPLoad(w, vl) },
		}, nil
	}},
	{name: "throughput", run: func(r *benchRun) (benchOutput, error) {
		opts := bench.DefaultThroughputOptions()
		if r.quick {
			opts = bench.QuickThroughputOptions()
		}
		if r.c.IsSet("throughput-duration") {
			opts.Duration = r.c.Duration("throughput-duration")
		}
		if r.c.IsSet("iface") {
			opts.Iface = r.c.String("iface")
			opts.IfaceDst, _ = net.ParseMAC(r.c.String("iface-dst")) // checked in newBenchRun
		}
		opts.Progress = r.progress()
		tp, err := bench.Throughput(opts)
		if err != nil {
			return benchOutput{}, err
		}
		return benchOutput{
			results: map[string]any{"throughput": tp},
			heading: fmt.Sprintf("throughput on %s, live frames, %g s per case: (a) minimal XDP_TX program, (b) xdplb, (c) nftables netdev ingress\n"+
				"ether daddr map + fwd; (a) and (b) interleaved in 0.5 s slices; target (b) >= 0.9x (a) and >= 4x (c):\n", tp.Where, tp.DurationS),
			print: func(w io.Writer) error { return bench.PrintThroughput(w, tp) },
		}, nil
	}},
	{name: "sysbench", run: func(r *benchRun) (benchOutput, error) {
		opts := bench.DefaultSysbenchOptions()
		if r.quick {
			opts = bench.QuickSysbenchOptions()
		}
		if r.c.IsSet("sysbench-duration") {
			opts.Duration = r.c.Duration("sysbench-duration")
		}
		opts.Progress = r.progress()
		sb, err := bench.Sysbench(opts)
		return benchOutput{
			results: map[string]any{"sysbench": sb},
			heading: fmt.Sprintf("sysbench oltp_read_only, %d threads, a MariaDB real server straight (direct) and through the VIP with xdplb\n"+
				"attached natively (vip-native) and in generic mode (vip-generic), runs rotated; target: each VIP path >= 0.97x direct tps:\n", opts.Threads),
			print: func(w io.Writer) error { return bench.PrintSysbench(w, sb) },
		}, err
	}},
}

// benchSectionNames are the sections' names, in order.
func benchSectionNames() []string {
	names := make([]string, len(benchSections))
	for i, s := range benchSections {
		names[i] = s.name
	}
	return names
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// writeBenchResults writes every section's results where --out (or --results-dir) says, by
// default to ./xdplb-bench-<date>.json, unless --no-results, and prints the file's path (to
// stderr with --json, so stdout stays JSON).
func (e *env) writeBenchResults(c *cli.Context, out map[string]any) error {
	if c.Bool("no-results") {
		return nil
	}
	res := bench.Results{Version: version, Quick: c.Bool("quick"), Only: c.String("only"), Sections: out}
	var (
		path string
		err  error
	)
	switch dest := c.String("out"); {
	case c.String("results-dir") != "":
		path, err = bench.WriteResults(c.String("results-dir"), "", res)
	case dest == "":
		path, err = bench.WriteResults(".", "xdplb-bench-", res)
	case strings.HasSuffix(dest, "/") || isDir(dest):
		path, err = bench.WriteResults(dest, "", res)
	default:
		path, err = dest, bench.WriteResultsFile(dest, res)
	}
	if err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	w := e.stdout
	if c.Bool("json") {
		w = e.stderr
	}
	fmt.Fprintf(w, "\nresults written to %s\n", path)
	return nil
}
