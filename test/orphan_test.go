//go:build linux

package test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/internal/testbed/cluster"
	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// TestOrphanedDirector: the seeds' cluster (two directors that are also real servers) with the
// daemons run as `xdplb run` runs by default, keeping the data path when the daemon stops.
// Whatever happens to a daemon (killed with its link up, stopped and restarted, both restarted)
// or to VRRP between them (blocked: both Master), no frame is balanced twice, the other
// director's node never leaves a ring, and every long-lived connection held through the VIP
// survives.
func TestOrphanedDirector(t *testing.T) {
	requireRoot(t)
	requireCLI(t)
	requireTools(t, "nsenter", "ip", "mariadbd", "mariadb", "nft")
	tb := &seedTB{top: t}
	c := cluster.Start(tb, cluster.Options{Binary: xdplbBin, Logf: t.Logf, KeepDataPath: true})
	steps := []clusterStep{
		{"peers_known_from_the_start", func(t *testing.T) { orphanPeersKnown(t, c) }},
		{"master_killed", func(t *testing.T) { orphanMasterKilled(t, c) }},
		{"backup_killed", func(t *testing.T) { orphanBackupKilled(t, c) }},
		{"master_hung", func(t *testing.T) { orphanMasterHung(t, c) }},
		{"graceful_restarts", func(t *testing.T) { orphanGracefulRestarts(t, c) }},
		{"vrrp_blocked", func(t *testing.T) { orphanSplitBrain(t, c) }},
	}
	runClusterSteps(t, tb, c, steps)
}

// orphanPeersKnown: each director has the other's MAC in its peers map, the Master the Backup's
// too (a Backup sends no VRRP adverts: the Master learns it from its director hellos).
func orphanPeersKnown(t *testing.T, c *cluster.Cluster) {
	for _, name := range []string{cluster.DB2, cluster.DB3} {
		other := c.Node(cluster.Other(name))
		el := waitUntil(t, time.Now(), 3*time.Second, name+" to have "+other.Name+"'s MAC in its peers map", func() (bool, string) {
			st, _, err := snapshot(c.Node(name))
			return err == nil && hasMAC(st.Peers, other.MAC), fmt.Sprintf("peers %v (%v)", st.Peers, err)
		})
		vr, _ := c.VRRP(name)
		t.Logf("%s (%s) knows %s's MAC %s (waited %v)", name, vr.State, other.Name, other.MAC, el)
	}
}

// peerFrames checks the loop rule's accounting on node, as the seeds' no_loop step does: the
// frames from peer's MAC to a VIP service that node received between two snapshots of its
// counters (the first read at t0, the second at t1) equal its pass_peer delta; frames stamped
// within lag of a snapshot may fall on either side.
func peerFrames(t *testing.T, what string, node, peer *cluster.Node, frames []netns.Frame, t0, t1 time.Time, passPeer uint64) {
	t.Helper()
	const lag = 5 * time.Millisecond
	var in, edge uint64
	for _, f := range frames {
		p, ok := parseTCP4(f.Data)
		if !ok || f.Outgoing() || p.Dst.Addr() != cluster.VIP || !sameMAC(p.SrcMAC.String(), peer.MAC) ||
			(p.Dst.Port() != cluster.WriterPort && p.Dst.Port() != cluster.ReaderPort) {
			continue
		}
		switch {
		case f.Time.After(t0.Add(lag)) && f.Time.Before(t1.Add(-lag)):
			in++
		case f.Time.Before(t0.Add(-lag)) || f.Time.After(t1.Add(lag)):
		default:
			edge++
		}
	}
	t.Logf("%s: %s received %d (+%d at the edges) frames from %s's MAC to the VIP; its pass_peer moved by %d", what, node.Name, in, edge, peer.Name, passPeer)
	if passPeer < in || passPeer > in+edge {
		t.Errorf("%s: expected %s's pass_peer = the frames from %s's MAC to the VIP it received, %d (+%d at the edges), seen %d", what, node.Name, peer.Name, in, edge, passPeer)
	}
}

// orphanSlack covers polling, scheduling and the status socket around a VRRP transition.
const orphanSlack = 300 * time.Millisecond

