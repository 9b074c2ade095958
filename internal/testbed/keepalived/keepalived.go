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
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/xdplb/xdplb/internal/testbed"
	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// TB is testbed.TB plus TempDir: *testing.T, *testing.B and *testing.F satisfy it.
type TB interface {
	testbed.TB
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

// Text is the configuration, with notify as the instance's notify script ("" = none).
func (c Config) Text(notify string) string {
	var auth, preempt, vips, notifyLine string
	if notify != "" {
		notifyLine = "  notify " + notify + "\n"
	}
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
%s}
`, c.RouterID, c.Version, c.Instance, c.State, c.Interface, c.VRID, c.Priority, c.Interval.Seconds(), preempt, auth, vips, notifyLine)
}

// Proc is keepalived running in the foreground in a node's namespace. Its state is what its
// notify script last wrote.
type Proc struct {
	*testbed.Proc // the keepalived parent, in its own process group
	Node          *netns.Node
	Conf          string // configuration file
	StateFile     string // one state a line, appended by the notify script
	pidFile       string
	vrrpPid       string
}

// Launch writes the configuration and its notify script into dir, checks it (`keepalived -t`
// in the namespace) and starts `keepalived -n -l -D -P` in its own process group. check is what
// `keepalived -t` printed (usually nothing). The caller stops it (Stop or Kill).
func Launch(dir string, node *netns.Node, c Config) (k *Proc, check string, err error) {
	k = &Proc{
		Node: node, Conf: filepath.Join(dir, "keepalived.conf"), StateFile: filepath.Join(dir, "state"),
		pidFile: filepath.Join(dir, "keepalived.pid"), vrrpPid: filepath.Join(dir, "vrrp.pid"),
	}
	script := filepath.Join(dir, "notify.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$3\" >> "+k.StateFile+"\n"), 0o700); err != nil {
		return nil, "", err
	}
	text := c.Text(script)
	if err := os.WriteFile(k.Conf, []byte(text), 0o600); err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Exec's error carries keepalived's output.
	out, err := node.Exec(ctx, "keepalived", "-t", "-f", k.Conf)
	if err != nil {
		return nil, "", fmt.Errorf("expected `keepalived -t -f %s` to accept:\n%s\nseen %w", k.Conf, text, err)
	}
	k.Proc, err = testbed.StartProc(node.Path, "keepalived@"+node.Name, filepath.Join(dir, "keepalived.log"),
		"keepalived", "-n", "-l", "-D", "-P", "-f", k.Conf, "-p", k.pidFile, "-r", k.vrrpPid)
	if err != nil {
		return nil, "", err
	}
	return k, strings.TrimSpace(out), nil
}

// Start is [Launch] for a test: the files go to a temporary directory of top, failures to t. In
// top's cleanup the group is stopped (SIGTERM, SIGKILL after 5 s); its log goes to top's log
// when top failed.
func Start(t, top TB, node *netns.Node, c Config) *Proc {
	t.Helper()
	k, check, err := Launch(top.TempDir(), node, c)
	if err != nil {
		t.Fatalf("keepalived in %s: %v", node.Name, err)
	}
	if check != "" {
		t.Logf("keepalived -t: %s", check)
	}
	top.Cleanup(func() {
		k.Stop(5 * time.Second)
		if top.Failed() {
			st, _ := os.ReadFile(k.StateFile)
			top.Logf("keepalived log (%s):\n%s\nnotify states: %q", k.LogPath, k.Log(), st)
		}
	})
	return k
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
// the same group, is waited for too, and the pid files are removed, so that a keepalived started
// again with them does not find them stale.
func (k *Proc) Stop(timeout time.Duration) {
	k.Proc.Stop(timeout)
	_ = os.Remove(k.pidFile)
	_ = os.Remove(k.vrrpPid)
}

// Kill sends SIGKILL to the whole process group at once (the VRRP child would resign on its
// parent's death otherwise) and waits for the parent only (WaitGone waits for the group).
func (k *Proc) Kill() {
	_ = syscall.Kill(-k.Pid(), syscall.SIGKILL) // the whole group at once
	<-k.Done()
}

// WaitGone waits until no live process of the group is left (the VRRP child, reparented, may
// stay a zombie for a while: zombies do not count).
func (k *Proc) WaitGone(timeout time.Duration) { testbed.WaitGroupGone(k.Pid(), timeout) }
