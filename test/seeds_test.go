//go:build linux

package test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/cluster"
	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// TestSeeds is the acceptance test of the seeds' topology (internal/testbed/cluster): a MySQL primary db1,
// two replicas db2 and db3 that are also the directors (VRRP between them), a client, the VIP
// 10.0.0.100 with the writer :3306 and the reader :3307. One cluster for every step; the steps
// run in order and each leaves the cluster in the state the next expects.
func TestSeeds(t *testing.T) {
	requireRoot(t)
	requireCLI(t)
	requireTools(t, "nsenter", "ip", "keepalived", "mariadbd", "mariadb", "curl")
	testStart := time.Now()
	defer func() { t.Logf("TestSeeds: %v", time.Since(testStart).Round(time.Millisecond)) }()

	tb := &seedTB{top: t}
	c := cluster.Start(tb, cluster.Options{Binary: xdplbBin, Logf: t.Logf})
	t.Logf("cluster up in %v; Master %s; XDP mode db2 %s, db3 %s", time.Since(testStart).Round(time.Millisecond),
		c.Master(), c.Node(cluster.DB2).Mode, c.Node(cluster.DB3).Mode)
	o := c.Opts
	interval := o.AdvertInterval
	const vrSlackSeeds = 300 * time.Millisecond // polling, scheduling, status socket, netlink
	macName := func(m string) string {
		for _, n := range []string{cluster.Client, cluster.DB1, cluster.DB2, cluster.DB3} {
			if strings.EqualFold(c.MAC(n).String(), m) {
				return n
			}
		}
		return m
	}

	steps := []clusterStep{
		{"dr_path", func(t *testing.T) { seedDRPath(t, c, macName) }},
		{"director_failover", func(t *testing.T) { seedFailover(t, c, tb, interval, vrSlackSeeds) }},
		{"no_loop", func(t *testing.T) { seedNoLoop(t, c) }},
		{"graceful_handover", func(t *testing.T) { seedGraceful(t, c, tb, interval, vrSlackSeeds) }},
		{"realserver_failure", func(t *testing.T) { seedRealServerFailure(t, c) }},
		{"mixed_pair_keepalived", func(t *testing.T) { seedMixed(t, c, interval, vrSlackSeeds) }},
		{"primary_switch", func(t *testing.T) { seedPrimarySwitch(t, c) }},
		{"single_writer", func(t *testing.T) { seedSingleWriter(t, c) }},
	}
	runClusterSteps(t, tb, c, steps)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// seedDRPath: the client's requests go to the Master's MAC, the replies come straight from the
// real server's MAC (direct routing: never back through the director).
func seedDRPath(t *testing.T, c *cluster.Cluster, macName func(string) string) {
	master := c.Master()
	if master != cluster.DB2 {
		t.Fatalf("expected db2 (priority 150) Master at the start, seen %q", master)
	}
	capt := c.Client.StartCapture(t, netns.NodeLink)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seen := map[string]int{}
	for i := 0; i < 40 && (seen[cluster.DB2] == 0 || seen[cluster.DB3] == 0); i++ {
		who, err := c.ServerID(ctx, cluster.ReaderPort)
		if err != nil {
			t.Fatalf("reader query %d through %s:%d: %v", i, cluster.VIP, cluster.ReaderPort, err)
		}
		seen[who]++
	}
	who, err := c.ServerID(ctx, cluster.WriterPort)
	if err != nil || who != cluster.DB1 {
		t.Fatalf("writer query through %s:%d: expected db1, seen %q (%v)", cluster.VIP, cluster.WriterPort, who, err)
	}
	frames, err := capt.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if seen[cluster.DB3] == 0 {
		t.Fatalf("reader: expected some of 40 new connections answered by db3, seen %v", seen)
	}
	// Per flow (client port): the MAC the requests went to and the MACs the replies came from.
	type flow struct {
		port    uint16
		reqDst  map[string]int
		replSrc map[string]int
	}
	flows := map[uint16]*flow{}
	get := func(p uint16, svc uint16) *flow {
		f := flows[p]
		if f == nil {
			f = &flow{port: svc, reqDst: map[string]int{}, replSrc: map[string]int{}}
			flows[p] = f
		}
		return f
	}
	var reqs, repls int
	for _, fr := range frames {
		p, ok := parseTCP4(fr.Data)
		if !ok {
			continue
		}
		switch {
		case fr.Outgoing() && p.Dst.Addr() == cluster.VIP:
			get(p.Src.Port(), p.Dst.Port()).reqDst[macName(p.DstMAC.String())]++
			reqs++
		case !fr.Outgoing() && p.Src.Addr() == cluster.VIP:
			get(p.Dst.Port(), p.Src.Port()).replSrc[macName(p.SrcMAC.String())]++
			repls++
		}
	}
	byServer := map[string]int{}
	for cport, f := range flows {
		if len(f.reqDst) != 1 || f.reqDst[master] == 0 {
			t.Errorf("flow from client port %d to :%d: expected every request frame to the Master %s's MAC, seen %v", cport, f.port, master, f.reqDst)
		}
		if len(f.replSrc) != 1 {
			t.Errorf("flow from client port %d to :%d: expected every reply frame from one real server's MAC, seen %v", cport, f.port, f.replSrc)
			continue
		}
		for src := range f.replSrc {
			byServer[fmt.Sprintf(":%d from %s", f.port, src)]++
			want := []string{cluster.DB2, cluster.DB3}
			if f.port == cluster.WriterPort {
				want = []string{cluster.DB1}
			}
			if !slices.Contains(want, src) {
				t.Errorf("flow from client port %d to :%d: expected replies from the MAC of one of %v, seen from %s", cport, f.port, want, src)
			}
		}
	}
	if byServer[fmt.Sprintf(":%d from %s", cluster.ReaderPort, cluster.DB3)] == 0 || byServer[fmt.Sprintf(":%d from %s", cluster.WriterPort, cluster.DB1)] == 0 {
		t.Errorf("expected reader flows answered from db3's MAC and writer flows from db1's MAC, seen %v", byServer)
	}
	t.Logf("DR path: %d new reader connections answered by %v, 1 writer by db1; %d flows, %d request frames all to the Master %s's MAC %s, %d reply frames straight from the real servers' MACs: flows by replying MAC %v",
		seen[cluster.DB2]+seen[cluster.DB3], seen, len(flows), reqs, master, c.MAC(master), repls, byServer)
}

// seedFailover: writers (to db1, not a director) and readers (to db2, db3) running while the
// Master director's machine dies.
func seedFailover(t *testing.T, c *cluster.Cluster, tb *seedTB, interval, slack time.Duration) {
	const M, R = 3, 8
	master := c.Master()
	backup := cluster.Other(master)
	writers := openSeedConns(t, c, cluster.WriterPort, M, 5*time.Second, true)
	for i, w := range writers {
		if w.server != cluster.DB1 {
			t.Fatalf("writer connection %d: expected db1, seen %s", i, w.server)
		}
	}
	readers := openSeedConns(t, c, cluster.ReaderPort, R, 3*time.Second, false)
	spread := map[string]int{}
	for _, r := range readers {
		spread[r.server]++
	}
	for i := 0; spread[backup] == 0 && i < 8; i++ { // make sure some survive-able ones exist
		more := openSeedConns(t, c, cluster.ReaderPort, 1, 3*time.Second, false)
		readers = append(readers, more...)
		spread[more[0].server]++
	}
	t.Logf("long-lived connections: %d writers on db1, %d readers %v; Master %s, Backup %s", M, len(readers), spread, master, backup)

	stop := make(chan struct{})
	for _, s := range append(slices.Clone(writers), readers...) {
		go s.run(stop, 10*time.Millisecond)
	}
	time.Sleep(time.Second)
	before := countAcks(writers)
	md := masterDown(3, c.Node(backup).Priority, interval)
	down := c.KillDirector(master)
	el := waitUntil(t, down, md+slack, backup+" MASTER after "+master+"'s machine died", func() (bool, string) {
		s := vrrpState(c, backup)
		return s == stMaster, s
	})
	vipAt := waitUntil(t, down, md+slack, "the VIP on "+backup+"'s eth0", func() (bool, string) {
		has, err := seedVIPOnEth0(c.Node(backup))
		return has, fmt.Sprint(has, err)
	})
	time.Sleep(2500 * time.Millisecond)
	end := time.Now()
	close(stop)
	for _, w := range writers {
		<-w.done
	}
	for _, r := range readers {
		if r.server != master {
			<-r.done
		}
	}
	t.Logf("machine death of %s (link down + SIGKILL): %s MASTER after %v, VIP on its eth0 after %v (Master_Down_Interval %v)",
		master, backup, el.Round(time.Millisecond), vipAt.Round(time.Millisecond), md)

	t.Run("writes", func(t *testing.T) {
		tb.set(t)
		defer tb.set(nil)
		survived := 0
		acked := map[int64]bool{}
		for i, w := range writers {
			if err := w.alive(3 * time.Second); err != nil {
				t.Errorf("writer connection %d (db1, CONNECTION_ID %s): expected it to survive the failover, seen %v (at %v after the kill)", i, w.k.ID, err, w.errAt.Sub(down).Round(time.Millisecond))
			} else {
				survived++
			}
			for _, id := range w.ids {
				acked[id] = true
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rows, err := c.Query(ctx, cluster.WriterPort, "SELECT id FROM "+cluster.Database+".writes")
		if err != nil {
			t.Fatalf("read back the table through the writer VIP: %v", err)
		}
		have := map[int64]bool{}
		for _, r := range rows {
			id, _ := strconv.ParseInt(r[0], 10, 64)
			have[id] = true
		}
		var lost []int64
		for id := range acked {
			if !have[id] {
				lost = append(lost, id)
			}
		}
		slices.Sort(lost)
		gap, gapAt := maxGap(writers, down.Add(-500*time.Millisecond), end)
		t.Logf("writes: %d inserts acknowledged (%d before the kill) on %d connections every 10 ms, %d rows in the table, lost %d; connections survived %d of %d; write pause (longest gap between acknowledged inserts) %v, starting %v after the kill",
			len(acked), before, M, len(have), len(lost), survived, M, gap.Round(time.Millisecond), gapAt.Sub(down).Round(time.Millisecond))
		if len(lost) > 0 {
			t.Errorf("writes: expected every acknowledged insert in the table, seen %d lost: %v", len(lost), lost[:min(len(lost), 20)])
		}
		if survived != M {
			t.Errorf("writes: expected %d of %d writer connections to survive, seen %d", M, M, survived)
		}
		if countAcks(writers) <= before {
			t.Errorf("writes: expected inserts acknowledged after the failover, seen none after %d", before)
		}
	})

	t.Run("readers", func(t *testing.T) {
		tb.set(t)
		defer tb.set(nil)
		var want, survived, deadNode int
		for i, r := range readers {
			if r.server == master {
				deadNode++
				continue
			}
			want++
			if err := r.alive(3 * time.Second); err != nil {
				t.Errorf("reader connection %d on %s: expected it to survive the death of director %s, seen %v", i, r.server, master, err)
			} else {
				survived++
			}
		}
		var readGap time.Duration
		var live []*seedConn
		for _, r := range readers {
			if r.server != master {
				live = append(live, r)
			}
		}
		readGap, _ = maxGap(live, down.Add(-500*time.Millisecond), end)
		t.Logf("readers: %d of %d connections to real servers other than the dead %s survived (%d were on %s itself); read pause %v",
			survived, want, master, deadNode, master, readGap.Round(time.Millisecond))
		if survived != want {
			t.Errorf("readers: expected %d of %d to survive, seen %d", want, want, survived)
		}
	})

	// The dead machine comes back: its daemon starts as Backup (nopreempt), without the VIP.
	t0 := time.Now()
	c.StartDirector(master)
	el = waitUntil(t, t0, 5*time.Second, master+" BACKUP after its restart", func() (bool, string) {
		s := vrrpState(c, master)
		return s == stBackup, s
	})
	mustVIPOnEth0(t, c.Node(master), false)
	for _, d := range []string{master, backup} {
		waitUntil(t, t0, 10*time.Second, d+"'s rings writer={db1} reader={db2,db3}", func() (bool, string) {
			st, _, err := snapshot(c.Node(d))
			if err != nil {
				return false, err.Error()
			}
			w, r := ring(c, st, cluster.WriterPort), ring(c, st, cluster.ReaderPort)
			return slices.Equal(w, []string{cluster.DB1}) && slices.Equal(r, []string{cluster.DB2, cluster.DB3}), fmt.Sprintf("writer %v reader %v", w, r)
		})
	}
	t.Logf("%s restarted: BACKUP %v after StartDirector returned (nopreempt: %s stays Master), no VIP on its eth0; rings full on both %v after",
		master, el.Round(time.Millisecond), backup, time.Since(t0).Round(time.Millisecond))
}

// seedNoLoop: both directors run full maps (every service and backend: the Backup's data path
// would balance any frame it is given); the Backup's peers map holds the Master's MAC (learned
// from its adverts). N client frames cost the Master at most N XDP_TX for them; every frame the
// Master sends the Backup is passed up by the Backup (pass_peer), never balanced again (tx 0).
// The directors' DR-path health probes (AF_PACKET frames to the VIP, from the director's own
// address) travel the same paths and are counted from captures, by source address.
func seedNoLoop(t *testing.T, c *cluster.Cluster) {
	master := c.Master()
	backup := cluster.Other(master)
	M, B, DB1 := c.Node(master), c.Node(backup), c.Node(cluster.DB1)
	waitUntil(t, time.Now(), 3*time.Second, "the Master's MAC in the Backup's peers map, and the Backup's in the Master's (hellos)", func() (bool, string) {
		sb, _, err := snapshot(B)
		sm, _, err2 := snapshot(M)
		return err == nil && err2 == nil && hasMAC(sb.Peers, M.MAC) && hasMAC(sm.Peers, B.MAC),
			fmt.Sprintf("%s peers %v, %s peers %v (%v %v)", backup, sb.Peers, master, sm.Peers, err, err2)
	})
	for _, n := range []*cluster.Node{M, B} {
		st, _ := mustSnapshot(t, n)
		t.Logf("%s: services %d, writer ring %v, reader ring %v, peers map %v", n.Name, len(st.Services),
			ring(c, st, cluster.WriterPort), ring(c, st, cluster.ReaderPort), st.Peers)
	}
	capClient := c.Client.StartCapture(t, netns.NodeLink)
	capB := B.StartCapture(t, netns.NodeLink)
	capDB1 := DB1.StartCapture(t, netns.NodeLink)
	time.Sleep(50 * time.Millisecond)
	t0s := time.Now()
	m0, _ := mustSnapshot(t, M)
	b0, t0e := mustSnapshot(t, B)
	time.Sleep(30 * time.Millisecond) // no client frame near the window's edges

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const K = 30
	seen := map[string]int{}
	for i := 0; i < K; i++ {
		port := cluster.ReaderPort
		if i%5 == 4 {
			port = cluster.WriterPort
		}
		who, err := c.ServerID(ctx, port)
		if err != nil {
			t.Fatalf("query %d through :%d: %v", i, port, err)
		}
		seen[who]++
	}
	time.Sleep(300 * time.Millisecond) // last ACKs and FINs
	t1s := time.Now()
	m1, _ := mustSnapshot(t, M)
	b1, t1e := mustSnapshot(t, B)
	time.Sleep(50 * time.Millisecond)
	stop := func(cp *netns.Capture) []netns.Frame {
		f, err := cp.Stop()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	cf, bf, df := stop(capClient), stop(capB), stop(capDB1)

	// count counts the received frames to the VIP from MAC src with IP source ip: in the window
	// between the snapshots, and at its edges (capture timestamps come after the XDP run: a frame
	// stamped within lag of a snapshot may have been counted by it or not).
	const lag = 5 * time.Millisecond
	type cnt struct{ in, edge uint64 }
	count := func(frames []netns.Frame, src *cluster.Node, ip netip.Addr, dst *cluster.Node) cnt {
		var r cnt
		for _, f := range frames {
			p, ok := parseTCP4(f.Data)
			if !ok || f.Outgoing() != (dst != nil) || p.Dst.Addr() != cluster.VIP || p.Src.Addr() != ip || !strings.EqualFold(p.SrcMAC.String(), src.MAC.String()) ||
				(dst != nil && !strings.EqualFold(p.DstMAC.String(), dst.MAC.String())) {
				continue
			}
			switch {
			case f.Time.After(t0e.Add(lag)) && f.Time.Before(t1s.Add(-lag)):
				r.in++
			case f.Time.Before(t0s.Add(-lag)) || f.Time.After(t1e.Add(lag)):
			default:
				r.edge++
			}
		}
		return r
	}
	// The client's frames to the VIP, as it sends them (stamped before the Master's XDP sees them).
	var N cnt
	for _, f := range cf {
		if p, ok := parseTCP4(f.Data); ok && f.Outgoing() && p.Dst.Addr() == cluster.VIP {
			switch {
			case f.Time.After(t0e.Add(lag)) && f.Time.Before(t1s.Add(-lag)):
				N.in++
			case f.Time.Before(t0s.Add(-lag)) || f.Time.After(t1e.Add(lag)):
			default:
				N.edge++
			}
		}
	}
	// To the Master: the client's frames and the Backup's probes, if any (the Backup does not
	// probe the DR path of the VIP holder; were it to, the Master knows the Backup's MAC from its
	// hellos and would serve them locally). Counted as the Backup sends them: a capture on the
	// Master sees only what its XDP passes.
	probesBtoM := count(bf, B, B.Addr(), M)
	// Sent by the Master, seen at the destinations: client frames, the Master's own probes, the
	// Backup's probes balanced by the Master.
	fwdClientB, fwdClientDB1 := count(bf, M, cluster.ClientAddr, nil), count(df, M, cluster.ClientAddr, nil)
	probesMtoB := count(bf, M, M.Addr(), nil)
	bouncedB, bouncedDB1 := count(bf, M, B.Addr(), nil), count(df, M, B.Addr(), nil)
	fwdClient := fwdClientB.in + fwdClientDB1.in
	fwdClientEdge := fwdClientB.edge + fwdClientDB1.edge

	d := func(a, b uint64) uint64 { return a - b }
	mTx, mLocal, mPeer := d(m1.Counters.Tx, m0.Counters.Tx), d(m1.Counters.PassLocal, m0.Counters.PassLocal), d(m1.Counters.PassPeer, m0.Counters.PassPeer)
	mToB := d(backendPackets(m1, B.Addr()), backendPackets(m0, B.Addr()))
	bPeer, bTx, bLocal := d(b1.Counters.PassPeer, b0.Counters.PassPeer), d(b1.Counters.Tx, b0.Counters.Tx), d(b1.Counters.PassLocal, b0.Counters.PassLocal)
	t.Logf("no loop: %d new connections %v = N %d (+%d at the window's edges) client frames to the VIP; Master %s: tx %d, pass_local %d, pass_peer %d, backend_stats of %s %d; Backup %s: pass_peer %d, tx %d, pass_local %d",
		K, seen, N.in, N.edge, master, mTx, mLocal, mPeer, backup, mToB, backup, bPeer, bTx, bLocal)
	t.Logf("captured (in window +edge): client frames forwarded by %s: to %s %d, to db1 %d; %s's probes to %s %d+%d; %s's probes sent to %s %d+%d, of which balanced by it to %s %d+%d, to db1 %d+%d",
		master, backup, fwdClientB.in, fwdClientDB1.in, master, backup, probesMtoB.in, probesMtoB.edge,
		backup, master, probesBtoM.in, probesBtoM.edge, backup, bouncedB.in, bouncedB.edge, bouncedDB1.in, bouncedDB1.edge)

	within := func(v, lo, edge uint64) bool { return v >= lo && v <= lo+edge }
	// The Master balanced each client frame once: forwarded (XDP_TX) or served locally.
	if N.in == 0 || fwdClient > N.in+N.edge {
		t.Errorf("Master %s: expected at most N = %d (+%d) XDP_TX for the client's N frames (N > 0), seen %d client frames forwarded", master, N.in, N.edge, fwdClient)
	}
	if lo, e := fwdClient+bouncedB.in+bouncedDB1.in, fwdClientEdge+bouncedB.edge+bouncedDB1.edge; !within(mTx, lo, e) {
		t.Errorf("Master %s: expected XDP_TX = client frames forwarded %d + %s's probes it balanced elsewhere %d (+%d at the edges), seen %d", master, fwdClient, backup, lo-fwdClient, e, mTx)
	}
	if lo, e := N.in+probesBtoM.in, N.edge+probesBtoM.edge; !within(mTx+mLocal, lo, e) {
		t.Errorf("Master %s: expected tx + pass_local = N %d + %s's probes sent to it %d (+%d at the edges), seen %d + %d", master, N.in, backup, probesBtoM.in, e, mTx, mLocal)
	}
	if lo, e := fwdClientB.in+bouncedB.in, fwdClientB.edge+bouncedB.edge; !within(mToB, lo, e) {
		t.Errorf("Master %s: expected its backend_stats of %s = frames from its MAC to the VIP captured on %s, other than its own probes: %d (+%d at the edges), seen %d", master, backup, backup, lo, e, mToB)
	}
	// Every one of those, and the Master's own probes, is passed up by the Backup as a peer's.
	if lo, e := fwdClientB.in+bouncedB.in+probesMtoB.in, fwdClientB.edge+bouncedB.edge+probesMtoB.edge; !within(bPeer, lo, e) {
		t.Errorf("Backup %s: expected pass_peer = frames from the Master's MAC to the VIP: forwarded %d + its probes %d = %d (+%d at the edges), seen %d",
			backup, fwdClientB.in+bouncedB.in, probesMtoB.in, lo, e, bPeer)
	}
	if bTx != 0 {
		t.Errorf("Backup %s: expected XDP_TX 0 (nothing balanced twice: no loop), seen %d", backup, bTx)
	}
}

// seedGraceful: SIGTERM of the Master's xdplb: priority 0, the Backup takes over within
// Skew_Time; long-lived connections keep working; the stopped director, restarted with a
// leftover VIP on eth0, starts as Backup and removes the VIP.
func seedGraceful(t *testing.T, c *cluster.Cluster, tb *seedTB, interval, slack time.Duration) {
	master := c.Master()
	backup := cluster.Other(master)
	writers := openSeedConns(t, c, cluster.WriterPort, 3, 5*time.Second, true)
	readers := openSeedConns(t, c, cluster.ReaderPort, 6, 5*time.Second, false)
	spread := map[string]int{}
	for _, r := range readers {
		spread[r.server]++
	}
	all := append(slices.Clone(writers), readers...)
	capt := c.Client.StartCapture(t, netns.NodeLink)
	stop := make(chan struct{})
	for _, s := range all {
		go s.run(stop, 10*time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	skew := skewTime(3, c.Node(backup).Priority, interval)
	md := masterDown(3, c.Node(backup).Priority, interval)
	sig := time.Now()
	stopErr := make(chan error, 1)
	go func() { stopErr <- c.StopDirector(master) }()
	el := waitUntil(t, sig, skew+slack, backup+" MASTER after SIGTERM to "+master+"'s xdplb", func() (bool, string) {
		s := vrrpState(c, backup)
		return s == stMaster, s
	})
	if err := <-stopErr; err != nil {
		t.Errorf("SIGTERM of %s's xdplb: expected a clean exit, seen %v", master, err)
	}
	exited := time.Since(sig)
	time.Sleep(1500 * time.Millisecond)
	end := time.Now()
	close(stop)
	for _, s := range all {
		<-s.done
	}
	lost := 0
	for i, s := range all {
		if err := s.alive(3 * time.Second); err != nil {
			lost++
			t.Errorf("connection %d (to %s): expected it to survive the graceful handover, seen %v (error at %v after the signal)", i, s.server, err, s.errAt.Sub(sig))
		}
	}
	gap, _ := maxGap(all, sig.Add(-200*time.Millisecond), end)
	if frames, _ := capt.Stop(); t.Failed() {
		for _, f := range frames {
			if p, ok := parseTCP4(f.Data); ok && p.Flags&tcpRST != 0 {
				t.Logf("RST at %v after the signal: %s (%s) → %s (%s), %s → %s, outgoing %t", f.Time.Sub(sig),
					p.SrcMAC, c.Name(macAddr(c, p.SrcMAC)), p.DstMAC, c.Name(macAddr(c, p.DstMAC)), p.Src, p.Dst, f.Outgoing())
			}
		}
	}
	t.Logf("graceful handover: SIGTERM of %s's xdplb → %s MASTER after %v (bound Skew_Time %v + %v; Master_Down_Interval %v), daemon exited after %v; %d writers (db1) + %d readers %v: %d lost, longest pause %v",
		master, backup, el.Round(time.Millisecond), skew.Round(time.Millisecond), slack, md, exited.Round(time.Millisecond), len(writers), len(readers), spread, lost, gap.Round(time.Millisecond))
	if el >= md {
		t.Errorf("graceful: expected the takeover before Master_Down_Interval %v (priority-0 advert), seen %v", md, el)
	}
	mustVIPOnEth0(t, c.Node(master), false)
	mustVIPOnEth0(t, c.Node(backup), true)

	// Restart the stopped director: priority 100 < 150 (it would not preempt anyway) → Backup.
	// A leftover VIP on its eth0 (as after a crash) must be removed.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := c.Node(master).Exec(ctx, "ip", "addr", "add", cluster.VIP.String()+"/32", "dev", netns.NodeLink); err != nil {
		t.Fatalf("add a leftover VIP on %s: %v %s", master, err, out)
	}
	mustVIPOnEth0(t, c.Node(master), true)
	t0 := time.Now()
	c.StartDirector(master)
	started := time.Since(t0)
	el = waitUntil(t, t0, 5*time.Second, master+" BACKUP after its restart", func() (bool, string) {
		s := vrrpState(c, master)
		return s == stBackup, s
	})
	vipGone := waitUntil(t, t0, 5*time.Second, "the leftover VIP removed from "+master+"'s eth0", func() (bool, string) {
		has, err := seedVIPOnEth0(c.Node(master))
		return !has && err == nil, fmt.Sprint(has, err)
	})
	if s := vrrpState(c, backup); s != stMaster {
		t.Errorf("%s: expected still MASTER after %s's restart, seen %s", backup, master, s)
	}
	mustVIPOnEth0(t, c.Node(backup), true)
	if who, err := c.ServerID(ctx, cluster.WriterPort); err != nil || who != cluster.DB1 {
		t.Errorf("writer query after the restart: expected db1, seen %q (%v)", who, err)
	}
	t.Logf("restart of %s with a leftover VIP on eth0: status socket up %v after the start, BACKUP after %v, VIP removed after %v (from the start)",
		master, started.Round(time.Millisecond), el.Round(time.Millisecond), vipGone.Round(time.Millisecond))
}

// seedRealServerFailure: a replica's MariaDB dies: it leaves the reader ring within
// fall × interval + timeout; no new connection goes to it; connections to the others live on.
func seedRealServerFailure(t *testing.T, c *cluster.Cluster) {
	master := c.Master()
	victim := cluster.Other(master) // the Backup director's MariaDB; its daemon keeps running
	o := c.Opts
	readers := openSeedConns(t, c, cluster.ReaderPort, 8, 5*time.Second, false)
	writers := openSeedConns(t, c, cluster.WriterPort, 2, 5*time.Second, true)
	spread := map[string]int{}
	for _, r := range readers {
		spread[r.server]++
	}
	bound := time.Duration(o.Fall)*o.CheckInterval + o.CheckTimeout
	slack := 300 * time.Millisecond
	kill := time.Now()
	c.Node(victim).DB.Kill()
	el := waitUntil(t, kill, bound+slack, victim+" out of the Master "+master+"'s reader ring", func() (bool, string) {
		st, _, err := snapshot(c.Node(master))
		if err != nil {
			return false, err.Error()
		}
		r := ring(c, st, cluster.ReaderPort)
		return !slices.Contains(r, victim) && len(r) > 0, fmt.Sprint(r)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const K = 20
	got := map[string]int{}
	for i := 0; i < K; i++ {
		who, err := c.ServerID(ctx, cluster.ReaderPort)
		if err != nil {
			t.Errorf("new reader connection %d after %s's MariaDB died: expected it served, seen %v", i, victim, err)
			continue
		}
		got[who]++
	}
	if got[victim] != 0 || got[master] != K {
		t.Errorf("new reader connections after %s left the ring: expected all %d on %s, none on %s, seen %v", victim, K, master, victim, got)
	}
	var ok, want, onVictim int
	for i, s := range append(slices.Clone(readers), writers...) {
		if s.server == victim {
			onVictim++
			continue
		}
		want++
		if err := s.alive(3 * time.Second); err != nil {
			t.Errorf("connection %d to %s: expected untouched by %s's failure, seen %v", i, s.server, victim, err)
		} else {
			ok++
		}
	}
	t.Logf("real server failure: %s's MariaDB SIGKILLed → out of %s's reader ring after %v (bound fall %d × interval %v + timeout %v = %v); %d new reader connections: %v; %d of %d connections to the others untouched (%d readers were on %s; readers %v)",
		victim, master, el.Round(time.Millisecond), o.Fall, o.CheckInterval, o.CheckTimeout, bound, K, got, ok, want, onVictim, victim, spread)

	// Back in service for the next steps.
	t0 := time.Now()
	c.StartMySQL(victim)
	back := waitUntil(t, t0, 15*time.Second, victim+" back in "+master+"'s reader ring", func() (bool, string) {
		st, _, err := snapshot(c.Node(master))
		if err != nil {
			return false, err.Error()
		}
		r := ring(c, st, cluster.ReaderPort)
		return slices.Contains(r, victim), fmt.Sprint(r)
	})
	t.Logf("%s's MariaDB restarted: back in the reader ring %v after StartMySQL was called", victim, back.Round(time.Millisecond))
}

// seedMixed: the Backup director is replaced by keepalived (VRRP only, no LVS); the VIP moves
// xdplb → keepalived (machine death) and keepalived → xdplb (graceful stop of keepalived), and
// a query through the VIP works each time.
func seedMixed(t *testing.T, c *cluster.Cluster, interval, slack time.Duration) {
	xd := c.Master()
	kn := cluster.Other(xd)
	if err := c.StopDirector(kn); err != nil {
		t.Fatalf("stop %s's xdplb: %v", kn, err)
	}
	mustVIPOnEth0(t, c.Node(kn), false)
	prio := c.Node(kn).Priority
	k := seedKeepalived(t, c.Node(kn), prio, interval)
	waitUntil(t, time.Now(), 5*time.Second, "keepalived on "+kn+" BACKUP", func() (bool, string) {
		s := k.State()
		return s == stBackup, s
	})
	if s := vrrpState(c, xd); s != stMaster {
		t.Fatalf("%s (xdplb): expected MASTER next to keepalived, seen %s", xd, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// xdplb → keepalived.
	md := masterDown(3, prio, interval)
	down := c.KillDirector(xd)
	el := waitUntil(t, down, md+slack, "keepalived on "+kn+" MASTER after "+xd+"'s machine died", func() (bool, string) {
		s := k.State()
		return s == stMaster, s
	})
	vipAt := waitUntil(t, down, md+slack, "the VIP on "+kn+"'s eth0", func() (bool, string) {
		has, err := seedVIPOnEth0(c.Node(kn))
		return has, fmt.Sprint(has, err)
	})
	var who string
	qAt := waitUntil(t, down, 5*time.Second, "a query through the VIP answered by "+kn+" (keepalived holds the VIP, no balancing)", func() (bool, string) {
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		defer qcancel()
		var err error
		who, err = c.ServerID(qctx, cluster.WriterPort)
		return err == nil && who == kn, fmt.Sprint(who, err)
	})
	t.Logf("mixed pair, xdplb → keepalived: %s (xdplb) died; keepalived on %s MASTER after %v, VIP on its eth0 after %v (Master_Down_Interval %v); query through %s:%d answered by %s after %v",
		xd, kn, el.Round(time.Millisecond), vipAt.Round(time.Millisecond), md, cluster.VIP, cluster.WriterPort, who, qAt.Round(time.Millisecond))

	// keepalived → xdplb: xdplb comes back as Backup (nopreempt), then keepalived stops
	// (priority-0 advert).
	t0 := time.Now()
	c.StartDirector(xd)
	waitUntil(t, t0, 5*time.Second, xd+" (xdplb) BACKUP next to keepalived", func() (bool, string) {
		s := vrrpState(c, xd)
		return s == stBackup, s
	})
	mustVIPOnEth0(t, c.Node(xd), false)
	waitUntil(t, t0, 10*time.Second, xd+"'s writer ring {db1}", func() (bool, string) {
		st, _, err := snapshot(c.Node(xd))
		if err != nil {
			return false, err.Error()
		}
		w := ring(c, st, cluster.WriterPort)
		return slices.Equal(w, []string{cluster.DB1}), fmt.Sprint(w)
	})
	waitUntil(t, t0, 5*time.Second, kn+"'s MAC (keepalived) in "+xd+"'s peers map", func() (bool, string) {
		st, _, err := snapshot(c.Node(xd))
		return err == nil && hasMAC(st.Peers, c.MAC(kn)), fmt.Sprint(st.Peers, err)
	})
	skew := skewTime(3, c.Node(xd).Priority, interval)
	sig := time.Now()
	go k.Stop(5 * time.Second)
	el = waitUntil(t, sig, skew+slack, xd+" (xdplb) MASTER after keepalived's SIGTERM", func() (bool, string) {
		s := vrrpState(c, xd)
		return s == stMaster, s
	})
	vipAt = waitUntil(t, sig, skew+slack, "the VIP on "+xd+"'s eth0", func() (bool, string) {
		has, err := seedVIPOnEth0(c.Node(xd))
		return has, fmt.Sprint(has, err)
	})
	<-k.Done()
	k.WaitGone(5 * time.Second)
	mustVIPOnEth0(t, c.Node(kn), false)
	qAt = waitUntil(t, sig, 5*time.Second, "a writer query through the VIP balanced by "+xd+" to db1", func() (bool, string) {
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		defer qcancel()
		var err error
		who, err = c.ServerID(qctx, cluster.WriterPort)
		return err == nil && who == cluster.DB1, fmt.Sprint(who, err)
	})
	t.Logf("mixed pair, keepalived → xdplb: keepalived stopped (SIGTERM); %s (xdplb) MASTER after %v, VIP on its eth0 after %v (Skew_Time %v); writer query balanced to %s after %v",
		xd, el.Round(time.Millisecond), vipAt.Round(time.Millisecond), skew.Round(time.Millisecond), who, qAt.Round(time.Millisecond))
}

// seedPrimarySwitch: db3 promoted (read_only off), db1 demoted (read_only on): the writer
// service follows within the health-check bounds.
func seedPrimarySwitch(t *testing.T, c *cluster.Cluster) {
	master := c.Master()
	o := c.Opts
	newP := cluster.DB3
	old := cluster.DB1
	c.Node(old).DB.MustExec("SET GLOBAL read_only = 1")
	c.Node(newP).DB.MustExec("STOP SLAVE; SET GLOBAL read_only = 0")
	sw := time.Now()
	bound := time.Duration(max(o.Rise, o.Fall))*o.CheckInterval + o.CheckTimeout
	slack := 300 * time.Millisecond
	var oldOut, newIn time.Duration
	el := waitUntil(t, sw, bound+slack, "the writer ring on "+master+" to be {"+newP+"}", func() (bool, string) {
		st, _, err := snapshot(c.Node(master))
		if err != nil {
			return false, err.Error()
		}
		r := ring(c, st, cluster.WriterPort)
		if oldOut == 0 && !slices.Contains(r, old) {
			oldOut = time.Since(sw)
		}
		if newIn == 0 && slices.Contains(r, newP) {
			newIn = time.Since(sw)
		}
		return slices.Equal(r, []string{newP}), fmt.Sprint(r)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	who, err := c.ServerID(ctx, cluster.WriterPort)
	if err != nil || who != newP {
		t.Errorf("writer query after the switch: expected %s, seen %q (%v)", newP, who, err)
	}
	db := c.DB(cluster.WriterPort, 5*time.Second)
	defer db.Close()
	if _, err := db.ExecContext(ctx, "INSERT INTO "+cluster.Database+".writes () VALUES ()"); err != nil {
		t.Errorf("insert through the writer VIP after the switch: expected it to succeed on %s, seen %v", newP, err)
	}
	t.Logf("primary switch (%s read_only=1, %s read_only=0): writer ring on %s = {%s} after %v (%s out after %v, %s in after %v; bound max(rise %d, fall %d) × interval %v + timeout %v = %v); writer query answered by %s, insert ok",
		old, newP, master, newP, el.Round(time.Millisecond), old, oldOut.Round(time.Millisecond), newP, newIn.Round(time.Millisecond), o.Rise, o.Fall, o.CheckInterval, o.CheckTimeout, bound, who)
}

// macAddr is the address of the cluster node with MAC m (the zero Addr if none).
func macAddr(c *cluster.Cluster, m net.HardwareAddr) netip.Addr {
	for _, n := range []string{cluster.Client, cluster.DB1, cluster.DB2, cluster.DB3} {
		if bytes.Equal(c.MAC(n), m) {
			return c.Addr(n)
		}
	}
	return netip.Addr{}
}
