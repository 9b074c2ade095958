//go:build linux

// Package mariadb runs throw-away MariaDB servers inside network namespaces for end-to-end tests
// of the MySQL health check: one mariadbd per [Start], with its own datadir, unix socket and TCP
// port, stopped and removed in tb.Cleanup even when the test fails.
//
// Administration goes through the `mariadb` client over the unix socket as root (socket
// authentication), so it needs no network and no password. Each call is one client connection:
// tests that count the server's `Connections` status must allow for it.
package mariadb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xdplb/xdplb/internal/testbed"
	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// TB is what the wrappers need from a test (*testing.T).
type TB = testbed.TB

// Defaults of [Options].
const (
	DefaultPort        = 3306
	DefaultUser        = "app"
	DefaultPassword    = "app-secret-pw"
	ReplicationUser    = "repl"
	replicationPass    = "repl-secret-pw"
	startTimeout       = 60 * time.Second
	stopTimeout        = 30 * time.Second
	replicationTimeout = 30 * time.Second
)

// Options configure a server. The zero value is a stand-alone server with id 1 on port 3306.
type Options struct {
	ServerID uint32     // --server-id; default 1. Servers that replicate need distinct ids.
	Port     uint16     // --port; default 3306
	Addr     netip.Addr // where other namespaces reach it (MASTER_HOST for [SetupReplica])
	User     string     // the application user, created as 'User'@'%' with ALL privileges; default "app"
	Password string     // its password; default DefaultPassword
	// LogBin turns on the binary log (ROW format, gtid_strict_mode, log_slave_updates), which a
	// primary needs. Without it the server runs with --skip-log-bin.
	LogBin bool
	// GTIDDomainID is --gtid-domain-id (default 0).
	GTIDDomainID uint32
	// Args are extra mariadbd arguments.
	Args []string
}

// Server is one running (or stopped) mariadbd.
type Server struct {
	NS     *netns.NS
	Opts   Options // with defaults filled in
	Dir    string  // holds data/, sock, pid, err.log (and binary/relay logs)
	Socket string  // unix socket path

	tb   TB // Start's; nil from Launch
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been reaped
}

// Start is [Launch] for a test: it skips the test when not root or when MariaDB is not
// installed, fails it on any other error, and kills the server and removes its datadir in
// tb.Cleanup (the error log's last lines go to the test log when the test failed).
func Start(tb TB, ns *netns.NS, opts Options) *Server {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skipf("running mariadbd in a network namespace needs root (%v)", os.ErrPermission)
	}
	if err := Installed(); err != nil {
		tb.Skipf("%v", err)
	}
	s, err := Launch(ns, opts)
	if s != nil {
		s.tb = tb
		tb.Cleanup(func() {
			if tb.Failed() {
				s.Kill()
				s.logErrLog()
			}
			if err := s.Close(); err != nil {
				tb.Errorf("%v", err)
			}
		})
	}
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return s
}

// Installed says what is missing when the MariaDB server and client are not installed.
func Installed() error {
	for _, bin := range []string{"mariadbd", "mariadb-install-db", "mariadb"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("MariaDB is not installed (%w); apt-get install mariadb-server mariadb-client", err)
		}
	}
	return nil
}

