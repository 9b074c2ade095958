package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/health"
	"github.com/xdplb/xdplb/control/reconcile"
)

// specs builds one check per service × real server. A real server that is in its service's
// pinned ring now starts up (InitialUp): a restarted daemon does not drop it while its checks
// warm up.
func (d *Daemon) specs(cfg *config.Config) ([]health.Spec, error) {
	inRing := d.pinnedRing()
	var out []health.Spec
	for _, svc := range cfg.Services {
		if svc.Check.Type == config.CheckNone {
			continue // no monitor: the reconciler counts its real servers as up
		}
		for _, rs := range svc.RealServers {
			env, err := d.proberEnv(cfg, rs.Addr)
			if err != nil {
				return nil, err
			}
			p, err := health.NewProber(svc, rs, env)
			if err != nil {
				for _, s := range out {
					s.Prober.Close()
				}
				return nil, fmt.Errorf("service %s: real server %s: %w", reconcile.ServiceName(svc), rs.Addr, err)
			}
			out = append(out, health.Spec{
				CheckID:   checkID(svc, rs),
				Target:    reconcile.TargetFor(svc, rs),
				Prober:    p,
				Interval:  svc.Check.Interval,
				Timeout:   svc.Check.Timeout,
				Rise:      svc.Check.Rise,
				Fall:      svc.Check.Fall,
				InitialUp: inRing[ringKey{svc.Key, rs.Addr.Unmap()}],
			})
		}
	}
	return out, nil
}

// checkID describes what a real server's prober does, so that a reload restarts the check
// when it changed. MySQLCheck prints without its password.
func checkID(svc config.Service, rs config.RealServer) string {
	c := svc.Check
	id := fmt.Sprintf("%s port=%d dr_path=%t local=%t", c.Type, rs.Port, c.CheckDRPath(), rs.Local)
	if c.MySQL != nil {
		id += fmt.Sprintf(" mysql=%v", *c.MySQL)
	}
	if c.Exec != nil {
		id += fmt.Sprintf(" exec=%q dynamic=%t", c.Exec.Command, c.Exec.Dynamic)
	}
	return id
}

type ringKey struct {
	svc  control.ServiceKey
	addr netip.Addr
}

// pinnedRing tells which real servers take new flows in the pinned maps now.
func (d *Daemon) pinnedRing() map[ringKey]bool {
	out := map[ringKey]bool{}
	if len(d.maps) == 0 {
		return out
	}
	st, err := d.maps[0].Snapshot()
	if err != nil {
		d.log.Warn("read pinned maps: every real server starts down", "error", err)
		return out
	}
	for _, s := range st.Services {
		for _, b := range s.Backends {
			if inRing(b) {
				out[ringKey{s.Key, b.Addr}] = true
			}
		}
	}
	return out
}

// pinnedWriters is, for each single-writer service, the first of its real servers (in config
// order) that takes new flows in the pinned maps: the writer a restarted daemon keeps.
func pinnedWriters(cfg *config.Config, inRing map[ringKey]bool) map[string]netip.Addr {
	out := map[string]netip.Addr{}
	for _, svc := range cfg.Services {
		if !reconcile.SingleWriter(svc) {
			continue
		}
		for _, rs := range svc.RealServers {
			if inRing[ringKey{svc.Key, rs.Addr.Unmap()}] {
				out[reconcile.ServiceName(svc)] = rs.Addr.Unmap()
				break
			}
		}
	}
	return out
}

// adoptMACs takes the MACs of the real servers in the pinned maps: a restarted daemon keeps
// forwarding to them while ARP confirms them, instead of dropping them from the ring.
func (d *Daemon) adoptMACs() {
	if len(d.maps) == 0 {
		return
	}
	st, err := d.maps[0].Snapshot()
	if err != nil {
		return
	}
	for _, s := range st.Services {
		for _, b := range s.Backends {
			if !b.Local {
				d.macs.learn(b.Addr, b.MAC)
			}
		}
	}
}

func inRing(b control.BackendState) bool {
	return !b.Draining && !b.Sorry && b.Weight > 0
}

// proberEnv describes where the checks of the real server at addr leave from: the interface
// whose subnet holds addr (else the first one) and its first IPv4 address.
func (d *Daemon) proberEnv(cfg *config.Config, addr netip.Addr) (health.ProberEnv, error) {
	iface := ifaceFor(cfg.Interfaces, addr)
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return health.ProberEnv{}, fmt.Errorf("interface %s: %w", iface, err)
	}
	env := health.ProberEnv{
		Iface:     iface,
		Ifindex:   ifc.Index,
		MAC:       d.macs.Lookup,
		VIPHolder: d.isVIPHolder,
		MySQL: func(svc config.Service, rs config.RealServer) (health.Prober, error) {
			addr := netip.AddrPortFrom(rs.Addr, health.RealServerPort(svc, rs))
			return health.NewMySQL(addr, svc.Check.MySQL, health.MySQLLogger(d.log)), nil
		},
	}
	if addrs, err := ifc.Addrs(); err == nil {
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			switch ip = ip.Unmap(); {
			case !ok:
			case ip.Is4() && !env.SrcIP.IsValid():
				env.SrcIP = ip
			case ip.Is6() && !ip.IsLinkLocalUnicast() && !env.SrcIP6.IsValid():
				env.SrcIP6 = ip
			}
		}
	}
	return env, nil
}

