//go:build linux

// Package netns builds throw-away network topologies for end-to-end tests: named network
// namespaces, a bridge LAN with one veth per node, in-process TCP servers, and packet capture.
//
// Everything a helper creates is removed in tb.Cleanup, also when the test fails. Namespaces are
// named "xdplb-t-<random>-<role>" (checked by [Leftovers]) and registered under /run/netns, so a command
// can join one with `nsenter --net=/run/netns/NAME`. Tests join only the network namespace: `ip
// netns exec` also remounts /sys, which hides bpffs and makes pinning fail.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netns"

	"github.com/xdplb/xdplb/internal/testbed"
)

// TB is what the wrappers need from a test (*testing.T).
type TB = testbed.TB

// Prefix starts the name of every namespace this package creates.
const Prefix = "xdplb-t-"

// runDir is where named namespaces are bind-mounted (the iproute2 convention).
const runDir = "/run/netns"

// NS is a named network namespace.
type NS struct {
	Name   string // as listed by `ip netns list`
	Path   string // /run/netns/Name, for nsenter --net=
	handle netns.NsHandle
}

// RandomID returns a short random hex string for unique names.
func RandomID() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// New creates a network namespace named "xdplb-t-<random>" and removes it in tb.Cleanup.
func New(tb TB) *NS {
	tb.Helper()
	return NewNamed(tb, Prefix+RandomID())
}

// NewNamed creates a network namespace with the given name (it should start with [Prefix]) and
// removes it in tb.Cleanup. Its loopback interface is up.
func NewNamed(tb TB, name string) *NS {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skipf("creating network namespaces needs root (%v)", os.ErrPermission)
	}
	ns, err := Open(name)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := ns.Close(); err != nil {
			tb.Errorf("remove network namespace %s: %v", name, err)
		}
	})
	return ns
}

// Open creates a network namespace with the given name, registered under /run/netns, with its
// loopback interface up. The caller removes it with Close.
func Open(name string) (*NS, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("create network namespace %s: needs root (%w)", name, os.ErrPermission)
	}
	ns, err := create(name)
	if err != nil {
		return nil, fmt.Errorf("create network namespace %s: %w", name, err)
	}
	created.Lock()
	created.names = append(created.names, name)
	created.Unlock()
	if err := ns.Do(func() error { return setLinkUp("lo") }); err != nil {
		_ = ns.remove()
		return nil, fmt.Errorf("namespace %s: %w", name, err)
	}
	return ns, nil
}

// Close removes the namespace: its name and our handle. The kernel frees it, and with it its
// interfaces, when the last socket, process and thread in it are gone.
func (ns *NS) Close() error { return ns.remove() }

// create makes a new namespace and bind-mounts it under /run/netns. It runs on a fresh OS
// thread that is locked and never unlocked: unshare(CLONE_NEWNET) moves that thread, and the
// runtime ends the thread when the goroutine returns instead of reusing it.
func create(name string) (*NS, error) {
	type result struct {
		ns  *NS
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread changes namespace
		if err := os.MkdirAll(runDir, 0o755); err != nil {
			ch <- result{err: err}
			return
		}
		h, err := netns.NewNamed(name)
		if err != nil {
			ch <- result{err: err}
			return
		}
		ch <- result{ns: &NS{Name: name, Path: filepath.Join(runDir, name), handle: h}}
	}()
	r := <-ch
	return r.ns, r.err
}

// remove drops the name and our file descriptor. The kernel frees the namespace, and with it its
// interfaces, when the last socket, process and thread in it are gone.
func (ns *NS) remove() error {
	var errs []error
	if err := ns.handle.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close handle: %w", err))
	}
	if err := netns.DeleteNamed(ns.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Do runs f on an OS thread that is in the namespace, and returns f's error.
//
// The thread is a fresh one, locked to a new goroutine and never unlocked, so it is discarded when
// f returns rather than going back to the scheduler's pool in the wrong namespace. Sockets that f
// creates stay in the namespace and may be used from any goroutine afterwards. f must not call
// t.Fatal (it runs on another goroutine), and goroutines it starts run outside the namespace.
func (ns *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := netns.Set(ns.handle); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", ns.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Command returns a command that runs name in the namespace's network namespace only
// (nsenter --net), so /sys and bpffs stay the host's.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.Path, "--", name}, args...)...)
}

// Exec runs a command in the namespace and returns its combined output. The error names the
// command and includes the output.
func (ns *NS) Exec(ctx context.Context, name string, args ...string) (string, error) {
	out, err := ns.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in netns %s: `%s %s`: %w; output:\n%s",
			ns.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Start starts a long-running command in the namespace; it is killed and reaped in tb.Cleanup.
// Its output goes to the test log when the test fails.
func (ns *NS) Start(tb TB, name string, args ...string) *exec.Cmd {
	tb.Helper()
	cmd := ns.Command(context.Background(), name, args...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("in netns %s: start `%s %s`: %v", ns.Name, name, strings.Join(args, " "), err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if tb.Failed() {
			tb.Logf("output of `%s %s` in %s:\n%s", name, strings.Join(args, " "), ns.Name, out.String())
		}
	})
	return cmd
}

// Sysctl writes /proc/sys/<key> (key with dots or slashes) inside the namespace.
func (ns *NS) Sysctl(key, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return ns.Do(func() error {
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, ns.Name, err)
		}
		return nil
	})
}

// ReadSysctl reads /proc/sys/<key> inside the namespace.
func (ns *NS) ReadSysctl(key string) (string, error) {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	var v string
	err := ns.Do(func() error {
		b, err := os.ReadFile(p)
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// created holds the names of the namespaces this process created, for Leftovers.
var created struct {
	sync.Mutex
	names []string
}

// Leftovers lists the namespaces this process created that are still registered under
// /run/netns: after the tests there should be none. Namespaces of other processes (tests of
// other packages running in parallel) are not looked at.
func Leftovers() ([]string, error) {
	created.Lock()
	defer created.Unlock()
	var out []string
	for _, n := range created.names {
		_, err := os.Stat(filepath.Join(runDir, n))
		switch {
		case err == nil:
			out = append(out, n)
		case !errors.Is(err, os.ErrNotExist):
			return out, err
		}
	}
	return out, nil
}

// Handle is the namespace's file descriptor, for netlink calls that take one
// (netlink.NsFd, netlink.AddrSubscribeAt) and for joining it (netns.Set on a locked thread).
func (ns *NS) Handle() netns.NsHandle { return ns.handle }