// Launch creates a datadir with mariadb-install-db, starts mariadbd in ns (network namespace
// only, through nsenter --net), waits until its socket accepts, and creates the application
// user. When it returns a server, with or without an error, the caller calls its Close.
func Launch(ns *netns.NS, opts Options) (*Server, error) {
	if err := Installed(); err != nil {
		return nil, err
	}
	if opts.ServerID == 0 {
		opts.ServerID = 1
	}
	if opts.Port == 0 {
		opts.Port = DefaultPort
	}
	if opts.User == "" {
		opts.User = DefaultUser
	}
	if opts.Password == "" {
		opts.Password = DefaultPassword
	}
	// Not a test's TempDir: a long test name would push the socket path past the 108-byte limit.
	dir, err := os.MkdirTemp("", "xdplb-mariadb-")
	if err != nil {
		return nil, fmt.Errorf("mariadb datadir: %w", err)
	}
	s := &Server{NS: ns, Opts: opts, Dir: dir, Socket: filepath.Join(dir, "sock")}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	install := exec.CommandContext(ctx, "mariadb-install-db", "--no-defaults", "--user=root",
		"--datadir="+filepath.Join(dir, "data"), "--skip-test-db", "--skip-name-resolve",
		"--auth-root-authentication-method=socket")
	if out, err := install.CombinedOutput(); err != nil {
		return s, fmt.Errorf("mariadb-install-db: %w\n%s", err, out)
	}
	if err := s.start(); err != nil {
		return s, fmt.Errorf("start mariadbd (server %d in %s): %w", opts.ServerID, ns.Name, err)
	}
	// Not binary-logged: a replica that starts from an empty GTID position replays the primary's
	// whole binary log and would stop on "user already exists".
	_, err = s.Exec(fmt.Sprintf("SET SESSION sql_log_bin=0; CREATE USER %s@'%%' IDENTIFIED BY %s; GRANT ALL ON *.* TO %s@'%%';",
		quote(opts.User), quote(opts.Password), quote(opts.User)))
	if err != nil {
		return s, fmt.Errorf("create user %s: %w", opts.User, err)
	}
	return s, nil
}

// ForTest makes a server from Launch report to tb what fails in MustExec, Restart and Stop, as a
// server from Start does: for a server a test owns through another helper (the cluster).
func (s *Server) ForTest(tb TB) { s.tb = tb }

// Close kills the server (as a crash would) and removes its datadir.
func (s *Server) Close() error {
	s.Kill()
	if err := os.RemoveAll(s.Dir); err != nil {
		return fmt.Errorf("remove mariadb datadir: %w", err)
	}
	return nil
}

// AddrPort is Opts.Addr with the server's port.
func (s *Server) AddrPort() netip.AddrPort { return netip.AddrPortFrom(s.Opts.Addr, s.Opts.Port) }

func (s *Server) args() []string {
	a := []string{
		"--no-defaults", "--user=root",
		"--datadir=" + filepath.Join(s.Dir, "data"),
		"--socket=" + s.Socket,
		"--pid-file=" + filepath.Join(s.Dir, "pid"),
		"--port=" + strconv.Itoa(int(s.Opts.Port)),
		"--bind-address=0.0.0.0",
		"--server-id=" + strconv.FormatUint(uint64(s.Opts.ServerID), 10),
		"--skip-name-resolve",
		"--log-error=" + filepath.Join(s.Dir, "err.log"),
		"--innodb-buffer-pool-size=32M",
		"--gtid-domain-id=" + strconv.FormatUint(uint64(s.Opts.GTIDDomainID), 10),
		"--relay-log=" + filepath.Join(s.Dir, "relay"),
	}
	if s.Opts.LogBin {
		a = append(a, "--log-bin="+filepath.Join(s.Dir, "binlog"), "--binlog-format=ROW",
			"--gtid-strict-mode=1", "--log-slave-updates=1")
	} else {
		a = append(a, "--skip-log-bin")
	}
	return append(a, s.Opts.Args...)
}

// start runs mariadbd and waits until its socket accepts connections.
func (s *Server) start() error {
	// nsenter --net without --fork execs mariadbd: the process we signal is the server itself.
	cmd := s.NS.Command(context.Background(), "mariadbd", s.args()...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()

	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		// The socket file appears when mariadbd listens. Then one real client login: a bare
		// connect-and-close would be logged as an aborted connection.
		if st, err := os.Stat(s.Socket); err == nil && st.Mode().Type() == os.ModeSocket {
			if _, err := s.Exec("SELECT 1"); err == nil {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("mariadbd exited (%v) before accepting connections; output: %s; err.log:\n%s",
				cmd.ProcessState, out.String(), s.ErrLogTail(30))
		case <-deadline.C:
			return fmt.Errorf("socket %s did not accept within %v; err.log:\n%s", s.Socket, startTimeout, s.ErrLogTail(30))
		case <-tick.C:
		}
	}
}

// Running reports whether mariadbd is running.
func (s *Server) Running() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Stop shuts the server down cleanly (SIGTERM), waiting for it to exit; after stopTimeout it is
// killed. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.tb != nil {
		s.tb.Helper()
	}
	if !s.Running() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		if s.tb != nil {
			s.tb.Errorf("mariadbd (server %d) did not stop within %v after SIGTERM; killing it", s.Opts.ServerID, stopTimeout)
		}
		s.Kill()
	}
}