// ifaceFor is the interface with a subnet holding addr, else the first.
func ifaceFor(ifaces []string, addr netip.Addr) string {
	for _, name := range ifaces {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.Contains(addr.AsSlice()) {
				return name
			}
		}
	}
	return ifaces[0]
}

// macCache holds the MACs of real servers: those written in the configuration, then those
// resolved or seen in the neighbour table. It is read by the reconciler and the probers.
type macCache struct {
	mu      sync.RWMutex
	static  map[netip.Addr]net.HardwareAddr
	learned map[netip.Addr]net.HardwareAddr
	want    map[netip.Addr]bool // remote real servers without a configured MAC
}

func newMACCache() *macCache {
	return &macCache{static: map[netip.Addr]net.HardwareAddr{}, learned: map[netip.Addr]net.HardwareAddr{}, want: map[netip.Addr]bool{}}
}

// Lookup returns the MAC of a real server.
func (c *macCache) Lookup(a netip.Addr) (net.HardwareAddr, bool) {
	a = a.Unmap()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if m, ok := c.static[a]; ok {
		return m, true
	}
	m, ok := c.learned[a]
	return m, ok
}

// setStatic takes the configured MACs and the set of addresses to resolve.
func (c *macCache) setStatic(cfg *config.Config) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.static = map[netip.Addr]net.HardwareAddr{}
	c.want = map[netip.Addr]bool{}
	add := func(rs config.RealServer) {
		a := rs.Addr.Unmap()
		switch {
		case len(rs.MAC) > 0:
			c.static[a] = rs.MAC
		case !rs.Local:
			c.want[a] = true
		}
	}
	for _, s := range cfg.Services {
		for _, rs := range s.RealServers {
			add(rs)
		}
		if s.Sorry != nil {
			add(*s.Sorry)
		}
	}
}

// missing lists the wanted addresses without a MAC.
func (c *macCache) missing() []netip.Addr {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []netip.Addr
	for a := range c.want {
		if _, ok := c.learned[a]; !ok {
			out = append(out, a)
		}
	}
	return out
}

// learn records mac for a wanted address; it reports the previous MAC and whether it changed.
func (c *macCache) learn(a netip.Addr, mac net.HardwareAddr) (net.HardwareAddr, bool) {
	a = a.Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.want[a] || control.CheckMAC(mac) != nil {
		return nil, false
	}
	old := c.learned[a]
	if bytes.Equal(old, mac) {
		return old, false
	}
	c.learned[a] = bytes.Clone(mac)
	return old, true
}

type macUpdate struct {
	addr     netip.Addr
	mac      net.HardwareAddr
	err      error
	resolved bool // from a ResolveMAC attempt (else from the neighbour table)
}

// resolveMissing starts one resolution per wanted address without a MAC and none under way.
func (d *Daemon) resolveMissing(ctx context.Context) {
	cfg := d.cfgNow()
	for _, a := range d.macs.missing() {
		if d.inflight[a] {
			continue
		}
		d.inflight[a] = true
		iface := ifaceFor(cfg.Interfaces, a)
		go func() {
			rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
			defer cancel()
			mac, err := control.ResolveMAC(rctx, iface, a)
			select {
			case d.macCh <- macUpdate{addr: a, mac: mac, err: err, resolved: true}:
			case <-ctx.Done():
			}
		}()
	}
}

// macUpdate records a MAC; it reports whether the maps need an update.
func (d *Daemon) macUpdate(u macUpdate) bool {
	if u.resolved {
		delete(d.inflight, u.addr)
		if u.err != nil {
			if !d.warned[u.addr] {
				d.warned[u.addr] = true
				d.log.Warn("real server MAC unknown, retrying", "addr", u.addr, "error", u.err, "every", macRetry)
			}
			return false
		}
	}
	old, changed := d.macs.learn(u.addr, u.mac)
	if !changed {
		return false
	}
	delete(d.warned, u.addr)
	if old == nil {
		d.log.Info("real server MAC learned", "addr", u.addr, "mac", u.mac.String())
	} else {
		d.log.Warn("real server MAC changed", "addr", u.addr, "old", old.String(), "new", u.mac.String())
	}
	return true
}

// watchNeighbours follows the neighbour table of iface until ctx ends.
func (d *Daemon) watchNeighbours(ctx context.Context, iface string) {
	err := control.WatchNeighbours(ctx, iface, func(a netip.Addr, mac net.HardwareAddr) {
		if mac == nil {
			return // a failed or removed entry: keep forwarding to the last MAC known
		}
		select {
		case d.macCh <- macUpdate{addr: a, mac: mac}:
		case <-ctx.Done():
		}
	})
	if err != nil && ctx.Err() == nil {
		d.log.Warn("neighbour table not followed: MACs are only resolved", "iface", iface, "error", err)
	}
}
