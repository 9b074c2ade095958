//go:build linux

package test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/mariadb"
	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// The daemon's topology: a client, a director holding the VIP, and three MariaDB real servers
// with the VIP on lo: rs1 the primary, rs2 and rs3 its replicas (GTID). Two services on one VIP,
// as in examples/seeds.yaml: the writer on 3306 (rs1..rs3, healthy only while writable) and the
// reader on 3307 (rs2, rs3, healthy only while replicating). Direct routing never rewrites
// ports, so every server also answers on 3307 (MariaDB extra_port).
var (
	dmVIP    = netip.MustParseAddr("10.88.0.100")
	dmWriter = netip.AddrPortFrom(dmVIP, 3306)
	dmReader = netip.AddrPortFrom(dmVIP, 3307)
)

const (
	dmInterval      = 300 * time.Millisecond
	dmTimeout       = 250 * time.Millisecond
	dmRise          = 2
	dmFall          = 2
	dmUser          = "app"
	dmPassword      = "Right-pw-7f3a9c51"
	dmWrongPassword = "Wrong-pw-2b8e1d64"
	dmFreshEvery    = 5 // health.DefaultMySQLFreshEvery: the kept check connection opens a fresh one every 5 probes
	dmSlack         = time.Second
)

var (
	// A failing real server leaves its ring within fall checks (the last one may time out).
	dmRemoveBound = dmFall*dmInterval + dmTimeout + dmSlack
	// A recovered one comes back within rise checks.
	dmReturnBound = dmRise*dmInterval + dmTimeout + dmSlack
	// A wrong password is seen by the fresh connection opened every dmFreshEvery probes.
	dmAuthBound = (dmFreshEvery+dmFall)*dmInterval + dmTimeout + dmSlack
)

type daemonBed struct {
	client          *netns.Node
	dir             *director
	rs              [3]*netns.Node
	db              [3]*mariadb.Server
	addr            [3]string         // rs1..rs3 addresses as text
	names           map[string]string // address → rs1..rs3
	cfgPath, pwPath string
	socket          string
	d               *daemonProc
	writer, reader  *sql.DB // from the client to the VIP: every query a new connection
	w, r            string  // ring keys: "VIP:3306", "VIP:3307"
}

func newDaemonBed(t *testing.T) *daemonBed {
	t.Helper()
	lan := netns.NewLAN(t)
	b := &daemonBed{names: map[string]string{}, w: dmWriter.String(), r: dmReader.String()}
	b.client = lan.AddNode("client", "10.88.0.1/24")
	dn := lan.AddNode("director", "10.88.0.2/24")
	for i := range b.rs {
		b.rs[i] = lan.AddNode(fmt.Sprintf("rs%d", i+1), fmt.Sprintf("10.88.0.%d/24", 11+i))
		b.addr[i] = b.rs[i].Addr().String()
		b.names[b.addr[i]] = b.rs[i].Role
	}
	if err := dn.AddAddr(netns.NodeLink, netip.PrefixFrom(dmVIP, 32)); err != nil {
		t.Fatal(err)
	}
	for _, rs := range b.rs {
		if err := rs.SetupRealServer(dmVIP); err != nil {
			t.Fatalf("real server %s: %v", rs.Role, err)
		}
	}

	start := time.Now()
	extra := []string{"--extra-port=3307", "--extra-max-connections=64"}
	b.db[0] = mariadb.Start(t, b.rs[0].NS, mariadb.Options{ServerID: 11, Addr: b.rs[0].Addr(), Password: dmPassword, LogBin: true, Args: extra})
	for i := 1; i < 3; i++ {
		// --read-only survives the restart of subtest b (SET GLOBAL would not).
		b.db[i] = mariadb.Start(t, b.rs[i].NS, mariadb.Options{ServerID: uint32(11 + i), Addr: b.rs[i].Addr(), Password: dmPassword,
			Args: append([]string{"--read-only=1"}, extra...)})
		mariadb.SetupReplica(t, b.db[0], b.db[i])
	}
	t.Logf("MariaDB: rs1 primary (server id 11), rs2 and rs3 replicas (12, 13) in %v", time.Since(start).Round(time.Millisecond))

	tmp := t.TempDir()
	b.pwPath = filepath.Join(tmp, "monitor.pw")
	b.writePassword(t, dmPassword)
	b.cfgPath = filepath.Join(tmp, "xdplb.yaml")
	b.writeConfig(t, 1)
	b.socket = filepath.Join(tmp, "xdplb.sock")
	b.dir = &director{Node: dn, pinRoot: newPinRoot(t)}
	b.writer = mysqlFrom(t, b.client.NS, dmWriter, dmUser, dmPassword)
	b.reader = mysqlFrom(t, b.client.NS, dmReader, dmUser, dmPassword)
	t.Logf("topology: LAN %s; client %s, director %s %s, rs1 %s %s, rs2 %s %s, rs3 %s %s; VIP %s; pin root %s",
		lan.Name, b.client.Addr(), dn.Addr(), dn.MAC, b.addr[0], b.rs[0].MAC, b.addr[1], b.rs[1].MAC, b.addr[2], b.rs[2].MAC, dmVIP, b.dir.pinRoot)
	return b
}