// heldConns are long-lived connections through the VIP, each running a statement every 200 ms:
// readers spread over db2 and db3 by the ring, a few writers to db1.
type heldConns struct {
	all  []*seedConn
	stop chan struct{}
}

func holdConns(t *testing.T, c *cluster.Cluster, readers, writers int) *heldConns {
	t.Helper()
	h := &heldConns{stop: make(chan struct{})}
	h.all = append(openSeedConns(t, c, cluster.ReaderPort, readers, 5*time.Second, false),
		openSeedConns(t, c, cluster.WriterPort, writers, 5*time.Second, true)...)
	for _, s := range h.all {
		go s.run(h.stop, 200*time.Millisecond)
	}
	return h
}

func (h *heldConns) spread() map[string]int {
	out := map[string]int{}
	for _, s := range h.all {
		out[s.server]++
	}
	return out
}

// progress waits until every connection has had a statement acknowledged after now: the
// traffic has flowed through whatever state the pair is in.
func (h *heldConns) progress(t *testing.T, what string) {
	t.Helper()
	from := time.Now()
	waitUntil(t, from, 5*time.Second, "a statement acknowledged on every held connection "+what, func() (bool, string) {
		behind := 0
		for _, s := range h.all {
			s.mu.Lock()
			if s.err != nil {
				s.mu.Unlock()
				return true, "" // finish reports it
			}
			if n := len(s.acks); n == 0 || !s.acks[n-1].After(from) {
				behind++
			}
			s.mu.Unlock()
		}
		return behind == 0, fmt.Sprintf("%d connections without one", behind)
	})
}

// finish stops the statements and checks every connection is the session it was; it returns
// the survivors per server.
func (h *heldConns) finish(t *testing.T, what string, since time.Time) {
	t.Helper()
	close(h.stop)
	for _, s := range h.all {
		<-s.done
	}
	survived := map[string]int{}
	lost := 0
	for i, s := range h.all {
		if err := s.alive(3 * time.Second); err != nil {
			lost++
			at := "-"
			if !s.errAt.IsZero() {
				at = s.errAt.Sub(since).Round(time.Millisecond).String()
			}
			t.Errorf("%s: connection %d (to %s): expected it to survive, seen %v (failed %s after the event)", what, i, s.server, err, at)
			continue
		}
		survived[s.server]++
	}
	t.Logf("%s: %d of %d held connections survived %v (spread %v), %d statements acknowledged", what,
		len(h.all)-lost, len(h.all), survived, h.spread(), countAcks(h.all))
}

// ringLeaves returns the lines the director logged after offset that take a director node out
// of a ring.
func ringLeaves(c *cluster.Cluster, name string, offset int) []string {
	log := c.DaemonLog(name)
	if offset > len(log) {
		offset = 0
	}
	var out []string
	for _, l := range strings.Split(log[offset:], "\n") {
		if !strings.Contains(l, "backend out of ring") && !strings.Contains(l, "backend removed") {
			continue
		}
		for _, d := range []string{cluster.DB2, cluster.DB3} {
			if strings.Contains(l, "backend="+c.Addr(d).String()+" ") || strings.HasSuffix(l, "backend="+c.Addr(d).String()) {
				out = append(out, l)
			}
		}
	}
	return out
}

type logMarks map[string]int

func markLogs(c *cluster.Cluster) logMarks {
	return logMarks{cluster.DB2: len(c.DaemonLog(cluster.DB2)), cluster.DB3: len(c.DaemonLog(cluster.DB3))}
}

// checkRings fails for every line since the marks that took a director's node out of a ring.
func (m logMarks) checkRings(t *testing.T, c *cluster.Cluster, what string) {
	t.Helper()
	for name, off := range m {
		if l := ringLeaves(c, name, off); len(l) > 0 {
			t.Errorf("%s: expected no director node to leave %s's rings, seen:\n%s", what, name, strings.Join(l, "\n"))
		}
	}
}