// Kill ends the server with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() {
	if !s.Running() {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Restart stops the server cleanly if it runs, then starts it again on the same datadir and
// waits until it accepts connections.
func (s *Server) Restart() {
	if s.tb == nil {
		panic("mariadb: Restart on a server without a test (Launch): use Relaunch, or ForTest")
	}
	s.tb.Helper()
	if err := s.Relaunch(); err != nil {
		s.tb.Fatalf("%v", err)
	}
}

// Relaunch is Restart that returns its error.
func (s *Server) Relaunch() error {
	s.Stop()
	if err := s.start(); err != nil {
		return fmt.Errorf("restart mariadbd (server %d in %s): %w", s.Opts.ServerID, s.NS.Name, err)
	}
	return nil
}

// Exec runs SQL (one or more statements) as root over the unix socket with the mariadb client
// and returns its batch output (tab-separated, with a header line per result set).
func (s *Server) Exec(sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mariadb", "--no-defaults", "-S", s.Socket, "-uroot", "--batch", "-e", sql)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("mariadb (server %d) `%s`: %w: %s", s.Opts.ServerID, sql, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// MustExec is Exec that fails the test on error. Call it from the test's goroutine only.
func (s *Server) MustExec(sql string) string {
	if s.tb == nil {
		panic("mariadb: MustExec on a server without a test (Launch): use Exec, or ForTest")
	}
	s.tb.Helper()
	out, err := s.Exec(sql)
	if err != nil {
		s.tb.Fatal(err)
	}
	return out
}

// Query runs one statement and returns its rows as column name → value ("NULL" for NULL).
func (s *Server) Query(sql string) ([]map[string]string, error) {
	out, err := s.Exec(sql)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || lines[0] == "" {
		return nil, nil
	}
	cols := strings.Split(lines[0], "\t")
	var rows []map[string]string
	for _, l := range lines[1:] {
		vals := strings.Split(l, "\t")
		row := make(map[string]string, len(cols))
		for i, c := range cols {
			if i < len(vals) {
				row[c] = vals[i]
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// GlobalStatus returns the named global status counters (SHOW GLOBAL STATUS). The client's
// own connection counts in Connections.
func (s *Server) GlobalStatus(names ...string) (map[string]int64, error) {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = quote(n)
	}
	rows, err := s.Query("SHOW GLOBAL STATUS WHERE Variable_name IN (" + strings.Join(q, ",") + ")")
	if err != nil {
		return nil, err
	}
	st := make(map[string]int64, len(rows))
	for _, r := range rows {
		v, err := strconv.ParseInt(r["Value"], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("status %s: %w", r["Variable_name"], err)
		}
		st[r["Variable_name"]] = v
	}
	for _, n := range names {
		if _, ok := st[n]; !ok {
			return nil, fmt.Errorf("no status variable %s", n)
		}
	}
	return st, nil
}

// SetupReplica is [Replicate] for a test: an error is fatal.
func SetupReplica(tb TB, primary, replica *Server) {
	tb.Helper()
	if err := Replicate(primary, replica); err != nil {
		tb.Fatalf("%v", err)
	}
}

// Replicate makes replica replicate from primary with GTID (MASTER_USE_GTID=slave_pos) as a
// replication user created on the primary, and waits until both replication threads run and the
// replica has applied a write made on the primary. The primary needs LogBin and an Addr that
// the replica's namespace reaches; the two need distinct server ids.
func Replicate(primary, replica *Server) error {
	if !primary.Opts.LogBin {
		return fmt.Errorf("replicate: primary (server %d) needs Options.LogBin", primary.Opts.ServerID)
	}
	if !primary.Opts.Addr.IsValid() {
		return fmt.Errorf("replicate: primary (server %d) has no Options.Addr", primary.Opts.ServerID)
	}
	if primary.Opts.ServerID == replica.Opts.ServerID {
		return fmt.Errorf("replicate: primary and replica both have server id %d", primary.Opts.ServerID)
	}
	_, err := primary.Exec(fmt.Sprintf("SET SESSION sql_log_bin=0; CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s; GRANT REPLICATION SLAVE ON *.* TO %s@'%%';",
		quote(ReplicationUser), quote(replicationPass), quote(ReplicationUser)))
	if err != nil {
		return err
	}
	_, err = replica.Exec(fmt.Sprintf("CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%d, MASTER_USER=%s, MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE;",
		quote(primary.Opts.Addr.String()), primary.Opts.Port, quote(ReplicationUser), quote(replicationPass)))
	if err != nil {
		return err
	}
	if err := WaitReplicating(replica, replicationTimeout); err != nil {
		return err
	}
	if _, err := primary.Exec("CREATE DATABASE IF NOT EXISTS xdplb_replication_check"); err != nil {
		return err
	}
	return WaitCaughtUp(primary, replica, replicationTimeout)
}

// WaitReplicating waits until the replica's IO and SQL threads both run and
// Seconds_Behind_Master is known.
func WaitReplicating(replica *Server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last map[string]string
	for {
		rows, err := replica.Query("SHOW SLAVE STATUS")
		if err != nil {
			return err
		}
		if len(rows) > 0 {
			last = rows[0]
			if last["Slave_IO_Running"] == "Yes" && last["Slave_SQL_Running"] == "Yes" && last["Seconds_Behind_Master"] != "NULL" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica (server %d) not replicating after %v: IO=%s SQL=%s lag=%s last IO error %q, last SQL error %q",
				replica.Opts.ServerID, timeout, last["Slave_IO_Running"], last["Slave_SQL_Running"],
				last["Seconds_Behind_Master"], last["Last_IO_Error"], last["Last_SQL_Error"])
		}
		time.Sleep(50 * time.Millisecond) // each poll is a client process, ~10 ms
	}
}

// WaitCaughtUp waits until the replica has applied everything in the primary's binary log
// (MASTER_GTID_WAIT on the primary's @@gtid_binlog_pos).
func WaitCaughtUp(primary, replica *Server, timeout time.Duration) error {
	rows, err := primary.Query("SELECT @@global.gtid_binlog_pos AS pos")
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return errors.New("no gtid_binlog_pos on the primary")
	}
	pos := rows[0]["pos"]
	rows, err = replica.Query(fmt.Sprintf("SELECT MASTER_GTID_WAIT(%s, %d) AS r", quote(pos), int(timeout.Seconds())))
	if err != nil {
		return err
	}
	if len(rows) == 0 || rows[0]["r"] != "0" {
		return fmt.Errorf("replica (server %d) did not reach GTID %s within %v", replica.Opts.ServerID, pos, timeout)
	}
	return nil
}

// ErrLog returns the server's error log.
func (s *Server) ErrLog() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "err.log"))
	return string(b)
}

// ErrLogTail is the last n lines of the error log.
func (s *Server) ErrLogTail(n int) string {
	lines := strings.Split(strings.TrimRight(s.ErrLog(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *Server) logErrLog() {
	s.tb.Logf("mariadbd server %d (%s) err.log, last lines:\n%s", s.Opts.ServerID, s.NS.Name, s.ErrLogTail(40))
}

// quote makes a SQL string literal.
func quote(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}
