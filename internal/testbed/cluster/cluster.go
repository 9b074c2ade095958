//go:build linux

// Package cluster builds the seeds' MySQL topology in network namespaces, for acceptance tests
// and for `make demo`:
//
//	client  10.0.0.10
//	db1     10.0.0.11  MariaDB primary (GTID binary log); not a director
//	db2     10.0.0.12  MariaDB replica (read_only) + director (`xdplb run`, VRRP priority 150)
//	db3     10.0.0.13  MariaDB replica (read_only) + director (`xdplb run`, VRRP priority 100)
//	VIP     10.0.0.100 on the VRRP Master's eth0; on lo of every db node (`xdplb realserver up`)
//
// Two services on the VIP: the writer 10.0.0.100:3306 (db1..db3, mysql check writable: true, so
// only the primary) and the reader 10.0.0.100:3307 (db2, db3, max_replication_lag 10s). Every
// MariaDB also answers on 3307 (extra_port), as direct routing never rewrites ports. Each director
// lists itself with `local: true`; VRRP v3 (vrid 51) runs between the two, peers are learned from
// adverts (no MAC anywhere in the configs).
//
// Everything is torn down by [Cluster.Close], which is idempotent and registered with
// tb.Cleanup: daemons (SIGTERM, then SIGKILL), MariaDB servers, pin roots under /sys/fs/bpf,
// namespaces, temporary files.
package cluster

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/daemon"
	"github.com/xdplb/xdplb/internal/testbed"
	"github.com/xdplb/xdplb/internal/testbed/mariadb"
	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// TB is what the cluster needs from its caller: *testing.T satisfies it, and so does a program's
// own implementation (the demo's prints, and aborts on Fatal).
type TB interface {
	netns.TB
}

// Addresses and ports of the topology.
var (
	VIP        = netip.MustParseAddr("10.0.0.100")
	ClientAddr = netip.MustParseAddr("10.0.0.10")
)

const (
	WriterPort uint16 = 3306
	ReaderPort uint16 = 3307
	// User and Password are the application account on every MariaDB (all privileges); the
	// directors' health checks log in with it too.
	User     = "app"
	Password = "Demo-pw-4c1e9a77"
	// Database holds the table `writes (id AUTO_INCREMENT, at)` created on the primary.
	Database = "xdplb_demo"
	VRID     = 51
)

// Node names.
const (
	Client = "client"
	DB1    = "db1"
	DB2    = "db2"
	DB3    = "db3"
)

// Options of [Start]. The zero value is the documented topology.
type Options struct {
	// Binary is the xdplb CLI; default: $XDPLB_BIN, else built with `go build` into a temp dir.
	Binary string
	// AdvertInterval is the VRRP advert interval (default 100ms).
	AdvertInterval time.Duration
	// Preempt makes db2 (priority 150) take the VIP back when it returns (default false: nopreempt,
	// as in the seeds).
	Preempt bool
	// Health checks: interval, timeout, rise and fall (default: examples/seeds.yaml's, 300ms,
	// 250ms, 2 and 2).
	CheckInterval, CheckTimeout time.Duration
	Rise, Fall                  int
	// Mode is the XDP mode of the directors: "" or "auto" (native with an XDP_PASS program on
	// the bridge port and TX checksum offload off everywhere, generic when that cannot be set
	// up), "native" or "generic".
	Mode string
	// KeepDataPath runs the daemons without --detach-on-exit, as `xdplb run` runs by default: a
	// stopped daemon leaves its data path attached (a restart keeps every flow).
	KeepDataPath bool
	// Logf, when set, receives one line per step of the set-up.
	Logf func(format string, args ...any)
	// Created, when set, is called with the cluster as soon as it exists (before anything is
	// built), so that a program can find what to check after a teardown even when Start fails.
	Created func(*Cluster)
}

// Node is one namespace of the topology.
type Node struct {
	*netns.Node
	Name     string
	DB       *mariadb.Server // nil for the client
	Director bool
	Priority int

	// Director only.
	PinRoot string
	Config  string
	Socket  string
	LogPath string
	Mode    string        // XDP mode the director's data path got: native or generic
	proc    *testbed.Proc // `xdplb run`
}

// Cluster is the running topology.
type Cluster struct {
	Opts   Options
	LAN    *netns.LAN
	Client *Node
	Nodes  map[string]*Node // db1, db2, db3 (and client)
	Dir    string           // temp dir: configs, password file, logs
	Binary string
	ID     string // the random part of the namespace names and pin roots

	tb       TB
	mu       sync.Mutex
	cleanups testbed.Cleanups
	errs     []error // of cleanups, without a test (Teardown)
	closed   bool
	dbs      []*sql.DB
}

func (c *Cluster) logf(format string, args ...any) {
	if c.Opts.Logf != nil {
		c.Opts.Logf(format, args...)
	}
}

