// Package daemon runs xdplb as a long-lived service: it attaches (or adopts) the data path on
// every configured interface, runs the health checks, keeps the maps equal to config ∩ healthy ∩
// resolved MAC through the reconciler, and serves Prometheus metrics and a status socket.
//
// One goroutine (Run's) owns the running state and reacts to everything in one select: health
// events, MAC updates, reload requests, a periodic resync and the end of its context.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/health"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/internal/clock"
	"github.com/xdplb/xdplb/loader"
	"github.com/xdplb/xdplb/vrrp"
)

// DefaultStatusSocket is where the daemon answers `xdplb list` and `xdplb reload`.
const DefaultStatusSocket = "/run/xdplb/xdplb.sock"

// Timing of the loop.
const (
	resyncInterval  = 10 * time.Second // the maps are compared with the desired state at least this often
	macRetry        = 3 * time.Second  // a real server whose MAC is unknown is resolved again this often
	resolveTimeout  = 2 * time.Second  // one resolution attempt
	shutdownTimeout = 2 * time.Second  // for the metrics server's open requests
	lockTimeout     = 5 * time.Second  // a CLI command holding the maps' lock
)

var (
	// ErrRestartNeeded: a reload changed something only a restart applies (interfaces, map
	// sizes, hash seed, metrics address); the running state is kept.
	ErrRestartNeeded = errors.New("restart needed")
	// ErrAlreadyRunning: another daemon answers on the status socket.
	ErrAlreadyRunning = errors.New("another xdplb daemon is running")
	// ErrStopped: the daemon is not running (any more).
	ErrStopped = errors.New("daemon stopped")
)

// Options configure the daemon.
type Options struct {
	ConfigPath   string
	PinRoot      string // default loader.DefaultPinRoot
	StatusSocket string // default DefaultStatusSocket
	Mode         loader.Mode
	DetachOnExit bool // remove the data path at exit (default: leave it attached, flows keep flowing)
	Logger       *slog.Logger
	Clock        clock.Clock // default clock.Real
}

// Daemon is a started daemon: attached, listening, not yet running its loop.
type Daemon struct {
	o       Options
	log     *slog.Logger
	clock   clock.Clock
	started time.Time

	atts []*loader.Attachment
	maps []*control.Maps // by interface, in config order
	rec  *reconcile.Reconciler
	mon  *health.Monitor
	macs *macCache

	statusLn  net.Listener
	metricsLn net.Listener
	httpSrv   *http.Server

	reloadCh chan chan error
	macCh    chan macUpdate
	vrrpCh   chan *vrrpRunner // a VRRP instance's peer set changed
	peerCh   chan struct{}    // a director hello named a new peer
	done     chan struct{}    // closed when Run returns
	runOnce  sync.Once

	// Owned by the loop goroutine.
	rsState  map[health.Target]reconcile.RSState
	inflight map[netip.Addr]bool // MAC resolutions under way
	warned   map[netip.Addr]bool // MAC failures already logged

	mu      sync.Mutex // guards what the status socket and metrics read
	cfg     *config.Config
	quorum  map[string]bool
	writers map[string]writerState
	reloads map[string]uint64 // by result: "ok", "error"
	vrrp    []*vrrpRunner     // the VRRP instances, in config order
	linkUp  map[string]bool   // operational state by interface, once known
	// Peer directors heard through hellos, by interface and MAC.
	hellos       map[string]map[string]heardPeer
	helloRunners []*helloRunner // one per interface with VRRP instances
}

