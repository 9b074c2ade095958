package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/testbed"
	"github.com/xdplb/xdplb/internal/testbed/keepalived"
	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// FailoverOptions configures [Failover].
type FailoverOptions struct {
	Intervals  []time.Duration // advertisement intervals; 1s uses VRRPv2, shorter ones VRRPv3
	Rounds     int             // failovers per implementation × interval
	XDPLB      string          // the xdplb binary ("" = skip xdplb)
	Keepalived string          // the keepalived binary ("" = skip keepalived)
	Mode       string          // XDP mode of the daemons (generic: no XDP_TX is needed here)
	ProbeEvery time.Duration   // client probe period
	Timeout    time.Duration   // per-probe timeout (connect + read)
	Progress   io.Writer       // one line per round (nil: quiet)
}

// foRatioTarget: xdplb's phase-free median may exceed keepalived's by 2% at most. Both sit on
// Master_Down_Interval, so a strict <= 1 would turn a 0.2 ms difference at 3.6 s into a miss.
const foRatioTarget = 1.02

// DefaultFailoverOptions: 3 rounds at 1 s, 100 ms and 30 ms (more with --failover-rounds).
func DefaultFailoverOptions(xdplb string) FailoverOptions {
	return FailoverOptions{
		Intervals: []time.Duration{time.Second, 100 * time.Millisecond, 30 * time.Millisecond},
		Rounds:    3, XDPLB: xdplb, Keepalived: "/usr/sbin/keepalived", Mode: "generic",
		ProbeEvery: 5 * time.Millisecond, Timeout: 100 * time.Millisecond,
	}
}

// QuickFailoverOptions: 1 round at 100 ms and 30 ms.
func QuickFailoverOptions(xdplb string) FailoverOptions {
	o := DefaultFailoverOptions(xdplb)
	o.Intervals = []time.Duration{100 * time.Millisecond, 30 * time.Millisecond}
	o.Rounds = 1
	return o
}

// FailoverRound is one failover. Times are from the moment the Master's link went down.
type FailoverRound struct {
	Ms          float64 `json:"ms"`                  // first answer from B through the VIP
	VIPMs       float64 `json:"vip_on_backup_ms"`    // the VIP appeared on B's eth0 (B became Master)
	ARPMs       float64 `json:"client_arp_ms"`       // the client's neighbour entry for the VIP got B's MAC
	PhaseMs     float64 `json:"phase_ms"`            // A's last advert before the link went down, ms before it
	FromAdvMs   float64 `json:"from_last_advert_ms"` // A's last advert -> first answer from B (Ms + PhaseMs): phase-free
	DetectMs    float64 `json:"detect_ms"`           // from A's last advert to the VIP on B: B's Master_Down_Interval as run
	Probes      int     `json:"probes"`              // probes sent from link down to the first answer from B
	Failed      int     `json:"probes_failed"`
	ClientNeigh string  `json:"client_neigh"` // the client's entry for the VIP after the round
	Error       string  `json:"error,omitempty"`
}

// FailoverResult is one implementation at one interval.
type FailoverResult struct {
	Impl        string          `json:"impl"` // xdplb or keepalived
	Version     int             `json:"vrrp_version"`
	IntervalMs  float64         `json:"interval_ms"`
	Rounds      []FailoverRound `json:"rounds"`
	MinMs       float64         `json:"min_ms"`
	MedianMs    float64         `json:"median_ms"`
	MaxMs       float64         `json:"max_ms"`
	VIPMs       float64         `json:"median_vip_on_backup_ms"`
	DetectMs    float64         `json:"median_detect_ms"` // A's last advert -> VIP on B
	AdvMedianMs float64         `json:"median_from_last_advert_ms"`
	AdvMaxMs    float64         `json:"max_from_last_advert_ms"`
	MasterDown  float64         `json:"master_down_ms"` // 3 × interval + Skew_Time(100), the ideal DetectMs
	ARPMs       float64         `json:"median_client_arp_ms"`
	TargetMs    float64         `json:"target_ms"`                     // 3 × interval + Skew_Time(priority 100) + 20 ms
	Ratio       float64         `json:"ratio_to_keepalived,omitempty"` // xdplb / keepalived, medians from A's last advert
	Failures    int             `json:"failed_rounds"`
}