// Start is [Open] for a test: it skips when not root, tears the cluster down in tb.Cleanup and
// fails the test on any error (after which the cleanup tears down what was built).
func Start(tb TB, opts Options) *Cluster {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skipf("the MySQL cluster needs root (%v)", os.ErrPermission)
	}
	c, err := open(tb, opts)
	if err != nil {
		tb.Fatalf("cluster: %v", err)
	}
	return c
}

// Open builds the topology and returns once db2 is the VRRP Master, db3 its Backup and both
// directors have writer = {db1} and reader = {db2, db3} in their maps. The cluster it returns,
// also with an error, is the caller's to Close.
func Open(opts Options) (*Cluster, error) { return open(nil, opts) }

func open(tb TB, opts Options) (c *Cluster, err error) {
	if opts.AdvertInterval == 0 {
		opts.AdvertInterval = 100 * time.Millisecond
	}
	// Check timings left out: examples/seeds.yaml's (the writer's), so that the example says
	// what the tests run.
	if seeds, err := os.ReadFile(seedsFile()); err == nil {
		if cfg, _, err := config.Parse(seeds, seedsFile()); err == nil && len(cfg.Services) > 0 {
			chk := cfg.Services[0].Check
			opts.CheckInterval = cmp.Or(opts.CheckInterval, chk.Interval)
			opts.CheckTimeout = cmp.Or(opts.CheckTimeout, chk.Timeout)
			opts.Rise, opts.Fall = cmp.Or(opts.Rise, chk.Rise), cmp.Or(opts.Fall, chk.Fall)
		}
	}
	if opts.CheckInterval == 0 || opts.CheckTimeout == 0 || opts.Rise == 0 || opts.Fall == 0 {
		tb.Fatalf("cluster: check timings: none in the options and none read from %s", seedsFile())
	}
	if opts.Mode == "" {
		opts.Mode = "auto"
	}
	c = &Cluster{Opts: opts, tb: tb, Nodes: map[string]*Node{}}
	if tb != nil {
		tb.Cleanup(c.Close)
	}
	if opts.Created != nil {
		opts.Created(c)
	}
	started := time.Now()
	if err := mountBPF(); err != nil {
		return c, fmt.Errorf("mount bpffs: %w", err)
	}

	dir, err := os.MkdirTemp("", "xdplb-cluster-")
	if err != nil {
		return c, fmt.Errorf("temp dir: %w", err)
	}
	c.Dir = dir
	c.addCleanup(func() { _ = os.RemoveAll(dir) })

	c.Binary = opts.Binary
	if c.Binary == "" {
		c.Binary = os.Getenv("XDPLB_BIN")
	}
	if c.Binary == "" {
		c.Binary = filepath.Join(dir, "xdplb")
		c.logf("building xdplb into %s", c.Binary)
		out, err := exec.Command("go", "build", "-o", c.Binary, "github.com/xdplb/xdplb/cmd/xdplb").CombinedOutput()
		if err != nil {
			return c, fmt.Errorf("go build xdplb: %s: %w", out, err)
		}
	} else if abs, err := filepath.Abs(c.Binary); err == nil {
		c.Binary = abs
	}

	// Network.
	lan, err := netns.OpenLAN(netns.Prefix)
	if err != nil {
		return c, err
	}
	c.addCleanup(func() {
		if err := lan.Close(); err != nil {
			c.errorf("%v", err)
		}
	})
	c.LAN = lan
	if tb != nil {
		lan.ForTest(tb)
	}
	c.mu.Lock()
	c.ID = c.LAN.ID
	c.mu.Unlock()
	c.logf("LAN %s: bridge %s in namespace %s", c.LAN.ID, netns.BridgeName, c.LAN.Name)
	for _, n := range []struct {
		name     string
		addr     netip.Addr
		director bool
		prio     int
	}{
		{Client, ClientAddr, false, 0},
		{DB1, netip.MustParseAddr("10.0.0.11"), false, 0},
		{DB2, netip.MustParseAddr("10.0.0.12"), true, 150},
		{DB3, netip.MustParseAddr("10.0.0.13"), true, 100},
	} {
		nn, err := c.LAN.Add(n.name, n.addr.String()+"/24")
		if err != nil {
			return c, fmt.Errorf("node %s: %w", n.name, err)
		}
		c.Nodes[n.name] = &Node{Node: nn, Name: n.name, Director: n.director, Priority: n.prio}
	}
	c.Client = c.Nodes[Client]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	native := opts.Mode != "generic"
	if native {
		// TESTBED: native XDP_TX on veth needs TX checksum offload off on every sender and an
		// XDP program on the peer of the director's veth.
		for _, name := range []string{Client, DB1, DB2, DB3} {
			if err := c.Nodes[name].TxChecksumOff(ctx); err != nil {
				if opts.Mode == "native" {
					return c, fmt.Errorf("native mode: %w", err)
				}
				c.logf("ethtool -K eth0 tx off on %s failed (%v): directors fall back to generic XDP", name, err)
				native = false
				break
			}
		}
	}
	if native {
		for _, name := range []string{DB2, DB3} {
			if err := c.attachPass(c.Nodes[name]); err != nil {
				if opts.Mode == "native" {
					return c, fmt.Errorf("native mode: %w", err)
				}
				c.logf("XDP_PASS on bridge port of %s failed (%v): directors fall back to generic XDP", name, err)
				native = false
				break
			}
		}
	}
	mode := "generic"
	if native {
		mode = opts.Mode // auto: native when the driver has it (veth does)
	}

	// Real servers: the VIP on lo, no ARP for it.
	for _, name := range []string{DB1, DB2, DB3} {
		out, err := c.Nodes[name].Exec(ctx, c.Binary, "realserver", "up", "--vip", VIP.String())
		if err != nil {
			return c, fmt.Errorf("xdplb realserver up on %s: %w", name, err)
		}
		c.logf("%s: xdplb realserver up --vip %s: %s", name, VIP, strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
	}

	// MariaDB: db1 primary, db2 and db3 replicas (GTID), all answering on 3306 and 3307.
	t0 := time.Now()
	extra := []string{"--extra-port=3307", "--extra-max-connections=64"}
	db1 := c.Nodes[DB1]
	if db1.DB, err = c.startDB(db1, mariadb.Options{ServerID: 1, Addr: db1.Addr(), Password: Password, LogBin: true, Args: extra}); err != nil {
		return c, err
	}
	for i, name := range []string{DB2, DB3} {
		n := c.Nodes[name]
		n.DB, err = c.startDB(n, mariadb.Options{ServerID: uint32(2 + i), Addr: n.Addr(), Password: Password,
			Args: append([]string{"--read-only=1"}, extra...)})
		if err != nil {
			return c, err
		}
		if err := mariadb.Replicate(db1.DB, n.DB); err != nil {
			return c, fmt.Errorf("%s: %w", name, err)
		}
	}
	_, err = db1.DB.Exec("CREATE DATABASE IF NOT EXISTS " + Database + "; CREATE TABLE IF NOT EXISTS " + Database +
		".writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))")
	if err != nil {
		return c, fmt.Errorf("create %s.writes on db1: %w", Database, err)
	}
	c.logf("MariaDB: db1 primary (server_id 1), db2 and db3 replicas (2, 3) replicating with GTID, in %v", time.Since(t0).Round(time.Millisecond))

	// Directors.
	pw := filepath.Join(dir, "monitor.pw")
	if err := os.WriteFile(pw, []byte(Password+"\n"), 0o600); err != nil {
		return c, fmt.Errorf("password file: %w", err)
	}
	for _, name := range []string{DB2, DB3} {
		n := c.Nodes[name]
		n.PinRoot = "/sys/fs/bpf/xdplb-cluster-" + c.LAN.ID + "-" + name
		n.Config = filepath.Join(dir, name+".yaml")
		n.Socket = filepath.Join(dir, name+".sock")
		n.LogPath = filepath.Join(dir, name+"-xdplb.log")
		pinRoot := n.PinRoot
		c.addCleanup(func() { _ = os.RemoveAll(pinRoot) })
		cf, err := c.config(n, pw)
		if err == nil {
			err = os.WriteFile(n.Config, []byte(cf), 0o600)
		}
		if err != nil {
			return c, fmt.Errorf("config of %s: %w", name, err)
		}
		n.Mode = mode
	}
	// db2 first, so that it is the Master whatever the timing (nopreempt).
	if err := c.LaunchDirector(DB2); err != nil {
		return c, err
	}
	err = c.waitFor(10*time.Second, "db2 to become VRRP Master", func() (bool, string) {
		st, err := c.VRRP(DB2)
		return err == nil && st.State == "MASTER", fmt.Sprintf("state %q, err %v", st.State, err)
	})
	if err != nil {
		return c, err
	}
	c.logf("db2: xdplb run (XDP %s), VRRP Master", c.Nodes[DB2].Mode)
	if err := c.LaunchDirector(DB3); err != nil {
		return c, err
	}
	err = c.waitFor(10*time.Second, "db3 to be Backup with db2 as its peer", func() (bool, string) {
		st, err := c.VRRP(DB3)
		ok := err == nil && st.State == "BACKUP" && slices.ContainsFunc(st.Peers, func(p daemon.VRRPPeer) bool { return p.Addr == c.Nodes[DB2].Addr() })
		return ok, fmt.Sprintf("state %q, peers %v, err %v", st.State, st.Peers, err)
	})
	if err != nil {
		return c, err
	}
	c.logf("db3: xdplb run (XDP %s), VRRP Backup, peer db2 learned", c.Nodes[DB3].Mode)
	for _, name := range []string{DB2, DB3} {
		err := c.waitFor(15*time.Second, name+"'s rings to be writer={db1} reader={db2,db3}", func() (bool, string) {
			w, err1 := c.Ring(name, WriterPort)
			r, err2 := c.Ring(name, ReaderPort)
			return err1 == nil && err2 == nil && slices.Equal(w, []string{DB1}) && slices.Equal(r, []string{DB2, DB3}),
				fmt.Sprintf("writer %v reader %v (%v %v)", w, r, err1, err2)
		})
		if err != nil {
			return c, err
		}
	}
	c.logf("cluster up in %v: Master %s, XDP mode db2 %s, db3 %s", time.Since(started).Round(time.Millisecond),
		c.Master(), c.Nodes[DB2].Mode, c.Nodes[DB3].Mode)
	return c, nil
}

// startDB starts MariaDB on n, killed and removed by Close; its error log goes to the test log
// when the test (if any) failed.
func (c *Cluster) startDB(n *Node, opts mariadb.Options) (*mariadb.Server, error) {
	db, err := mariadb.Launch(n.NS, opts)
	if db != nil {
		if c.tb != nil {
			db.ForTest(c.tb)
		}
		c.addCleanup(func() {
			db.Kill()
			if c.tb != nil && c.tb.Failed() {
				c.tb.Logf("mariadbd on %s, err.log, last lines:\n%s", n.Name, db.ErrLogTail(40))
			}
			if err := db.Close(); err != nil {
				c.errorf("%v", err)
			}
		})
	}
	if err != nil {
		if db != nil {
			err = fmt.Errorf("%w; err.log, last lines:\n%s", err, db.ErrLogTail(40))
		}
		return nil, fmt.Errorf("MariaDB on %s: %w", n.Name, err)
	}
	return db, nil
}

// seedsFile is examples/seeds.yaml, db2's configuration: both directors' files are derived
// from it, so the demo and the acceptance tests run the example users read.
func seedsFile() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "..", "examples", "seeds.yaml")
}