// Run starts a daemon with o and runs it until ctx ends.
func Run(ctx context.Context, o Options) error {
	d, err := New(o)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// New loads the configuration, takes the status socket, opens the metrics listener and
// attaches every interface (adopting existing pins: tracked flows are kept). On error nothing
// stays attached that was not before, and nothing listens.
func New(o Options) (_ *Daemon, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.PinRoot == "" {
		o.PinRoot = loader.DefaultPinRoot
	}
	if o.StatusSocket == "" {
		o.StatusSocket = DefaultStatusSocket
	}
	d := &Daemon{
		o: o, log: o.Logger, clock: o.Clock,
		reloadCh: make(chan chan error),
		macCh:    make(chan macUpdate, 64),
		vrrpCh:   make(chan *vrrpRunner, 16),
		peerCh:   make(chan struct{}, 1),
		hellos:   map[string]map[string]heardPeer{},
		done:     make(chan struct{}),
		rsState:  map[health.Target]reconcile.RSState{},
		inflight: map[netip.Addr]bool{},
		warned:   map[netip.Addr]bool{},
		quorum:   map[string]bool{},
		reloads:  map[string]uint64{},
		linkUp:   map[string]bool{},
		macs:     newMACCache(),
	}

	cfg, warns, err := config.Load(o.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration, nothing attached: %w", err)
	}
	for _, w := range warns {
		d.log.Warn("configuration", "warning", w)
	}
	d.cfg = cfg

	defer func() {
		if err != nil {
			d.closeAll(false)
		}
	}()
	if d.statusLn, err = listenStatus(o.StatusSocket); err != nil {
		return nil, err
	}
	if d.metricsLn, err = net.Listen("tcp", cfg.Metrics); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}

	seed := cfg.HashSeed
	for _, iface := range cfg.Interfaces {
		a, err := loader.Attach(iface, loader.Options{
			PinRoot: o.PinRoot, Mode: o.Mode, Sizes: cfg.Sizes, HashSeed: &seed, Logger: d.log,
		})
		if err != nil {
			return nil, fmt.Errorf("attach %s: %w", iface, err)
		}
		d.atts = append(d.atts, a)
		d.maps = append(d.maps, control.NewMaps(a.Objects))
		if a.Created {
			d.log.Info("data path attached", "iface", iface, "mode", a.Mode, "pins", a.Dir, "why", a.ModeReason)
		} else {
			n, _ := control.NewMaps(a.Objects).TrackedFlows()
			d.log.Info("data path adopted, tracked flows kept", "iface", iface, "mode", a.Mode, "pins", a.Dir, "flows", n)
		}
	}
	if err := d.addPeers(cfg); err != nil {
		return nil, err
	}
	if err := d.startLease(); err != nil {
		return nil, err
	}
	for _, v := range cfg.VRRP {
		r, err := d.newRunner(v)
		if err != nil {
			return nil, err
		}
		d.vrrp = append(d.vrrp, r)
	}
	startHellos, _, err := d.reloadHellos(cfg)
	if err != nil {
		return nil, err
	}
	startHellos()
	d.macs.setStatic(cfg)
	d.adoptMACs()
	d.rec = reconcile.New(d.log, d.maps)
	d.rec.AdoptWriters(pinnedWriters(cfg, d.pinnedRing()))
	d.mon = health.NewMonitor(d.log, d.clock)
	d.started = time.Now()
	return d, nil
}

func (d *Daemon) addPeers(cfg *config.Config) error {
	for i, m := range d.maps {
		for _, p := range cfg.Peers {
			if err := m.AddPeer(p, control.PeerStatic); err != nil {
				return fmt.Errorf("%s: %w", cfg.Interfaces[i], err)
			}
		}
	}
	return nil
}

// Run runs the loop until ctx ends, then stops the checks and closes the listeners and maps;
// the data path stays attached unless Options.DetachOnExit. Run may be called once.
func (d *Daemon) Run(ctx context.Context) error {
	err := ErrStopped
	d.runOnce.Do(func() { err = d.run(ctx) })
	return err
}