// The topology's addresses.
var (
	foVIP     = netip.MustParseAddr("10.98.0.100")
	foPort    = 3306
	foAddrA   = "10.98.0.1/24"
	foAddrB   = "10.98.0.2/24"
	foAddrCli = "10.98.0.10/24"
	foVRID    = 61
)

const (
	foPrioA = 150
	foPrioB = 100
)

func foSkew(version, prio int, interval time.Duration) time.Duration {
	unit := interval
	if version == 2 {
		unit = time.Second
	}
	return time.Duration(256-prio) * unit / 256
}

// FailoverTarget is the bound for a Backup of priority 100: 3 × interval + Skew_Time + 20 ms.
func FailoverTarget(version int, interval time.Duration) time.Duration {
	return 3*interval + foSkew(version, foPrioB, interval) + 20*time.Millisecond
}

func foVersion(interval time.Duration) int {
	if interval >= time.Second && interval%time.Second == 0 {
		return 2
	}
	return 3
}

// foBed is the running bench: topology, listeners, prober and the current routers.
type foBed struct {
	opts       FailoverOptions
	ctx        context.Context
	topo       *netns.LAN
	a, b, cli  *netns.Node
	srvA, srvB *foServer
	prober     *foProber
	adverts    *foAdverts
	tmp        string
	pinBase    string

	mu    sync.Mutex
	procs map[*testbed.Proc]bool // running router processes, for cleanup
}

// Failover measures VRRP failover time, xdplb against keepalived, in network namespaces: the
// Master director A (priority 150) loses its link and its router is killed with SIGKILL; the
// time is until the client's first answer from B (priority 100) through the VIP. Everything it
// creates (namespaces, processes, pins, files) is removed when it returns, also on error and on
// SIGINT/SIGTERM.
func Failover(opts FailoverOptions) (res []FailoverResult, err error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("failover bench needs root (network namespaces)")
	}
	if opts.Rounds < 1 || len(opts.Intervals) == 0 {
		return nil, fmt.Errorf("failover: want rounds >= 1 and at least one interval")
	}
	var impls []string
	if opts.Keepalived != "" {
		if _, err := exec.LookPath(opts.Keepalived); err != nil {
			return nil, fmt.Errorf("failover: keepalived: %w (install the keepalived package)", err)
		}
		impls = append(impls, "keepalived")
	}
	if opts.XDPLB != "" {
		if _, err := os.Stat(opts.XDPLB); err != nil {
			return nil, fmt.Errorf("failover: xdplb binary: %w", err)
		}
		impls = append(impls, "xdplb")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	bed := &foBed{opts: opts, ctx: ctx, procs: map[*testbed.Proc]bool{}}
	defer func() {
		if cerr := bed.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("failover cleanup: %w", cerr))
		}
		if ctx.Err() != nil && err == nil {
			err = fmt.Errorf("failover: interrupted")
		}
	}()
	if err := bed.setup(); err != nil {
		return nil, err
	}
	for _, iv := range opts.Intervals {
		var ka *FailoverResult
		for _, impl := range impls {
			r, err := bed.run(impl, iv)
			if err != nil && ctx.Err() != nil {
				return res, fmt.Errorf("failover: interrupted (%s at %v); everything it created is removed", impl, iv)
			}
			if err != nil {
				return res, fmt.Errorf("failover %s at %v: %w", impl, iv, err)
			}
			if impl == "keepalived" {
				ka = &r
			} else if ka != nil && ka.AdvMedianMs > 0 && r.AdvMedianMs > 0 {
				r.Ratio = r.AdvMedianMs / ka.AdvMedianMs // phase-free figures
			} else if ka != nil && ka.MedianMs > 0 && r.MedianMs > 0 {
				r.Ratio = r.MedianMs / ka.MedianMs
			}
			res = append(res, r)
		}
	}
	return res, nil
}

