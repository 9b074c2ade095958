package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/vrrp"
)

// vrrpStopTimeout bounds the graceful stop of one instance (priority-0 advert, VIPs removed).
const vrrpStopTimeout = 5 * time.Second

// vrrpRunner is one running vrrp.Instance. Its peer function keeps the latest peer set and
// wakes the loop through Daemon.vrrpCh; the loop reads the sets of the current runners only, so
// the updates of a runner replaced by a reload are ignored.
type vrrpRunner struct {
	cfg    config.VRRPInstance
	icfg   vrrp.InstanceConfig // as given to NewInstance (password resolved), to detect changes
	in     *vrrp.Instance
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returns; nil while not started

	// Owned by the loop goroutine: whether the instance was told its tracking is down.
	trackDown bool

	mu        sync.Mutex
	peers     []vrrp.Peer
	linkDown  bool     // its interface is not running (as last told to the instance)
	trackLost []string // tracked services without quorum (as last told to the instance)
}

// faults returns why the instance is (or is about to be) in Fault, for the status socket.
func (r *vrrpRunner) faults() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []string{}
	if r.linkDown {
		out = append(out, "interface "+r.cfg.Interface+" down")
	}
	for _, s := range r.trackLost {
		out = append(out, "service "+s+" without quorum")
	}
	return out
}

// setLink tells the instance the state of its interface.
func (r *vrrpRunner) setLink(up bool) {
	r.mu.Lock()
	r.linkDown = !up
	r.mu.Unlock()
	r.in.SetInterface(up)
}

func (r *vrrpRunner) peerSet() []vrrp.Peer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peers
}

// instanceConfig translates the file's instance into the vrrp package's.
func instanceConfig(v config.VRRPInstance) (vrrp.InstanceConfig, error) {
	ph := v.PseudoHeader
	ic := vrrp.InstanceConfig{
		Name: v.Name, Iface: v.Interface, Version: vrrp.Version(v.Version), VRID: v.VRID, Priority: v.Priority,
		Interval: v.AdvertInterval, Preempt: v.Preempt, PreemptDelay: v.PreemptDelay, PseudoHeader: &ph,
		VIPs: slices.Clone(v.VIPs), UnicastPeers: slices.Clone(v.UnicastPeers), NotifyCmd: slices.Clone(v.Notify),
		GARPRepeat: v.GARPRepeat, GARPDelay: v.GARPDelay, PeerTimeout: v.PeerTimeout,
	}
	// The file's 0 means none; the vrrp package's 0 means its default.
	if ic.GARPRepeat == 0 {
		ic.GARPRepeat = -1
	}
	if ic.GARPDelay == 0 {
		ic.GARPDelay = -1
	}
	if v.HasAuth() {
		pw, err := v.AuthPass()
		if err != nil {
			return ic, err
		}
		ic.Auth, ic.Password = vrrp.AuthPass, pw
	}
	return ic, nil
}

// newRunner opens an instance (its sockets, in the calling thread's network namespace) without
// running it.
func (d *Daemon) newRunner(v config.VRRPInstance) (*vrrpRunner, error) {
	ic, err := instanceConfig(v)
	if err != nil {
		return nil, fmt.Errorf("vrrp %s: %w", v.Name, err)
	}
	r := &vrrpRunner{cfg: v, icfg: ic}
	in, err := vrrp.NewInstance(ic, d.log, vrrp.WithPeerFunc(func(p []vrrp.Peer) {
		r.mu.Lock()
		r.peers = p
		r.mu.Unlock()
		select {
		case d.vrrpCh <- r:
		default: // the loop has wake-ups queued already: it reads the latest sets
		}
	}))
	if err != nil {
		return nil, err
	}
	r.in = in
	return r, nil
}

// startRunner runs r in its own goroutine until stopRunner.
func (d *Daemon) startRunner(r *vrrpRunner) {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		if err := r.in.Run(ctx); err != nil {
			d.log.Error("VRRP instance ended", "instance", r.cfg.Name, "error", err)
		}
	}()
}

// stopRunners stops instances gracefully, all at once, and waits for them.
func (d *Daemon) stopRunners(rs []*vrrpRunner) {
	for _, r := range rs {
		if r.done == nil {
			r.in.Close()
			continue
		}
		r.cancel()
	}
	for _, r := range rs {
		if r.done == nil {
			continue
		}
		select {
		case <-r.done:
		case <-time.After(vrrpStopTimeout):
			d.log.Error("VRRP instance did not stop in time", "instance", r.cfg.Name, "timeout", vrrpStopTimeout)
		}
	}
}

