package health

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/xdplb/xdplb/control/config"
)

// DefaultMySQLFreshEvery is how many probes may pass on the kept connection before one also
// opens a fresh connection.
const DefaultMySQLFreshEvery = 5

// defaultMySQLTimeout bounds a probe whose context has no deadline.
const defaultMySQLTimeout = 5 * time.Second

// closeTimeout bounds the COM_QUIT written by Close.
const closeTimeout = time.Second

// Reasons a MySQL server that answers is still unhealthy; match them with errors.Is on
// Result.Err.
var (
	ErrReadOnly           = errors.New("read_only is ON")
	ErrNotReplica         = errors.New("not a replica")
	ErrReplicationStopped = errors.New("replication stopped")
	ErrReplicationLag     = errors.New("replication lag over the bound")
	// ErrMissingPrivilege: the check account may not run the check's statement.
	ErrMissingPrivilege = errors.New("the monitor account lacks a privilege")
)

// checkFailed is a check that ran and said no: the connection is fine and is kept.
type checkFailed struct {
	kind error // one of the Err* above
	msg  string
}

func (e *checkFailed) Error() string { return e.msg }
func (e *checkFailed) Unwrap() error { return e.kind }

func failf(kind error, format string, a ...any) error {
	return &checkFailed{kind: kind, msg: fmt.Sprintf(format, a...)}
}

// MySQLOption tunes NewMySQL.
type MySQLOption func(*mysqlProber)

// MySQLFreshEvery sets how many probes may run on the kept connection before one also opens,
// checks and closes a fresh connection (n >= 1; default DefaultMySQLFreshEvery).
func MySQLFreshEvery(n int) MySQLOption {
	return func(p *mysqlProber) {
		if n >= 1 {
			p.freshEvery = n
		}
	}
}

// MySQLLogger receives the driver's own log lines (at debug level). Default: discarded.
func MySQLLogger(l *slog.Logger) MySQLOption {
	return func(p *mysqlProber) { p.log = l }
}

// MySQLDialer replaces the TCP dialer, e.g. to bind a source address or to dial from another
// network namespace.
func MySQLDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) MySQLOption {
	return func(p *mysqlProber) { p.dial = dial }
}

// NewMySQL returns a Prober for the MySQL/MariaDB server at addr.
//
// It keeps one connection to the server and runs `SELECT 1` on it each probe, then the optional
// checks: `writable` (@@global.read_only must be 0) and `max_replication_lag` (SHOW REPLICA
// STATUS: both threads running and Seconds_Behind_Master known and within the bound). Every
// few probes (MySQLFreshEvery) it also opens a fresh connection, runs `SELECT 1` and closes it,
// so that authentication and max_connections trouble is seen although the kept connection
// still works. The password is read from chk at each connect, so a changed password file or
// variable is picked up.
//
// Connections are always ended with COM_QUIT (never a reset), so the server logs no aborted
// connections and never blocks the director's host for max_connect_errors. Every network
// operation is bounded by the probe context's deadline.
func NewMySQL(addr netip.AddrPort, chk *config.MySQLCheck, opts ...MySQLOption) Prober {
	p := &mysqlProber{
		addr:       addr,
		chk:        chk,
		freshEvery: DefaultMySQLFreshEvery,
		log:        slog.New(slog.DiscardHandler),
	}
	if p.chk == nil {
		p.chk = &config.MySQLCheck{}
	}
	var d net.Dialer
	p.dial = d.DialContext
	for _, o := range opts {
		o(p)
	}
	return p
}

type mysqlProber struct {
	addr       netip.AddrPort
	chk        *config.MySQLCheck
	freshEvery int
	log        *slog.Logger
	dial       func(ctx context.Context, network, addr string) (net.Conn, error)

	mu    sync.Mutex
	kept  *mysqlConn // nil until connected, and after a connection error
	since int        // probes on kept since the last successful connect
}

// mysqlConn is a driver connection and the socket under it.
type mysqlConn struct {
	driver.Conn
	nc *trackedConn
}

// trackedConn remembers the last I/O error: the driver reports only "invalid connection".
type trackedConn struct {
	net.Conn
	mu  sync.Mutex
	err error
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.track(err)
	return n, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.track(err)
	return n, err
}

func (c *trackedConn) track(err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

func (c *trackedConn) lastErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Probe implements Prober.
func (p *mysqlProber) Probe(ctx context.Context) Result {
	start := time.Now()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultMySQLTimeout)
		defer cancel()
	}
	p.mu.Lock()
	defer p.mu.Unlock()

	pw, err := p.chk.Password()
	if err == nil {
		err = p.probe(ctx, pw)
	}
	if err != nil && pw != "" && strings.Contains(err.Error(), pw) {
		err = redacted{err: err, text: strings.ReplaceAll(err.Error(), pw, "<redacted>")}
	}
	return Result{Healthy: err == nil, Err: err, Latency: time.Since(start)}
}

// redacted hides a secret that an error's text happened to contain; errors.Is still works.
type redacted struct {
	err  error
	text string
}

func (r redacted) Error() string { return r.text }
func (r redacted) Unwrap() error { return r.err }