// config is a director's configuration: examples/seeds.yaml with this node as the `local` real
// server, its priority, the check timings and advert interval of the options, the test password
// file, and smaller flow tables.
func (c *Cluster) config(self *Node, pw string) (string, error) {
	o := c.Opts
	path := seedsFile()
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	cfg, _, err := config.Parse(data, path)
	if err != nil {
		return "", err
	}
	cfg.Interfaces = []string{netns.NodeLink}
	cfg.Sizes.Conntrack, cfg.Sizes.Persist = 65536, 4096
	nodes := map[netip.Addr]bool{}
	for _, n := range []string{DB1, DB2, DB3} {
		nodes[c.Nodes[n].Addr()] = true
	}
	for i := range cfg.Services {
		svc := &cfg.Services[i]
		if svc.Key.VIP != VIP {
			return "", fmt.Errorf("%s: service %s is not on the cluster's VIP %s", path, svc.Name, VIP)
		}
		svc.Check.Interval, svc.Check.Timeout, svc.Check.Rise, svc.Check.Fall = o.CheckInterval, o.CheckTimeout, o.Rise, o.Fall
		svc.Check.MySQL.User, svc.Check.MySQL.PasswordFile, svc.Check.MySQL.PasswordEnv = User, pw, ""
		for j := range svc.RealServers {
			rs := &svc.RealServers[j]
			if !nodes[rs.Addr] {
				return "", fmt.Errorf("%s: real server %s is not a node of the cluster", path, rs.Addr)
			}
			rs.Local = rs.Addr == self.Addr()
		}
	}
	v := &cfg.VRRP[0]
	v.Interface, v.Priority, v.AdvertInterval, v.Preempt = netns.NodeLink, uint8(self.Priority), o.AdvertInterval, o.Preempt
	if v.VRID != VRID {
		return "", fmt.Errorf("%s: vrid %d, the cluster expects %d", path, v.VRID, VRID)
	}
	out, err := config.Marshal(cfg)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("# %s: director and replica, derived from %s (internal/testbed/cluster)\n", self.Name, path) + string(out), nil
}

