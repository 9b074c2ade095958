//go:build linux

package test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// daemonProc is `xdplb run` running in the director's network namespace (nsenter --net, so
// bpffs stays visible), its stdout and stderr (slog lines) going to a file.
type daemonProc struct {
	dir     *director
	config  string // --config
	socket  string // --status-socket
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // its exit status, once done is closed
}

// startDaemon starts `xdplb --pin-root ROOT run --config config --mode mode --status-socket
// socket --detach-on-exit`. In t.Cleanup it is stopped with SIGTERM (SIGKILL after 5 s) and its
// log goes to the test log when the test failed.
func startDaemon(t *testing.T, d *director, config, socket, mode string) *daemonProc {
	t.Helper()
	p := &daemonProc{dir: d, config: config, socket: socket, logPath: t.TempDir() + "/xdplb-run.log", done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--pin-root", d.pinRoot, "run", "--config", config, "--mode", mode, "--status-socket", socket, "--detach-on-exit"}
	// nsenter --net without --fork execs xdplb: signals reach the daemon itself.
	p.cmd = d.Command(context.Background(), xdplbBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start `xdplb %s` in %s: %v", strings.Join(args, " "), d.Name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Logf("daemon: pid %d: xdplb %s", p.cmd.Process.Pid, strings.Join(args, " "))
	t.Cleanup(func() {
		if p.running() {
			if err := p.stop(5 * time.Second); err != nil {
				t.Errorf("daemon cleanup: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("daemon log (%s):\n%s", p.logPath, p.log())
		}
	})
	return p
}

// running reports whether the daemon process is still alive.
func (p *daemonProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for the exit; after timeout it kills the daemon and says so.
func (p *daemonProc) stop(timeout time.Duration) error {
	if !p.running() {
		return fmt.Errorf("expected the daemon to be running before SIGTERM, seen it exited: %v", p.waitErr)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.waitErr != nil {
			return fmt.Errorf("expected the daemon to exit 0 on SIGTERM, seen %v", p.waitErr)
		}
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("expected the daemon to exit within %v of SIGTERM, seen it still running (killed it)", timeout)
	}
}

// signal sends sig to the daemon.
func (p *daemonProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to the daemon: %v", sig, err)
	}
}

// log returns what the daemon wrote so far.
func (p *daemonProc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// reload runs `xdplb reload --status-socket SOCKET` and returns its output and error.
func (p *daemonProc) reload() (string, error) {
	return p.dir.cliErr("reload", "--status-socket", p.socket)
}

// ringSet is the real servers taking new flows, per service ("VIP:port"), from the pinned maps:
// backends with a weight, not draining and not the sorry server. Values are sorted addresses.
type ringSet map[string][]string

// listJSON is the part of `xdplb list --json` the daemon test reads.
type listJSON struct {
	Interfaces []struct {
		Iface    string `json:"iface"`
		Mode     string `json:"mode"`
		Services []struct {
			VIP      string `json:"vip"`
			Port     uint16 `json:"port"`
			Backends []struct {
				Addr     string `json:"addr"`
				Weight   uint32 `json:"weight"`
				Draining bool   `json:"draining"`
				Sorry    bool   `json:"sorry"`
			} `json:"backends"`
		} `json:"services"`
	} `json:"interfaces"`
}

// list runs `xdplb list --json --status-socket SOCKET`.
func (p *daemonProc) list() (listJSON, error) {
	var l listJSON
	out, err := p.dir.cliErr("list", "--json", "--status-socket", p.socket)
	if err != nil {
		return l, err
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return l, fmt.Errorf("`xdplb list --json`: %w in %.300q", err, out)
	}
	return l, nil
}

// rings reads the rings (and the weights, addr → weight per service) from `xdplb list --json`.
func (p *daemonProc) rings() (ringSet, map[string]map[string]uint32, error) {
	l, err := p.list()
	if err != nil {
		return nil, nil, err
	}
	if len(l.Interfaces) != 1 {
		return nil, nil, fmt.Errorf("`xdplb list --json`: expected 1 interface, seen %d", len(l.Interfaces))
	}
	r := ringSet{}
	w := map[string]map[string]uint32{}
	for _, s := range l.Interfaces[0].Services {
		key := net.JoinHostPort(s.VIP, fmt.Sprint(s.Port))
		r[key] = []string{}
		w[key] = map[string]uint32{}
		for _, b := range s.Backends {
			if b.Sorry {
				continue
			}
			w[key][b.Addr] = b.Weight
			if b.Weight > 0 && !b.Draining {
				r[key] = append(r[key], b.Addr)
			}
		}
		slices.Sort(r[key])
	}
	return r, w, nil
}

// daemonStatus is the part of the status socket's {"cmd":"status"} reply the test reads.
type daemonStatus struct {
	Services []struct {
		Name     string `json:"name"`
		Port     uint16 `json:"port"`
		Backends []struct {
			Addr      string `json:"addr"`
			Up        bool   `json:"up"`
			InRing    bool   `json:"in_ring"`
			LastError string `json:"last_error"`
		} `json:"backends"`
	} `json:"services"`
}

// status asks the daemon's status socket (line-delimited JSON) for its status.
func (p *daemonProc) status() (daemonStatus, error) {
	var st daemonStatus
	c, err := net.DialTimeout("unix", p.socket, time.Second)
	if err != nil {
		return st, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(`{"cmd":"status"}` + "\n")); err != nil {
		return st, err
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(nil, 16<<20)
	if !sc.Scan() {
		return st, fmt.Errorf("status socket %s: no reply (%v)", p.socket, sc.Err())
	}
	if err := json.Unmarshal(sc.Bytes(), &st); err != nil {
		return st, fmt.Errorf("status socket %s: %w in %.300q", p.socket, err, sc.Bytes())
	}
	return st, nil
}

// lastError is the daemon's last check error for addr in the service on port.
func (st daemonStatus) lastError(port uint16, addr string) (up bool, lastErr string, ok bool) {
	for _, s := range st.Services {
		if s.Port != port {
			continue
		}
		for _, b := range s.Backends {
			if b.Addr == addr {
				return b.Up, b.LastError, true
			}
		}
	}
	return false, "", false
}

// ringPoll is how often waitRings reads the maps.
const ringPoll = 100 * time.Millisecond

// waitRings polls the rings every ringPoll until cond holds; it returns the time from since to
// the first poll where it held. It fails the test when that does not happen within bound of
// since (plus the grace of a slow poll), with what was expected and the last rings seen.
func (p *daemonProc) waitRings(t *testing.T, since time.Time, bound time.Duration, expected string, names map[string]string, cond func(ringSet) bool) time.Duration {
	t.Helper()
	var last ringSet
	var lastErr error
	for {
		r, _, err := p.rings()
		seenAt := time.Since(since)
		if err == nil {
			last, lastErr = r, nil
			if cond(r) {
				if seenAt > bound {
					t.Fatalf("expected %s within %v, seen it after %v (rings %s)", expected, bound, seenAt.Round(time.Millisecond), last.named(names))
				}
				return seenAt
			}
		} else {
			lastErr = err
		}
		if seenAt > bound {
			if !p.running() {
				t.Fatalf("expected %s within %v, seen the daemon exit (%v); rings %s", expected, bound, p.waitErr, last.named(names))
			}
			t.Fatalf("expected %s within %v, seen rings %s (last list error: %v)", expected, bound, last.named(names), lastErr)
		}
		time.Sleep(ringPoll)
	}
}

// named prints the rings with real server names instead of addresses.
func (r ringSet) named(names map[string]string) string {
	if r == nil {
		return "<none read>"
	}
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		var ns []string
		for _, a := range r[k] {
			if n, ok := names[a]; ok {
				ns = append(ns, n)
			} else {
				ns = append(ns, a)
			}
		}
		parts = append(parts, k+"={"+strings.Join(ns, ",")+"}")
	}
	return strings.Join(parts, " ")
}

// is reports whether the ring of svc is exactly addrs (in any order).
func (r ringSet) is(svc string, addrs ...string) bool {
	got, ok := r[svc]
	if !ok {
		return false
	}
	want := slices.Clone(addrs)
	slices.Sort(want)
	return slices.Equal(got, want)
}

// has reports whether addr is in the ring of svc.
func (r ringSet) has(svc, addr string) bool { return slices.Contains(r[svc], addr) }

// mysqlFrom returns a *sql.DB whose connections are dialled from inside ns (the socket is
// created in the namespace, then used from any goroutine).
func mysqlFrom(t *testing.T, ns *netns.NS, addr netip.AddrPort, user, password string) *sql.DB {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd = user, password
	cfg.Net, cfg.Addr = "tcp", addr.String()
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 3*time.Second, 5*time.Second, 5*time.Second
	cfg.DialFunc = func(ctx context.Context, network, a string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, a)
			return err
		})
		return c, err
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatalf("mysql connector for %s: %v", addr, err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxIdleConns(0) // a connection returned to the pool is closed: every query is a new flow
	t.Cleanup(func() { db.Close() })
	return db
}

// serverIDVia opens a new connection through db (made by mysqlFrom with no idle connections),
// runs SELECT @@server_id and closes it: each call is a new flow.
func serverIDVia(db *sql.DB) (uint32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var id uint32
	err := db.QueryRowContext(ctx, "SELECT @@server_id").Scan(&id)
	return id, err
}

// readHandshake connects from ns to addr over plain TCP and reads the server's first packet (the
// MySQL handshake, protocol version 10); it returns the server version string.
func readHandshake(ns *netns.NS, addr netip.AddrPort) (string, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), 2*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		return "", fmt.Errorf("read handshake from %s: %w", addr, err)
	}
	if n < 6 || buf[4] != 10 {
		return "", fmt.Errorf("read handshake from %s: expected protocol version 10, seen % x", addr, buf[:n])
	}
	v := buf[5:n]
	if i := slices.Index(v, 0); i >= 0 {
		v = v[:i]
	}
	return string(v), nil
}