// runnersNow returns the current runners in config order.
func (d *Daemon) runnersNow() []*vrrpRunner {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.vrrp)
}

// reloadVRRP opens the instances of cfg that are new or changed; apply stops the replaced and
// removed ones and starts the opened ones. On error nothing was changed.
func (d *Daemon) reloadVRRP(cfg *config.Config) (apply func(), err error) {
	old := map[string]*vrrpRunner{}
	for _, r := range d.runnersNow() {
		old[r.cfg.Name] = r
	}
	var next, opened, stop []*vrrpRunner
	keep := map[string]bool{}
	for _, v := range cfg.VRRP {
		if r, ok := old[v.Name]; ok {
			ic, err := instanceConfig(v)
			if err == nil && reflect.DeepEqual(ic, r.icfg) {
				keep[v.Name] = true
				next = append(next, r)
				continue
			}
		}
		r, err := d.newRunner(v)
		if err != nil {
			d.stopRunners(opened)
			return nil, err
		}
		opened = append(opened, r)
		next = append(next, r)
	}
	for name, r := range old {
		if !keep[name] {
			stop = append(stop, r)
		}
	}
	return func() {
		for _, r := range stop {
			d.log.Info("VRRP instance stopping for a reload", "instance", r.cfg.Name)
		}
		d.stopRunners(stop)
		d.mu.Lock()
		d.vrrp = next
		// Under the lock, so that a link change reported meanwhile reaches them once.
		for _, r := range opened {
			if up, known := d.linkUp[r.cfg.Interface]; known && !up {
				r.setLink(false)
			}
		}
		d.mu.Unlock()
		for _, r := range opened {
			d.startRunner(r)
		}
	}, nil
}

// watchLink follows the operational state of iface (up and running) and reports every change
// to the instances on it, in Fault while it is down. It logs one line per change.
func (d *Daemon) watchLink(ctx context.Context, iface string) {
	first := true
	vrrp.WatchLink(ctx, d.log, iface, func(up bool) {
		d.mu.Lock()
		d.linkUp[iface] = up
		var rs []*vrrpRunner
		for _, r := range d.vrrp {
			if r.cfg.Interface == iface {
				rs = append(rs, r)
			}
		}
		d.mu.Unlock()
		names := make([]string, len(rs))
		for i, r := range rs {
			names[i] = r.cfg.Name
		}
		switch {
		case !up:
			d.log.Warn("link down (its VRRP instances go to Fault)", "iface", iface, "vrrp_instances", names)
		case !first:
			d.log.Info("link up (its VRRP instances start again)", "iface", iface, "vrrp_instances", names)
		}
		first = false
		for _, r := range rs {
			r.setLink(up)
		}
	})
}

// trackServices tells every instance with track_services whether all of them have their
// quorum (quorum is the reconciler's state per service name), logging one line per change.
// An instance whose tracked services lost their quorum goes to Fault, so that its peer takes
// the VIPs (keepalived's track_script, without weights).
func (d *Daemon) trackServices(quorum map[string]bool) {
	cfg := d.cfgNow()
	track := map[string][]string{}
	for _, v := range cfg.VRRP {
		track[v.Name] = v.TrackServices
	}
	for _, r := range d.runnersNow() {
		var lost []string
		for _, s := range track[r.cfg.Name] {
			if up, ok := quorum[s]; ok && !up {
				lost = append(lost, s)
			}
		}
		r.mu.Lock()
		changed := !slices.Equal(lost, r.trackLost)
		r.trackLost = lost
		r.mu.Unlock()
		down := len(lost) > 0
		if down == r.trackDown {
			if changed && down {
				d.log.Warn("VRRP tracked services without quorum", "instance", r.cfg.Name, "services", lost)
			}
			continue
		}
		r.trackDown = down
		if down {
			d.log.Warn("VRRP tracking down: tracked services without quorum, instance to Fault", "instance", r.cfg.Name, "services", lost)
		} else {
			d.log.Info("VRRP tracking up: every tracked service has its quorum", "instance", r.cfg.Name, "services", track[r.cfg.Name])
		}
		r.in.SetTracking(!down)
	}
}

