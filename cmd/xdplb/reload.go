package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/daemon"
)

// reloadTimeout bounds a reload: the daemon re-reads the file and updates the maps.
const reloadTimeout = 30 * time.Second

func (e *env) reloadCmd() *cli.Command {
	return &cli.Command{
		Name:  "reload",
		Usage: "make the running daemon re-read its configuration (like SIGHUP, but reports the errors)",
		Description: "A valid configuration is applied without dropping established flows. An invalid one is\n" +
			"rejected with its errors (exit status 1) and the daemon keeps its running state. Changing the\n" +
			"interfaces, map sizes, hash seed or metrics address needs a restart.",
		Flags:  []cli.Flag{statusSocketFlag()},
		Action: e.reload,
	}
}

// errRejected ends `xdplb reload` after the errors were printed.
var errRejected = errors.New("configuration rejected: the daemon keeps running with its previous configuration")

func (e *env) reload(c *cli.Context) error {
	if _, err := positional(c); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), reloadTimeout)
	defer cancel()
	r, err := daemon.RequestReload(ctx, c.String("status-socket"))
	if err != nil {
		return err
	}
	if !r.OK {
		for _, line := range r.Errors {
			fmt.Fprintln(e.stderr, line)
		}
		return errRejected
	}
	fmt.Fprintln(e.stdout, "configuration reloaded")
	return nil
}
