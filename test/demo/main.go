//go:build linux

// Command demo is `make demo`: it builds the seeds' MySQL cluster in network namespaces
// (internal/testbed/cluster), narrates five steps and tears everything down, also on Ctrl-C or failure.
// See docs/demo.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/xdplb/xdplb/internal/testbed/cluster"
)

var begin = time.Now()

// say prints one narration line with the time since the start; after an interrupt only the
// teardown speaks (sayAlways).
func say(format string, args ...any) {
	if interrupted.Load() {
		return
	}
	sayAlways(format, args...)
}

func sayAlways(format string, args ...any) {
	fmt.Printf("[%5.1fs] %s\n", time.Since(begin).Seconds(), fmt.Sprintf(format, args...))
}

// failed is set by errorf: a check that failed without stopping the demo.
var failed atomic.Bool

// errorf reports a failed check and lets the demo go on.
func errorf(format string, args ...any) {
	failed.Store(true)
	say("ERROR: "+format, args...)
}

// teardown closes the cluster: daemons, MariaDB, XDP programs, pins, namespaces. It may run twice
// at once (signal and main): Teardown serialises them, and each piece is torn down once.
func teardown() {
	c := theCluster.Load()
	if c == nil {
		return
	}
	if err := c.Teardown(); err != nil {
		failed.Store(true)
		if !interrupted.Load() { // what fails while an interrupt tears down is no news
			say("ERROR: teardown: %v", err)
		}
	}
}

var interrupted atomic.Bool

func main() {
	bin := flag.String("xdplb", "", "the xdplb binary (default: $XDPLB_BIN, else built with go build)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (network namespaces, XDP, MariaDB): sudo make demo")
		os.Exit(1)
	}
	// The driver logs broken connections on stderr; the demo reports what matters itself.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
	mainDone := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		interrupted.Store(true)
		sayAlways("%v received: tearing everything down", sig)
		teardown()
		select {
		case <-mainDone:
		case <-time.After(10 * time.Second):
		}
		teardown()
		report()
		os.Exit(130)
	}()
	code := run(*bin)
	close(mainDone)
	if interrupted.Load() {
		select {} // the signal goroutine exits
	}
	os.Exit(code)
}

func run(bin string) (code int) {
	defer func() {
		if r := recover(); r != nil {
			say("FAILED: panic: %v\n%s", r, debug.Stack())
			code = 1
		}
		if interrupted.Load() {
			teardown()
			return
		}
		say("5. Tearing down: daemons, MariaDB, XDP programs, pins, namespaces")
		t0 := time.Now()
		teardown()
		say("   torn down in %v", time.Since(t0).Round(time.Millisecond))
		if !report() {
			code = 1
		}
		if code == 0 && failed.Load() {
			code = 1
		}
		if code == 0 {
			say("demo finished in %v: OK", time.Since(begin).Round(100*time.Millisecond))
		} else {
			say("demo FAILED after %v", time.Since(begin).Round(100*time.Millisecond))
		}
	}()
	if err := demo(bin); err != nil {
		if !interrupted.Load() {
			say("FAILED: %v", err)
		}
		return 1
	}
	return 0
}

