//go:build linux

package test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdplb/xdplb/internal/testbed/keepalived"
	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// The VRRP topology: one LAN with two xdplb directors (a, b), a node running keepalived (ka, the
// "A'" of the interop subtests), a client and a real server holding the VIP on lo.
var (
	vrVIP    = netip.MustParseAddr("10.99.0.100")
	vrAddrA  = "10.99.0.1/24"
	vrAddrB  = "10.99.0.2/24"
	vrAddrKA = "10.99.0.3/24"
	vrClient = "10.99.0.10/24"
	vrRS     = "10.99.0.20/24"
)

// States as the tests compare them: keepalived's names (what its notify scripts get), plus DOWN
// for a router whose process is not running and "?" for one that did not answer.
const (
	stMaster = "MASTER"
	stBackup = "BACKUP"
	stDown   = "DOWN"
)

// vrrpStatusReply is the part of the status socket's {"cmd":"status"} reply about VRRP.
type vrrpStatusReply struct {
	VRRP []vrrpInstStatus `json:"vrrp"`
}

type vrrpInstStatus struct {
	Name        string          `json:"name"`
	State       string          `json:"state"`
	Priority    int             `json:"priority"`
	Master      string          `json:"master"`
	Transitions uint64          `json:"transitions"`
	SplitBrains uint64          `json:"split_brains"`
	Rejected    json.RawMessage `json:"rejected"`
	Peers       []struct {
		Addr     string `json:"addr"`
		MAC      string `json:"mac"`
		Priority int    `json:"priority"`
		LastSeen string `json:"last_seen"`
	} `json:"peers"`
}

// peerMACs lists the MACs of the instance's peers.
func (s vrrpInstStatus) peerMACs() []string {
	var out []string
	for _, p := range s.Peers {
		out = append(out, strings.ToLower(p.MAC))
	}
	return out
}