func (bed *foBed) logf(format string, args ...any) {
	if bed.opts.Progress != nil {
		fmt.Fprintf(bed.opts.Progress, format+"\n", args...)
	}
}

func (bed *foBed) setup() error {
	var err error
	if bed.tmp, err = os.MkdirTemp("", "xdplb-bench-failover-"); err != nil {
		return err
	}
	if bed.topo, err = netns.OpenLAN(nsPrefix); err != nil {
		return err
	}
	bed.pinBase = "/sys/fs/bpf/xdplb-bench-" + bed.topo.ID
	if bed.a, err = bed.topo.Add("a", foAddrA); err != nil {
		return err
	}
	if bed.b, err = bed.topo.Add("b", foAddrB); err != nil {
		return err
	}
	if bed.cli, err = bed.topo.Add("client", foAddrCli); err != nil {
		return err
	}
	if bed.srvA, err = startServer(bed.a.NS, foPort, "A"); err != nil {
		return err
	}
	if bed.srvB, err = startServer(bed.b.NS, foPort, "B"); err != nil {
		return err
	}
	workers := int(bed.opts.Timeout/bed.opts.ProbeEvery) + 16
	if bed.adverts, err = watchAdverts(bed.cli.NS); err != nil {
		return err
	}
	bed.prober, err = newProber(bed.cli.NS, netip.AddrPortFrom(foVIP, uint16(foPort)).String(), workers, bed.opts.Timeout)
	return err
}

func (bed *foBed) close() error {
	bed.mu.Lock()
	procs := make([]*testbed.Proc, 0, len(bed.procs))
	for p := range bed.procs {
		procs = append(procs, p)
	}
	bed.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.Stop(5 * time.Second) })
	}
	wg.Wait()
	if bed.prober != nil {
		bed.prober.close()
	}
	if bed.adverts != nil {
		bed.adverts.close()
	}
	for _, s := range []*foServer{bed.srvA, bed.srvB} {
		if s != nil {
			s.close()
		}
	}
	var errs []error
	if bed.topo != nil {
		errs = append(errs, bed.topo.Close())
	}
	if bed.pinBase != "" {
		if err := os.RemoveAll(bed.pinBase); err != nil {
			errs = append(errs, err)
		}
	}
	if bed.tmp != "" {
		errs = append(errs, os.RemoveAll(bed.tmp))
	}
	return errors.Join(errs...)
}

// router is one director's VRRP router for one implementation × interval.
type router struct {
	node    *netns.Node
	name    string // a or b
	start   func() (*testbed.Proc, error)
	proc    *testbed.Proc
	logPath string
}

func (bed *foBed) track(p *testbed.Proc, on bool) {
	bed.mu.Lock()
	defer bed.mu.Unlock()
	if on {
		bed.procs[p] = true
	} else {
		delete(bed.procs, p)
	}
}

func (bed *foBed) startRouter(r *router) error {
	p, err := r.start()
	if err != nil {
		return err
	}
	r.proc = p
	bed.track(p, true)
	return nil
}

func (bed *foBed) stopRouter(r *router) {
	if r.proc != nil {
		r.proc.Stop(5 * time.Second)
		bed.track(r.proc, false)
		r.proc = nil
	}
}

