//go:build linux

package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/internal/testbed/mariadb"
	"github.com/xdplb/xdplb/internal/testbed/netns"
	"github.com/xdplb/xdplb/internal/wait"
)

// mysqlBed is a LAN with a client node, where the probers' sockets live.
type mysqlBed struct {
	lan    *netns.LAN
	client *netns.Node
}

func newMySQLBed(t *testing.T) *mysqlBed {
	t.Helper()
	requireMariaDB(t)
	lan := netns.NewLAN(t)
	return &mysqlBed{lan: lan, client: lan.AddNode("client", "10.0.0.1/24")}
}

// requireMariaDB skips before any namespace is made when the test cannot run here.
func requireMariaDB(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("MySQL check tests run mariadbd in network namespaces and need root (%v)", os.ErrPermission)
	}
	if _, err := exec.LookPath("mariadbd"); err != nil {
		t.Skipf("MySQL check tests need MariaDB (%v); apt-get install mariadb-server mariadb-client", err)
	}
}

// server starts a MariaDB server on a new node of the LAN.
func (b *mysqlBed) server(t *testing.T, role, cidr string, opts mariadb.Options) *mariadb.Server {
	t.Helper()
	n := b.lan.AddNode(role, cidr)
	opts.Addr = n.Addr()
	return mariadb.Start(t, n.NS, opts)
}

// dial makes TCP connections from the client's namespace.
func (b *mysqlBed) dial(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := b.client.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// prober returns a prober of addr whose sockets are made in the client's namespace; it is
// closed in t.Cleanup (before the servers stop).
func (b *mysqlBed) prober(t *testing.T, addr netip.AddrPort, chk *config.MySQLCheck, opts ...MySQLOption) Prober {
	t.Helper()
	p := NewMySQL(addr, chk, append([]MySQLOption{MySQLDialer(b.dial)}, opts...)...)
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close prober: %v", err)
		}
	})
	return p
}

// check returns a check as user app with its password in a file.
func check(t *testing.T, pw string) *config.MySQLCheck {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pw")
	writePassword(t, f, pw)
	return &config.MySQLCheck{User: mariadb.DefaultUser, PasswordFile: f}
}

