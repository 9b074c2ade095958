package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/bench"
)

func (e *env) benchCmd() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "time every data-path branch against baseline XDP programs, in one run (needs root)",
		Description: "Runs the program through BPF_PROG_TEST_RUN on one core and reports ns/packet per path\n" +
			"beside a minimal swap-MAC XDP_TX program and an XDP_PASS-only program measured in the same\n" +
			"run, with the ratio to the swap-MAC program. Nothing is attached; no traffic is sent.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "quick", Usage: "fewer rounds and repeats (a few seconds)"},
			&cli.IntFlag{Name: "rounds", Usage: "interleaved rounds per path (median reported)"},
			&cli.IntFlag{Name: "repeat", Usage: "runs per round"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"},
			&cli.BoolFlag{Name: "failover", Value: true, Usage: "measure VRRP failover time against keepalived in network namespaces (--failover=false: skip)"},
			&cli.StringFlag{Name: "only", Usage: "run one section only: failover, vrrp-load or throughput"},
			&cli.BoolFlag{Name: "throughput", Value: true, Usage: "live-frame throughput on veth: swap-MAC XDP_TX vs xdplb vs nftables netdev fwd (--throughput=false: skip)"},
			&cli.DurationFlag{Name: "throughput-duration", Usage: "measured time per throughput case (default 10s, --quick 3s)"},
			&cli.BoolFlag{Name: "vrrp-load", Value: true, Usage: "check that VRRP at 30 ms adverts does not flap while live frames load the Master's data path (5 min, --quick 20 s; --vrrp-load=false: skip)"},
			&cli.DurationFlag{Name: "vrrp-load-duration", Usage: "how long the vrrp-load section loads the Master (default 5m, --quick 20s)"},
			&cli.IntFlag{Name: "vrrp-load-threads", Usage: "live-frame generator threads of the vrrp-load section (default 2)"},
			&cli.IntFlag{Name: "failover-rounds", Usage: "failovers per router and interval (default 5, --quick 1)"},
			&cli.StringFlag{Name: "keepalived", Value: "/usr/sbin/keepalived", Usage: "keepalived binary for the failover comparison ('' skips it)"},
			&cli.StringFlag{Name: "xdplb", Usage: "xdplb binary run as the daemon in the failover section (default: this executable)"},
			&cli.BoolFlag{Name: "scaling", Value: true, Usage: "time the data path as services, backends and conntrack flows grow (--scaling=false: skip)"},
			&cli.StringFlag{Name: "results-dir", Value: "bench/results", Usage: "write the results of every section run to DIR/<date>.json"},
			&cli.BoolFlag{Name: "no-results", Usage: "do not write the results file"},
		},
		Action: func(c *cli.Context) (err error) {
			if _, err := positional(c); err != nil {
				return err
			}
			opts := bench.DefaultOptions()
			if c.Bool("quick") {
				opts = bench.QuickOptions()
			}
			if n := c.Int("rounds"); n != 0 {
				opts.Rounds = n
			}
			if n := c.Int("repeat"); n != 0 {
				opts.Repeat = n
			}
			if opts.Rounds < 1 || opts.Repeat < 100 {
				return usagef("--rounds must be >= 1 and --repeat >= 100")
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("xdplb bench needs root (BPF_PROG_TEST_RUN): run it with sudo")
			}
			only := c.String("only")
			if only != "" && only != "failover" && only != "vrrp-load" && only != "throughput" && only != "scaling" {
				return usagef("--only: want failover, vrrp-load, throughput or scaling")
			}
			quick := c.Bool("quick")
			out := map[string]any{"options": opts, "cpus": runtime.NumCPU()}
			defer func() {
				if err == nil {
					err = e.writeBenchResults(c, out)
				}
			}()
			var (
				res       []bench.Result
				mg        []bench.MaglevResult
				hc        bench.HealthResult
				mgRounds  = 7
				healthFor = 10 * time.Second
			)
			if only == "" {
				var err error
				if res, err = bench.DataPlane(opts); err != nil {
					return err
				}
				if quick {
					mgRounds, healthFor = 3, 3*time.Second
				}
				if mg, err = bench.Maglev(mgRounds); err != nil {
					return fmt.Errorf("control plane: %w", err)
				}
				if hc, err = bench.HealthCPU(1000, healthFor); err != nil {
					return fmt.Errorf("health checks: %w", err)
				}
				out["dataplane"], out["maglev"], out["health_checks"] = res, mg, hc
			}
			var sc []bench.ScalingResult
			doScaling := only == "scaling" || (only == "" && c.Bool("scaling"))
			if doScaling {
				sopts := bench.DefaultScalingOptions()
				if quick {
					sopts = bench.QuickScalingOptions()
				}
				if c.Int("rounds") != 0 || c.Int("repeat") != 0 {
					sopts.Rounds, sopts.Repeat = opts.Rounds, opts.Repeat
				}
				var err error
				if sc, err = bench.Scaling(sopts); err != nil {
					return fmt.Errorf("scaling: %w", err)
				}
				out["scaling"] = sc
			}
			var fo []bench.FailoverResult
			var fopts bench.FailoverOptions
			doFailover := only == "failover" || (only == "" && c.Bool("failover"))
			doVRRPLoad := only == "vrrp-load" || (only == "" && c.Bool("vrrp-load"))
			bin := c.String("xdplb")
			if bin == "" && (doFailover || doVRRPLoad) {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("failover: find this executable: %w (use --xdplb PATH)", err)
				}
				bin = exe
			}
			if doFailover {
				fopts = bench.DefaultFailoverOptions(bin)
				if quick {
					fopts = bench.QuickFailoverOptions(bin)
				}
				fopts.Keepalived = c.String("keepalived")
				if n := c.Int("failover-rounds"); n != 0 {
					fopts.Rounds = n
				}
				if !c.Bool("json") {
					fopts.Progress = e.stderr
				}
				var err error
				if fo, err = bench.Failover(fopts); err != nil {
					return err
				}
				out["failover"] = fo
			}
			var vl bench.VRRPLoadResult
			if doVRRPLoad {
				vopts := bench.DefaultVRRPLoadOptions(bin)
				if quick {
					vopts = bench.QuickVRRPLoadOptions(bin)
				}
				if d := c.Duration("vrrp-load-duration"); d != 0 {
					vopts.Duration = d
				}
				if n := c.Int("vrrp-load-threads"); n != 0 {
					vopts.Generators = n
				}
				if !c.Bool("json") {
					vopts.Progress = e.stderr
				}
				var err error
				if vl, err = bench.VRRPUnderLoad(vopts); err != nil {
					return err
				}
				out["vrrp_under_load"] = vl
			}
			var tp bench.ThroughputResult
			doThroughput := only == "throughput" || (only == "" && c.Bool("throughput"))
			if doThroughput {
				topts := bench.DefaultThroughputOptions()
				if quick {
					topts = bench.QuickThroughputOptions()
				}
				if d := c.Duration("throughput-duration"); d != 0 {
					topts.Duration = d
				}
				if !c.Bool("json") {
					topts.Progress = e.stderr
				}
				var err error
				if tp, err = bench.Throughput(topts); err != nil {
					return err
				}
				out["throughput"] = tp
			}
			if c.Bool("json") {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			if only == "" {
				fmt.Fprintf(e.stdout, "data path, BPF_PROG_TEST_RUN, %d rounds x %d runs, median per path:\n", opts.Rounds, opts.Repeat)
				if err := bench.Print(e.stdout, res); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "\ncontrol plane (median of %d rounds, ring size 65537):\n", mgRounds)
				if err := bench.PrintControlPlane(e.stdout, mg, hc); err != nil {
					return err
				}
			}
			if doScaling {
				if only == "" {
					fmt.Fprintln(e.stdout)
				}
				fmt.Fprintln(e.stdout, "scaling, BPF_PROG_TEST_RUN, median per row; target: services and backends rows within 10% of the first row:")
				if err := bench.PrintScaling(e.stdout, sc); err != nil {
					return err
				}
			}
			if doFailover {
				if only == "" {
					fmt.Fprintln(e.stdout)
				}
				fmt.Fprintf(e.stdout, "failover: Master A (priority 150) link down + kill -9 -> first answer from B (priority 100) through the VIP,\n"+
					"client probes every %v; the kill falls at a random phase of A's advert period, so 'from last advert' (A's last advert\n"+
					"-> first answer) is the phase-free figure: target 3 x interval + Skew_Time(100) + 20 ms on the max of both; VRRPv2 at 1s, v3 below:\n", fopts.ProbeEvery)
				if err := bench.PrintFailover(e.stdout, fo); err != nil {
					return err
				}
			}
			if doVRRPLoad {
				if only == "" {
					fmt.Fprintln(e.stdout)
				}
				fmt.Fprintf(e.stdout, "VRRP under load: A (priority 150, Master) and B (100), VRRPv3 at %v; live frames (XDP_TX on A's bridge-side\n"+
					"veth peer) to VIP:%d straight into A's XDP program, balanced to B and XDP_TX'd; both states sampled every interval:\n",
					time.Duration(vl.IntervalMs*float64(time.Millisecond)), 3306)
				if err := bench.PrintVRRPLoad(e.stdout, vl); err != nil {
					return err
				}
			}
			if doThroughput {
				if only == "" || doVRRPLoad || doFailover {
					fmt.Fprintln(e.stdout)
				}
				fmt.Fprintf(e.stdout, "throughput on veth, live frames, %.0f s per case: (a) minimal swap-MAC XDP_TX, (b) xdplb, (c) nftables netdev ingress\n"+
					"ether daddr map + fwd; delivered = counted at the receiving veth's XDP program; target (b) >= 0.9x (a) and >= 4x (c):\n", tp.DurationS)
				return bench.PrintThroughput(e.stdout, tp)
			}
			return nil
		},
	}
}

// writeBenchResults writes every section's results to --results-dir unless --no-results, and
// prints the file's path (to stderr with --json, so stdout stays JSON).
func (e *env) writeBenchResults(c *cli.Context, out map[string]any) error {
	if c.Bool("no-results") {
		return nil
	}
	path, err := bench.WriteResults(c.String("results-dir"),
		bench.Results{Version: version, Quick: c.Bool("quick"), Only: c.String("only"), Sections: out})
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
