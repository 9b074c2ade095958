//go:build linux

// Package keepalived runs a real keepalived (VRRP only, no LVS) in the foreground in a test
// namespace: configuration written from a Config, checked with `keepalived -t`, started in its
// own process group, its state read from what a notify script wrote last.
package keepalived

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// TB is netns.TB plus TempDir: *testing.T, *testing.B and *testing.F satisfy it.
type TB interface {
	netns.TB
	TempDir() string
}

// States a Proc reports besides keepalived's own (MASTER, BACKUP, FAULT, what its notify script
// gets).
const (
	Init = "INIT" // running, no notify yet
	Down = "DOWN" // the process is not running
)

// Config is a keepalived configuration of one VRRP instance.
type Config struct {
	RouterID  string         // global_defs router_id
	Instance  string         // vrrp_instance name (VI_1)
	Interface string         // interface
	Version   int            // 2 or 3 (vrrp_version in global_defs)
	VRID      int            // virtual_router_id
	Priority  int            // priority
	Interval  time.Duration  // advert_int
	State     string         // initial state: BACKUP or MASTER
	NoPreempt bool           // nopreempt
	AuthPass  string         // v2 PASS; "" = none
	VIPs      []netip.Prefix // virtual_ipaddress
	VIPDev    string         // "dev" of every VIP; "" = none (keepalived's default: Interface)
}

// Text is the configuration, with notify as the instance's notify script.
func (c Config) Text(notify string) string {
	var auth, preempt, vips string
	if c.AuthPass != "" {
		auth = fmt.Sprintf("  authentication {\n    auth_type PASS\n    auth_pass %s\n  }\n", c.AuthPass)
	}
	if c.NoPreempt {
		preempt = "  nopreempt\n"
	}
	for _, p := range c.VIPs {
		vips += "    " + p.String()
		if c.VIPDev != "" {
			vips += " dev " + c.VIPDev
		}
		vips += "\n"
	}
	return fmt.Sprintf(`global_defs {
  router_id %s
  script_user root
  enable_script_security
  vrrp_version %d
}
vrrp_instance %s {
  state %s
  interface %s
  virtual_router_id %d
  priority %d
  advert_int %g
%s%s  virtual_ipaddress {
%s  }
  notify %s
}
`, c.RouterID, c.Version, c.Instance, c.State, c.Interface, c.VRID, c.Priority, c.Interval.Seconds(), preempt, auth, vips, notify)
}

// Proc is keepalived running in the foreground in a node's namespace. Its state is what its
// notify script last wrote.
type Proc struct {
	Node      *netns.Node
	Conf      string // configuration file
	StateFile string // one state a line, appended by the notify script
	LogPath   string // keepalived's stdout and stderr
	pidFile   string
	vrrpPid   string
	cmd       *exec.Cmd
	done      chan struct{}
	waitErr   error
}

// Start writes the configuration and its notify script into a temporary directory of top,
// checks it (`keepalived -t` in the namespace) and starts `keepalived -n -l -D -P` in its own
// process group. Failures go to t. In top's cleanup the group is stopped (SIGTERM, SIGKILL after
// 5 s); its log goes to top's log when top failed.
func Start(t, top TB, node *netns.Node, c Config) *Proc {
	t.Helper()
	dir := top.TempDir()
	k := &Proc{
		Node: node, Conf: filepath.Join(dir, "keepalived.conf"), StateFile: filepath.Join(dir, "state"),
		LogPath: filepath.Join(dir, "keepalived.log"), pidFile: filepath.Join(dir, "keepalived.pid"),
		vrrpPid: filepath.Join(dir, "vrrp.pid"), done: make(chan struct{}),
	}
	script := filepath.Join(dir, "notify.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$3\" >> "+k.StateFile+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	text := c.Text(script)
	if err := os.WriteFile(k.Conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Exec's error carries keepalived's output.
	if out, err := node.Exec(ctx, "keepalived", "-t", "-f", k.Conf); err != nil {
		t.Fatalf("expected `keepalived -t -f %s` to accept:\n%s\nseen %v", k.Conf, text, err)
	} else if strings.TrimSpace(out) != "" {
		t.Logf("keepalived -t: %s", strings.TrimSpace(out))
	}
	logf, err := os.Create(k.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-n", "-l", "-D", "-P", "-f", k.Conf, "-p", k.pidFile, "-r", k.vrrpPid}
	k.cmd = node.Command(context.Background(), "keepalived", args...)
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := k.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start keepalived in %s: %v", node.Name, err)
	}
	go func() {
		k.waitErr = k.cmd.Wait()
		logf.Close()
		close(k.done)
	}()
	top.Cleanup(func() {
		k.Stop(5 * time.Second)
		if top.Failed() {
			st, _ := os.ReadFile(k.StateFile)
			top.Logf("keepalived log (%s):\n%s\nnotify states: %q", k.LogPath, k.Log(), st)
		}
	})
	return k
}

// Pid is the keepalived parent's pid, also the id of its process group.
func (k *Proc) Pid() int { return k.cmd.Process.Pid }

// Done is closed when the keepalived parent has exited.
func (k *Proc) Done() <-chan struct{} { return k.done }

// Running reports whether the keepalived parent is still running.
func (k *Proc) Running() bool {
	select {
	case <-k.done:
		return false
	default:
		return true
	}
}

// Log is what keepalived wrote so far.
func (k *Proc) Log() string {
	b, _ := os.ReadFile(k.LogPath)
	return string(b)
}

// State is the state keepalived's notify script wrote last (Init before any), Down when
// keepalived is not running.
func (k *Proc) State() string {
	if !k.Running() {
		return Down
	}
	b, err := os.ReadFile(k.StateFile)
	if err != nil {
		return Init
	}
	lines := strings.Fields(string(b))
	if len(lines) == 0 {
		return Init
	}
	return lines[len(lines)-1]
}

// Stop is a graceful stop: SIGTERM to the process group (keepalived resigns with a priority-0
// advert), then it waits for the parent; SIGKILL to the group after timeout. The VRRP child, in
// the same group, is waited for too (WaitGone), and the pid files are removed, so that a
// keepalived started again with them does not find them stale.
func (k *Proc) Stop(timeout time.Duration) {
	pgid := k.Pid()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(timeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-k.done
	}
	k.WaitGone(timeout)
	_ = os.Remove(k.pidFile)
	_ = os.Remove(k.vrrpPid)
}

// Kill sends SIGKILL to the whole process group at once (the VRRP child would resign on its
// parent's death otherwise) and waits for the parent.
func (k *Proc) Kill() {
	_ = syscall.Kill(-k.Pid(), syscall.SIGKILL) // the whole group at once
	<-k.done
}

// WaitGone waits until no live process of the group is left (the VRRP child, reparented, may
// stay a zombie for a while: zombies do not count).
func (k *Proc) WaitGone(timeout time.Duration) {
	pgid := k.Pid()
	deadline := time.Now().Add(timeout)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if groupAlive(pgid) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	// Killed children are reaped by init, not by us: give it a moment, so that nothing named
	// keepalived is left when the test ends.
	for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// groupAlive reports whether a process of the group pgid is alive (not a zombie).
func groupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) >= 3 && fields[0] != "Z" && fields[2] == fmt.Sprint(pgid) {
			return true
		}
	}
	return false
}