func (c *Cluster) attachPass(n *Node) error {
	a, err := c.LAN.AttachPass(n.Node)
	if err != nil {
		return err
	}
	c.addCleanup(func() { a.Close() })
	return nil
}

func mountBPF() error {
	if out, err := exec.Command("mountpoint", "-q", "/sys/fs/bpf").CombinedOutput(); err == nil {
		return nil
	} else if len(out) > 0 {
		return fmt.Errorf("mountpoint /sys/fs/bpf: %s", out)
	}
	if out, err := exec.Command("mount", "-t", "bpf", "bpf", "/sys/fs/bpf").CombinedOutput(); err != nil {
		return fmt.Errorf("mount -t bpf bpf /sys/fs/bpf: %v: %s", err, out)
	}
	return nil
}

// Leftovers lists what of this cluster still exists: namespaces, pin roots, xdplb and mariadbd
// processes, temp dir. Empty after Close.
func (c *Cluster) Leftovers() []string {
	var left []string
	c.mu.Lock()
	id, dir := c.ID, c.Dir
	var dbDirs []string
	for _, n := range c.Nodes {
		if n.DB != nil {
			dbDirs = append(dbDirs, n.DB.Dir)
		}
	}
	c.mu.Unlock()
	if id != "" {
		if ents, err := os.ReadDir("/run/netns"); err == nil {
			for _, e := range ents {
				if strings.Contains(e.Name(), id) {
					left = append(left, "namespace "+e.Name())
				}
			}
		}
		if pins, err := filepath.Glob("/sys/fs/bpf/xdplb-cluster-" + id + "-*"); err == nil {
			for _, p := range pins {
				left = append(left, "pin root "+p)
			}
		}
	}
	out, _ := exec.Command("pgrep", "-a", "^(xdplb|mariadbd|nsenter)$").Output()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		if dir != "" && strings.Contains(l, dir) {
			left = append(left, "process "+l)
			continue
		}
		for _, d := range dbDirs {
			if strings.Contains(l, d) {
				left = append(left, "process "+l)
			}
		}
	}
	for _, d := range append([]string{dir}, dbDirs...) {
		if _, err := os.Stat(d); d != "" && err == nil {
			left = append(left, "directory "+d)
		}
	}
	return left
}