// demo runs steps 1 to 4; the first failure ends it.
func demo(bin string) error {
	say("Building the topology: a client, db1 (MariaDB primary), db2 and db3 (replicas + xdplb directors, VRRP)")
	c, err := cluster.Open(cluster.Options{Binary: bin, Created: func(c *cluster.Cluster) { theCluster.Store(c) }, Logf: func(f string, a ...any) { say("   "+f, a...) }})
	if err != nil {
		return err
	}
	say("   VIP %s: writer :%d -> primary only (writable check), reader :%d -> replicas (replication lag < 10s)",
		cluster.VIP, cluster.WriterPort, cluster.ReaderPort)
	for _, n := range []string{cluster.DB2, cluster.DB3} {
		st, _ := c.VRRP(n)
		say("   %s: xdplb run, XDP %s mode, VRRP %s (priority %d)", n, c.Node(n).Mode, st.State, st.Priority)
	}
	ctx := context.Background()

	// 1. Reader spread.
	say("")
	say("1. SELECT @@server_id through the reader service %s:%d, 9 new connections", cluster.VIP, cluster.ReaderPort)
	var seq []string
	count := map[string]int{}
	for range 9 {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		who, err := c.ServerID(qctx, cluster.ReaderPort)
		cancel()
		if err != nil {
			return fmt.Errorf("query through the reader: %v", err)
		}
		seq = append(seq, who)
		count[who]++
	}
	say("   answers: %s", strings.Join(seq, " "))
	say("   spread: %s", spread(count))
	if count[cluster.DB1] > 0 || len(count) != 2 {
		return fmt.Errorf("expected the reader to spread over db2 and db3 only, seen %s", spread(count))
	}

	// 2. list --stats on the Master.
	master := c.Master()
	say("")
	say("2. xdplb list --stats on the Master director (%s)", master)
	out, err := c.List(master, "--stats")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Println("     " + l)
	}

	// 3. The Master dies during writes.
	backup := cluster.Other(master)
	say("")
	say("3. A client writes one row every 20 ms through the writer %s:%d on one connection; %s (Master) dies",
		cluster.VIP, cluster.WriterPort, master)
	w := startWriter(c)
	time.Sleep(time.Second)
	say("   %d rows written so far; now: %s eth0 down + kill -9 of its xdplb", w.rows.Load(), master)
	died, err := c.PowerOff(master)
	if err != nil {
		return err
	}
	if _, err := c.WaitFor(5*time.Second, func() (bool, string) {
		st, err := c.VRRP(backup)
		return err == nil && st.State == "MASTER", ""
	}); err != nil {
		return fmt.Errorf("expected %s to become Master within 5s of %s's death", backup, master)
	}
	say("   %s is VRRP Master %v after %s died", backup, time.Since(died).Round(time.Millisecond), master)
	// Writes must go on: wait for 1.5 s of writes after the takeover.
	n0 := w.rows.Load()
	if _, err := c.WaitFor(10*time.Second, func() (bool, string) { return w.rows.Load() > n0+50, "" }); err != nil {
		w.stop()
		return fmt.Errorf("writes did not resume within 10 s after the failover (last error: %v)", w.lastErr())
	}
	res := w.stop()
	say("   writes paused for %v (longest gap between two successful writes; 20 ms is the normal pace)", res.maxGap.Round(time.Millisecond))
	survived := "yes"
	if res.errors > 0 || res.endID != res.startID {
		survived = fmt.Sprintf("NO (%d errors, reconnected: connection id %s -> %s; first error: %v)", res.errors, res.startID, res.endID, res.firstErr)
	}
	say("   connection survived: %s (connection id %s, %d rows written, %d errors)", survived, res.startID, res.rows, res.errors)
	got, err := c.Node(cluster.DB1).DB.Query("SELECT COUNT(*) AS n FROM " + cluster.Database + ".writes")
	if err != nil {
		return fmt.Errorf("count rows on db1: %v", err)
	}
	say("   rows in %s.writes on db1: %s (every acknowledged write is there)", cluster.Database, got[0]["n"])
	if fmt.Sprint(res.rows) != got[0]["n"] {
		errorf("expected %d rows on db1, seen %s", res.rows, got[0]["n"])
	}
	say("   %s comes back (link up, xdplb run): it stays Backup (nopreempt)", master)
	if err := c.LaunchDirector(master); err != nil {
		return err
	}
	if last, err := c.WaitFor(10*time.Second, func() (bool, string) {
		st, err := c.VRRP(master)
		r, err2 := c.Ring(backup, cluster.ReaderPort)
		return err == nil && err2 == nil && st.State == "BACKUP" && len(r) == 2, fmt.Sprintf("%s %s, reader ring on %s %v", master, st.State, backup, r)
	}); err != nil {
		return fmt.Errorf("expected %s back as Backup and the reader ring whole again within 10s, seen %s", master, last)
	}
	say("   %s: VRRP BACKUP, XDP %s mode; reader ring on %s is db2,db3 again", master, c.Node(master).Mode, backup)

	// 4. MySQL stops on a replica.
	master = c.Master()
	victim := cluster.Other(master)
	say("")
	say("4. Stopping MySQL on the replica %s; watching the reader ring on the Master (%s)", victim, master)
	t0 := time.Now()
	if err := c.StopDB(victim); err != nil {
		return err
	}
	stopped := time.Since(t0)
	left, err := waitRing(c, master, t0, func(r []string) bool { return !slices.Contains(r, victim) }, "leave")
	if err != nil {
		return err
	}
	say("   mariadbd on %s stopped (SIGTERM, clean shutdown) in %v; %s left the reader ring %v after the SIGTERM",
		victim, stopped.Round(time.Millisecond), victim, left.Round(time.Millisecond))
	seq = nil
	for range 4 {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		who, err := c.ServerID(qctx, cluster.ReaderPort)
		cancel()
		if err != nil {
			return fmt.Errorf("query through the reader with %s out: %v", victim, err)
		}
		seq = append(seq, who)
	}
	say("   reader answers now (4 new connections): %s", strings.Join(seq, " "))
	if slices.Contains(seq, victim) {
		return fmt.Errorf("expected no answer from %s while its MySQL is stopped", victim)
	}
	say("   starting MySQL on %s again", victim)
	t0 = time.Now()
	if err := c.StartDB(victim); err != nil {
		return err
	}
	accepting := time.Now()
	back, err := waitRing(c, master, accepting, func(r []string) bool { return slices.Contains(r, victim) }, "return")
	if err != nil {
		return err
	}
	say("   mariadbd on %s accepts connections after %v; back in the reader ring %v after that (rise: 2 checks, 300 ms apart)",
		victim, accepting.Sub(t0).Round(time.Millisecond), back.Round(time.Millisecond))
	say("")
	return nil
}