func writePassword(t *testing.T, file, pw string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func probe(p Prober) Result {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return p.Probe(ctx)
}

func wantHealthy(t *testing.T, p Prober, what string) {
	t.Helper()
	if r := probe(p); !r.Healthy || r.Err != nil {
		t.Fatalf("%s: want healthy, got unhealthy: %v", what, r.Err)
	}
}

// wantUnhealthy probes once and checks the error contains every fragment.
func wantUnhealthy(t *testing.T, p Prober, what string, fragments ...string) Result {
	t.Helper()
	r := probe(p)
	if r.Healthy || r.Err == nil {
		t.Fatalf("%s: want unhealthy, got healthy (err %v)", what, r.Err)
	}
	for _, f := range fragments {
		if !strings.Contains(r.Err.Error(), f) {
			t.Errorf("%s: error %q does not contain %q", what, r.Err, f)
		}
	}
	t.Logf("%s: %v (%v)", what, r.Err, r.Latency.Round(time.Microsecond))
	return r
}

func TestMySQLServer(t *testing.T) {
	b := newMySQLBed(t)
	srv := b.server(t, "db", "10.0.0.2/24", mariadb.Options{})

	t.Run("healthy", func(t *testing.T) {
		p := b.prober(t, srv.AddrPort(), check(t, mariadb.DefaultPassword))
		for i := range 3 {
			wantHealthy(t, p, fmt.Sprintf("probe %d", i+1))
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		const wrong = "Wr0ng-S3cret-xyzzy"
		chk := check(t, wrong)
		p := b.prober(t, srv.AddrPort(), chk)
		r := wantUnhealthy(t, p, "wrong password", "Error 1045 (28000)", "Access denied for user 'app'@'10.0.0.1'")
		if strings.Contains(r.Err.Error(), wrong) {
			t.Errorf("error text contains the password: %q", r.Err)
		}
		// The password is read at connect time: fixing the file is enough.
		writePassword(t, chk.PasswordFile, mariadb.DefaultPassword)
		wantHealthy(t, p, "password file fixed")
	})

	t.Run("password file missing", func(t *testing.T) {
		chk := &config.MySQLCheck{User: "app", PasswordFile: filepath.Join(t.TempDir(), "nope")}
		wantUnhealthy(t, b.prober(t, srv.AddrPort(), chk), "missing password file", "mysql check password", "no such file")
	})

	t.Run("read_only", func(t *testing.T) {
		writable := check(t, mariadb.DefaultPassword)
		writable.Writable = true
		pw := b.prober(t, srv.AddrPort(), writable)
		pr := b.prober(t, srv.AddrPort(), check(t, mariadb.DefaultPassword))
		wantHealthy(t, pw, "writable, read_only=0")

		srv.MustExec("SET GLOBAL read_only=1")
		t.Cleanup(func() { _, _ = srv.Exec("SET GLOBAL read_only=0") })
		r := wantUnhealthy(t, pw, "writable, read_only=1", "read_only is ON")
		if !errors.Is(r.Err, ErrReadOnly) {
			t.Errorf("error %v is not ErrReadOnly", r.Err)
		}
		wantHealthy(t, pr, "not writable, read_only=1")

		srv.MustExec("SET GLOBAL read_only=0")
		wantHealthy(t, pw, "writable, read_only=0 again")
	})

	t.Run("primary with max_replication_lag", func(t *testing.T) {
		chk := check(t, mariadb.DefaultPassword)
		chk.MaxReplicationLag = 10 * time.Second
		r := wantUnhealthy(t, b.prober(t, srv.AddrPort(), chk), "no replication", "not a replica")
		if !errors.Is(r.Err, ErrNotReplica) {
			t.Errorf("error %v is not ErrNotReplica", r.Err)
		}
	})

	t.Run("monitor account without SLAVE MONITOR", func(t *testing.T) {
		// The grant older docs gave (USAGE, REPLICATION CLIENT) is not enough on MariaDB 10.5
		// and later to read replica status: the error must name the privilege to grant.
		srv.MustExec("CREATE USER 'mon'@'%' IDENTIFIED BY 'mon-pw'; GRANT USAGE, REPLICATION CLIENT ON *.* TO 'mon'@'%'")
		defer srv.MustExec("DROP USER 'mon'@'%'")
		chk := check(t, "mon-pw")
		chk.User = "mon"
		chk.MaxReplicationLag = 10 * time.Second
		r := wantUnhealthy(t, b.prober(t, srv.AddrPort(), chk), "replica status without the privilege",
			"Error 1227", `monitor account "mon" may not read replica status`, "GRANT SLAVE MONITOR ON *.* TO 'mon'@",
			"MariaDB 10.5 and later", "REPLICATION CLIENT")
		if !errors.Is(r.Err, ErrMissingPrivilege) {
			t.Errorf("error %v is not ErrMissingPrivilege", r.Err)
		}
	})

	t.Run("nothing listening", func(t *testing.T) {
		addr := netip.AddrPortFrom(srv.Opts.Addr, 3307)
		wantUnhealthy(t, b.prober(t, addr, check(t, mariadb.DefaultPassword)), "port 3307", "connection refused")
	})

	t.Run("deadline", func(t *testing.T) {
		// No host has this address: the connect waits for ARP until the probe's deadline.
		p := b.prober(t, netip.MustParseAddrPort("10.0.0.99:3306"), check(t, mariadb.DefaultPassword))
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		r := p.Probe(ctx)
		if took := time.Since(start); r.Healthy || took > time.Second {
			t.Fatalf("probe of an absent host: healthy=%v after %v, want unhealthy by the 300ms deadline", r.Healthy, took)
		}
		t.Logf("absent host: %v (%v)", r.Err, r.Latency.Round(time.Millisecond))
	})
}

func TestMySQLKillRestart(t *testing.T) {
	b := newMySQLBed(t)
	srv := b.server(t, "db", "10.0.0.2/24", mariadb.Options{})
	p := b.prober(t, srv.AddrPort(), check(t, mariadb.DefaultPassword))
	wantHealthy(t, p, "before kill")

	srv.Kill()
	wantUnhealthy(t, p, "killed", "connection refused")
	wantUnhealthy(t, p, "still down", "connection refused")

	srv.Restart()
	// The first probe after the restart already succeeds: the kept connection is re-established.
	wantHealthy(t, p, "after restart from kill")

	// A clean restart while the prober holds its connection.
	srv.Restart()
	wantHealthy(t, p, "after clean restart")
	wantHealthy(t, p, "again")
}

func TestMySQLReplication(t *testing.T) {
	b := newMySQLBed(t)
	primary := b.server(t, "primary", "10.0.0.2/24", mariadb.Options{ServerID: 1, LogBin: true})
	replica := b.server(t, "replica", "10.0.0.3/24", mariadb.Options{ServerID: 2})
	start := time.Now()
	mariadb.SetupReplica(t, primary, replica)
	t.Logf("replication set up in %v", time.Since(start).Round(time.Millisecond))

	lagCheck := func(d time.Duration) *config.MySQLCheck {
		chk := check(t, mariadb.DefaultPassword)
		chk.MaxReplicationLag = d
		return chk
	}
	pr := b.prober(t, replica.AddrPort(), lagCheck(10*time.Second))
	wantHealthy(t, pr, "replica")

	// The grant the docs give for MariaDB 10.5 and later (examples/seeds.yaml) is enough.
	replica.MustExec("CREATE USER 'mon'@'%' IDENTIFIED BY 'mon-pw'; GRANT SLAVE MONITOR ON *.* TO 'mon'@'%'")
	mon := lagCheck(10 * time.Second)
	writePassword(t, mon.PasswordFile, "mon-pw")
	mon.User = "mon"
	wantHealthy(t, b.prober(t, replica.AddrPort(), mon), "replica checked by an account with SLAVE MONITOR only")

	r := wantUnhealthy(t, b.prober(t, primary.AddrPort(), lagCheck(10*time.Second)), "primary", "not a replica")
	if !errors.Is(r.Err, ErrNotReplica) {
		t.Errorf("error %v is not ErrNotReplica", r.Err)
	}

	replica.MustExec("STOP SLAVE SQL_THREAD")
	r = wantUnhealthy(t, pr, "SQL thread stopped", "replication SQL thread not running (Slave_SQL_Running=No)")
	if !errors.Is(r.Err, ErrReplicationStopped) {
		t.Errorf("error %v is not ErrReplicationStopped", r.Err)
	}
	replica.MustExec("START SLAVE SQL_THREAD")
	if err := mariadb.WaitReplicating(replica, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	wantHealthy(t, pr, "SQL thread started again")

	replica.MustExec("STOP SLAVE IO_THREAD")
	wantUnhealthy(t, pr, "IO thread stopped", "replication IO thread not running (Slave_IO_Running=No)")
	replica.MustExec("START SLAVE IO_THREAD")
	if err := mariadb.WaitReplicating(replica, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	wantHealthy(t, pr, "IO thread started again")

	// Lag: a delayed replica holds the primary's next event back; Seconds_Behind_Master grows
	// from that event's timestamp.
	replica.MustExec("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=3600; START SLAVE")
	if err := mariadb.WaitReplicating(replica, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	primary.MustExec("CREATE DATABASE xdplb_lag")
	pl := b.prober(t, replica.AddrPort(), lagCheck(time.Second))
	var lag Result // the lag grows by the second
	wait.For(t, 15*time.Second, "delayed replica: a lag error", func() error {
		if lag = probe(pl); !errors.Is(lag.Err, ErrReplicationLag) {
			return fmt.Errorf("last result healthy=%v err=%v", lag.Healthy, lag.Err)
		}
		return nil
	})
	if !strings.Contains(lag.Err.Error(), "over 1s") {
		t.Errorf("lag error %q does not say the bound", lag.Err)
	}
	t.Logf("delayed replica: %v", lag.Err)
	wantHealthy(t, pr, "delayed replica within 10s")
}

func TestMySQLCleanDisconnect(t *testing.T) {
	b := newMySQLBed(t)
	srv := b.server(t, "db", "10.0.0.2/24", mariadb.Options{})
	status := func() map[string]int64 {
		t.Helper()
		st, err := srv.GlobalStatus("Connections", "Aborted_clients", "Aborted_connects")
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	const probes, every = 50, 5
	logStart := len(srv.ErrLog())
	before := status()
	p := NewMySQL(srv.AddrPort(), check(t, mariadb.DefaultPassword), MySQLFreshEvery(every), MySQLDialer(b.dial))
	for i := range probes {
		if r := probe(p); !r.Healthy {
			t.Fatalf("probe %d: %v", i+1, r.Err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	after := status()

	// The kept connection, then one fresh connection every `every` probes after the first.
	wantConns := int64(1 + (probes-1)/every)
	gotConns := after["Connections"] - before["Connections"] - 1 // -1: the second status query
	if gotConns != wantConns {
		t.Errorf("%d probes with a fresh connection every %d: %d connections, want %d", probes, every, gotConns, wantConns)
	}
	for _, k := range []string{"Aborted_clients", "Aborted_connects"} {
		if d := after[k] - before[k]; d != 0 {
			t.Errorf("%s went up by %d: the prober did not end a connection with COM_QUIT", k, d)
		}
	}
	if log := srv.ErrLog()[logStart:]; strings.Contains(log, "Aborted connection") {
		t.Errorf("server logged aborted connections while probing:\n%s", log)
	}
	t.Logf("%d probes: %d connections, Aborted_clients +%d, Aborted_connects +%d", probes, gotConns,
		after["Aborted_clients"]-before["Aborted_clients"], after["Aborted_connects"]-before["Aborted_connects"])
}

// TestMySQLReplicaStatus judges SHOW REPLICA STATUS rows of both column sets without a server.
func TestMySQLReplicaStatus(t *testing.T) {
	s := func(v string) *string { return &v }
	maria := []string{"Slave_IO_State", "Master_Host", "Slave_IO_Running", "Slave_SQL_Running", "Last_IO_Error", "Last_SQL_Error", "Seconds_Behind_Master"}
	mysql8 := []string{"Replica_IO_State", "Source_Host", "Replica_IO_Running", "Replica_SQL_Running", "Last_IO_Error", "Last_SQL_Error", "Seconds_Behind_Source", "Channel_Name"}
	for _, tc := range []struct {
		desc    string
		cols    []string
		rows    [][]*string
		wantErr error
		wantMsg string
	}{
		{"mariadb healthy", maria, [][]*string{{s("Waiting"), s("p"), s("Yes"), s("Yes"), s(""), s(""), s("3")}}, nil, ""},
		{"mariadb at the bound", maria, [][]*string{{s(""), s("p"), s("Yes"), s("Yes"), s(""), s(""), s("10")}}, nil, ""},
		{"no row", maria, nil, ErrNotReplica, "not a replica (SHOW REPLICA STATUS returned no row)"},
		{"IO connecting", maria, [][]*string{{s(""), s("p"), s("Connecting"), s("Yes"), s("error connecting to master"), s(""), nil}},
			ErrReplicationStopped, "replication IO thread not running (Slave_IO_Running=Connecting): error connecting to master"},
		{"SQL stopped", maria, [][]*string{{s(""), s("p"), s("Yes"), s("No"), s(""), s("Duplicate entry"), nil}},
			ErrReplicationStopped, "replication SQL thread not running (Slave_SQL_Running=No): Duplicate entry"},
		{"lag NULL", maria, [][]*string{{s(""), s("p"), s("Yes"), s("Yes"), s(""), s(""), nil}},
			ErrReplicationStopped, "replication lag unknown (Seconds_Behind_Master is NULL)"},
		{"lag over", maria, [][]*string{{s(""), s("p"), s("Yes"), s("Yes"), s(""), s(""), s("25")}},
			ErrReplicationLag, "replication lag 25s over 10s"},
		{"mysql 8 healthy", mysql8, [][]*string{{s(""), s("p"), s("Yes"), s("Yes"), s(""), s(""), s("0"), s("")}}, nil, ""},
		{"mysql 8 second channel lags", mysql8, [][]*string{
			{s(""), s("p"), s("Yes"), s("Yes"), s(""), s(""), s("0"), s("a")},
			{s(""), s("q"), s("Yes"), s("Yes"), s(""), s(""), s("11"), s("b")},
		}, ErrReplicationLag, "channel b: replication lag 11s over 10s"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := replicaHealthy(tc.cols, tc.rows, 10*time.Second)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("want healthy, got %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || err.Error() != tc.wantMsg {
				t.Fatalf("got %v, want %q (%v)", err, tc.wantMsg, tc.wantErr)
			}
		})
	}
	if err := replicaHealthy([]string{"foo"}, [][]*string{{s("x")}}, time.Second); err == nil || errors.Is(err, ErrNotReplica) {
		t.Errorf("unknown column set: got %v, want an error", err)
	}
}
