//go:build linux

package test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/internal/testbed/cluster"
	"github.com/xdplb/xdplb/internal/testbed/keepalived"
	"github.com/xdplb/xdplb/internal/testbed/netns"
	"github.com/xdplb/xdplb/loader"
)

// seedTB is the TB the cluster gets: failures go to the subtest running now (t.Fatalf must be
// called from the goroutine of the test it belongs to), cleanups to the top-level test.
type seedTB struct {
	top *testing.T
	mu  sync.Mutex
	cur *testing.T
}

func (s *seedTB) t() *testing.T {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		return s.cur
	}
	return s.top
}

func (s *seedTB) set(t *testing.T) {
	s.mu.Lock()
	s.cur = t
	s.mu.Unlock()
}

func (s *seedTB) Helper()                           {}
func (s *seedTB) Cleanup(f func())                  { s.top.Cleanup(f) }
func (s *seedTB) Errorf(format string, args ...any) { s.t().Errorf(format, args...) }
func (s *seedTB) Fatal(args ...any)                 { s.t().Fatal(args...) }
func (s *seedTB) Fatalf(format string, args ...any) { s.t().Fatalf(format, args...) }
func (s *seedTB) Failed() bool                      { return s.t().Failed() }
func (s *seedTB) Logf(format string, args ...any)   { s.t().Logf(format, args...) }
func (s *seedTB) Skipf(format string, args ...any)  { s.t().Skipf(format, args...) }

// snapshot reads a director's pinned maps in-process (a few map lookups: the instant it reads the
// counters is known to within microseconds, unlike an `xdplb list` run).
func snapshot(n *cluster.Node) (control.State, time.Time, error) {
	o, err := loader.OpenAnyNamespace(n.PinRoot, netns.NodeLink)
	if err != nil {
		return control.State{}, time.Time{}, err
	}
	defer o.Close()
	st, err := control.NewMaps(o).Snapshot()
	return st, time.Now(), err
}

func mustSnapshot(t *testing.T, n *cluster.Node) (control.State, time.Time) {
	t.Helper()
	st, at, err := snapshot(n)
	if err != nil {
		t.Fatalf("read the pinned maps of %s: expected them readable, seen %v", n.Name, err)
	}
	return st, at
}

// backendPackets sums the packets the director forwarded (or passed locally) to addr over all
// services.
func backendPackets(st control.State, addr netip.Addr) uint64 {
	var sum uint64
	for _, s := range st.Services {
		for _, b := range s.Backends {
			if b.Addr == addr {
				sum += b.Traffic.Packets
			}
		}
	}
	return sum
}

// ring is the node names taking new flows of the service on port in a snapshot, sorted.
func ring(c *cluster.Cluster, st control.State, port uint16) []string {
	out := []string{}
	for _, s := range st.Services {
		if s.Key.Port != port {
			continue
		}
		for _, b := range s.Backends {
			if b.Weight > 0 && !b.Draining && !b.Sorry {
				out = append(out, c.Name(b.Addr))
			}
		}
	}
	slices.Sort(out)
	return out
}

func hasMAC(list []net.HardwareAddr, m net.HardwareAddr) bool {
	return slices.ContainsFunc(list, func(x net.HardwareAddr) bool { return strings.EqualFold(x.String(), m.String()) })
}

// seedVIPOnEth0 reports whether `ip addr show eth0` in the node lists the VIP.
func seedVIPOnEth0(n *cluster.Node) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, "ip", "-o", "-4", "addr", "show", netns.NodeLink)
	if err != nil {
		return false, err
	}
	return strings.Contains(out, " "+cluster.VIP.String()+"/"), nil
}

func mustVIPOnEth0(t *testing.T, n *cluster.Node, want bool) {
	t.Helper()
	has, err := seedVIPOnEth0(n)
	if err != nil {
		t.Fatal(err)
	}
	if has != want {
		t.Errorf("VIP %s on %s's %s (`ip addr show %s`): expected present=%t, seen present=%t", cluster.VIP, n.Name, netns.NodeLink, netns.NodeLink, want, has)
	}
}

// vrrpState is the director's VRRP state, "DOWN" when its daemon does not answer.
func vrrpState(c *cluster.Cluster, name string) string {
	if !c.DirectorRunning(name) {
		return stDown
	}
	st, err := c.VRRP(name)
	if err != nil {
		return "ERR(" + err.Error() + ")"
	}
	return st.State
}