// clientNeighMAC is the MAC the client's neighbour table holds for the VIP ("" if none).
func clientNeighMAC(c *cluster.Cluster) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := c.Client.Exec(ctx, "ip", "neigh", "show", cluster.VIP.String(), "dev", netns.NodeLink)
	if err != nil {
		return "ERR " + err.Error()
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

func sameMAC(s string, m net.HardwareAddr) bool { return strings.EqualFold(s, m.String()) }

func waitMaster(t *testing.T, c *cluster.Cluster, name string, since time.Time, bound time.Duration) time.Duration {
	t.Helper()
	return waitUntil(t, since, bound, name+" MASTER", func() (bool, string) {
		s := vrrpState(c, name)
		return s == stMaster, s
	})
}

func masterDownOf(c *cluster.Cluster, name string) time.Duration {
	return masterDown(3, c.Node(name).Priority, c.Opts.AdvertInterval)
}

// leaseOf reads a director's lease from its pins (the daemon may be dead).
func leaseOf(t *testing.T, c *cluster.Cluster, name string) control.Lease {
	t.Helper()
	st, _ := mustSnapshot(t, c.Node(name))
	return st.Lease
}

// orphanMasterKilled: kill -9 of the Master's daemon, its link and MariaDB untouched. The Backup
// takes over; the killed one's data path (still attached) keeps passing the new Master's frames
// to its local stack, sends nothing out once the new Master has taken over, stops directing when
// its lease passes and stops answering ARP for the VIP it still holds on eth0. The restarted
// daemon says the data path was orphaned, clears the VIP and directs again.
func orphanMasterKilled(t *testing.T, c *cluster.Cluster) {
	master := c.Master()
	if master == "" {
		t.Fatal("expected a VRRP Master, seen none")
	}
	backup := cluster.Other(master)
	M, B := c.Node(master), c.Node(backup)
	orphanPeersKnown(t, c)
	h := holdConns(t, c, 50, 4)
	marks := markLogs(c)
	b0, _ := mustSnapshot(t, B)

	kill := c.CrashDirector(master)
	md := masterDownOf(c, backup)
	took := waitMaster(t, c, backup, kill, md+orphanSlack)
	waitUntil(t, kill, 3*time.Second, "the client's neighbour entry for the VIP to name "+backup, func() (bool, string) {
		m := clientNeighMAC(c)
		return sameMAC(m, B.MAC), m
	})
	capM := M.StartCapture(t, netns.NodeLink)
	m0, m0at := mustSnapshot(t, M)
	lease := m0.Lease
	if !lease.Set || lease.Expired() {
		t.Errorf("%s's lease right after the takeover: expected set and running, seen %s", master, lease)
	}
	// The killed daemon's lease runs out: its data path stops directing.
	waitUntil(t, kill, lease.Remaining+2*time.Second, master+"'s director lease to expire", func() (bool, string) {
		l := leaseOf(t, c, master)
		return l.Expired(), l.String()
	})
	expiredAt := time.Now()
	mustVIPOnEth0(t, M, true) // the killed daemon could not remove it

	// A client that asks for the VIP's MAC now gets the new Master's only: the orphan's kernel
	// would answer for the VIP on its eth0, its data path drops the request.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := c.Client.Exec(ctx, "ip", "neigh", "flush", "to", cluster.VIP.String(), "dev", netns.NodeLink); err != nil {
		t.Fatalf("flush the client's neighbour entry: %v %s", err, out)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.ServerID(ctx, cluster.ReaderPort); err != nil {
			t.Errorf("a new reader connection after the lease expired: %v", err)
		}
	}
	if m := clientNeighMAC(c); !sameMAC(m, B.MAC) {
		t.Errorf("client's neighbour entry for the VIP after a flush: expected %s (%s), seen %q", B.MAC, backup, m)
	}
	// Hold the connections a little longer: the new Master's checks of the orphan's node run
	// several times (300 ms interval), each a chance for a loop.
	time.Sleep(2 * time.Second)
	m1s := time.Now()
	m1, _ := mustSnapshot(t, M)
	b1, _ := mustSnapshot(t, B)
	framesM, err := capM.Stop()
	if err != nil {
		t.Fatal(err)
	}
	peerFrames(t, "after the takeover", M, B, framesM, m0at, m1s, m1.Counters.PassPeer-m0.Counters.PassPeer)
	h.finish(t, "kill -9 of "+master+"'s daemon", kill)
	marks.checkRings(t, c, "after the kill")

	d := func(a, b uint64) uint64 { return a - b }
	t.Logf("%s killed → %s MASTER after %v (Master_Down_Interval %v); %s's data path after the takeover: tx %d, pass_peer %d, pass_orphaned %d, drop_orphan_nd %d; lease expired %v after the kill",
		master, backup, took.Round(time.Millisecond), md, master, d(m1.Counters.Tx, m0.Counters.Tx), d(m1.Counters.PassPeer, m0.Counters.PassPeer),
		d(m1.Counters.PassOrphaned, m0.Counters.PassOrphaned), d(m1.Counters.DropOrphanNd, m0.Counters.DropOrphanNd), expiredAt.Sub(kill).Round(time.Millisecond))
	if tx := d(m1.Counters.Tx, m0.Counters.Tx); tx != 0 {
		t.Errorf("%s's orphaned data path: expected no XDP_TX after %s took over, seen %d", master, backup, tx)
	}
	if d(m1.Counters.PassPeer, m0.Counters.PassPeer) == 0 && h.spread()[master] > 0 {
		t.Errorf("%s's orphaned data path: expected the new Master's frames for %d connections on %s to pass as a peer's, pass_peer did not move", master, h.spread()[master], master)
	}
	if d(m1.Counters.DropOrphanNd, m0.Counters.DropOrphanNd) == 0 {
		t.Errorf("%s's orphaned data path: expected the client's ARP request for the VIP dropped (drop_orphan_nd), it did not move", master)
	}
	if tx := d(b1.Counters.Tx, b0.Counters.Tx); tx == 0 {
		t.Errorf("%s (new Master): expected it to forward the connections on %s, tx did not move", backup, master)
	}

	// The daemon comes back: it says the data path was orphaned, renews the lease, clears the
	// leftover VIP and is a Backup.
	c.StartDirector(master)
	waitUntil(t, time.Now(), 5*time.Second, master+" BACKUP after its restart, the leftover VIP gone", func() (bool, string) {
		has, err := seedVIPOnEth0(M)
		s := vrrpState(c, master)
		return s == stBackup && !has && err == nil, fmt.Sprintf("%s, VIP on eth0 %t (%v)", s, has, err)
	})
	if l := leaseOf(t, c, master); !l.Set || l.Expired() {
		t.Errorf("%s's lease after the restart: expected renewed, seen %s", master, l)
	}
	if !strings.Contains(c.DaemonLog(master), "the data path was orphaned") {
		t.Errorf("%s's restarted daemon: expected it to log that its data path had been orphaned", master)
	}
}

