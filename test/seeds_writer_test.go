//go:build linux

package test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/cluster"
)

// writerView is what a director says of the writer service: the nodes in its ring (from the
// maps), the writer and the writable nodes (from its status socket).
type writerView struct {
	ring     []string
	writer   string
	writable []string
}

func (v writerView) String() string {
	return fmt.Sprintf("ring %v, writer %q, writable %v", v.ring, v.writer, v.writable)
}

func viewWriter(c *cluster.Cluster, director string) (writerView, error) {
	var v writerView
	r, err := c.Ring(director, cluster.WriterPort)
	if err != nil {
		return v, err
	}
	v.ring = r
	st, err := c.Status(director)
	if err != nil {
		return v, err
	}
	for _, s := range st.Services {
		if s.Port != cluster.WriterPort {
			continue
		}
		if !s.SingleWriter {
			return v, fmt.Errorf("%s: the writer service is not reported as single-writer", director)
		}
		if s.Writer.IsValid() {
			v.writer = c.Name(s.Writer)
		}
		for _, a := range s.Writable {
			v.writable = append(v.writable, c.Name(a))
		}
		return v, nil
	}
	return v, fmt.Errorf("%s: no writer service in the status", director)
}

// bothDirectors waits until cond holds for the views of db2 and db3 at the same poll.
func bothDirectors(t *testing.T, c *cluster.Cluster, since time.Time, bound time.Duration, what string, cond func(writerView) bool) time.Duration {
	t.Helper()
	return waitUntil(t, since, bound, what, func() (bool, string) {
		var seen []string
		ok := true
		for _, d := range []string{cluster.DB2, cluster.DB3} {
			v, err := viewWriter(c, d)
			if err != nil {
				return false, err.Error()
			}
			seen = append(seen, d+": "+v.String())
			ok = ok && cond(v)
		}
		return ok, strings.Join(seen, "; ")
	})
}

var writableMetric = regexp.MustCompile(`(?m)^xdplb_writable_servers\{service="writer"\} (\d+)$`)

// writableServers reads xdplb_writable_servers{service="writer"} from the director's metrics.
func writableServers(c *cluster.Cluster, director string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := c.Node(director).Exec(ctx, "curl", "-sS", "http://127.0.0.1:9447/metrics")
	if err != nil {
		return 0, err
	}
	m := writableMetric.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s: no xdplb_writable_servers{service=\"writer\"} in the metrics", director)
	}
	return strconv.Atoi(m[1])
}

// writerLines is the last n lines of a daemon log that concern the writer service.
func writerLines(log string, n int) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "service=writer") || strings.Contains(l, "data path") {
			out = append(out, l)
		}
	}
	return strings.Join(out[max(len(out)-n, 0):], "\n")
}

func tableCount(t *testing.T, n *cluster.Node) int {
	t.Helper()
	rows, err := n.DB.Query("SELECT COUNT(*) AS n FROM " + cluster.Database + ".writes")
	if err != nil || len(rows) != 1 {
		t.Fatalf("%s: count rows: %v %v", n.Name, rows, err)
	}
	v, err := strconv.Atoi(rows[0]["n"])
	if err != nil {
		t.Fatalf("%s: count rows: %v", n.Name, err)
	}
	return v
}