func (b *daemonBed) writePassword(t *testing.T, pw string) {
	t.Helper()
	if err := os.WriteFile(b.pwPath, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeConfig writes the daemon's configuration; readerWeight is rs2's weight in the reader.
func (b *daemonBed) writeConfig(t *testing.T, readerWeight int) {
	t.Helper()
	check := func(extra string) string {
		return fmt.Sprintf(`    check:
      type: mysql
      interval: %v
      timeout: %v
      rise: %d
      fall: %d
      mysql:
        user: %s
        password_file: %s
        %s
`, dmInterval, dmTimeout, dmRise, dmFall, dmUser, b.pwPath, extra)
	}
	cfg := fmt.Sprintf(`# TestDaemonMySQL
interfaces: [%s]
maps:
  conntrack: 65536
  persist: 4096
metrics: 127.0.0.1:9447
services:
  - name: writer
    vip: %s
    port: %d
%s    real_servers:
      - address: %s
      - address: %s
      - address: %s
  - name: reader
    vip: %s
    port: %d
%s    real_servers:
      - address: %s
        weight: %d
      - address: %s
`, netns.NodeLink,
		dmVIP, dmWriter.Port(), check("writable: true"), b.addr[0], b.addr[1], b.addr[2],
		dmVIP, dmReader.Port(), check("max_replication_lag: 10s"), b.addr[1], readerWeight, b.addr[2])
	b.writeConfigText(t, cfg)
}

func (b *daemonBed) writeConfigText(t *testing.T, text string) {
	t.Helper()
	if err := os.WriteFile(b.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sqlExec runs SQL as root on s and fails t (the calling subtest) on error.
func sqlExec(t *testing.T, s *mariadb.Server, q string) string {
	t.Helper()
	out, err := s.Exec(q)
	if err != nil {
		t.Fatalf("expected `%s` on server %d to succeed, seen: %v", q, s.Opts.ServerID, err)
	}
	return out
}

// steady is the rings when every server is healthy: writer {rs1}, reader {rs2, rs3}.
func (b *daemonBed) steady(r ringSet) bool {
	return r.is(b.w, b.addr[0]) && r.is(b.r, b.addr[1], b.addr[2])
}

// serverIDs makes n new connections through db and counts the @@server_id answers.
func serverIDs(t *testing.T, db *sql.DB, what string, n int) map[uint32]int {
	t.Helper()
	ids := map[uint32]int{}
	for i := range n {
		id, err := serverIDVia(db)
		if err != nil {
			t.Fatalf("connection %d/%d from the client to %s: expected SELECT @@server_id to answer, seen: %v", i+1, n, what, err)
		}
		ids[id]++
	}
	return ids
}

func TestDaemonMySQL(t *testing.T) {
	requireRoot(t)
	requireCLI(t)
	requireTools(t, "nsenter", "ip", "mariadbd", "mariadb-install-db", "mariadb")
	testStart := time.Now()
	defer func() { t.Logf("TestDaemonMySQL: %v", time.Since(testStart).Round(time.Millisecond)) }()

	b := newDaemonBed(t)
	started := time.Now()
	b.d = startDaemon(t, b.dir, b.cfgPath, b.socket, "generic")
	d := b.d
	rs1, rs2, rs3 := b.addr[0], b.addr[1], b.addr[2]

	steps := []struct {
		name string
		f    func(t *testing.T)
	}{
		{"a_start", func(t *testing.T) {
			el := d.waitRings(t, started, 15*time.Second, "writer ring {rs1} and reader ring {rs2, rs3} after start", b.names, b.steady)
			t.Logf("daemon started: rings complete %v after the process start", el.Round(time.Millisecond))
			l, err := d.list()
			if err != nil {
				t.Fatal(err)
			}
			if m := l.Interfaces[0].Mode; m != "generic" {
				t.Errorf("`xdplb list --json`: expected mode generic on %s, seen %q", l.Interfaces[0].Iface, m)
			}
			st, err := d.status()
			if err != nil {
				t.Fatalf("status socket: expected an answer, seen %v", err)
			}
			for _, a := range []string{rs2, rs3} {
				up, why, ok := st.lastError(dmWriter.Port(), a)
				if !ok || up || !strings.Contains(why, "read_only") {
					t.Errorf("status of writer %s (%s): expected down with a read_only error, seen found=%t up=%t error %q", a, b.names[a], ok, up, why)
				}
			}
			t.Logf("xdplb list --status-socket:\n%s", b.dir.cli(t, "list", "--status-socket", b.socket))

			if ids := serverIDs(t, b.writer, "the writer VIP "+dmWriter.String(), 6); ids[11] != 6 {
				t.Errorf("writer VIP %s: expected all 6 connections on rs1 (server id 11), seen server ids %v", dmWriter, ids)
			}
			ids := serverIDs(t, b.reader, "the reader VIP "+dmReader.String(), 20)
			t.Logf("reader VIP %s: 20 connections by server id: %v", dmReader, ids)
			if ids[12]+ids[13] != 20 || ids[12] == 0 || ids[13] == 0 {
				t.Errorf("reader VIP %s: expected all 20 connections on rs2 (12) or rs3 (13), both used, seen server ids %v", dmReader, ids)
			}
		}},

		{"b_kill_restart", func(t *testing.T) {
			b.db[2].Kill()
			t0 := time.Now()
			var rs2Left, writerChanged bool
			el := d.waitRings(t, t0, dmRemoveBound, "rs3 out of the reader ring after its mariadbd was killed", b.names, func(r ringSet) bool {
				rs2Left = rs2Left || !r.has(b.r, rs2)
				writerChanged = writerChanged || !r.is(b.w, rs1)
				return !r.has(b.r, rs3)
			})
			t.Logf("kill rs3: left the reader ring after %v (bound %v = fall×interval + timeout + %v)", el.Round(time.Millisecond), dmRemoveBound, dmSlack)
			if rs2Left {
				t.Errorf("kill rs3: expected rs2 to stay in the reader ring, seen it leave")
			}
			if writerChanged {
				t.Errorf("kill rs3: expected the writer ring to stay {rs1}, seen it change")
			}
			b.db[2].Restart()
			t1 := time.Now()
			el = d.waitRings(t, t1, dmReturnBound, "rs3 back in the reader ring after its restart", b.names, b.steady)
			t.Logf("restart rs3: back in the reader ring %v after mariadbd accepted connections (bound %v = rise×interval + timeout + %v)",
				el.Round(time.Millisecond), dmReturnBound, dmSlack)
		}},

		{"c_vip_off_lo", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			vip32 := netip.PrefixFrom(dmVIP, 32)
			if _, err := b.rs[1].Exec(ctx, "ip", "addr", "del", vip32.String(), "dev", "lo"); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			el := d.waitRings(t, t0, dmRemoveBound, "rs2 out of the reader ring after the VIP left its lo", b.names, func(r ringSet) bool {
				return r.is(b.r, rs3)
			})
			t.Logf("VIP off rs2's lo: rs2 left the reader ring after %v (bound %v)", el.Round(time.Millisecond), dmRemoveBound)
			for _, port := range []uint16{3306, 3307} {
				ap := netip.AddrPortFrom(b.rs[1].Addr(), port)
				if v, err := readHandshake(b.dir.NS, ap); err != nil {
					t.Errorf("VIP off rs2's lo: expected a plain TCP connection from the director to rs2's own %s to get the MySQL handshake, seen: %v", ap, err)
				} else {
					t.Logf("VIP off rs2's lo: %s still answers (server %s)", ap, v)
				}
			}
			st, err := d.status()
			if err != nil {
				t.Fatalf("status socket: expected an answer, seen %v", err)
			}
			if up, why, _ := st.lastError(dmReader.Port(), rs2); up || !strings.Contains(why, "dr path") {
				t.Errorf("status of reader rs2: expected down with a \"dr path\" error, seen up=%t error %q", up, why)
			} else {
				t.Logf("status of reader rs2: %s", why)
			}
			if err := b.rs[1].AddAddr("lo", vip32); err != nil {
				t.Fatal(err)
			}
			t1 := time.Now()
			el = d.waitRings(t, t1, dmReturnBound, "rs2 back in the reader ring after the VIP came back on its lo", b.names, b.steady)
			t.Logf("VIP back on rs2's lo: rs2 back after %v (bound %v)", el.Round(time.Millisecond), dmReturnBound)
		}},

		{"d_primary_switch", func(t *testing.T) {
			sqlExec(t, b.db[0], "SET GLOBAL read_only=1")
			sqlExec(t, b.db[1], "SET GLOBAL read_only=0")
			t0 := time.Now()
			bound := max(dmRemoveBound, dmReturnBound)
			el := d.waitRings(t, t0, bound, "writer ring {rs2} after read_only=1 on rs1 and read_only=0 on rs2", b.names, func(r ringSet) bool {
				return r.is(b.w, rs2) && r.is(b.r, rs2, rs3)
			})
			t.Logf("primary switch rs1 → rs2: writer ring {rs2} after %v (bound %v)", el.Round(time.Millisecond), bound)
			if ids := serverIDs(t, b.writer, "the writer VIP", 4); ids[12] != 4 {
				t.Errorf("writer VIP after the switch: expected all 4 connections on rs2 (server id 12), seen %v", ids)
			}
			sqlExec(t, b.db[1], "SET GLOBAL read_only=1")
			sqlExec(t, b.db[0], "SET GLOBAL read_only=0")
			t1 := time.Now()
			el = d.waitRings(t, t1, bound, "writer ring {rs1} after switching back", b.names, b.steady)
			t.Logf("primary switch back rs2 → rs1: writer ring {rs1} after %v (bound %v)", el.Round(time.Millisecond), bound)
			if ids := serverIDs(t, b.writer, "the writer VIP", 4); ids[11] != 4 {
				t.Errorf("writer VIP after switching back: expected all 4 connections on rs1 (server id 11), seen %v", ids)
			}
		}},

		{"e_sql_thread", func(t *testing.T) {
			sqlExec(t, b.db[2], "STOP SLAVE SQL_THREAD")
			t0 := time.Now()
			el := d.waitRings(t, t0, dmRemoveBound, "rs3 out of the reader ring after STOP SLAVE SQL_THREAD", b.names, func(r ringSet) bool {
				return r.is(b.r, rs2)
			})
			t.Logf("STOP SLAVE SQL_THREAD on rs3: left the reader ring after %v (bound %v)", el.Round(time.Millisecond), dmRemoveBound)
			if st, err := d.status(); err == nil {
				_, why, _ := st.lastError(dmReader.Port(), rs3)
				t.Logf("status of reader rs3: %s", why)
			}
			sqlExec(t, b.db[2], "START SLAVE SQL_THREAD")
			t1 := time.Now()
			el = d.waitRings(t, t1, dmReturnBound, "rs3 back in the reader ring after START SLAVE SQL_THREAD", b.names, b.steady)
			t.Logf("START SLAVE SQL_THREAD on rs3: back after %v (bound %v)", el.Round(time.Millisecond), dmReturnBound)
		}},

		{"f_wrong_password", func(t *testing.T) {
			reloads := strings.Count(d.log(), "configuration reloaded")
			b.writePassword(t, dmWrongPassword)
			d.signal(t, syscall.SIGHUP)
			t0 := time.Now()
			waitFor(t, 5*time.Second, "the daemon to log \"configuration reloaded\" after SIGHUP", func() (bool, string) {
				n := strings.Count(d.log(), "configuration reloaded")
				return n > reloads, fmt.Sprintf("%d such lines (before: %d)", n, reloads)
			})
			el := d.waitRings(t, t0, dmAuthBound, "empty writer and reader rings with a wrong check password", b.names, func(r ringSet) bool {
				return r.is(b.w) && r.is(b.r)
			})
			t.Logf("wrong password (SIGHUP): every real server out after %v (bound %v = (fresh every %d + fall)×interval + timeout + %v)",
				el.Round(time.Millisecond), dmAuthBound, dmFreshEvery, dmSlack)
			log := d.log()
			if !strings.Contains(log, "Access denied") {
				t.Errorf("daemon log: expected \"Access denied\", seen none in:\n%s", log)
			}
			for _, pw := range []string{dmWrongPassword, dmPassword} {
				if strings.Contains(log, pw) {
					t.Errorf("daemon log: expected no password text, seen %q in it", pw)
				}
			}
			if st, err := d.status(); err == nil {
				_, why, _ := st.lastError(dmWriter.Port(), rs1)
				t.Logf("status of writer rs1: %s", why)
				if !strings.Contains(why, "Access denied") {
					t.Errorf("status of writer rs1: expected an \"Access denied\" error, seen %q", why)
				}
			}

			b.writePassword(t, dmPassword)
			out, err := d.reload()
			if err != nil || !strings.Contains(out, "configuration reloaded") {
				t.Fatalf("`xdplb reload` with the password restored: expected success and \"configuration reloaded\", seen %v: %q", err, out)
			}
			t1 := time.Now()
			el = d.waitRings(t, t1, dmReturnBound, "every ring back with the right password", b.names, b.steady)
			t.Logf("password restored (xdplb reload): rings back after %v (bound %v)", el.Round(time.Millisecond), dmReturnBound)
		}},

		{"g_reload_under_traffic", func(t *testing.T) {
			testReloadUnderTraffic(t, b)
		}},

		{"h_stop", func(t *testing.T) {
			if err := d.stop(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(d.log(), "daemon stopping") {
				t.Errorf("daemon log: expected \"daemon stopping\" after SIGTERM, seen:\n%s", d.log())
			}
			if _, err := os.Stat(b.dir.pinDir(netns.NodeLink)); !os.IsNotExist(err) {
				t.Errorf("after SIGTERM with --detach-on-exit: expected %s to be gone, seen stat error %v", b.dir.pinDir(netns.NodeLink), err)
			}
			if mode, id, err := b.dir.XDPAttachMode(netns.NodeLink); err != nil || mode != "" {
				t.Errorf("after SIGTERM with --detach-on-exit: expected no XDP program on the director's %s, seen mode %q id %d (err %v)", netns.NodeLink, mode, id, err)
			}
			if _, err := os.Stat(b.socket); !os.IsNotExist(err) {
				t.Errorf("after SIGTERM: expected the status socket %s to be removed, seen stat error %v", b.socket, err)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			t.Fatalf("subtest %s failed: the later ones depend on its state, not run", s.name)
		}
	}
}

// testReloadUnderTraffic: five long-lived MySQL sessions through the reader VIP keep answering
// across a rejected reload (broken YAML) and an applied one (a weight change).
func testReloadUnderTraffic(t *testing.T, b *daemonBed) {
	d := b.d
	rs2 := b.addr[1]
	const nConns = 5
	long := mysqlFrom(t, b.client.NS, dmReader, dmUser, dmPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type session struct {
		c        *sql.Conn
		connID   uint64
		serverID uint32
	}
	sessions := make([]session, nConns)
	for i := range sessions {
		c, err := long.Conn(ctx)
		if err != nil {
			t.Fatalf("session %d to the reader VIP %s: expected a connection, seen %v", i+1, dmReader, err)
		}
		defer c.Close()
		sessions[i].c = c
		if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID(), @@server_id").Scan(&sessions[i].connID, &sessions[i].serverID); err != nil {
			t.Fatalf("session %d: expected SELECT CONNECTION_ID(), @@server_id to answer, seen %v", i+1, err)
		}
	}
	var desc []string
	for _, s := range sessions {
		desc = append(desc, fmt.Sprintf("connection %d on server %d", s.connID, s.serverID))
	}
	t.Logf("%d sessions through %s: %s", nConns, dmReader, strings.Join(desc, ", "))

	// Traffic: every session runs SELECT 1 every 50 ms until stopped.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var queries int
	var errs []string
	for i, s := range sessions {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
				var one int
				err := s.c.QueryRowContext(qctx, "SELECT 1").Scan(&one)
				qcancel()
				mu.Lock()
				queries++
				if err != nil {
					errs = append(errs, fmt.Sprintf("session %d: %v", i+1, err))
				}
				mu.Unlock()
			}
		})
	}
	stopTraffic := func() {
		if stop != nil {
			close(stop)
			wg.Wait()
			stop = nil
		}
	}
	defer stopTraffic()

	ringsBefore, weightsBefore, err := d.rings()
	if err != nil {
		t.Fatal(err)
	}
	rejected := strings.Count(d.log(), "configuration rejected")
	checksBefore, err := checkCounts(d)
	if err != nil {
		t.Fatal(err)
	}

	// An invalid file: rejected, nothing changes.
	b.writeConfigText(t, "interfaces: [eth0\nservices:\n  - vip: 10.88.0.100\n    port: [3306\n")
	out, err := d.reload()
	if err == nil {
		t.Errorf("`xdplb reload` with broken YAML: expected a non-zero exit, seen success: %q", out)
	}
	if !strings.Contains(strings.ToLower(out), "yaml") || !strings.Contains(out, "rejected") {
		t.Errorf("`xdplb reload` with broken YAML: expected the YAML error and \"rejected\" in its output, seen %q", out)
	} else {
		t.Logf("`xdplb reload` with broken YAML: exit error %v as expected; output:\n%s", err != nil, strings.TrimSpace(out))
	}
	// Let a wrong change show: every real server is checked rise+1 more times (the daemon runs and
	// applies its checks; at least rise intervals pass) before the maps are compared.
	more := dmRise + 1
	waitFor(t, time.Duration(more)*dmInterval+dmTimeout+dmSlack, fmt.Sprintf("%d more checks of every real server after the rejected reload", more), func() (bool, string) {
		now, err := checkCounts(d)
		if err != nil {
			return false, err.Error()
		}
		for k, n := range checksBefore {
			if now[k] < n+uint64(more) {
				return false, fmt.Sprintf("checks %v, before the reload %v", now, checksBefore)
			}
		}
		return true, ""
	})
	if !d.running() {
		t.Fatalf("after a rejected reload: expected the daemon to keep running, seen it exit: %v", d.waitErr)
	}
	if n := strings.Count(d.log(), "configuration rejected"); n <= rejected {
		t.Errorf("daemon log: expected a \"configuration rejected\" line after the broken reload, seen %d (before %d)", n, rejected)
	}
	ringsAfter, weightsAfter, err := d.rings()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(ringsBefore, ringsAfter, func(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }) ||
		!maps.EqualFunc(weightsBefore, weightsAfter, maps.Equal) {
		t.Errorf("after a rejected reload: expected the rings and weights unchanged (%s %v), seen %s %v",
			ringsBefore.named(b.names), weightsBefore, ringsAfter.named(b.names), weightsAfter)
	}

	// A valid change: rs2's reader weight 1 → 3, applied.
	b.writeConfig(t, 3)
	out, err = d.reload()
	if err != nil || !strings.Contains(out, "configuration reloaded") {
		t.Fatalf("`xdplb reload` with rs2's reader weight 3: expected success and \"configuration reloaded\", seen %v: %q", err, out)
	}
	waitFor(t, 2*time.Second, "rs2's weight 3 in the reader service's maps", func() (bool, string) {
		r, w, err := d.rings()
		if err != nil {
			return false, err.Error()
		}
		return w[b.r][rs2] == 3 && b.steady(r), fmt.Sprintf("weights %v, rings %s", w, r.named(b.names))
	})
	mu.Lock()
	applied := queries
	mu.Unlock()
	waitFor(t, 2*time.Second, fmt.Sprintf("%d more queries after the change", nConns), func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return queries >= applied+nConns, fmt.Sprintf("%d queries, %d when the change was applied", queries, applied)
	})
	stopTraffic()
	mu.Lock()
	t.Logf("traffic: %d SELECT 1 over %d sessions during both reloads, %d errors", queries, nConns, len(errs))
	if len(errs) > 0 || queries < 2*nConns {
		t.Errorf("traffic during the reloads: expected every SELECT 1 to answer (at least %d), seen %d queries, errors %v", 2*nConns, queries, errs)
	}
	mu.Unlock()
	for i, s := range sessions {
		var connID uint64
		var serverID uint32
		if err := s.c.QueryRowContext(ctx, "SELECT CONNECTION_ID(), @@server_id").Scan(&connID, &serverID); err != nil {
			t.Errorf("session %d after the reloads: expected an answer, seen %v", i+1, err)
		} else if connID != s.connID || serverID != s.serverID {
			t.Errorf("session %d after the reloads: expected the same session (connection id %d on server %d), seen connection id %d on server %d",
				i+1, s.connID, s.serverID, connID, serverID)
		}
	}

	// Back to the original configuration.
	b.writeConfig(t, 1)
	if out, err := d.reload(); err != nil {
		t.Fatalf("`xdplb reload` of the original configuration: expected success, seen %v: %q", err, out)
	}
	waitFor(t, 2*time.Second, "rs2's weight back to 1 in the reader service's maps", func() (bool, string) {
		r, w, err := d.rings()
		if err != nil {
			return false, err.Error()
		}
		return w[b.r][rs2] == 1 && b.steady(r), fmt.Sprintf("weights %v, rings %s", w, r.named(b.names))
	})
}

// checkCounts is how many checks the daemon has run of each real server, by "service addr", from
// the daemon part of `xdplb list --json`.
func checkCounts(p *daemonProc) (map[string]uint64, error) {
	out, err := p.dir.cliErr("list", "--json", "--status-socket", p.socket)
	if err != nil {
		return nil, err
	}
	var l struct {
		Daemon *struct {
			Services []struct {
				Name     string `json:"name"`
				Backends []struct {
					Addr   string `json:"addr"`
					Checks uint64 `json:"checks"`
				} `json:"backends"`
			} `json:"services"`
		} `json:"daemon"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return nil, fmt.Errorf("`xdplb list --json`: %w in %.300q", err, out)
	}
	if l.Daemon == nil || len(l.Daemon.Services) == 0 {
		return nil, fmt.Errorf("`xdplb list --json`: no daemon services in %.300q", out)
	}
	n := map[string]uint64{}
	for _, s := range l.Daemon.Services {
		for _, b := range s.Backends {
			n[s.Name+" "+b.Addr] = b.Checks
		}
	}
	return n, nil
}
