//go:build linux

package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/cluster"
)

// TestCluster builds the topology, reads through both services, checks that the VIP sits on lo
// of every node and on the Master's eth0 (added by VRRP, which leaves lo's copy alone), hands the
// VIP over with a graceful stop, and checks that Close leaves nothing behind.
func TestCluster(t *testing.T) {
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if m := c.Master(); m != cluster.DB2 {
		t.Fatalf("expected db2 (priority 150) to be Master, seen %q", m)
	}
	for _, d := range []string{cluster.DB2, cluster.DB3} {
		if n := c.Node(d); n.Mode != "native" && n.Mode != "generic" {
			t.Errorf("%s: expected an XDP mode, seen %q", d, n.Mode)
		}
	}
	if who, err := c.ServerID(ctx, cluster.WriterPort); err != nil || who != cluster.DB1 {
		t.Fatalf("writer: expected db1, seen %q (%v)", who, err)
	}
	seen := map[string]int{}
	for range 12 {
		who, err := c.ServerID(ctx, cluster.ReaderPort)
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
		seen[who]++
	}
	if len(seen) != 2 || seen[cluster.DB1] != 0 {
		t.Errorf("reader: expected answers from db2 and db3 only, seen %v", seen)
	}
	for _, name := range []string{cluster.DB1, cluster.DB2, cluster.DB3} {
		out, err := c.Node(name).Exec(ctx, "ip", "-o", "addr", "show", "dev", "lo")
		if err != nil || !strings.Contains(out, cluster.VIP.String()+"/32") {
			t.Errorf("%s: expected the VIP on lo, seen %q (%v)", name, out, err)
		}
	}
	out, _ := c.Node(cluster.DB2).Exec(ctx, "ip", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(out, cluster.VIP.String()+"/32") {
		t.Errorf("Master db2: expected the VIP on eth0, seen %q", out)
	}
	st, err := c.Stats(cluster.DB2)
	if err != nil || st.Services[cluster.ReaderPort].NewFlows < 12 {
		t.Errorf("db2 stats: expected at least 12 new reader flows, seen %+v (%v)", st.Services, err)
	}
	if l, err := c.List(cluster.DB2, "--stats"); err != nil || !strings.Contains(l, "VRRP VI_1 on eth0: MASTER") {
		t.Errorf("xdplb list --stats on db2: expected the VRRP line, seen %q (%v)", l, err)
	}

	if err := c.StopDirector(cluster.DB2); err != nil {
		t.Fatalf("stop db2: %v", err)
	}
	if last, err := c.WaitFor(3*time.Second, func() (bool, string) { m := c.Master(); return m == cluster.DB3, m }); err != nil {
		t.Fatalf("after db2 stopped: expected db3 Master within 3s, seen %q", last)
	}
	out, _ = c.Node(cluster.DB2).Exec(ctx, "ip", "-o", "addr", "show")
	if strings.Contains(out, "eth0    inet "+cluster.VIP.String()) || !strings.Contains(out, "lo    inet "+cluster.VIP.String()) {
		t.Errorf("db2 after a graceful stop: expected the VIP on lo only, seen:\n%s", out)
	}
	if who, err := c.ServerID(ctx, cluster.WriterPort); err != nil || who != cluster.DB1 {
		t.Fatalf("writer through db3: expected db1, seen %q (%v)", who, err)
	}
	for _, d := range []string{cluster.DB2, cluster.DB3} {
		if log := c.DaemonLog(d); strings.Contains(log, "not added by us") {
			t.Errorf("%s: the VRRP VIP manager mistook lo's VIP for one on eth0:\n%s", d, log)
		}
	}

	c.Close()
	c.Close()
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("after Close: expected nothing left, seen %v", left)
	}
}