// Close tears everything down: client connections, daemons, MariaDB, XDP programs, pin roots,
// namespaces, files. It is idempotent, and may be called from another goroutine (a signal
// handler) while the cluster is in use: what is created after it ran is torn down by the next
// call (the tb.Cleanup one). What fails goes to the test; outside one Teardown returns it.
func (c *Cluster) Close() { _ = c.Teardown() }

// Teardown is Close returning what failed while tearing down, when the cluster is not a test's
// (Open): the test's cluster reports it to the test.
func (c *Cluster) Teardown() error {
	c.mu.Lock()
	c.closed = true
	dbs := c.dbs
	c.dbs = nil
	c.mu.Unlock()
	for _, db := range dbs {
		_ = db.Close()
	}
	for _, name := range []string{DB3, DB2} {
		if n := c.Nodes[name]; n != nil {
			if n.proc.Running() {
				_ = syscall.Kill(n.proc.Pid(), syscall.SIGCONT) // a paused daemon (PauseDirector)
			}
			n.proc.Stop(5 * time.Second)
		}
	}
	err := c.cleanups.Run() // a cleanup's Fatalf must not stop the others
	c.mu.Lock()
	defer c.mu.Unlock()
	errs := append(c.errs, err)
	c.errs = nil
	return errors.Join(errs...)
}

func (c *Cluster) addCleanup(f func()) { c.cleanups.Cleanup(f) }

// errorf reports a failure that does not stop anything (a cleanup's): to the test, or to
// Teardown's caller.
func (c *Cluster) errorf(format string, args ...any) {
	if c.tb == nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.errs = append(c.errs, fmt.Errorf("cluster: "+format, args...))
		return
	}
	c.tb.Errorf("cluster: "+format, args...)
}

// fatalf fails the test; outside a test (Open) only a programming error gets here, an unknown
// node name: it panics.
func (c *Cluster) fatalf(format string, args ...any) {
	if c.tb == nil {
		panic(fmt.Sprintf("cluster: "+format, args...))
	}
	c.tb.Helper()
	c.tb.Fatalf("cluster: "+format, args...)
}

// waitFor is WaitFor with an error that says what was expected.
func (c *Cluster) waitFor(timeout time.Duration, what string, cond func() (bool, string)) error {
	if last, err := c.WaitFor(timeout, cond); err != nil {
		return fmt.Errorf("expected %s within %v, seen %s", what, timeout, last)
	}
	return nil
}

