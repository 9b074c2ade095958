//go:build linux

// Package testbed is the project's one test bed, shared by the end-to-end tests (test/), the
// benchmarks (bench/) and the demo (test/demo). It is an ordinary package, not test code: its
// functions return errors, and the packages under it add thin wrappers that take a [TB] (a
// *testing.T) and fail the test instead.
//
//   - testbed (this package): the cleanup stack, the process runner, the TB interface.
//   - testbed/netns: network namespaces, a bridge LAN with one veth per node, captures.
//   - testbed/mariadb: MariaDB servers in a namespace, replication.
//   - testbed/keepalived: a real keepalived as a VRRP peer.
//   - testbed/packet: frame builders.
//   - testbed/baseline: the minimal XDP programs of bpf/baseline.c (XDP_PASS, swap MACs + XDP_TX).
//   - testbed/cluster: the seeds' MySQL cluster (the demo's and the acceptance tests' topology).
//
// Nothing here imports "testing", so `xdplb bench` may link it.
package testbed

import (
	"errors"
	"fmt"
	"sync"
)

// TB is the part of testing.TB the wrappers use: *testing.T, *testing.B and *testing.F satisfy
// it.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Failed() bool
	Logf(format string, args ...any)
	Skipf(format string, args ...any)
}

// Cleaner queues work to run at the end: a TB, or a [Cleanups].
type Cleaner interface {
	Cleanup(func())
}

// Cleanups is a stack of teardown functions for a program that is not a test (a benchmark, the
// demo): Cleanup pushes, Run pops and runs them, last first. It is safe for concurrent use; Run
// may be called again (from a signal handler and from main): each function runs once.
type Cleanups struct {
	mu    sync.Mutex
	run   sync.Mutex // one Run at a time
	funcs []func()
}

// Cleanup queues f.
func (c *Cleanups) Cleanup(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.funcs = append(c.funcs, f)
}

// Run runs the queued functions, last first, until none is left (a function may queue more).
// One that panics does not stop the others; the panics are returned.
func (c *Cleanups) Run() error {
	c.run.Lock()
	defer c.run.Unlock()
	var errs []error
	for {
		c.mu.Lock()
		if len(c.funcs) == 0 {
			c.mu.Unlock()
			return errors.Join(errs...)
		}
		f := c.funcs[len(c.funcs)-1]
		c.funcs = c.funcs[:len(c.funcs)-1]
		c.mu.Unlock()
		func() {
			defer func() {
				if r := recover(); r != nil {
					errs = append(errs, fmt.Errorf("cleanup: panic: %v", r))
				}
			}()
			f()
		}()
	}
}