// waitUntil polls cond every 5 ms from since until it holds and returns how long after since
// it held; it fails the test after bound.
func waitUntil(t *testing.T, since time.Time, bound time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	for {
		ok, seen := cond()
		el := time.Since(since)
		if ok {
			return el
		}
		if el > bound {
			t.Fatalf("expected %s within %v, seen after %v: %s", what, bound, el.Round(time.Millisecond), seen)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// seedConn is a long-lived client connection through the VIP that runs one statement every
// period until stopped, and records when each acknowledged statement returned.
type seedConn struct {
	k      *cluster.Conn
	server string // node that answered at the start
	insert bool   // INSERT a row (writer) or SELECT (reader)

	mu    sync.Mutex
	acks  []time.Time
	ids   []int64
	err   error
	errAt time.Time
	done  chan struct{}
}

func openSeedConns(t *testing.T, c *cluster.Cluster, port uint16, n int, readTimeout time.Duration, insert bool) []*seedConn {
	t.Helper()
	var out []*seedConn
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		k, err := c.OpenConn(ctx, port, readTimeout)
		if err != nil {
			cancel()
			t.Fatalf("open connection %d to %s:%d: expected it open, seen %v", i, cluster.VIP, port, err)
		}
		var id string
		err = k.QueryRowContext(ctx, "SELECT @@server_id").Scan(&id)
		cancel()
		if err != nil {
			t.Fatalf("connection %d to %s:%d: SELECT @@server_id: %v", i, cluster.VIP, port, err)
		}
		sc := &seedConn{k: k, server: "db" + id, insert: insert, done: make(chan struct{})}
		t.Cleanup(func() { _ = k.Close() })
		out = append(out, sc)
	}
	return out
}

// run issues a statement every period until stop is closed or a statement fails.
func (s *seedConn) run(stop <-chan struct{}, period time.Duration) {
	defer close(s.done)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		var err error
		var id int64
		if s.insert {
			var res interface{ LastInsertId() (int64, error) }
			res, err = s.k.ExecContext(context.Background(), "INSERT INTO "+cluster.Database+".writes () VALUES ()")
			if err == nil {
				id, err = res.LastInsertId()
			}
		} else {
			var v int64
			err = s.k.QueryRowContext(context.Background(), "SELECT @@server_id").Scan(&v)
		}
		now := time.Now()
		s.mu.Lock()
		if err != nil {
			s.err, s.errAt = err, now
			s.mu.Unlock()
			return
		}
		s.acks = append(s.acks, now)
		if s.insert {
			s.ids = append(s.ids, id)
		}
		s.mu.Unlock()
	}
}

// alive checks that the connection is the same server session it was: CONNECTION_ID() unchanged.
func (s *seedConn) alive(timeout time.Duration) error {
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var id string
	if err := s.k.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		return err
	}
	if id != s.k.ID {
		return fmt.Errorf("CONNECTION_ID() %s, was %s: a new session", id, s.k.ID)
	}
	return nil
}

// maxGap is the longest time between consecutive acknowledgements of all the connections
// together, within [from, to], and when it started.
func maxGap(conns []*seedConn, from, to time.Time) (time.Duration, time.Time) {
	var all []time.Time
	for _, s := range conns {
		s.mu.Lock()
		all = append(all, s.acks...)
		s.mu.Unlock()
	}
	slices.SortFunc(all, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	var at time.Time
	prev := from
	for _, a := range all {
		if a.Before(from) || a.After(to) {
			continue
		}
		if d := a.Sub(prev); d > gap {
			gap, at = d, prev
		}
		prev = a
	}
	if d := to.Sub(prev); d > gap {
		gap, at = d, prev
	}
	return gap, at
}

func countAcks(conns []*seedConn) int {
	n := 0
	for _, s := range conns {
		s.mu.Lock()
		n += len(s.acks)
		s.mu.Unlock()
	}
	return n
}

// seedKeepalived runs keepalived (VRRP only, no LVS) in a cluster node with the cluster's VRRP
// instance: version 3, vrid 51, the cluster's advert interval, no authentication, the VIP on
// eth0, and a notify script that records its states.
func seedKeepalived(t *testing.T, n *cluster.Node, priority int, interval time.Duration) *keepalived.Proc {
	t.Helper()
	k := keepalived.Start(t, t, n.Node, keepalived.Config{
		RouterID: "xdplb_seeds_" + n.Name, Instance: "VI_1", Interface: netns.NodeLink,
		Version: 3, VRID: cluster.VRID, Priority: priority, Interval: interval, State: "BACKUP",
		VIPs: []netip.Prefix{netip.PrefixFrom(cluster.VIP, 32)}, VIPDev: netns.NodeLink,
	})
	t.Logf("keepalived: pid %d on %s: v3 vrid %d priority %d advert_int %v, VIP %s on %s, no LVS",
		k.Pid(), n.Name, cluster.VRID, priority, interval, cluster.VIP, netns.NodeLink)
	return k
}

// clusterStep is one step of a test that walks one cluster through several states.
type clusterStep struct {
	name string
	f    func(t *testing.T)
}

// runClusterSteps runs the steps in order as subtests (each leaves the cluster in the state the
// next expects, so a failed step stops the walk, with the daemons' log tails), then closes the
// cluster and checks that nothing of it is left.
func runClusterSteps(t *testing.T, tb *seedTB, c *cluster.Cluster, steps []clusterStep) {
	t.Helper()
	for _, s := range steps {
		completed := false // false after a Fatal: the cluster is not in the state the next step expects
		t.Run(s.name, func(t *testing.T) {
			tb.set(t)
			defer tb.set(nil)
			st := time.Now()
			s.f(t)
			completed = true
			t.Logf("%s: %v", s.name, time.Since(st).Round(time.Millisecond))
		})
		if !completed {
			for _, d := range []string{cluster.DB2, cluster.DB3} {
				if c.DirectorRunning(d) || c.DaemonLog(d) != "" {
					t.Logf("%s daemon log (tail):\n%s", d, tail(c.DaemonLog(d), 40))
				}
			}
			t.Fatalf("subtest %s failed: the later ones depend on its state, not run", s.name)
		}
	}
	c.Close()
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("after Close: expected nothing of the cluster left, seen %v", left)
	}
}
