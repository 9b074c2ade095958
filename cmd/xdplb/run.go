package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/daemon"
	"github.com/xdplb/xdplb/loader"
)

func statusSocketFlag() cli.Flag {
	return &cli.StringFlag{Name: "status-socket", Value: daemon.DefaultStatusSocket, EnvVars: []string{"XDPLB_STATUS_SOCKET"},
		Usage: "`PATH` of the unix socket where the daemon answers 'xdplb list' and 'xdplb reload'"}
}

func (e *env) runCmd() *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "run the daemon: attach, check the real servers and keep the maps in line with the config",
		Description: "Attaches the XDP program to every interface of the config (adopting existing pins: tracked flows\n" +
			"are kept), runs the health checks and keeps the maps equal to config ∩ healthy ∩ resolved MAC.\n" +
			"Serves Prometheus metrics on the config's metrics address and a status socket.\n" +
			"SIGHUP (or `xdplb reload`) re-reads the config: a valid one is applied without dropping flows,\n" +
			"an invalid one is rejected and the running state kept. SIGTERM or SIGINT stops the daemon and\n" +
			"leaves the data path attached (flows keep flowing), unless --detach-on-exit.\n" +
			"Logs go to stderr (default level info for this command).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "the YAML configuration file (required)"},
			&cli.StringFlag{Name: "mode", Value: "auto", Usage: "XDP mode: auto (native if the driver has it, else generic; generic on a veth whose peer has no XDP program), native or generic"},
			&cli.BoolFlag{Name: "detach-on-exit", Usage: "detach the XDP program and remove its pins when the daemon stops (tracked flows are lost)"},
			statusSocketFlag(),
		},
		Action: e.runDaemon,
	}
}

func (e *env) runDaemon(c *cli.Context) error {
	if _, err := positional(c); err != nil {
		return err
	}
	path := c.String("config")
	if path == "" {
		return usagef("run: missing --config FILE (see `xdplb run --help`)")
	}
	mode, err := loader.ParseMode(c.String("mode"))
	if err != nil {
		return usageError{err}
	}
	log := e.log
	if !c.IsSet("log-level") {
		log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d, err := daemon.New(daemon.Options{
		ConfigPath:   path,
		PinRoot:      e.root,
		StatusSocket: c.String("status-socket"),
		Mode:         mode,
		DetachOnExit: c.Bool("detach-on-exit"),
		Logger:       log,
	})
	if err != nil {
		return err
	}
	go func() {
		for {
			select {
			case <-hup:
				_ = d.Reload() // the daemon logs the outcome
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := d.Run(ctx); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}