// WaitFor polls cond every 50 ms until it holds; after timeout it returns the last description
// cond gave and an error.
func (c *Cluster) WaitFor(timeout time.Duration, cond func() (bool, string)) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return "the cluster was torn down", errors.New("cluster closed")
		}
		ok, last := cond()
		if ok {
			return last, nil
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("timed out after %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Node returns the named node (db1, db2, db3, client); an unknown name fails the test (panics
// outside one).
func (c *Cluster) Node(name string) *Node {
	if c.tb != nil {
		c.tb.Helper()
	}
	n, ok := c.Nodes[name]
	if !ok {
		c.fatalf("no node %q (want client, db1, db2 or db3)", name)
	}
	return n
}

func (c *Cluster) director(name string) *Node {
	if c.tb != nil {
		c.tb.Helper()
	}
	n := c.Node(name)
	if !n.Director {
		c.fatalf("%s is not a director (db2 and db3 are)", name)
	}
	return n
}

// Name returns the node name of addr ("db2"), or addr itself.
func (c *Cluster) Name(addr netip.Addr) string {
	for name, n := range c.Nodes {
		if n.Addr() == addr {
			return name
		}
	}
	return addr.String()
}

// MAC returns the MAC of the node's eth0.
func (c *Cluster) MAC(name string) net.HardwareAddr { return c.Node(name).MAC }

// Addr returns the node's address.
func (c *Cluster) Addr(name string) netip.Addr { return c.Node(name).Addr() }

// ---- directors ----

// StartDirector is [Cluster.LaunchDirector] for a test: an error is fatal.
func (c *Cluster) StartDirector(name string) {
	c.tb.Helper()
	if err := c.LaunchDirector(name); err != nil {
		c.fatalf("%v", err)
	}
}

// LaunchDirector starts `xdplb run` on the director (db2 or db3) and waits until its status
// socket answers and the mode of its data path is known. A director whose link is down (after
// KillDirector) is brought back first, without the VIP its dead daemon left on eth0.
func (c *Cluster) LaunchDirector(name string) error {
	n := c.director(name)
	if n.proc.Running() {
		return fmt.Errorf("%s: xdplb already running (pid %d)", name, n.proc.Pid())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := n.Exec(ctx, "ip", "-o", "link", "show", netns.NodeLink); err == nil && !strings.Contains(out, ",UP") {
		_, _ = n.Exec(ctx, "ip", "addr", "del", VIP.String()+"/32", "dev", netns.NodeLink)
		if _, err := n.Exec(ctx, "ip", "link", "set", netns.NodeLink, "up"); err != nil {
			return fmt.Errorf("%s: link up: %w", name, err)
		}
	}
	mode := n.Mode
	if mode == "" {
		mode = "auto"
	}
	args := []string{"--pin-root", n.PinRoot, "run", "--config", n.Config, "--mode", mode, "--status-socket", n.Socket}
	if !c.Opts.KeepDataPath {
		args = append(args, "--detach-on-exit")
	}
	// Its own process group (testbed.Proc): a Ctrl-C on the terminal reaches the program that
	// owns the cluster, which stops the daemons in order, not the daemons themselves.
	p, err := testbed.StartProc(n.Path, "xdplb@"+name, n.LogPath, c.Binary, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	n.proc = p
	err = c.waitFor(15*time.Second, name+"'s daemon to answer on its status socket", func() (bool, string) {
		if !p.Running() {
			return true, ""
		}
		_, err := c.Status(name)
		return err == nil, fmt.Sprint(err)
	})
	if err == nil && !p.Running() {
		err = fmt.Errorf("%s: xdplb run exited (%v); log:\n%s", name, p.WaitErr(), c.DaemonLog(name))
	}
	if err != nil {
		return err
	}
	return c.waitFor(10*time.Second, name+"'s XDP mode", func() (bool, string) {
		l, err := c.ListJSON(name)
		if err != nil || len(l.Interfaces) == 0 || l.Interfaces[0].Mode == "" {
			return false, fmt.Sprint(err)
		}
		n.Mode = l.Interfaces[0].Mode
		return true, ""
	})
}

// StopDirector stops the director's daemon gracefully (SIGTERM: a Master resigns with a
// priority-0 advert; the data path is detached, --detach-on-exit, unless Options.KeepDataPath).
func (c *Cluster) StopDirector(name string) error {
	n := c.director(name)
	if !n.proc.Running() {
		return fmt.Errorf("%s: xdplb is not running", name)
	}
	return n.proc.Terminate(5 * time.Second)
}

// KillDirector is [Cluster.PowerOff] for a test: an error is fatal.
func (c *Cluster) KillDirector(name string) time.Time {
	c.tb.Helper()
	at, err := c.PowerOff(name)
	if err != nil {
		c.fatalf("%v", err)
	}
	return at
}

// PowerOff simulates the death of the machine: its eth0 goes down (nothing leaves it, not even a
// resignation) and its xdplb gets SIGKILL. It returns the time the link went down.
func (c *Cluster) PowerOff(name string) (time.Time, error) {
	n := c.director(name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Exec(ctx, "ip", "link", "set", netns.NodeLink, "down"); err != nil {
		return time.Time{}, fmt.Errorf("%s: link down: %w", name, err)
	}
	at := time.Now()
	if n.proc.Running() {
		n.proc.Kill()
	}
	return at, nil
}

// CrashDirector kills the director's xdplb with SIGKILL and leaves everything else as it is: its
// link stays up, its MariaDB runs, its data path stays attached (an OOM kill, a crash, kill -9).
// It returns the time of the kill.
func (c *Cluster) CrashDirector(name string) time.Time {
	c.tb.Helper()
	n := c.director(name)
	if !n.proc.Running() {
		c.fatalf("%s: xdplb is not running", name)
	}
	at := time.Now()
	n.proc.Kill()
	return at
}

// PauseDirector stops the director's xdplb with SIGSTOP (a hung daemon: alive, renewing nothing,
// sending nothing) and returns the time; ResumeDirector sends SIGCONT. A paused daemon is resumed
// by Close.
func (c *Cluster) PauseDirector(name string) time.Time {
	c.tb.Helper()
	n := c.director(name)
	if !n.proc.Running() {
		c.fatalf("%s: xdplb is not running", name)
	}
	at := time.Now()
	if err := syscall.Kill(n.proc.Pid(), syscall.SIGSTOP); err != nil {
		c.fatalf("%s: SIGSTOP: %v", name, err)
	}
	return at
}

// ResumeDirector continues a daemon stopped by PauseDirector.
func (c *Cluster) ResumeDirector(name string) {
	c.tb.Helper()
	n := c.director(name)
	if err := syscall.Kill(n.proc.Pid(), syscall.SIGCONT); err != nil {
		c.fatalf("%s: SIGCONT: %v", name, err)
	}
}

// DirectorRunning reports whether the director's xdplb runs.
func (c *Cluster) DirectorRunning(name string) bool {
	n := c.director(name)
	return n.proc.Running()
}

// DaemonLog returns what the director's xdplb wrote (every run appends).
func (c *Cluster) DaemonLog(name string) string {
	b, _ := os.ReadFile(c.director(name).LogPath)
	return string(b)
}

// Status asks the director's status socket.
func (c *Cluster) Status(name string) (daemon.StatusReply, error) {
	n := c.director(name)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return daemon.QueryStatus(ctx, n.Socket)
}

// VRRP returns the director's VRRP instance status.
func (c *Cluster) VRRP(name string) (daemon.VRRPStatus, error) {
	st, err := c.Status(name)
	if err != nil {
		return daemon.VRRPStatus{}, err
	}
	if len(st.VRRP) != 1 {
		return daemon.VRRPStatus{}, fmt.Errorf("%s: expected 1 VRRP instance, seen %d", name, len(st.VRRP))
	}
	return st.VRRP[0], nil
}

// Master returns the director whose daemon says MASTER ("" when none does; the first when both
// do).
func (c *Cluster) Master() string {
	for _, name := range []string{DB2, DB3} {
		if n := c.Nodes[name]; n == nil || !n.proc.Running() {
			continue
		}
		if st, err := c.VRRP(name); err == nil && st.State == "MASTER" {
			return name
		}
	}
	return ""
}

// Backup returns the other director.
func Other(director string) string {
	if director == DB2 {
		return DB3
	}
	return DB2
}

// List runs `xdplb list ARGS...` on the director (with its pin root and status socket).
func (c *Cluster) List(name string, args ...string) (string, error) {
	n := c.director(name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := append([]string{"--pin-root", n.PinRoot, "list", "--status-socket", n.Socket}, args...)
	cmd := n.Command(ctx, c.Binary, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: xdplb list %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// ListState is the part of `xdplb list --json` the cluster reads.
type ListState struct {
	Interfaces []struct {
		Iface    string `json:"iface"`
		Mode     string `json:"mode"`
		Services []struct {
			VIP      string  `json:"vip"`
			Port     uint16  `json:"port"`
			Traffic  Traffic `json:"traffic"`
			Backends []struct {
				Addr     string  `json:"addr"`
				MAC      string  `json:"mac"`
				Weight   uint32  `json:"weight"`
				Local    bool    `json:"local"`
				Draining bool    `json:"draining"`
				Sorry    bool    `json:"sorry"`
				Traffic  Traffic `json:"traffic"`
			} `json:"backends"`
		} `json:"services"`
		Peers    []string          `json:"peers"`
		Counters map[string]uint64 `json:"counters"`
	} `json:"interfaces"`
}

// Traffic is the counters of a service or backend.
type Traffic struct {
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
	NewFlows uint64 `json:"new_flows"`
}

// ListJSON runs `xdplb list --json` on the director.
func (c *Cluster) ListJSON(name string) (ListState, error) {
	var l ListState
	out, err := c.List(name, "--json")
	if err != nil {
		return l, err
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return l, fmt.Errorf("%s: xdplb list --json: %w in %.300q", name, err, out)
	}
	return l, nil
}

// Stats is the data-path counters of a director.
type Stats struct {
	Counters map[string]uint64 // verdicts: packets, tx, pass_local, pass_peer, ...
	Services map[uint16]Traffic
	Backends map[uint16]map[string]Traffic // port → node name → traffic
}

// Stats reads the director's counters from its maps.
func (c *Cluster) Stats(name string) (Stats, error) {
	l, err := c.ListJSON(name)
	if err != nil {
		return Stats{}, err
	}
	if len(l.Interfaces) != 1 {
		return Stats{}, fmt.Errorf("%s: expected 1 interface in xdplb list, seen %d", name, len(l.Interfaces))
	}
	in := l.Interfaces[0]
	s := Stats{Counters: in.Counters, Services: map[uint16]Traffic{}, Backends: map[uint16]map[string]Traffic{}}
	for _, svc := range in.Services {
		s.Services[svc.Port] = svc.Traffic
		s.Backends[svc.Port] = map[string]Traffic{}
		for _, b := range svc.Backends {
			if a, err := netip.ParseAddr(b.Addr); err == nil {
				s.Backends[svc.Port][c.Name(a)] = b.Traffic
			}
		}
	}
	return s, nil
}

// Ring returns the node names taking new flows of the service on port in the director's maps
// (weight > 0, not draining, not sorry), sorted.
func (c *Cluster) Ring(name string, port uint16) ([]string, error) {
	l, err := c.ListJSON(name)
	if err != nil {
		return nil, err
	}
	if len(l.Interfaces) != 1 {
		return nil, fmt.Errorf("%s: expected 1 interface in xdplb list, seen %d", name, len(l.Interfaces))
	}
	var out []string
	for _, s := range l.Interfaces[0].Services {
		if s.Port != port {
			continue
		}
		out = []string{}
		for _, b := range s.Backends {
			if b.Weight > 0 && !b.Draining && !b.Sorry {
				a, err := netip.ParseAddr(b.Addr)
				if err != nil {
					return nil, err
				}
				out = append(out, c.Name(a))
			}
		}
	}
	if out == nil {
		return nil, fmt.Errorf("%s: no service on port %d in the maps", name, port)
	}
	slices.Sort(out)
	return out, nil
}

// ---- MySQL ----

// StopMySQL is [Cluster.StopDB] for a test: an error is fatal.
func (c *Cluster) StopMySQL(name string) {
	c.tb.Helper()
	if err := c.StopDB(name); err != nil {
		c.fatalf("%v", err)
	}
}

// StopDB stops MariaDB on the node (SIGTERM, waits for the exit).
func (c *Cluster) StopDB(name string) error {
	n := c.Node(name)
	if n.DB == nil {
		return fmt.Errorf("%s runs no MariaDB", name)
	}
	n.DB.Stop()
	return nil
}

// StartMySQL is [Cluster.StartDB] for a test: an error is fatal.
func (c *Cluster) StartMySQL(name string) {
	c.tb.Helper()
	if err := c.StartDB(name); err != nil {
		c.fatalf("%v", err)
	}
}

// StartDB starts MariaDB again on the node (same datadir; a replica resumes replication) and
// waits until it accepts connections.
func (c *Cluster) StartDB(name string) error {
	n := c.Node(name)
	if n.DB == nil {
		return fmt.Errorf("%s runs no MariaDB", name)
	}
	return n.DB.Relaunch()
}

// dialer returns a DialFunc whose sockets are made in the client namespace.
func (c *Cluster) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := c.Client.Do(func() error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// DB returns a *sql.DB from the client to VIP:port that keeps no idle connection: every query
// made through it is a new TCP connection (a new flow for the balancer). readTimeout bounds each
// read (0: 10 s). It is closed by Close.
func (c *Cluster) DB(port uint16, readTimeout time.Duration) *sql.DB {
	if readTimeout == 0 {
		readTimeout = 10 * time.Second
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd = User, Password
	cfg.Net, cfg.Addr = "tcp", netip.AddrPortFrom(VIP, port).String()
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 3*time.Second, readTimeout, readTimeout
	cfg.DialFunc = c.dialer()
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		panic(err) // only a bad config, which this is not
	}
	db := sql.OpenDB(conn)
	db.SetMaxIdleConns(0)
	c.mu.Lock()
	c.dbs = append(c.dbs, db)
	c.mu.Unlock()
	return db
}

// Query runs sql from the client through VIP:port on a new connection and returns the rows as
// strings (NULL as "NULL").
func (c *Cluster) Query(ctx context.Context, port uint16, query string) ([][]string, error) {
	db := c.DB(port, 0)
	defer db.Close()
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out [][]string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			row[i] = "NULL"
			if v.Valid {
				row[i] = v.String
			}
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// QueryValue is Query for one row of one column.
func (c *Cluster) QueryValue(ctx context.Context, port uint16, query string) (string, error) {
	rows, err := c.Query(ctx, port, query)
	if err != nil {
		return "", err
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		return "", fmt.Errorf("%q: expected one value, seen %v", query, rows)
	}
	return rows[0][0], nil
}

// ServerID asks SELECT @@server_id through VIP:port on a new connection and returns the node
// name that answered (server ids 1, 2, 3 are db1, db2, db3).
func (c *Cluster) ServerID(ctx context.Context, port uint16) (string, error) {
	v, err := c.QueryValue(ctx, port, "SELECT @@server_id")
	if err != nil {
		return "", err
	}
	return "db" + v, nil
}

// Conn is one long-lived client connection through the VIP.
type Conn struct {
	*sql.Conn
	ID string // CONNECTION_ID() on the server, to tell a reconnect from a survivor
	db *sql.DB
}

// Close closes the connection and its pool.
func (k *Conn) Close() error {
	err := k.Conn.Close()
	return errors.Join(err, k.db.Close())
}

// OpenConn opens one long-lived connection from the client to VIP:port. readTimeout bounds each
// read and write (0: 10 s) and so how long a failover may take before the connection is lost.
func (c *Cluster) OpenConn(ctx context.Context, port uint16, readTimeout time.Duration) (*Conn, error) {
	db := c.DB(port, readTimeout)
	db.SetMaxIdleConns(1)
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	k := &Conn{Conn: conn, db: db}
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&k.ID); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}