// waitRing waits until cond holds for the reader ring on the director and returns the time
// from since to the poll where it held.
func waitRing(c *cluster.Cluster, director string, since time.Time, cond func([]string) bool, what string) (time.Duration, error) {
	var at time.Time
	if last, err := c.WaitFor(15*time.Second, func() (bool, string) {
		r, err := c.Ring(director, cluster.ReaderPort)
		at = time.Now()
		return err == nil && cond(r), fmt.Sprintf("%v (%v)", r, err)
	}); err != nil {
		return 0, fmt.Errorf("expected the replica to %s the reader ring within 15 s, seen %s", what, last)
	}
	return at.Sub(since), nil
}

func spread(count map[string]int) string {
	var keys []string
	for k := range count {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s x%d", k, count[k]))
	}
	return strings.Join(parts, ", ")
}

// writer writes one row every 20 ms on one connection; after an error it reconnects.
type writer struct {
	rows     atomic.Int64
	done     chan struct{}
	finished chan writerResult
	mu       sync.Mutex
	err      error
}

type writerResult struct {
	rows, errors   int64
	maxGap         time.Duration
	startID, endID string
	firstErr       error
}

func (w *writer) lastErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func startWriter(c *cluster.Cluster) *writer {
	w := &writer{done: make(chan struct{}), finished: make(chan writerResult, 1)}
	ctx := context.Background()
	open := func() *cluster.Conn {
		for {
			octx, cancel := context.WithTimeout(ctx, 3*time.Second)
			k, err := c.OpenConn(octx, cluster.WriterPort, 10*time.Second)
			cancel()
			if err == nil {
				return k
			}
			select {
			case <-w.done:
				return nil
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	k := open()
	go func() {
		var r writerResult
		r.startID = k.ID
		last := time.Now()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				if k != nil {
					r.endID = k.ID
					k.Close()
				}
				r.rows = w.rows.Load()
				w.finished <- r
				return
			case <-tick.C:
			}
			if k == nil {
				if k = open(); k == nil {
					continue
				}
			}
			wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			_, err := k.ExecContext(wctx, "INSERT INTO "+cluster.Database+".writes () VALUES ()")
			cancel()
			now := time.Now()
			if err != nil {
				r.errors++
				if r.firstErr == nil {
					r.firstErr = err
				}
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
				k.Close()
				k = nil
				continue
			}
			w.rows.Add(1)
			if g := now.Sub(last); g > r.maxGap {
				r.maxGap = g
			}
			last = now
		}
	}()
	return w
}

func (w *writer) stop() writerResult {
	close(w.done)
	return <-w.finished
}

// report checks that nothing of the cluster is left behind: namespaces, pins, processes.
func report() bool {
	c := theCluster.Load()
	if c == nil {
		sayAlways("   left behind: nothing was built")
		return true
	}
	if left := c.Leftovers(); len(left) > 0 {
		sayAlways("   LEFT BEHIND: %s", strings.Join(left, "; "))
		return false
	}
	sayAlways("   left behind: no namespace, no pin under /sys/fs/bpf, no xdplb or mariadbd process, no temp dir")
	return true
}

var theCluster atomic.Pointer[cluster.Cluster]