// vrrpStatus asks the daemon's status socket for its first VRRP instance.
func (p *daemonProc) vrrpStatus() (vrrpInstStatus, error) {
	var st vrrpStatusReply
	c, err := net.DialTimeout("unix", p.socket, time.Second)
	if err != nil {
		return vrrpInstStatus{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(`{"cmd":"status"}` + "\n")); err != nil {
		return vrrpInstStatus{}, err
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(nil, 16<<20)
	if !sc.Scan() {
		return vrrpInstStatus{}, fmt.Errorf("status socket %s: no reply (%v)", p.socket, sc.Err())
	}
	if err := json.Unmarshal(sc.Bytes(), &st); err != nil {
		return vrrpInstStatus{}, fmt.Errorf("status socket %s: %w in %.300q", p.socket, err, sc.Bytes())
	}
	if len(st.VRRP) != 1 {
		return vrrpInstStatus{}, fmt.Errorf("status socket %s: expected 1 vrrp instance, seen %d in %.300q", p.socket, len(st.VRRP), sc.Bytes())
	}
	return st.VRRP[0], nil
}

// xvrrp is the vrrp instance of an xdplb director's configuration.
type xvrrp struct {
	version  int
	vrid     int
	priority int
	interval time.Duration
	preempt  bool
	authPass string // v2 PASS password; "" = none
	notify   string // notify script; "" = none
}

// masterDown is Master_Down_Interval of a Backup with priority prio (RFC 5798 / 3768).
func masterDown(version, prio int, interval time.Duration) time.Duration {
	return 3*interval + skewTime(version, prio, interval)
}

// skewTime is Skew_Time: (256-prio)/256 of the interval in v3, of a second in v2.
func skewTime(version, prio int, interval time.Duration) time.Duration {
	unit := interval
	if version == 2 {
		unit = time.Second
	}
	return time.Duration(256-prio) * unit / 256
}

// vrrpDirector is an xdplb director of the VRRP bed, with the daemon it runs now (nil: none).
type vrrpDirector struct {
	*director
	top     *testing.T // the daemon lives across subtests: its cleanup belongs to TestVRRP
	tmp     string
	cfgPath string
	socket  string
	d       *daemonProc
}

// config is the director's configuration: one service on the VIP (check none, one real server)
// and the VRRP instance v.
func (n *vrrpDirector) config(rs netip.Addr, v xvrrp) string {
	var extra strings.Builder
	if v.authPass != "" {
		fmt.Fprintf(&extra, "    auth_pass: %s\n", v.authPass)
	}
	if v.notify != "" {
		fmt.Fprintf(&extra, "    notify: [%s]\n", v.notify)
	}
	return fmt.Sprintf(`# TestVRRP, director %s
interfaces: [%s]
maps:
  conntrack: 4096
  persist: 1024
services:
  - name: mysql
    vip: %s
    port: 3306
    check:
      type: none
    real_servers:
      - address: %s
vrrp:
  - name: VI_%d
    interface: %s
    version: %d
    vrid: %d
    priority: %d
    advert_interval: %v
    preempt: %t
    vips: [%s]
%s`, n.Role, netns.NodeLink, vrVIP, rs, v.vrid, netns.NodeLink, v.version, v.vrid, v.priority, v.interval, v.preempt, vrVIP, extra.String())
}

// start writes the configuration and starts `xdplb run` in generic mode; it returns once the
// status socket answers with the VRRP instance.
func (n *vrrpDirector) start(t *testing.T, rs netip.Addr, v xvrrp) *daemonProc {
	t.Helper()
	if n.d != nil && n.d.running() {
		t.Fatalf("director %s: expected no daemon running before a start, seen pid %d", n.Role, n.d.cmd.Process.Pid)
	}
	if err := os.WriteFile(n.cfgPath, []byte(n.config(rs, v)), 0o600); err != nil {
		t.Fatal(err)
	}
	n.d = startDaemon(n.top, n.director, n.cfgPath, n.socket, "generic")
	d := n.d
	waitFor(t, 10*time.Second, "director "+n.Role+"'s status socket to answer with its VRRP instance", func() (bool, string) {
		if !d.running() {
			t.Fatalf("director %s: expected the daemon to run, seen it exit (%v); log:\n%s", n.Role, d.waitErr, d.log())
		}
		_, err := d.vrrpStatus()
		return err == nil, fmt.Sprint(err)
	})
	return d
}

// state is the director's VRRP state in keepalived's spelling, DOWN without a daemon, "?" when
// the status socket does not answer.
func (n *vrrpDirector) state() string {
	if n.d == nil || !n.d.running() {
		return stDown
	}
	st, err := n.d.vrrpStatus()
	if err != nil {
		return "?"
	}
	return strings.ToUpper(st.State)
}

// status is the director's VRRP instance status; the test fails when the daemon does not answer.
func (n *vrrpDirector) status(t *testing.T) vrrpInstStatus {
	t.Helper()
	if n.d == nil || !n.d.running() {
		t.Fatalf("director %s: expected a running daemon to ask for its status, seen none", n.Role)
	}
	st, err := n.d.vrrpStatus()
	if err != nil {
		t.Fatalf("director %s: expected its status socket to answer, seen %v", n.Role, err)
	}
	return st
}

// kill9 simulates the death of the machine: the link goes down first (so that nothing, not even a
// resignation, leaves it), then the daemon is killed with SIGKILL. It returns when the link went
// down.
func (n *vrrpDirector) kill9(t *testing.T) time.Time {
	t.Helper()
	linkSet(t, n.Node, "down")
	at := time.Now()
	if n.d != nil && n.d.running() {
		_ = n.d.cmd.Process.Kill()
		<-n.d.done
	}
	return at
}

// reboot brings a dead director's link back up without the addresses its dead daemon left (as
// after a reboot).
func (n *vrrpDirector) reboot(t *testing.T) {
	t.Helper()
	delVIP(t, n.Node)
	linkSet(t, n.Node, "up")
}

// peersInMap lists the MACs in the pinned peers map, through `xdplb list --json`.
func (n *vrrpDirector) peersInMap(t *testing.T) []string {
	t.Helper()
	out := n.cli(t, "list", "--json", "--status-socket", "")
	var l struct {
		Interfaces []struct {
			Peers []string `json:"peers"`
		} `json:"interfaces"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Interfaces) != 1 {
		t.Fatalf("`xdplb list --json` on %s: expected one interface, seen %v in %.300q", n.Role, err, out)
	}
	var macs []string
	for _, m := range l.Interfaces[0].Peers {
		macs = append(macs, strings.ToLower(m))
	}
	return macs
}

// linkSet runs `ip link set eth0 up|down` in the node.
func linkSet(t *testing.T, n *netns.Node, updown string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Exec(ctx, "ip", "link", "set", netns.NodeLink, updown); err != nil {
		t.Fatal(err)
	}
}

// hasVIP reports whether the VIP is on the node's eth0.
func hasVIP(n *netns.Node) (bool, error) { return n.HasAddr(vrVIP) }

// mustHaveVIP fails the test unless the VIP's presence on the node's eth0 is want.
func mustHaveVIP(t *testing.T, n *netns.Node, want bool) {
	t.Helper()
	has, err := hasVIP(n)
	if err != nil {
		t.Fatal(err)
	}
	if has != want {
		t.Errorf("VIP %s on %s's %s: expected present=%t, seen present=%t", vrVIP, n.Role, netns.NodeLink, want, has)
	}
}

// delVIP removes the VIP from the node's eth0 if it is there.
func delVIP(t *testing.T, n *netns.Node) {
	t.Helper()
	err := n.Do(func() error {
		l, err := netlink.LinkByName(netns.NodeLink)
		if err != nil {
			return err
		}
		err = netlink.AddrDel(l, &netlink.Addr{IPNet: &net.IPNet{IP: vrVIP.AsSlice(), Mask: net.CIDRMask(32, 32)}})
		if err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.ENOENT) {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("remove VIP from %s: %v", n.Role, err)
	}
}

// kaConf is a keepalived configuration of one instance.
type kaConf struct {
	version  int // 2 or 3 (vrrp_version in global_defs)
	vrid     int
	priority int
	interval time.Duration
	state    string // initial state: BACKUP or MASTER
	authPass string // v2 PASS; "" = none
}

// startKeepalived runs keepalived with c on node, the VIP on eth0 (keepalived.Start: config
// checked, own process group, stopped and its log shown in top's cleanup).
func startKeepalived(t, top *testing.T, node *netns.Node, c kaConf) *keepalived.Proc {
	t.Helper()
	k := keepalived.Start(t, top, node, keepalived.Config{
		RouterID: "xdplb_test_ka", Instance: fmt.Sprintf("VI_%d", c.vrid), Interface: netns.NodeLink,
		Version: c.version, VRID: c.vrid, Priority: c.priority, Interval: c.interval, State: c.state,
		AuthPass: c.authPass, VIPs: []netip.Prefix{netip.PrefixFrom(vrVIP, 32)},
	})
	t.Logf("keepalived: pid %d in %s: v%d vrid %d priority %d advert_int %v state %s auth %t",
		k.Pid(), node.Role, c.version, c.vrid, c.priority, c.interval, c.state, c.authPass != "")
	return k
}

// kill9Keepalived simulates the death of keepalived's machine: link down first, then SIGKILL to
// the whole process group at once. It returns when the link went down.
func kill9Keepalived(t *testing.T, k *keepalived.Proc) time.Time {
	t.Helper()
	linkSet(t, k.Node, "down")
	at := time.Now()
	k.Kill()
	return at
}

// vrrpRouter is one side of a VRRP pair as the sampler sees it.
type vrrpRouter struct {
	name  string
	state func() string
}

func xdplbRouter(n *vrrpDirector) vrrpRouter {
	return vrrpRouter{name: "xdplb@" + n.Role, state: n.state}
}

func keepalivedRouter(k *keepalived.Proc) vrrpRouter {
	return vrrpRouter{name: "keepalived@" + k.Node.Role, state: k.State}
}

func routerStates(rs []vrrpRouter) []string {
	out := make([]string, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() { out[i] = r.state() })
	}
	wg.Wait()
	return out
}

func describe(rs []vrrpRouter, states []string) string {
	var parts []string
	for i, r := range rs {
		parts = append(parts, r.name+"="+states[i])
	}
	return strings.Join(parts, " ")
}

// waitStates polls the routers every 20 ms until their states are want; it returns the time from
// since to the first poll where they were. It fails the test when that does not happen within
// bound of since, with the states last seen.
func waitStates(t *testing.T, since time.Time, bound time.Duration, what string, rs []vrrpRouter, want ...string) time.Duration {
	t.Helper()
	var last []string
	for {
		last = routerStates(rs)
		el := time.Since(since)
		if slices.Equal(last, want) {
			if el > bound {
				t.Fatalf("%s: expected %s within %v, seen it after %v", what, describe(rs, want), bound, el.Round(time.Millisecond))
			}
			return el
		}
		if el > bound {
			t.Fatalf("%s: expected %s within %v, seen %s", what, describe(rs, want), bound, describe(rs, last))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holdStates samples the routers every period for d and fails the test at the first sample whose
// states are not want.
func holdStates(t *testing.T, d, period time.Duration, what string, rs []vrrpRouter, want ...string) int {
	t.Helper()
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		got := routerStates(rs)
		n++
		if !slices.Equal(got, want) {
			t.Fatalf("%s: expected %s for %v, seen %s after %v (sample %d)", what, describe(rs, want), d, describe(rs, got),
				time.Since(start).Round(time.Millisecond), n)
		}
		time.Sleep(period)
	}
	return n
}

// watcher samples the states of routers in the background.
type watcher struct {
	rs      []vrrpRouter
	mu      sync.Mutex
	samples []stateSample
	stopc   chan struct{}
	done    chan struct{}
}

type stateSample struct {
	at     time.Time
	states []string
}

func watchRouters(rs []vrrpRouter, period time.Duration) *watcher {
	w := &watcher{rs: rs, stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			s := stateSample{at: time.Now(), states: routerStates(rs)}
			w.mu.Lock()
			w.samples = append(w.samples, s)
			w.mu.Unlock()
			select {
			case <-w.stopc:
				return
			case <-time.After(period):
			}
		}
	}()
	return w
}

func (w *watcher) stop() []stateSample {
	select {
	case <-w.stopc:
	default:
		close(w.stopc)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.samples)
}

// checkOneMaster fails the test for any sample with two Masters, and for any run of samples
// with no Master longer than maxNone. It returns the longest run with none.
func checkOneMaster(t *testing.T, what string, rs []vrrpRouter, samples []stateSample, maxNone time.Duration) time.Duration {
	t.Helper()
	var longest time.Duration
	var noneSince time.Time
	for i, s := range samples {
		masters := 0
		for _, st := range s.states {
			if st == stMaster {
				masters++
			}
		}
		switch {
		case masters > 1:
			t.Errorf("%s: expected at most one Master in every sample, seen %s at sample %d/%d", what, describe(rs, s.states), i+1, len(samples))
		case masters == 0 && noneSince.IsZero():
			noneSince = s.at
		case masters == 1 && !noneSince.IsZero():
			longest = max(longest, s.at.Sub(noneSince))
			noneSince = time.Time{}
		}
	}
	if !noneSince.IsZero() && len(samples) > 0 {
		longest = max(longest, samples[len(samples)-1].at.Sub(noneSince))
	}
	if longest > maxNone {
		t.Errorf("%s: expected no Master missing for longer than %v, seen none for %v", what, maxNone, longest.Round(time.Millisecond))
	}
	return longest
}

// nftBlockVRRP drops IP protocol 112 on ingress of the bridge ports of nodes in the LAN's
// namespace (a netdev ingress hook per port, one table per node: neither side's adverts reach
// the other); the returned function removes every table. They are removed in t.Cleanup too.
// nftUnblockFrom lifts the block of one node first.
func nftBlockVRRP(t *testing.T, lan *netns.LAN, nodes ...*netns.Node) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	script := ""
	for i, n := range nodes {
		table := fmt.Sprintf("%s%d", nftBlockTable, i)
		script += fmt.Sprintf("add table netdev %s\n", table)
		script += fmt.Sprintf("add chain netdev %s in { type filter hook ingress device %s priority 0; }\n", table, n.PeerLink)
		script += fmt.Sprintf("add rule netdev %s in ip protocol 112 counter drop\n", table)
	}
	f := filepath.Join(t.TempDir(), "block.nft")
	if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := lan.Exec(ctx, "nft", "-f", f); err != nil {
		t.Fatal(err)
	}
	removed := false
	remove := func() {
		if removed {
			return
		}
		removed = true
		for i := range nodes {
			if err := nftUnblockFrom(lan, i); err != nil {
				t.Errorf("remove the nft table: %v", err)
			}
		}
	}
	t.Cleanup(remove)
	return remove
}

const nftBlockTable = "xdplb_vrrp_block"

// nftUnblockFrom lets the adverts of the i-th node given to nftBlockVRRP through again (no
// error when they already pass).
func nftUnblockFrom(lan *netns.LAN, i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	table := fmt.Sprintf("%s%d", nftBlockTable, i)
	if _, err := lan.Exec(ctx, "nft", "list", "table", "netdev", table); err != nil {
		return nil // gone already
	}
	_, err := lan.Exec(ctx, "nft", "delete", "table", "netdev", table)
	return err
}

// nftDropped is the packets counted by the block tables' rules (for the log).
func nftDropped(lan *netns.LAN) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := lan.Exec(ctx, "nft", "list", "ruleset", "netdev")
	if err != nil {
		return err.Error()
	}
	var counters []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "counter") {
			counters = append(counters, strings.TrimSpace(l))
		}
	}
	return strings.Join(counters, "; ")
}