func (p *mysqlProber) probe(ctx context.Context, pw string) error {
	connected := false
	if p.kept == nil {
		c, err := p.connect(ctx, pw)
		if err != nil {
			return err
		}
		p.kept, p.since, connected = c, 0, true
	}
	err := p.checks(ctx, p.kept)
	if err != nil && !connected && stale(ctx, err) {
		// The kept connection died since the last probe (server restarted, connection killed,
		// idle timeout): one retry on a new connection, as database/sql retries a bad one.
		p.drop()
		c, cerr := p.connect(ctx, pw)
		if cerr != nil {
			return fmt.Errorf("%w; reconnect: %w", err, cerr)
		}
		p.kept, p.since, connected = c, 0, true
		err = p.checks(ctx, p.kept)
	}
	if err != nil {
		var cf *checkFailed
		if !errors.As(err, &cf) {
			p.drop() // a failed query may leave the connection in any state
		}
		return err
	}
	if connected {
		return nil
	}
	p.since++
	if p.since < p.freshEvery {
		return nil
	}
	if err := p.fresh(ctx, pw); err != nil {
		return fmt.Errorf("fresh connection: %w", err)
	}
	p.since = 0
	return nil
}

// stale reports whether err means the connection is gone rather than the server answered no.
func stale(ctx context.Context, err error) bool {
	var me *mysql.MySQLError
	var cf *checkFailed
	return ctx.Err() == nil && !errors.As(err, &me) && !errors.As(err, &cf)
}

// fresh connects, runs SELECT 1 and disconnects.
func (p *mysqlProber) fresh(ctx context.Context, pw string) error {
	c, err := p.connect(ctx, pw)
	if err != nil {
		return err
	}
	_, _, err = query(ctx, c.Conn, "SELECT 1")
	if err != nil {
		err = fmt.Errorf("select 1: %w", annotate(ctx, c, err))
	}
	if cerr := c.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close: %w", annotate(ctx, c, cerr))
	}
	return err
}

func (p *mysqlProber) connect(ctx context.Context, pw string) (*mysqlConn, error) {
	deadline, _ := ctx.Deadline()
	var nc *trackedConn
	cfg := mysql.NewConfig()
	cfg.User = p.chk.User
	cfg.Passwd = pw
	cfg.Net = "tcp"
	cfg.Addr = p.addr.String()
	cfg.DBName = p.chk.Database
	cfg.ConnectionAttributes = "program_name:xdplb-health"
	cfg.Logger = driverLogger{p.log}
	cfg.Timeout = time.Until(deadline) // connect timeout; the socket deadline bounds the rest
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := p.dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		nc = &trackedConn{Conn: c}
		if err := nc.SetDeadline(deadline); err != nil {
			c.Close()
			return nil, err
		}
		return nc, nil
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", p.addr, err)
	}
	dc, err := conn.Connect(ctx)
	if err != nil {
		if nc != nil {
			err = annotate(ctx, &mysqlConn{nc: nc}, err)
		}
		return nil, fmt.Errorf("connect to %s: %w", p.addr, err)
	}
	return &mysqlConn{Conn: dc, nc: nc}, nil
}

// checks runs SELECT 1 and the configured checks on c.
func (p *mysqlProber) checks(ctx context.Context, c *mysqlConn) error {
	deadline, _ := ctx.Deadline()
	if err := c.nc.SetDeadline(deadline); err != nil {
		return err
	}
	if _, _, err := query(ctx, c.Conn, "SELECT 1"); err != nil {
		return fmt.Errorf("select 1: %w", annotate(ctx, c, err))
	}
	if p.chk.Writable {
		_, rows, err := query(ctx, c.Conn, "SELECT @@global.read_only")
		if err != nil {
			return fmt.Errorf("select @@global.read_only: %w", annotate(ctx, c, err))
		}
		if len(rows) != 1 || len(rows[0]) != 1 {
			return errors.New("select @@global.read_only: no value")
		}
		if v := rows[0][0]; v == nil || *v != "0" {
			return failf(ErrReadOnly, "read_only is ON")
		}
	}
	if p.chk.MaxReplicationLag > 0 {
		cols, rows, err := query(ctx, c.Conn, "SHOW REPLICA STATUS")
		var me *mysql.MySQLError
		if errors.As(err, &me) && me.Number == 1064 { // before MySQL 8.0.22 / MariaDB 10.5.1
			cols, rows, err = query(ctx, c.Conn, "SHOW SLAVE STATUS")
		}
		if errors.As(err, &me) && me.Number == 1227 { // ER_SPECIFIC_ACCESS_DENIED_ERROR
			return failf(ErrMissingPrivilege, "show replica status: monitor account %q may not read replica status: "+
				"GRANT SLAVE MONITOR ON *.* TO '%s'@'<director>' (MariaDB 10.5 and later; REPLICATION CLIENT on MariaDB 10.4 "+
				"and earlier and on MySQL) (%v)", p.chk.User, p.chk.User, err)
		}
		if err != nil {
			return fmt.Errorf("show replica status: %w", annotate(ctx, c, err))
		}
		return replicaHealthy(cols, rows, p.chk.MaxReplicationLag)
	}
	return nil
}