// routers writes the configurations of impl at interval and returns A and B, not started.
func (bed *foBed) routers(impl string, iv time.Duration) (*router, *router, error) {
	version := foVersion(iv)
	dir := filepath.Join(bed.tmp, fmt.Sprintf("%s-%v", impl, iv))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	mk := func(n *netns.Node, name string, prio int) (*router, error) {
		r := &router{node: n, name: name, logPath: filepath.Join(dir, name+".log")}
		conf := filepath.Join(dir, name+".conf")
		switch impl {
		case "keepalived":
			text := keepalived.Config{
				RouterID: "xdplb_bench_" + name, Instance: fmt.Sprintf("VI_%d", foVRID), Interface: netns.NodeLink,
				Version: version, VRID: foVRID, Priority: prio, Interval: iv, State: "BACKUP",
				VIPs: []netip.Prefix{netip.PrefixFrom(foVIP, 32)},
			}.Text("")
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				return nil, err
			}
			ctx, cancel := context.WithTimeout(bed.ctx, 10*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, "nsenter", "--net="+n.Path, "--", bed.opts.Keepalived, "-t", "-f", conf).CombinedOutput()
			if err != nil {
				return nil, fmt.Errorf("keepalived -t -f %s: %w: %s", conf, err, out)
			}
			pid, vpid := filepath.Join(dir, name+".pid"), filepath.Join(dir, name+"-vrrp.pid")
			r.start = func() (*testbed.Proc, error) {
				// A SIGKILLed keepalived leaves its pid files: a restart would refuse
				// ("daemon is already running") if a pid in them is still a zombie or reused.
				_ = os.Remove(pid)
				_ = os.Remove(vpid)
				return testbed.StartProc(n.Path, "keepalived@"+name, r.logPath, bed.opts.Keepalived,
					"-n", "-l", "-D", "-P", "-f", conf, "-p", pid, "-r", vpid)
			}
		case "xdplb":
			text := fmt.Sprintf(`# xdplb bench failover, director %s
interfaces: [%s]
maps:
  conntrack: 4096
  persist: 1024
services:
  - name: mysql
    vip: %s
    port: %d
    check:
      type: none
    real_servers:
      - address: %s
        local: true
vrrp:
  - name: VI_%d
    interface: %s
    version: %d
    vrid: %d
    priority: %d
    advert_interval: %v
    preempt: true
    vips: [%s]
`, name, netns.NodeLink, foVIP, foPort, n.Addr(), foVRID, netns.NodeLink, version, foVRID, prio, iv, foVIP)
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				return nil, err
			}
			pinRoot := filepath.Join(bed.pinBase, name)
			sock := filepath.Join(dir, name+".sock")
			r.start = func() (*testbed.Proc, error) {
				return testbed.StartProc(n.Path, "xdplb@"+name, r.logPath, bed.opts.XDPLB, "--pin-root", pinRoot,
					"run", "--config", conf, "--mode", bed.opts.Mode, "--status-socket", sock, "--detach-on-exit")
			}
		default:
			return nil, fmt.Errorf("unknown implementation %q", impl)
		}
		return r, nil
	}
	a, err := mk(bed.a, "a", foPrioA)
	if err != nil {
		return nil, nil, err
	}
	b, err := mk(bed.b, "b", foPrioB)
	if err != nil {
		return nil, nil, err
	}
	return a, b, nil
}

