package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/health"
	"github.com/xdplb/xdplb/control/reconcile"
)

// The status socket speaks line-delimited JSON: one request object per line, one reply object
// per line. Requests: {"cmd":"status"} → StatusReply, {"cmd":"reload"} → ReloadReply; anything
// else → {"error": "..."}.

// Request is one line sent to the status socket.
type Request struct {
	Cmd string `json:"cmd"`
}

// StatusReply answers {"cmd":"status"}.
type StatusReply struct {
	Services []ServiceStatus `json:"services"`
	VRRP     []VRRPStatus    `json:"vrrp"`
	Config   string          `json:"config"`
	Started  time.Time       `json:"started"`
}

// ServiceStatus is a configured service with the health of its real servers.
type ServiceStatus struct {
	Name     string          `json:"name"`
	VIP      netip.Addr      `json:"vip"`
	Port     uint16          `json:"port"`
	Proto    control.Proto   `json:"proto"`
	Backends []BackendStatus `json:"backends"`
	QuorumUp bool            `json:"quorum_up"`
	// Single-writer services (a mysql check with writable: true) only: the real server that
	// takes the writes (absent: none), and every real server whose check says writable now.
	// Two or more writable is the alarm of docs/daemon.md.
	SingleWriter bool         `json:"single_writer,omitempty"`
	Writer       netip.Addr   `json:"writer,omitzero"`
	Writable     []netip.Addr `json:"writable,omitempty"`
}

// Key is the service's key in the maps.
func (s ServiceStatus) Key() control.ServiceKey {
	return control.ServiceKey{VIP: s.VIP, Port: s.Port, Proto: s.Proto}
}

// BackendStatus is one real server: its check state and whether the maps use it.
type BackendStatus struct {
	Addr netip.Addr `json:"addr"`
	// State is "starting" (no verdict of its checks yet), "up", "down", "draining" (up, but
	// weight 0 in the maps: drain: true, or quorum lost) or "unchecked" (check type none);
	// Since is when it entered that health state (zero for unchecked).
	State     string    `json:"state"`
	Since     time.Time `json:"since,omitzero"`
	Up        bool      `json:"up"`
	InRing    bool      `json:"in_ring"`
	Weight    uint32    `json:"weight"` // in the maps; 0 when not there
	LastError string    `json:"last_error"`
	LastCheck time.Time `json:"last_check"`
	LatencyMS float64   `json:"latency_ms"`
	Checks    uint64    `json:"checks"`
	Failures  uint64    `json:"failures"`
}

// ReloadReply answers {"cmd":"reload"}.
type ReloadReply struct {
	OK     bool     `json:"ok"`
	Errors []string `json:"errors"`
}

// ErrNoDaemon: nothing answers on the status socket.
var ErrNoDaemon = errors.New("no xdplb daemon is running")

// listenStatus takes the socket path: it refuses when a daemon answers there, and replaces a
// stale socket file left by one that died.
func listenStatus(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w: it answers on %s (stop it first, or pass another --status-socket)", ErrAlreadyRunning, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("status socket: remove stale %s: %w", path, err)
	}
	old := syscall.Umask(0o177) // the socket is created 0600
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("status socket: %w", err)
	}
	return ln, nil
}

func (d *Daemon) serveStatus(ctx context.Context) {
	for {
		c, err := d.statusLn.Accept()
		if err != nil {
			return // closed at exit
		}
		go d.statusConn(ctx, c)
	}
}

const statusIdle = 30 * time.Second

func (d *Daemon) statusConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	sc := bufio.NewScanner(c)
	enc := json.NewEncoder(c)
	for {
		c.SetDeadline(time.Now().Add(statusIdle))
		if !sc.Scan() {
			return
		}
		var req Request
		var reply any
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			reply = map[string]string{"error": "bad request: " + err.Error()}
		} else {
			switch req.Cmd {
			case "status":
				reply = d.Status()
			case "reload":
				rr := ReloadReply{OK: true, Errors: []string{}}
				if err := d.Reload(); err != nil {
					rr = ReloadReply{Errors: errorLines(err)}
				}
				reply = rr
			default:
				reply = map[string]string{"error": fmt.Sprintf("unknown cmd %q: want status or reload", req.Cmd)}
			}
		}
		if err := enc.Encode(reply); err != nil {
			return
		}
	}
}