// replicaHealthy judges the rows of SHOW REPLICA STATUS (one per replication channel), finding
// columns by name: their set and order differ between MySQL and MariaDB versions.
func replicaHealthy(cols []string, rows [][]*string, maxLag time.Duration) error {
	if len(rows) == 0 {
		return failf(ErrNotReplica, "not a replica (SHOW REPLICA STATUS returned no row)")
	}
	idx := func(names ...string) int {
		for _, n := range names {
			for i, c := range cols {
				if strings.EqualFold(c, n) {
					return i
				}
			}
		}
		return -1
	}
	ioRun := idx("Slave_IO_Running", "Replica_IO_Running")
	sqlRun := idx("Slave_SQL_Running", "Replica_SQL_Running")
	lagCol := idx("Seconds_Behind_Master", "Seconds_Behind_Source")
	ioErr, sqlErr := idx("Last_IO_Error"), idx("Last_SQL_Error")
	channel := idx("Connection_name", "Channel_Name")
	if ioRun < 0 || sqlRun < 0 || lagCol < 0 {
		return fmt.Errorf("show replica status: unknown column set %q", cols)
	}
	val := func(r []*string, i int) (string, bool) {
		if i < 0 || i >= len(r) || r[i] == nil {
			return "", false
		}
		return *r[i], true
	}
	for _, r := range rows {
		var prefix string
		if name, _ := val(r, channel); name != "" {
			prefix = "channel " + name + ": "
		}
		for _, th := range []struct {
			name     string
			run, err int
		}{{"IO", ioRun, ioErr}, {"SQL", sqlRun, sqlErr}} {
			state, _ := val(r, th.run)
			if state == "Yes" {
				continue
			}
			msg := fmt.Sprintf("%sreplication %s thread not running (%s=%s)", prefix, th.name, cols[th.run], state)
			if e, _ := val(r, th.err); e != "" {
				msg += ": " + e
			}
			return failf(ErrReplicationStopped, "%s", msg)
		}
		lag, ok := val(r, lagCol)
		if !ok {
			return failf(ErrReplicationStopped, "%sreplication lag unknown (%s is NULL)", prefix, cols[lagCol])
		}
		secs, err := strconv.ParseInt(lag, 10, 64)
		if err != nil {
			return fmt.Errorf("%s%s: %q is not a number", prefix, cols[lagCol], lag)
		}
		if d := time.Duration(secs) * time.Second; d > maxLag {
			return failf(ErrReplicationLag, "%sreplication lag %v over %v", prefix, d, maxLag)
		}
	}
	return nil
}

// query runs q on c (text protocol) and returns the column names and rows; NULL is nil.
func query(ctx context.Context, c driver.Conn, q string) ([]string, [][]*string, error) {
	qc, ok := c.(driver.QueryerContext)
	if !ok {
		return nil, nil, errors.New("driver connection cannot query")
	}
	rs, err := qc.QueryContext(ctx, q, nil)
	if err != nil {
		return nil, nil, err
	}
	cols := rs.Columns()
	var rows [][]*string
	dest := make([]driver.Value, len(cols))
	for {
		err := rs.Next(dest)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			rs.Close()
			return nil, nil, err
		}
		row := make([]*string, len(cols))
		for i, v := range dest {
			switch v := v.(type) {
			case nil:
			case []byte: // the driver reuses its buffer: copy
				s := string(v)
				row[i] = &s
			default:
				s := fmt.Sprint(v)
				row[i] = &s
			}
		}
		rows = append(rows, row)
	}
	return cols, rows, rs.Close()
}

// annotate adds what the driver's "invalid connection" hides: the socket error or the deadline.
func annotate(ctx context.Context, c *mysqlConn, err error) error {
	if !errors.Is(err, mysql.ErrInvalidConn) && !errors.Is(err, driver.ErrBadConn) {
		return err
	}
	if c != nil && c.nc != nil {
		if ioErr := c.nc.lastErr(); ioErr != nil {
			return fmt.Errorf("%w (%w)", err, ioErr)
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return err
}

// drop closes the kept connection (COM_QUIT if it is still open).
func (p *mysqlProber) drop() {
	if p.kept == nil {
		return
	}
	_ = p.kept.close()
	p.kept = nil
}

func (c *mysqlConn) close() error {
	if c.Conn == nil {
		return nil
	}
	_ = c.nc.SetDeadline(time.Now().Add(closeTimeout))
	return c.Conn.Close()
}

// Close implements Prober: it ends the kept connection with COM_QUIT.
func (p *mysqlProber) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kept == nil {
		return nil
	}
	err := p.kept.close()
	p.kept = nil
	if err != nil {
		return fmt.Errorf("close mysql connection to %s: %w", p.addr, err)
	}
	return nil
}

// driverLogger sends the driver's log lines to slog.
type driverLogger struct{ l *slog.Logger }

func (d driverLogger) Print(v ...any) { d.l.Debug("mysql driver", "msg", fmt.Sprint(v...)) }