// syncPeers makes every interface's peers map hold the static peers and every peer director
// ever heard on it: from its VRRP adverts or its hellos. A learned peer is never removed (see
// control.SyncPeers). Logs each MAC added or removed.
func (d *Daemon) syncPeers() {
	cfg := d.cfgNow()
	runners := d.runnersNow()
	for i, m := range d.maps {
		iface := cfg.Interfaces[i]
		var learned []net.HardwareAddr
		from := map[string][]string{} // MAC → where it was heard
		for _, r := range runners {
			if r.cfg.Interface != iface {
				continue
			}
			for _, p := range r.peerSet() {
				if control.CheckMAC(p.MAC) != nil {
					continue
				}
				learned = append(learned, p.MAC)
				from[p.MAC.String()] = append(from[p.MAC.String()], "vrrp "+r.cfg.Name+"/"+p.Addr.String())
			}
		}
		for k, mac := range d.helloPeers(iface) {
			learned = append(learned, mac)
			from[k] = append(from[k], "hello")
		}
		added, removed, err := control.SyncPeers(m, cfg.Peers, learned)
		for _, mac := range added {
			if src := from[mac.String()]; src != nil {
				d.log.Info("peer added", "iface", iface, "mac", mac.String(), "learned_from", strings.Join(src, ","))
			} else {
				d.log.Info("peer added", "iface", iface, "mac", mac.String(), "static", true)
			}
		}
		for _, mac := range removed {
			d.log.Info("peer removed: no longer in the config, never heard", "iface", iface, "mac", mac.String())
		}
		if err != nil {
			d.log.Error("peers not fully synced, retrying at the next resync", "iface", iface, "error", err)
		}
	}
}

// VRRPStatus is one VRRP instance.
type VRRPStatus struct {
	Name        string            `json:"name"`
	Interface   string            `json:"interface"`
	VRID        uint8             `json:"vrid"`
	State       string            `json:"state"` // INIT, BACKUP, MASTER, FAULT
	Priority    uint8             `json:"priority"`
	Master      netip.Addr        `json:"master"` // "" when unknown
	VIPs        []netip.Addr      `json:"vips"`
	Transitions uint64            `json:"transitions"`
	SplitBrains uint64            `json:"split_brains"`
	Rejected    map[string]uint64 `json:"rejected"` // adverts rejected, by reason
	Peers       []VRRPPeer        `json:"peers"`
	// Faults are why the instance is in Fault (or about to be): "interface eth0 down",
	// "service writer without quorum". Empty otherwise.
	Faults []string `json:"faults"`
}

// VRRPPeer is another router heard on the instance's VRID.
type VRRPPeer struct {
	Addr     netip.Addr `json:"addr"`
	MAC      string     `json:"mac"`
	Priority uint8      `json:"priority"`
	LastSeen time.Time  `json:"last_seen"`
}

func vrrpStatus(r *vrrpRunner) VRRPStatus {
	s := r.in.Status()
	out := VRRPStatus{
		Name: r.cfg.Name, Interface: r.cfg.Interface, VRID: r.cfg.VRID, State: strings.ToUpper(s.State.String()),
		Priority: s.Priority, Master: s.MasterAddr, VIPs: slices.Clone(r.cfg.VIPs), Transitions: s.Transitions,
		SplitBrains: s.SplitBrains, Rejected: s.Rejected, Peers: []VRRPPeer{}, Faults: r.faults(),
	}
	if out.Rejected == nil {
		out.Rejected = map[string]uint64{}
	}
	for _, p := range s.Peers {
		out.Peers = append(out.Peers, VRRPPeer{Addr: p.Addr, MAC: net.HardwareAddr(p.MAC).String(), Priority: p.Priority, LastSeen: p.LastSeen})
	}
	return out
}

// vrrpStatuses reports every instance, in config order.
func (d *Daemon) vrrpStatuses() []VRRPStatus {
	out := []VRRPStatus{}
	for _, r := range d.runnersNow() {
		out = append(out, vrrpStatus(r))
	}
	return out
}

// vrrpStates are the states xdplb_vrrp_state has a sample for.
var vrrpStates = []vrrp.State{vrrp.Init, vrrp.Backup, vrrp.Master, vrrp.Fault}

// isVIPHolder reports whether addr is the Master of one of our VRRP instances, as this node sees
// it (the health checks skip the DR path of that real server: see health.ProberEnv.VIPHolder).
func (d *Daemon) isVIPHolder(addr netip.Addr) bool {
	for _, r := range d.runnersNow() {
		if st := r.in.Status(); st.State != vrrp.Master && st.MasterAddr == addr {
			return true
		}
	}
	return false
}
