//go:build linux

package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/internal/clock/clocktest"
	"github.com/xdplb/xdplb/internal/testbed/netns"
	"github.com/xdplb/xdplb/internal/wait"
	"github.com/xdplb/xdplb/loader"
)

// topo is a veth pair: the director's end in this (the test's) network namespace, where the
// daemon runs, and the real server's end, eth0, in a namespace of its own.
type topo struct {
	iface   string       // director side
	rs      *netns.NS    // the real server
	rsAddr  netip.Addr   // eth0 of the real server
	vip     netip.Addr   // on the same /24, never used for traffic here
	pinRoot string       // private bpffs pin root
	dir     string       // temporary directory: config, status socket
	metrics string       // metrics listen address
	log     *slog.Logger // to the test log
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("the daemon test needs root (%v)", os.ErrPermission)
	}
	id := netns.RandomID()
	rs := netns.New(t)
	var b [1]byte
	fmt.Sscanf(id[:2], "%02x", &b[0])
	net3 := 10 + int(b[0])%200 // 198.18.<net3>.0/24 (benchmarking range: nothing real uses it)
	tp := &topo{
		iface:   "xdt" + id,
		rs:      rs,
		rsAddr:  netip.MustParseAddr(fmt.Sprintf("198.18.%d.2", net3)),
		vip:     netip.MustParseAddr(fmt.Sprintf("198.18.%d.100", net3)),
		pinRoot: "/sys/fs/bpf/xdplb-test-" + id,
		dir:     t.TempDir(),
		metrics: freePort(t),
		log:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(tp.pinRoot); err != nil {
			t.Errorf("remove pin root %s: %v", tp.pinRoot, err)
		}
	})

	h, err := vnetns.GetFromPath(rs.Path)
	if err != nil {
		t.Fatalf("open %s: %v", rs.Path, err)
	}
	defer h.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: tp.iface},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(h)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", tp.iface, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(tp.iface); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete %s: %v", tp.iface, err)
			}
		}
	})
	l, err := netlink.LinkByName(tp.iface)
	if err != nil {
		t.Fatal(err)
	}
	dirAddr := netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("198.18.%d.1", net3)), 24)
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet(dirAddr)}); err != nil {
		t.Fatalf("address %s: %v", tp.iface, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	err = rs.Do(func() error {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(tp.rsAddr, 24))}); err != nil {
			return err
		}
		return netlink.LinkSetUp(eth)
	})
	if err != nil {
		t.Fatalf("real server eth0: %v", err)
	}
	return tp
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

const (
	checkInterval = 200 * time.Millisecond
	checkTimeout  = 100 * time.Millisecond
	checkFall     = 2
)

// config writes the configuration file with the real server's weight and the hash seed.
func (tp *topo) config(t *testing.T, weight int, seed int) string {
	t.Helper()
	p := filepath.Join(tp.dir, "xdplb.yaml")
	y := fmt.Sprintf(`interfaces: [%s]
maps: {services: 8, backends: 64, peers: 4, conntrack: 1024, persist: 1024, ring_size: 251}
hash_seed: %d
metrics: %s
peers: [02:00:00:00:00:aa]
services:
  - name: writer
    vip: %s
    port: 3306
    check: {type: tcp, interval: %v, timeout: %v, rise: 1, fall: %d, dr_path: false}
    real_servers:
      - address: %s
        weight: %d
`, tp.iface, seed, tp.metrics, tp.vip, checkInterval, checkTimeout, checkFall, tp.rsAddr, weight)
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (tp *topo) options(cfg string) Options {
	return Options{
		ConfigPath:   cfg,
		PinRoot:      tp.pinRoot,
		StatusSocket: filepath.Join(tp.dir, "run", "xdplb.sock"),
		Mode:         loader.ModeGeneric,
		Logger:       tp.log,
	}
}

// start runs a daemon until the test ends, or until the returned stop is called (which waits
// for Run and returns its error).
func start(t *testing.T, o Options) (*Daemon, func() error) {
	t.Helper()
	d, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	var (
		stopped bool
		runErr  error
	)
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case runErr = <-errc:
			case <-time.After(10 * time.Second):
				t.Fatalf("Run did not return within 10s of its context's end")
			}
		}
		return runErr
	}
	t.Cleanup(func() { stop() })
	return d, stop
}