func (d *Daemon) run(ctx context.Context) error {
	defer close(d.done)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		d.closeAll(d.o.DetachOnExit)
		wg.Wait()
	}()

	d.httpSrv = &http.Server{Handler: d.metricsHandler(), ReadHeaderTimeout: 5 * time.Second}
	wg.Go(func() { d.httpSrv.Serve(d.metricsLn) })
	wg.Go(func() { d.serveStatus(ctx) })
	for _, iface := range d.cfgNow().Interfaces {
		wg.Go(func() { d.watchNeighbours(ctx, iface) })
		wg.Go(func() { d.watchLink(ctx, iface) })
	}
	wg.Go(func() { d.keepLease(ctx) })

	specs, err := d.specs(d.cfgNow())
	if err != nil {
		return err
	}
	d.setSpecs(specs)
	d.resolveMissing(ctx)
	d.update()
	runners := d.runnersNow()
	for _, r := range runners {
		d.startRunner(r)
	}
	d.syncPeers()
	d.log.Info("daemon running", "config", d.o.ConfigPath, "status_socket", d.o.StatusSocket, "metrics", d.cfgNow().Metrics)

	// Timers are one-shot (clock.Clock): each is replaced when it fires.
	resync := d.clock.NewTimer(resyncInterval)
	retry := d.clock.NewTimer(macRetry)
	defer func() { resync.Stop(); retry.Stop() }()
	for {
		select {
		case <-ctx.Done():
			d.log.Info("daemon stopping", "detach", d.o.DetachOnExit)
			return nil
		case ev := <-d.mon.Events():
			d.healthEvent(ev)
		case u := <-d.macCh:
			if !d.macUpdate(u) {
				continue
			}
		case <-d.vrrpCh:
			d.syncPeers()
			continue
		case <-d.peerCh:
			d.syncPeers()
			continue
		case reply := <-d.reloadCh:
			reply <- d.reload(ctx)
			continue // reload updates itself when it applies
		case <-resync.C():
			resync = d.clock.NewTimer(resyncInterval)
			d.syncPeers()
		case <-retry.C():
			retry = d.clock.NewTimer(macRetry)
			d.resolveMissing(ctx)
			continue
		}
		d.update()
	}
}

// Reload re-reads the configuration file and applies it if it is valid and needs no restart;
// otherwise it returns why (a *config.ValidationError, or ErrRestartNeeded) and the running
// state is kept.
func (d *Daemon) Reload() error {
	reply := make(chan error, 1)
	select {
	case d.reloadCh <- reply:
	case <-d.done:
		return ErrStopped
	}
	select {
	case err := <-reply:
		return err
	case <-d.done:
		return ErrStopped
	}
}

func (d *Daemon) cfgNow() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func (d *Daemon) reload(ctx context.Context) error {
	err := d.applyReload(ctx)
	result := "ok"
	if err != nil {
		result = "error"
		d.log.Error("configuration rejected, running state kept", "config", d.o.ConfigPath, "errors", len(errorLines(err)))
		for _, line := range errorLines(err) {
			d.log.Error("configuration rejected", "error", line)
		}
	}
	d.mu.Lock()
	d.reloads[result]++
	d.mu.Unlock()
	return err
}

func (d *Daemon) applyReload(ctx context.Context) error {
	cfg, warns, err := config.Load(d.o.ConfigPath)
	if err != nil {
		return err
	}
	for _, w := range warns {
		d.log.Warn("configuration", "warning", w)
	}
	old := d.cfgNow()
	var why []string
	if !slices.Equal(cfg.Interfaces, old.Interfaces) {
		why = append(why, fmt.Sprintf("interfaces %v → %v", old.Interfaces, cfg.Interfaces))
	}
	if cfg.Sizes != old.Sizes {
		why = append(why, fmt.Sprintf("maps %+v → %+v", old.Sizes, cfg.Sizes))
	}
	if cfg.HashSeed != old.HashSeed {
		why = append(why, fmt.Sprintf("hash_seed %d → %d", old.HashSeed, cfg.HashSeed))
	}
	if cfg.Metrics != old.Metrics {
		why = append(why, fmt.Sprintf("metrics %s → %s", old.Metrics, cfg.Metrics))
	}
	if len(why) > 0 {
		return fmt.Errorf("%w: %s changed; restart the daemon to apply it (a restart keeps established flows unless map sizes change)",
			ErrRestartNeeded, strings.Join(why, ", "))
	}
	specs, err := d.specs(cfg)
	if err != nil {
		return err
	}
	applyHellos, abortHellos, err := d.reloadHellos(cfg)
	if err != nil {
		return err
	}
	applyVRRP, err := d.reloadVRRP(cfg)
	if err != nil {
		abortHellos()
		return err
	}
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	applyVRRP()
	applyHellos()
	d.syncPeers()
	d.macs.setStatic(cfg)
	d.setSpecs(specs)
	d.resolveMissing(ctx)
	d.update()
	d.log.Info("configuration reloaded", "config", d.o.ConfigPath, "services", len(cfg.Services), "vrrp_instances", len(cfg.VRRP))
	return nil
}