func (bed *foBed) sleep(d time.Duration) error {
	select {
	case <-bed.ctx.Done():
		return bed.ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// waitAMaster waits until A holds the VIP, B does not, and the client got 3 answers in a row
// from A, then lets B settle as Backup.
func (bed *foBed) waitAMaster(a, b *router, iv time.Duration) error {
	deadline := time.Now().Add(30*time.Second + 10*iv)
	var last string
	for streak := 0; streak < 3; {
		if time.Now().After(deadline) {
			return fmt.Errorf("A did not become Master with the client answered by A (last: %s)\nA's log:\n%s\nB's log:\n%s",
				last, a.proc.LogTail(15), b.proc.LogTail(15))
		}
		for _, r := range []*router{a, b} {
			if !r.proc.Running() {
				return fmt.Errorf("%s exited (%v); log:\n%s", r.proc.Name, r.proc.WaitErr(), r.proc.LogTail(20))
			}
		}
		if err := bed.sleep(20 * time.Millisecond); err != nil {
			return err
		}
		hasA, err := bed.a.HasAddr(foVIP)
		if err != nil {
			return err
		}
		hasB, err := bed.b.HasAddr(foVIP)
		if err != nil {
			return err
		}
		ans := bed.prober.once()
		last = fmt.Sprintf("VIP on A %t, on B %t, answer %q %v", hasA, hasB, ans.who, ans.err)
		if hasA && !hasB && ans.who == "A" {
			streak++
		} else {
			streak = 0
		}
	}
	return bed.sleep(2*iv + 200*time.Millisecond)
}

func (bed *foBed) run(impl string, iv time.Duration) (FailoverResult, error) {
	version := foVersion(iv)
	res := FailoverResult{Impl: impl, Version: version, IntervalMs: ms(iv), TargetMs: ms(FailoverTarget(version, iv)),
		MasterDown: ms(3*iv + foSkew(version, foPrioB, iv))}
	a, b, err := bed.routers(impl, iv)
	if err != nil {
		return res, err
	}
	// Leftovers of the previous implementation: no VIP anywhere, links up.
	for _, n := range []*netns.Node{bed.a, bed.b} {
		if err := n.DelAddr(foVIP); err != nil {
			return res, err
		}
		if err := n.SetLink(true); err != nil {
			return res, err
		}
	}
	defer func() {
		var wg sync.WaitGroup
		for _, r := range []*router{a, b} {
			wg.Go(func() { bed.stopRouter(r) })
		}
		wg.Wait()
		_ = bed.a.SetLink(true)
		_ = bed.a.DelAddr(foVIP)
		_ = bed.b.DelAddr(foVIP)
	}()
	if err := bed.startRouter(b); err != nil {
		return res, err
	}
	if err := bed.startRouter(a); err != nil {
		return res, err
	}
	for round := range bed.opts.Rounds {
		if err := bed.waitAMaster(a, b, iv); err != nil {
			return res, fmt.Errorf("round %d: %w", round+1, err)
		}
		fr, err := bed.failover(a, b, iv)
		if err != nil {
			return res, fmt.Errorf("round %d: %w", round+1, err)
		}
		res.Rounds = append(res.Rounds, fr)
		bed.logf("failover %-10s v%d %6v round %d/%d: %s", impl, version, iv, round+1, bed.opts.Rounds, fr.describe())
		// Restore A as after a reboot: no VIP, link up, router started again; it preempts.
		if err := bed.a.DelAddr(foVIP); err != nil {
			return res, err
		}
		if err := bed.a.SetLink(true); err != nil {
			return res, err
		}
		if round+1 < bed.opts.Rounds {
			if err := bed.startRouter(a); err != nil {
				return res, err
			}
		}
	}
	res.summarize()
	return res, nil
}

func (r FailoverRound) describe() string {
	if r.Error != "" {
		return "FAILED: " + r.Error
	}
	return fmt.Sprintf("%.1f ms (A's last advert %.1f ms before link down; VIP on B at %.1f ms = %.1f ms after that advert; client ARP -> B at %.1f ms; %d probes, %d failed; client neigh %s)",
		r.Ms, r.PhaseMs, r.VIPMs, r.DetectMs, r.ARPMs, r.Probes, r.Failed, r.ClientNeigh)
}

func (r *FailoverResult) summarize() {
	var t, v, a, d, f []float64
	for _, x := range r.Rounds {
		if x.Error != "" {
			r.Failures++
			continue
		}
		t = append(t, x.Ms)
		if x.VIPMs > 0 {
			v = append(v, x.VIPMs)
		}
		if x.ARPMs > 0 {
			a = append(a, x.ARPMs)
		}
		if x.DetectMs > 0 {
			d = append(d, x.DetectMs)
		}
		if x.FromAdvMs > 0 {
			f = append(f, x.FromAdvMs)
		}
	}
	if len(t) == 0 {
		return
	}
	r.MinMs, r.MaxMs, r.MedianMs = slices.Min(t), slices.Max(t), median(t)
	if len(v) > 0 {
		r.VIPMs = median(v)
	}
	if len(a) > 0 {
		r.ARPMs = median(a)
	}
	if len(d) > 0 {
		r.DetectMs = median(d)
	}
	if len(f) > 0 {
		r.AdvMedianMs, r.AdvMaxMs = median(f), slices.Max(f)
	}
}

// failover kills A (link down, then SIGKILL) while the client probes the VIP every ProbeEvery,
// and returns the time to the first answer from B, with the times at which B got the VIP and
// the client's neighbour entry moved to B's MAC.
func (bed *foBed) failover(a, b *router, iv time.Duration) (FailoverRound, error) {
	var fr FailoverRound
	limit := max(10*FailoverTarget(foVersion(iv), iv), FailoverTarget(foVersion(iv), iv)+5*time.Second)

	// Watch B's addresses and the client's neighbours (netlink multicast, timestamped on receipt).
	done := make(chan struct{})
	defer close(done)
	addrs := make(chan netlink.AddrUpdate, 256)
	neighs := make(chan netlink.NeighUpdate, 256)
	if err := netlink.AddrSubscribeAt(bed.b.Handle(), addrs, done); err != nil {
		return fr, fmt.Errorf("watch B's addresses: %w", err)
	}
	if err := netlink.NeighSubscribeAt(bed.cli.Handle(), neighs, done); err != nil {
		return fr, fmt.Errorf("watch the client's neighbours: %w", err)
	}
	var evMu sync.Mutex
	var vipAt, arpAt time.Time
	bMAC := bed.b.MAC.String()
	go func() {
		for {
			select {
			case u, ok := <-addrs:
				if !ok {
					return
				}
				now := time.Now()
				if ip, ok := netip.AddrFromSlice(u.LinkAddress.IP); ok && u.NewAddr && ip.Unmap() == foVIP {
					evMu.Lock()
					if vipAt.IsZero() {
						vipAt = now
					}
					evMu.Unlock()
				}
			case u, ok := <-neighs:
				if !ok {
					return
				}
				now := time.Now()
				if ip, ok := netip.AddrFromSlice(u.IP); ok && u.Type == unix.RTM_NEWNEIGH && ip.Unmap() == foVIP &&
					u.HardwareAddr.String() == bMAC {
					evMu.Lock()
					if arpAt.IsZero() {
						arpAt = now
					}
					evMu.Unlock()
				}
			case <-done:
				return
			}
		}
	}()

	answers := make(chan foAnswer, 1<<16)
	stopTick := make(chan struct{})
	tickDone := make(chan int)
	go func() {
		tk := time.NewTicker(bed.opts.ProbeEvery)
		defer tk.Stop()
		sent := 0
		for {
			select {
			case <-stopTick:
				tickDone <- sent
				return
			case now := <-tk.C:
				select {
				case bed.prober.jobs <- foJob{sent: now, out: answers}:
					sent++
				default: // every worker busy: skip this tick
				}
			}
		}
	}()
	stopped := false
	stopTicking := func() int {
		if stopped {
			return 0
		}
		stopped = true
		close(stopTick)
		return <-tickDone
	}
	defer stopTicking()

	// Probes run for a while against A before it dies, at a random phase of A's advert period
	// (else every round would kill at the same phase and bias min/median/max).
	if err := bed.sleep(50*time.Millisecond + rand.N(iv)); err != nil {
		return fr, err
	}
	if err := bed.a.SetLink(false); err != nil {
		return fr, err
	}
	t0 := time.Now()
	a.proc.Kill()
	bed.track(a.proc, false)
	a.proc = nil

	var firstB time.Time
	received := 0
	timeout := time.After(limit)
wait:
	for {
		select {
		case <-bed.ctx.Done():
			return fr, bed.ctx.Err()
		case <-timeout:
			break wait
		case ans := <-answers:
			received++
			if ans.sent.After(t0) {
				fr.Probes++
				if ans.err != nil {
					fr.Failed++
				}
			}
			if ans.who == "B" {
				firstB = ans.at
				break wait
			}
		}
	}
	sent := stopTicking()
	// Drain the probes still in flight; an earlier answer from B may be among them.
	drainBy := time.After(bed.opts.Timeout + time.Second)
drain:
	for received < sent {
		select {
		case ans := <-answers:
			received++
			if ans.sent.After(t0) {
				if !firstB.IsZero() && ans.sent.Before(firstB) {
					fr.Probes++
					if ans.err != nil {
						fr.Failed++
					}
				}
			}
			if ans.who == "B" && (firstB.IsZero() || ans.at.Before(firstB)) {
				firstB = ans.at
			}
		case <-drainBy:
			break drain
		}
	}
	evMu.Lock()
	last := bed.adverts.lastBefore(bed.a.Addr(), t0)
	if !last.IsZero() {
		fr.PhaseMs = ms(t0.Sub(last))
	}
	if !firstB.IsZero() && !last.IsZero() {
		fr.FromAdvMs = ms(firstB.Sub(last))
	}
	if !vipAt.IsZero() {
		fr.VIPMs = ms(vipAt.Sub(t0))
		if !last.IsZero() {
			fr.DetectMs = ms(vipAt.Sub(last))
		}
	}
	if !arpAt.IsZero() {
		fr.ARPMs = ms(arpAt.Sub(t0))
	}
	evMu.Unlock()
	hw, state, err := bed.cli.Neighbour(netns.NodeLink, foVIP)
	if err != nil {
		return fr, err
	}
	mac := hw.String()
	who := "?"
	switch mac {
	case bMAC:
		who = "B"
	case bed.a.MAC.String():
		who = "A"
	}
	fr.ClientNeigh = fmt.Sprintf("%s(%s) %s", who, mac, state)
	if firstB.IsZero() {
		fr.Error = fmt.Sprintf("no answer from B within %v (VIP on B at %.1f ms, client ARP at %.1f ms, neigh %s); B's log:\n%s",
			limit, fr.VIPMs, fr.ARPMs, fr.ClientNeigh, b.proc.LogTail(15))
		return fr, nil
	}
	fr.Ms = ms(firstB.Sub(t0))
	return fr, nil
}

// PrintFailover writes the failover results as a table.
func PrintFailover(w io.Writer, res []FailoverResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "router\tVRRP\tinterval\trounds\tmin ms\tmedian ms\tmax ms\tfrom last advert median/max ms\ttarget ms\tvs keepalived\tVIP on B ms\tclient ARP ms\tlast advert->VIP ms\tMaster_Down ms\t")
	ka := map[float64]FailoverResult{}
	for _, r := range res {
		if r.Impl == "keepalived" {
			ka[r.IntervalMs] = r
		}
	}
	for _, r := range res {
		n := len(r.Rounds) - r.Failures
		rounds := fmt.Sprint(n)
		if r.Failures > 0 {
			rounds = fmt.Sprintf("%d (%d FAILED)", n, r.Failures)
		}
		target := fmt.Sprintf("%.0f", r.TargetMs)
		if n > 0 {
			target += " " + okMissed(max(r.MaxMs, r.AdvMaxMs) <= r.TargetMs && r.Failures == 0)
		}
		vs := "-"
		if _, ok := ka[r.IntervalMs]; ok && r.Impl != "keepalived" && r.Ratio > 0 {
			vs = fmt.Sprintf("%.2fx %s", r.Ratio, okMissed(r.Ratio <= foRatioTarget))
		}
		fmt.Fprintf(tw, "%s\tv%d\t%v\t%s\t%.1f\t%.1f\t%.1f\t%.1f / %.1f\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t\n", r.Impl, r.Version,
			time.Duration(r.IntervalMs*float64(time.Millisecond)), rounds, r.MinMs, r.MedianMs, r.MaxMs, r.AdvMedianMs, r.AdvMaxMs,
			target, vs, r.VIPMs, r.ARPMs, r.DetectMs, r.MasterDown)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, r := range res {
		for i, x := range r.Rounds {
			if x.Error != "" {
				notes = append(notes, fmt.Sprintf("%s v%d %vms round %d: %s", r.Impl, r.Version, r.IntervalMs, i+1, x.Error))
			}
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
	return nil
}