// snapshot reads the pinned maps as another process would.
func (tp *topo) snapshot(t *testing.T) control.State {
	t.Helper()
	o, err := loader.Open(tp.pinRoot, tp.iface)
	if err != nil {
		t.Fatalf("open pins: %v", err)
	}
	defer o.Close()
	st, err := control.NewMaps(o).Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return st
}

// ringWeight is the weight of the real server in the writer service's ring; 0 when it is not
// in the ring (or there is no such service).
func (tp *topo) ringWeight(t *testing.T) uint32 {
	st := tp.snapshot(t)
	for _, s := range st.Services {
		for _, b := range s.Backends {
			if b.Addr == tp.rsAddr && inRing(b) {
				return b.Weight
			}
		}
	}
	return 0
}

// waitRing waits until the real server's ring weight satisfies ok, and returns how long it took.
func (tp *topo) waitRing(t *testing.T, what string, limit time.Duration, ok func(w uint32) bool) time.Duration {
	t.Helper()
	return wait.For(t, limit, what, func() error {
		if ok(tp.ringWeight(t)) {
			return nil
		}
		return fmt.Errorf("maps: %+v", tp.snapshot(t).Services)
	})
}

func TestDaemon(t *testing.T) {
	tp := newTopo(t)
	listen := netip.AddrPortFrom(tp.rsAddr, 3306).String()
	srv := tp.rs.ServeWhoAmI(t, listen, "rs1")

	cfg := tp.config(t, 1, 7)
	o := tp.options(cfg)
	d, stop := start(t, o)

	// Checks up → in the ring (the MAC is resolved by ARP meanwhile).
	took := tp.waitRing(t, "real server into the ring", 5*time.Second, func(w uint32) bool { return w == 1 })
	t.Logf("real server in the ring after %v", took)
	st := tp.snapshot(t)
	if len(st.Peers) != 1 || st.Peers[0].String() != "02:00:00:00:00:aa" {
		t.Errorf("peers: expected [02:00:00:00:00:aa], seen %v", st.Peers)
	}
	if st.HashSeed != 7 || st.RingSize != 251 {
		t.Errorf("layout: expected seed 7 ring 251, seen seed %d ring %d", st.HashSeed, st.RingSize)
	}

	// A second daemon on the same status socket refuses to start, attaching nothing.
	if _, err := New(o); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second daemon: expected ErrAlreadyRunning, seen %v", err)
	}

	// Listener stopped → out of the ring within fall × interval + timeout (plus the loop's slack).
	srv.Close()
	limit := checkFall*checkInterval + checkTimeout
	took = tp.waitRing(t, "real server out of the ring", limit+time.Second, func(w uint32) bool { return w == 0 })
	t.Logf("real server out of the ring %v after its listener closed (bound fall×interval+timeout = %v)", took, limit)
	if took > limit+300*time.Millisecond {
		t.Errorf("out of the ring after %v: expected within %v (+300ms slack)", took, limit)
	}
	// Status while down: the last error is reported.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sr, err := QueryStatus(ctx, o.StatusSocket)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if b := sr.Services[0].Backends[0]; b.Up || b.InRing || b.LastError == "" {
		t.Errorf("status while down: expected up=false in_ring=false with an error, seen %+v", b)
	}

	// Listener back → in the ring again.
	tp.rs.ServeWhoAmI(t, listen, "rs1")
	took = tp.waitRing(t, "real server back into the ring", 5*time.Second, func(w uint32) bool { return w == 1 })
	t.Logf("real server back in the ring after %v", took)

	t.Run("status", func(t *testing.T) {
		var sr StatusReply
		wait.For(t, time.Second, "quorum up in the status", func() error { // published just after the maps change
			sr, err = QueryStatus(ctx, o.StatusSocket)
			if err != nil {
				t.Fatalf("status: %v", err)
			}
			if len(sr.Services) > 0 && sr.Services[0].QuorumUp {
				return nil
			}
			return fmt.Errorf("status %+v", sr)
		})
		if sr.Config != cfg || sr.Started.IsZero() || len(sr.Services) != 1 {
			t.Fatalf("status: expected config %s, a start time and one service, seen %+v", cfg, sr)
		}
		s := sr.Services[0]
		if s.Name != "writer" || s.VIP != tp.vip || s.Port != 3306 || s.Proto != control.TCP || !s.QuorumUp || len(s.Backends) != 1 {
			t.Fatalf("status service: %+v", s)
		}
		b := s.Backends[0]
		if b.Addr != tp.rsAddr || !b.Up || !b.InRing || b.Weight != 1 || b.Checks == 0 || b.Failures == 0 || b.LastCheck.IsZero() {
			t.Errorf("status backend: expected up, in ring, weight 1, with checks and failures, seen %+v", b)
		}
		fi, err := os.Stat(o.StatusSocket)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("status socket: expected mode 0600, seen %v %v", fi.Mode(), err)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + tp.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
			t.Errorf("Content-Type: %q", ct)
		}
		samples := map[string]string{}
		typed := map[string]bool{}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
				typed[strings.Fields(name)[0]] = true
				continue
			}
			if strings.HasPrefix(line, "#") || line == "" {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			samples[line[:i]] = line[i+1:]
		}
		for _, name := range []string{
			"xdplb_packets_total", "xdplb_service_packets_total", "xdplb_service_bytes_total",
			"xdplb_service_new_flows_total", "xdplb_backend_packets_total", "xdplb_backend_bytes_total",
			"xdplb_backend_new_flows_total", "xdplb_backend_up", "xdplb_backend_in_ring",
			"xdplb_check_latency_seconds", "xdplb_check_failures_total", "xdplb_service_quorum_up",
			"xdplb_config_reloads_total",
		} {
			if !typed[name] {
				t.Errorf("metrics: no # TYPE line for %s", name)
			}
		}
		be := fmt.Sprintf(`{service="writer",backend="%s"}`, tp.rsAddr)
		for k, want := range map[string]string{
			"xdplb_backend_up" + be: "1",
			fmt.Sprintf(`xdplb_backend_in_ring{iface="%s",service="writer",backend="%s"}`, tp.iface, tp.rsAddr): "1",
			`xdplb_service_quorum_up{service="writer"}`:                                                         "1",
			`xdplb_config_reloads_total{result="ok"}`:                                                           "0",
		} {
			if got := samples[k]; got != want {
				t.Errorf("metrics: %s = %q, expected %q", k, got, want)
			}
		}
		if v := samples[fmt.Sprintf(`xdplb_packets_total{iface="%s",verdict="packets"}`, tp.iface)]; v == "" {
			t.Errorf("metrics: no verdict counter packets for %s", tp.iface)
		}
		if v := samples["xdplb_check_failures_total"+be]; v == "" || v == "0" {
			t.Errorf("metrics: check failures = %q, expected > 0", v)
		}
		if v := samples["xdplb_check_latency_seconds"+be]; v == "" {
			t.Errorf("metrics: no check latency")
		}
	})

	t.Run("reload-invalid", func(t *testing.T) {
		before := tp.snapshot(t)
		if err := os.WriteFile(cfg, []byte("interfaces: [x]\nservices:\n  - vip: 10.0.0.300\n    real_servers: []\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := d.Reload()
		if len(config.Errors(err)) == 0 {
			t.Fatalf("Reload of an invalid file: expected a *config.ValidationError, seen %v", err)
		}
		t.Logf("rejected as expected:\n%v", err)
		// Through the socket too, as `xdplb reload` asks.
		rr, err := RequestReload(ctx, o.StatusSocket)
		if err != nil || rr.OK || len(rr.Errors) == 0 {
			t.Errorf("reload over the socket: expected ok=false with errors, seen %+v %v", rr, err)
		}
		after := tp.snapshot(t)
		if !sameBackends(before, after) {
			t.Errorf("state changed by a rejected reload:\nbefore %+v\nafter  %+v", before.Services, after.Services)
		}
	})

	t.Run("reload-restart-needed", func(t *testing.T) {
		tp.config(t, 1, 8)
		if err := d.Reload(); !errors.Is(err, ErrRestartNeeded) {
			t.Fatalf("hash seed change: expected ErrRestartNeeded, seen %v", err)
		}
	})

	t.Run("reload-valid", func(t *testing.T) {
		before := tp.snapshot(t)
		tp.config(t, 3, 7)
		if err := d.Reload(); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		if w := tp.ringWeight(t); w != 3 {
			t.Errorf("weight after reload: expected 3, seen %d", w)
		}
		after := tp.snapshot(t)
		if before.Services[0].Backends[0].ID != after.Services[0].Backends[0].ID {
			t.Errorf("backend id changed by a weight change: %d → %d", before.Services[0].Backends[0].ID, after.Services[0].Backends[0].ID)
		}
		resp, err := http.Get("http://" + tp.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `xdplb_config_reloads_total{result="ok"} 1`) ||
			!strings.Contains(string(body), `xdplb_config_reloads_total{result="error"} 3`) {
			t.Errorf("reload counters: expected ok 1 and error 3, seen:\n%s", grep(string(body), "reloads_total{"))
		}
	})

	// Stop: the pins and the XDP link stay, the socket goes.
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(o.StatusSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("status socket left after exit: %v", err)
	}
	if _, err := QueryStatus(ctx, o.StatusSocket); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("status after exit: expected ErrNoDaemon, seen %v", err)
	}
	if _, err := loader.Status(tp.pinRoot, tp.iface); err != nil {
		t.Fatalf("after exit: expected the data path attached, seen %v", err)
	}
	if w := tp.ringWeight(t); w != 3 {
		t.Errorf("after exit: expected the real server kept in the ring (weight 3), seen %d", w)
	}

	// A restarted daemon adopts the pins: the real server stays in the ring while its checks
	// warm up (InitialUp). With DetachOnExit it removes everything at exit.
	//
	// It runs on a fake clock, so that the test knows when the daemon has acted: once its
	// goroutines are parked on their timers (the lease renewal, the resync, the MAC retry and the
	// real server's check), the first reconciliation is in the maps; each Advance by an interval
	// then runs exactly one check, recorded before the check's timer is rearmed.
	o.DetachOnExit = true
	clk := clocktest.NewFake(time.Now())
	o.Clock = clk
	_, stop = start(t, o)
	const timers = 4
	clk.WaitParked(t, timers)
	if w := tp.ringWeight(t); w != 3 {
		t.Errorf("adopted: expected the real server still in the ring (weight 3), seen %d", w)
	}
	const checks = 3
	for range checks {
		clk.Advance(checkInterval)
		clk.WaitParked(t, timers)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	sr, err = QueryStatus(sctx, o.StatusSocket)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if b := sr.Services[0].Backends[0]; b.Checks != checks || !b.Up || !b.InRing || b.Weight != 3 {
		t.Errorf("adopted, after %d checks: expected %d checks, up, in the ring with weight 3, seen %+v", checks, checks, b)
	}
	if w := tp.ringWeight(t); w != 3 {
		t.Errorf("adopted, after checks: expected weight 3, seen %d", w)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(loader.PinDir(tp.pinRoot, tp.iface)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("DetachOnExit: pins left in %s (%v)", loader.PinDir(tp.pinRoot, tp.iface), err)
	}
	if _, err := loader.Status(tp.pinRoot, tp.iface); !errors.Is(err, loader.ErrNotAttached) {
		t.Errorf("DetachOnExit: expected ErrNotAttached, seen %v", err)
	}
}

func sameBackends(a, b control.State) bool {
	if len(a.Services) != len(b.Services) {
		return false
	}
	for i := range a.Services {
		x, y := a.Services[i], b.Services[i]
		if x.Key != y.Key || x.ActiveSlot != y.ActiveSlot || len(x.Backends) != len(y.Backends) {
			return false
		}
		for j := range x.Backends {
			p, q := x.Backends[j], y.Backends[j]
			if p.ID != q.ID || p.Addr != q.Addr || p.Weight != q.Weight || p.Draining != q.Draining {
				return false
			}
		}
	}
	return true
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestNewInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yaml")
	os.WriteFile(p, []byte("interfaces: [lo]\nservices:\n  - vip: 10.0.0.1\n    port: 99999\n"), 0o600)
	root := "/sys/fs/bpf/xdplb-test-" + netns.RandomID()
	_, err := New(Options{ConfigPath: p, PinRoot: root, StatusSocket: filepath.Join(dir, "s.sock")})
	if len(config.Errors(err)) == 0 {
		t.Fatalf("expected a *config.ValidationError, seen %v", err)
	}
	if _, serr := os.Stat(root); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("pin root created for an invalid config")
		os.RemoveAll(root)
	}
	if _, serr := os.Stat(filepath.Join(dir, "s.sock")); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("status socket created for an invalid config")
	}
	t.Logf("%v", err)
}

func TestMetricsEscaping(t *testing.T) {
	f := family{name: "m", typ: "gauge", help: "a \\ help\nline"}
	f.add("1", "service", "a\"b\\c\nd")
	var b strings.Builder
	f.write(&b)
	want := "# HELP m a \\\\ help\\nline\n# TYPE m gauge\nm{service=\"a\\\"b\\\\c\\nd\"} 1\n"
	if b.String() != want {
		t.Errorf("expected\n%s\nseen\n%s", want, b.String())
	}
}