// errorLines splits an error into the lines a person reads: one per field error.
func errorLines(err error) []string {
	if fe := config.Errors(err); len(fe) > 0 {
		out := make([]string, len(fe))
		for i, e := range fe {
			out[i] = e.Error()
		}
		return out
	}
	return strings.Split(err.Error(), "\n")
}

// setSpecs hands the checks to the monitor and keeps the health state of targets that stay;
// new targets start at their InitialUp.
func (d *Daemon) setSpecs(specs []health.Spec) {
	keep := map[health.Target]reconcile.RSState{}
	for _, s := range specs {
		if st, ok := d.rsState[s.Target]; ok {
			keep[s.Target] = st
		} else {
			keep[s.Target] = reconcile.RSState{Up: s.InitialUp, Starting: !s.InitialUp}
		}
	}
	d.rsState = keep
	d.mon.Set(specs)
}

func (d *Daemon) healthEvent(ev health.Event) {
	if _, ok := d.rsState[ev.Target]; !ok {
		return // a target removed by a reload
	}
	// The monitor logs the change; the reconciler logs what it does to the maps.
	d.rsState[ev.Target] = reconcile.RSState{Up: ev.Up, Weight: ev.Weight}
}

// update makes the maps match the desired state, holding the pin directories' locks so that a
// CLI command never edits them at the same time. A failure is logged and retried at the next
// event or resync.
func (d *Daemon) update() {
	ctx, cancel := context.WithTimeout(context.Background(), lockTimeout)
	defer cancel()
	for _, a := range d.atts {
		unlock, err := control.Lock(ctx, a.Dir)
		if err != nil {
			d.log.Warn("maps not updated, retrying at the next resync", "error", err)
			return
		}
		defer unlock()
	}
	// Quorum is nil: the reconciler carries its own quorum state between updates.
	plan, err := d.rec.Update(reconcile.Input{
		Config: d.cfgNow(),
		Health: maps.Clone(d.rsState),
		MAC:    d.macs.Lookup,
	})
	if err != nil {
		d.log.Error("maps not fully updated, retrying at the next resync", "error", err)
	}
	d.mu.Lock()
	d.quorum = plan.Quorum
	d.writers = writerStates(plan)
	d.mu.Unlock()
	d.trackServices(plan.Quorum)
}

// closeAll stops everything New and Run started; with detach it also removes the data path.
// handoverGrace is how long a stopping Master keeps its data path after its priority-0 advert:
// a Backup takes over after Skew_Time (under one advert interval) and announces at once; three
// intervals leave room for a slow peer. 0 when no instance is Master.
func handoverGrace(rs []*vrrpRunner) time.Duration {
	var g time.Duration
	for _, r := range rs {
		if r.in.Status().State == vrrp.Master {
			g = max(g, 3*r.in.Config().Interval+200*time.Millisecond)
		}
	}
	return min(g, 5*time.Second)
}

func (d *Daemon) closeAll(detach bool) {
	// VRRP first, whatever happens to the data path: a Master hands over (priority 0) and
	// removes its VIPs.
	runners := d.runnersNow()
	grace := handoverGrace(runners)
	d.stopRunners(runners)
	d.mu.Lock()
	d.vrrp = nil
	d.mu.Unlock()
	d.stopHellos()
	if d.mon != nil {
		d.mon.Close()
	}
	if d.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		d.httpSrv.Shutdown(ctx)
		cancel()
	} else if d.metricsLn != nil {
		d.metricsLn.Close()
	}
	if d.statusLn != nil {
		d.statusLn.Close() // a unix listener removes its socket file
	}
	if detach && grace > 0 {
		// Clients keep sending to this node until the new Master's gratuitous ARP reaches
		// them; detaching now would let the kernel answer those frames with RSTs. Keep
		// forwarding until the Backup has taken over (Skew_Time) and announced.
		d.log.Info("waiting for the new VRRP Master before detaching", "for", grace)
		time.Sleep(grace)
	}
	for _, a := range d.atts {
		a.Close()
		if detach {
			if err := loader.Detach(d.o.PinRoot, a.Iface); err != nil {
				d.log.Error("detach", "iface", a.Iface, "error", err)
			} else {
				d.log.Info("data path detached, tracked flows dropped", "iface", a.Iface)
			}
		}
	}
	d.atts = nil
}