// Status reports every configured service with the health of its real servers.
func (d *Daemon) Status() StatusReply {
	cfg := d.cfgNow()
	d.mu.Lock()
	quorum := d.quorum
	checks := map[health.Target]health.Status{}
	for _, s := range d.mon.Status() {
		checks[s.Target] = s
	}
	writers := d.writers
	d.mu.Unlock()
	type inMaps struct {
		weight   uint32
		inRing   bool
		draining bool
	}
	maps := map[ringKey]inMaps{}
	if len(d.maps) > 0 {
		if st, err := d.maps[0].Snapshot(); err == nil {
			for _, s := range st.Services {
				for _, b := range s.Backends {
					if !b.Sorry {
						maps[ringKey{s.Key, b.Addr}] = inMaps{b.Weight, inRing(b), b.Draining}
					}
				}
			}
		}
	}
	r := StatusReply{Config: d.o.ConfigPath, Started: d.started, Services: []ServiceStatus{}, VRRP: d.vrrpStatuses()}
	for _, svc := range cfg.Services {
		ss := ServiceStatus{
			Name: reconcile.ServiceName(svc), VIP: svc.Key.VIP, Port: svc.Key.Port, Proto: svc.Key.Proto,
			Backends: []BackendStatus{}, QuorumUp: quorum[reconcile.ServiceName(svc)],
		}
		if w, ok := writers[ss.Name]; ok {
			ss.SingleWriter, ss.Writer, ss.Writable = true, w.writer, w.writable
		}
		for _, rs := range svc.RealServers {
			c, checked := checks[reconcile.TargetFor(svc, rs)]
			m := maps[ringKey{svc.Key, rs.Addr.Unmap()}]
			state := "unchecked"
			switch {
			case !checked:
			case c.Up && m.draining:
				state = "draining"
			default:
				state = c.State()
			}
			ss.Backends = append(ss.Backends, BackendStatus{
				Addr: rs.Addr, State: state, Since: c.Since, Up: c.Up, InRing: m.inRing, Weight: m.weight,
				LastError: c.LastErr, LastCheck: c.LastCheck,
				LatencyMS: float64(c.LastLatency.Microseconds()) / 1000,
				Checks:    c.Checks, Failures: c.Failures,
			})
		}
		r.Services = append(r.Services, ss)
	}
	return r
}

// writerState is what the last plan said of a single-writer service (Daemon.writers, by service
// name, guarded by Daemon.mu).
type writerState struct {
	writer   netip.Addr
	writable []netip.Addr
}

// writerStates picks the single-writer services out of a plan.
func writerStates(p reconcile.Plan) map[string]writerState {
	out := map[string]writerState{}
	for _, sp := range p.Services {
		if sp.SingleWriter {
			out[sp.Name] = writerState{writer: sp.Writer, writable: sp.Writable}
		}
	}
	return out
}

// call sends one request to the daemon on socket and decodes its reply into out.
func call(ctx context.Context, socket string, req Request, out any) error {
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "unix", socket)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (nothing answers on %s; start it with `xdplb run --config FILE` or `systemctl start xdplb`)", ErrNoDaemon, socket)
		}
		return fmt.Errorf("status socket %s: %w", socket, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("status socket %s: %w", socket, err)
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(nil, 64<<20)
	if !sc.Scan() {
		if sc.Err() != nil {
			return fmt.Errorf("status socket %s: %w", socket, sc.Err())
		}
		return fmt.Errorf("status socket %s: closed without a reply", socket)
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(sc.Bytes(), &e) == nil && e.Error != "" {
		return fmt.Errorf("daemon: %s", e.Error)
	}
	if err := json.Unmarshal(sc.Bytes(), out); err != nil {
		return fmt.Errorf("status socket %s: bad reply: %w", socket, err)
	}
	return nil
}

// QueryStatus asks the daemon on socket for its status; the error wraps ErrNoDaemon when none
// runs.
func QueryStatus(ctx context.Context, socket string) (StatusReply, error) {
	var r StatusReply
	err := call(ctx, socket, Request{Cmd: "status"}, &r)
	return r, err
}

// RequestReload asks the daemon on socket to reload its configuration.
func RequestReload(ctx context.Context, socket string) (ReloadReply, error) {
	var r ReloadReply
	err := call(ctx, socket, Request{Cmd: "reload"}, &r)
	return r, err
}
