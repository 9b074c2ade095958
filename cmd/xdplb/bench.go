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
		},
		Action: func(c *cli.Context) error {
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
			res, err := bench.DataPlane(opts)
			if err != nil {
				return err
			}
			mgRounds, healthFor := 7, 10*time.Second
			if c.Bool("quick") {
				mgRounds, healthFor = 3, 3*time.Second
			}
			mg, err := bench.Maglev(mgRounds)
			if err != nil {
				return fmt.Errorf("control plane: %w", err)
			}
			hc, err := bench.HealthCPU(1000, healthFor)
			if err != nil {
				return fmt.Errorf("health checks: %w", err)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"options": opts, "cpus": runtime.NumCPU(), "dataplane": res,
					"maglev": mg, "health_checks": hc})
			}
			fmt.Fprintf(e.stdout, "data path, BPF_PROG_TEST_RUN, %d rounds x %d runs, median per path:\n", opts.Rounds, opts.Repeat)
			if err := bench.Print(e.stdout, res); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "\ncontrol plane (median of %d rounds, ring size 65537):\n", mgRounds)
			return bench.PrintControlPlane(e.stdout, mg, hc)
		},
	}
}