// orphanBackupKilled: kill -9 of the Backup's daemon. Its data path keeps serving the Master's
// frames locally (pass_peer) before and after its lease runs out and never sends one back.
func orphanBackupKilled(t *testing.T, c *cluster.Cluster) {
	master := c.Master()
	backup := cluster.Other(master)
	B := c.Node(backup)
	orphanPeersKnown(t, c)
	h := holdConns(t, c, 50, 4)
	marks := markLogs(c)
	capB := B.StartCapture(t, netns.NodeLink)
	b0, b0at := mustSnapshot(t, B)
	kill := c.CrashDirector(backup)
	lease := leaseOf(t, c, backup)
	waitUntil(t, kill, lease.Remaining+2*time.Second, backup+"'s director lease to expire", func() (bool, string) {
		l := leaseOf(t, c, backup)
		return l.Expired(), l.String()
	})
	time.Sleep(2 * time.Second) // the Master's checks of the orphan's node, a few rounds
	b1s := time.Now()
	b1, _ := mustSnapshot(t, B)
	framesB, err := capB.Stop()
	if err != nil {
		t.Fatal(err)
	}
	peerFrames(t, "Backup's daemon killed", B, c.Node(master), framesB, b0at, b1s, b1.Counters.PassPeer-b0.Counters.PassPeer)
	h.finish(t, "kill -9 of "+backup+"'s daemon (Backup)", kill)
	marks.checkRings(t, c, "after the Backup's kill")
	if s := vrrpState(c, master); s != stMaster {
		t.Errorf("%s: expected still MASTER, seen %s", master, s)
	}
	tx, peer := b1.Counters.Tx-b0.Counters.Tx, b1.Counters.PassPeer-b0.Counters.PassPeer
	t.Logf("%s's orphaned data path: tx %d, pass_peer %d", backup, tx, peer)
	if tx != 0 {
		t.Errorf("%s (Backup, daemon killed): expected no XDP_TX, seen %d", backup, tx)
	}
	if peer == 0 {
		t.Errorf("%s (Backup, daemon killed): expected the Master's frames to pass as a peer's, pass_peer did not move", backup)
	}
	c.StartDirector(backup)
	waitUntil(t, time.Now(), 5*time.Second, backup+" BACKUP after its restart", func() (bool, string) {
		s := vrrpState(c, backup)
		return s == stBackup, s
	})
}