// seedSingleWriter (issue 11, point 1): after the primary switch db3 is the writable primary
// and db1 is read-only, neither replicating from the other. db1 made writable again (a restarted
// primary, or a replica started without --read-only) is a second writer: the writer service must
// keep db3, the one already serving (db1 comes first in config order: a rule without memory
// would flip to it), on both directors; new write connections all land on db3; the alarm shows in
// the logs, the metric and `xdplb list`. The Backup dies and restarts with its pins: it keeps
// db3. Then db3 turns read-only: both directors move to db1 within fall × interval + timeout. Last, with both writable again, the Backup director restarts
// from scratch (no pins, no memory): it must choose the Master's writer, db1, by itself.
func seedSingleWriter(t *testing.T, c *cluster.Cluster) {
	o := c.Opts
	db1, db3 := c.Node(cluster.DB1), c.Node(cluster.DB3)
	slack := 300 * time.Millisecond
	riseBound := time.Duration(o.Rise)*o.CheckInterval + o.CheckTimeout + slack
	only := func(name string) func(writerView) bool {
		return func(v writerView) bool { return slices.Equal(v.ring, []string{name}) && v.writer == name }
	}
	for _, d := range []string{cluster.DB2, cluster.DB3} {
		if !c.DirectorRunning(d) { // the mixed-pair step leaves the keepalived side without xdplb
			c.StartDirector(d)
		}
	}
	bothDirectors(t, c, time.Now(), 10*time.Second, "db3 the only writer on both directors after the primary switch", only(cluster.DB3))

	// 1. db1 writable too.
	db1.DB.MustExec("SET GLOBAL read_only = 0")
	t0 := time.Now()
	el := bothDirectors(t, c, t0, riseBound, "both directors to see db1 and db3 writable, db3 still the only writer",
		func(v writerView) bool {
			return slices.Equal(v.writable, []string{cluster.DB1, cluster.DB3}) && slices.Equal(v.ring, []string{cluster.DB3})
		})
	t.Logf("db1 made writable: both directors see 2 writable after %v, ring {db3} on both", el.Round(time.Millisecond))
	// The ring must not change while both stay writable: watch it for two more check intervals.
	watchEnd := time.Now().Add(2 * o.CheckInterval)
	for polls := 0; time.Now().Before(watchEnd) || polls == 0; polls++ {
		for _, d := range []string{cluster.DB2, cluster.DB3} {
			if v, err := viewWriter(c, d); err != nil || !slices.Equal(v.ring, []string{cluster.DB3}) {
				t.Fatalf("%s with db1 and db3 writable: expected the ring to stay {db3}, seen %v (%v)", d, v, err)
			}
		}
	}
	alarm := `level=ERROR msg="several writable real servers behind a single-writer service: only the writer takes connections" service=writer writable="10.0.0.11 10.0.0.13" writer=10.0.0.13`
	for _, d := range []string{cluster.DB2, cluster.DB3} {
		if n := strings.Count(c.DaemonLog(d), alarm); n != 1 {
			t.Errorf("%s: expected one alarm line %q, seen %d", d, alarm, n)
		}
		if n, err := writableServers(c, d); err != nil || n != 2 {
			t.Errorf("%s: expected xdplb_writable_servers{service=\"writer\"} 2, seen %d (%v)", d, n, err)
		}
		out, err := c.List(d)
		if err != nil || !strings.Contains(out, "single-writer ALARM: 2 writable (10.0.0.11 10.0.0.13), writer 10.0.0.13") ||
			!regexp.MustCompile(`(?m)^  -> 10\.0\.0\.11 .* up \S+ +writable, not the writer$`).MatchString(out) {
			t.Errorf("%s: expected the alarm and db1 'writable, not the writer' in xdplb list, seen (%v):\n%s", d, err, out)
		}
	}

	// 2. Writes through the VIP land on db3 only: db1 does not replicate from db3, so a row
	// written on db1 would show in its count.
	before1, before3 := tableCount(t, db1), tableCount(t, db3)
	const conns = 12
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := map[string]int{}
	for i := range conns {
		db := c.DB(cluster.WriterPort, 5*time.Second)
		var id uint32
		err := db.QueryRowContext(ctx, "SELECT @@server_id").Scan(&id)
		if err == nil {
			_, err = db.ExecContext(ctx, "INSERT INTO "+cluster.Database+".writes () VALUES ()")
		}
		db.Close()
		if err != nil {
			t.Fatalf("write connection %d through %s:%d: %v", i, cluster.VIP, cluster.WriterPort, err)
		}
		seen[fmt.Sprintf("server_id %d", id)]++
	}
	after1, after3 := tableCount(t, db1), tableCount(t, db3)
	if seen["server_id 3"] != conns || after3-before3 != conns || after1 != before1 {
		t.Fatalf("%d new write connections with db1 and db3 writable: expected all on db3 (server_id 3), seen %v; rows +%d on db3, +%d on db1",
			conns, seen, after3-before3, after1-before1)
	}
	t.Logf("%d new write connections with two writable nodes: all on db3 (%v); rows +%d on db3, +%d on db1", conns, seen, after3-before3, after1-before1)

	// 2b. The Backup's machine dies (link down, kill -9: its pins stay) and comes back: the
	// restarted daemon adopts the pinned ring and keeps db3 from its first reconcile on, also
	// once its checks see db1 writable (a fresh choice would take db1, first in config order).
	backup := cluster.Other(c.Master())
	c.KillDirector(backup)
	t0 = time.Now()
	c.StartDirector(backup)
	polls := 0
	el = waitUntil(t, t0, 15*time.Second, backup+" (restarted, pins adopted) to see db1 and db3 writable", func() (bool, string) {
		v, err := viewWriter(c, backup)
		if err != nil {
			return false, err.Error()
		}
		polls++
		if !slices.Equal(v.ring, []string{cluster.DB3}) {
			t.Fatalf("%s restarted with its pins while db3 serves and db1 is writable: expected the ring {db3} at every poll, seen %v (poll %d)", backup, v, polls)
		}
		return slices.Equal(v.writable, []string{cluster.DB1, cluster.DB3}), v.String()
	})
	t.Logf("%s killed and restarted with its pins: ring {db3} at all %d polls, both writable seen after %v", backup, polls, el.Round(time.Millisecond))

	// 3. db3 read-only: db1 takes over on both directors.
	db3.DB.MustExec("SET GLOBAL read_only = 1")
	t0 = time.Now()
	bound := time.Duration(o.Fall)*o.CheckInterval + o.CheckTimeout
	el = bothDirectors(t, c, t0, bound+slack, "db1 the only writer on both directors after read_only=1 on db3", only(cluster.DB1))
	who, err := c.ServerID(ctx, cluster.WriterPort)
	if err != nil || who != cluster.DB1 {
		t.Fatalf("writer query after db3 turned read-only: expected db1, seen %q (%v)", who, err)
	}
	t.Logf("read_only=1 on the writer db3: db1 the only writer on both directors after %v (bound fall %d × interval %v + timeout %v = %v); writer query answered by %s",
		el.Round(time.Millisecond), o.Fall, o.CheckInterval, o.CheckTimeout, bound, who)
	for _, d := range []string{cluster.DB2, cluster.DB3} {
		waitUntil(t, time.Now(), 5*time.Second, d+": the alarm cleared in the log and the metric", func() (bool, string) {
			n, err := writableServers(c, d)
			cleared := strings.Contains(c.DaemonLog(d), `msg="single writable real server again" service=writer writer=10.0.0.11`)
			return err == nil && n == 1 && cleared, fmt.Sprintf("metric %d (%v), cleared line %t", n, err, cleared)
		})
	}

	// 4. Both writable again, db1 serving; the Backup restarts with nothing pinned and no memory.
	db3.DB.MustExec("SET GLOBAL read_only = 0")
	bothDirectors(t, c, time.Now(), riseBound, "db1 and db3 writable, db1 the only writer on both directors", func(v writerView) bool {
		return slices.Equal(v.writable, []string{cluster.DB1, cluster.DB3}) && only(cluster.DB1)(v)
	})
	backup = cluster.Other(c.Master())
	if err := c.StopDirector(backup); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	c.StartDirector(backup)
	el = waitUntil(t, t0, 15*time.Second, backup+" (restarted) to choose a writer", func() (bool, string) {
		v, err := viewWriter(c, backup)
		return err == nil && v.writer != "", fmt.Sprint(v, err)
	})
	for _, d := range []string{cluster.DB2, cluster.DB3} {
		v, err := viewWriter(c, d)
		if err != nil || !only(cluster.DB1)(v) || !slices.Equal(v.writable, []string{cluster.DB1, cluster.DB3}) {
			t.Fatalf("%s after %s restarted from scratch with db1 and db3 writable: expected db1 the only writer (as the Master's), seen %v (%v); %s's log of the writer service since its restart:\n%s",
				d, backup, v, err, backup, writerLines(c.DaemonLog(backup), 40))
		}
	}
	t.Logf("%s restarted with no pins while db1 and db3 are writable: chose db1 by itself after %v, the same as %s", backup, el.Round(time.Millisecond), c.Master())
	db3.DB.MustExec("SET GLOBAL read_only = 1")
}