// orphanMasterHung: the Master's daemon hangs (SIGSTOP: alive, but it renews nothing and sends
// no adverts). The Backup takes over; the hung one's lease passes and its data path stops
// directing; when the daemon continues it renews the lease, its priority takes the VIP back, and
// no held connection notices more than a pause.
func orphanMasterHung(t *testing.T, c *cluster.Cluster) {
	master := c.Master()
	backup := cluster.Other(master)
	M, B := c.Node(master), c.Node(backup)
	orphanPeersKnown(t, c)
	h := holdConns(t, c, 50, 4)
	marks := markLogs(c)
	paused := c.PauseDirector(master)
	resumed := false
	defer func() {
		if !resumed {
			c.ResumeDirector(master)
		}
	}()
	waitMaster(t, c, backup, paused, masterDownOf(c, backup)+orphanSlack)
	waitUntil(t, paused, 3*time.Second, "the client's neighbour entry for the VIP to name "+backup, func() (bool, string) {
		m := clientNeighMAC(c)
		return sameMAC(m, B.MAC), m
	})
	capM := M.StartCapture(t, netns.NodeLink)
	m0, m0at := mustSnapshot(t, M)
	waitUntil(t, paused, leaseOf(t, c, master).Remaining+time.Since(paused)+2*time.Second, master+"'s lease to expire while its daemon hangs", func() (bool, string) {
		l := leaseOf(t, c, master)
		return l.Expired(), l.String()
	})
	h.progress(t, "with "+master+"'s daemon hung and its lease expired")
	m1s := time.Now()
	m1, _ := mustSnapshot(t, M)
	frames, err := capM.Stop()
	if err != nil {
		t.Fatal(err)
	}
	peerFrames(t, "daemon hung", M, B, frames, m0at, m1s, m1.Counters.PassPeer-m0.Counters.PassPeer)
	if tx := m1.Counters.Tx - m0.Counters.Tx; tx != 0 {
		t.Errorf("%s (daemon hung, %s Master): expected no XDP_TX, seen %d", master, backup, tx)
	}

	c.ResumeDirector(master)
	resumed = true
	cont := time.Now()
	waitUntil(t, cont, 3*time.Second, master+"'s lease renewed after SIGCONT", func() (bool, string) {
		l := leaseOf(t, c, master)
		return l.Set && !l.Expired(), l.String()
	})
	waitUntil(t, cont, 3*time.Second, "one Master again", func() (bool, string) {
		a, b := vrrpState(c, master), vrrpState(c, backup)
		return (a == stMaster) != (b == stMaster), a + "/" + b
	})
	h.progress(t, "after "+master+"'s daemon continued")
	h.finish(t, master+"'s daemon hung, then continued", paused)
	marks.checkRings(t, c, "across the hang")
	t.Logf("%s hung %v; now %s %s, %s %s", master, cont.Sub(paused).Round(time.Millisecond), master, vrrpState(c, master), backup, vrrpState(c, backup))
}

// orphanGracefulRestarts: SIGTERM of the Master's daemon and a start at once (the data path is
// kept: a restart within the lease directs with no gap), four times so that a lucky hash cannot
// hide a loss, then both daemons one after the other; the same connections held throughout.
func orphanGracefulRestarts(t *testing.T, c *cluster.Cluster) {
	orphanPeersKnown(t, c)
	h := holdConns(t, c, 50, 4)
	marks := markLogs(c)
	start := time.Now()
	restart := func(name string) {
		t.Helper()
		if err := c.StopDirector(name); err != nil {
			t.Fatalf("SIGTERM of %s's xdplb: expected a clean exit, seen %v", name, err)
		}
		if l := leaseOf(t, c, name); !l.Set || l.Expired() {
			t.Errorf("%s's data path after SIGTERM: expected attached with its lease running, seen %s", name, l)
		}
		c.StartDirector(name)
	}
	for round := 1; round <= 4; round++ {
		master := c.Master()
		backup := cluster.Other(master)
		sig := time.Now()
		restart(master)
		took := waitMaster(t, c, backup, sig, 5*time.Second)
		waitUntil(t, time.Now(), 5*time.Second, master+" BACKUP after its restart", func() (bool, string) {
			s := vrrpState(c, master)
			return s == stBackup, s
		})
		h.progress(t, fmt.Sprintf("after round %d", round))
		t.Logf("round %d: %s restarted, %s MASTER after %v", round, master, backup, took.Round(time.Millisecond))
	}
	master := c.Master()
	backup := cluster.Other(master)
	restart(backup)
	h.progress(t, "after the Backup's restart")
	restart(master)
	waitMaster(t, c, backup, time.Now(), 5*time.Second)
	h.progress(t, "after both restarts")
	h.finish(t, "4 restarts of the Master's daemon, then both", start)
	marks.checkRings(t, c, "across the restarts")
}

// orphanSplitBrain: VRRP between the directors blocked for several Master_Down_Intervals, both
// Master, then healed. Each keeps the other's MAC (it may still run a data path), each one's
// checks of the other's node reach that node's stack, nothing leaves a ring, and every held
// connection survives.
func orphanSplitBrain(t *testing.T, c *cluster.Cluster) {
	orphanPeersKnown(t, c)
	h := holdConns(t, c, 50, 4)
	marks := markLogs(c)
	s0 := map[string]control.State{}
	s0at := map[string]time.Time{}
	caps := map[string]*netns.Capture{}
	for _, n := range []string{cluster.DB2, cluster.DB3} {
		caps[n] = c.Node(n).StartCapture(t, netns.NodeLink)
		s0[n], s0at[n] = mustSnapshot(t, c.Node(n))
	}
	blocked := time.Now()
	unblock := nftBlockVRRP(t, c.LAN, c.Node(cluster.DB2).Node, c.Node(cluster.DB3).Node)
	md := max(masterDownOf(c, cluster.DB2), masterDownOf(c, cluster.DB3))
	waitUntil(t, blocked, md+orphanSlack, "both directors MASTER", func() (bool, string) {
		a, b := vrrpState(c, cluster.DB2), vrrpState(c, cluster.DB3)
		return a == stMaster && b == stMaster, a + "/" + b
	})
	time.Sleep(8 * md) // several Master_Down_Intervals of split brain, checks running
	for _, n := range []string{cluster.DB2, cluster.DB3} {
		st, _ := mustSnapshot(t, c.Node(n))
		if other := c.Node(cluster.Other(n)); !hasMAC(st.Peers, other.MAC) {
			t.Errorf("%s during the split brain: expected %s's MAC still in its peers map, seen %v", n, other.Name, st.Peers)
		}
	}
	unblock()
	waitUntil(t, time.Now(), 3*time.Second, "one Master after VRRP heals", func() (bool, string) {
		a, b := vrrpState(c, cluster.DB2), vrrpState(c, cluster.DB3)
		return (a == stMaster) != (b == stMaster) && (a == stBackup || b == stBackup), a + "/" + b
	})
	time.Sleep(time.Second) // the healed pair carries the connections a while
	h.finish(t, fmt.Sprintf("VRRP blocked %v, then healed", time.Since(blocked).Round(100*time.Millisecond)), blocked)
	marks.checkRings(t, c, "across the split brain")
	for _, n := range []string{cluster.DB2, cluster.DB3} {
		s1 := time.Now()
		st, _ := mustSnapshot(t, c.Node(n))
		frames, err := caps[n].Stop()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: tx %d, pass_peer %d, pass_local %d during the split brain and after", n,
			st.Counters.Tx-s0[n].Counters.Tx, st.Counters.PassPeer-s0[n].Counters.PassPeer, st.Counters.PassLocal-s0[n].Counters.PassLocal)
		peerFrames(t, "split brain", c.Node(n), c.Node(cluster.Other(n)), frames, s0at[n], s1, st.Counters.PassPeer-s0[n].Counters.PassPeer)
	}
}
