// Package reconcile turns the config, the real servers' health and their resolved MACs into the
// desired content of the maps (Compute), and makes the maps hold it (Apply). Reconciler ties
// both into the loop the daemon runs after every health event, MAC change or reload.
//
// desired = config ∩ healthy ∩ resolved MAC. For each real server of a service, in config order:
//
//   - up, MAC known (or local), quorum up, weight > 0: in the Maglev ring with its weight (the
//     dynamic weight of its latest health result when set, else the configured one);
//   - down, with the service's check.drain: Draining (weight 0): no new flows, established ones
//     finish;
//   - down, without check.drain: absent: its tracked flows become stale and are rescheduled;
//   - real server drain: true, or up with a dynamic weight of 0: Draining whatever the health
//     (down without check.drain: absent);
//   - MAC unknown and not local: absent, with a note ("10.0.0.12: no MAC yet"); the MAC in the
//     config wins over the resolver's;
//   - quorum down: every server that would be in the ring is Draining instead (established flows
//     finish, persistence is not honoured for new ones), the ring is empty and the sorry server
//     (when configured) takes every new flow; without a sorry server new flows are dropped.
//
// A service whose check type is "none" has no monitor: its real servers count as up.
//
// Single writer: a service whose mysql check has writable: true holds at most one real server in
// its ring, the writer (see chooseWriter); its other up (writable) servers are left out, and only
// the writer's weight counts for its quorum.
//
// Quorum follows keepalived: the sum of the weights of the up real servers (drain: true ones and
// dynamic weight 0 count 0) is compared with quorum ± hysteresis: quorum is lost when the sum
// drops below Quorum - Hysteresis, regained when it reaches Quorum + Hysteresis, and kept as it
// was in between.
package reconcile

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/health"
)

// ServiceName is the name a service goes by in health targets, plans, changes and logs: its
// configured name, else its key ("TCP 10.0.0.100:3306").
func ServiceName(svc config.Service) string {
	if svc.Name != "" {
		return svc.Name
	}
	return svc.Key.String()
}

// TargetFor is the health target of a real server of a service.
func TargetFor(svc config.Service, rs config.RealServer) health.Target {
	return health.Target{Service: ServiceName(svc), Addr: rs.Addr.Unmap()}
}

// RSState is the latest health of a target.
type RSState struct {
	Up     bool
	Weight *uint32 // dynamic weight of the latest healthy result; nil = the configured weight
	// Starting: down, but its checks have no verdict yet (since it was added, neither rise
	// successes nor fall failures in a row). A single-writer service chooses no new writer
	// while one of its servers starts.
	Starting bool
}

// Input is everything Compute needs.
type Input struct {
	Config *config.Config
	// Health is the latest state of every known target; a missing target is not known yet,
	// which counts as down.
	Health map[health.Target]RSState
	// MAC returns the resolved MAC of a real server (nil: none resolved). A MAC in the config
	// wins over it.
	MAC func(addr netip.Addr) (net.HardwareAddr, bool)
	// Quorum is the previous quorum state per service name (hysteresis needs it); nil or a
	// missing service = up.
	Quorum map[string]bool
	// Writers is the previous writer per service name of the single-writer services (see
	// SingleWriter); nil or a missing service = none.
	Writers map[string]netip.Addr
}

// ServicePlan is the desired content of the maps for one service.
type ServicePlan struct {
	Name string
	Spec control.ServiceSpec
	// Backends are in config order: ring members, and Draining entries (weight 0) whose
	// established flows finish. Servers left out have no entry.
	Backends []control.BackendSpec
	Sorry    *control.BackendSpec // nil: none configured, or its MAC is unknown (see Notes)
	QuorumUp bool                 // false: no ring member, the sorry server takes every new flow
	Notes    []string             // why servers are left out, quorum state

	// Single-writer services only (SingleWriter): the real server chosen to take writes (the
	// zero Addr: none), and every real server whose check says writable now, in config order.
	SingleWriter bool
	Writer       netip.Addr
	Writable     []netip.Addr
}

// InRing tells whether b takes new flows (a ring member).
func InRing(b control.BackendSpec) bool { return !b.Draining && !b.Sorry }

// Plan is the desired content of the maps.
type Plan struct {
	Services []ServicePlan
	Quorum   map[string]bool       // quorum state per service name, for the next Input
	Writers  map[string]netip.Addr // writer per single-writer service name, for the next Input
}

// Compute derives the desired maps from the config, health and MACs. It is a pure function.
func Compute(in Input) Plan {
	p := Plan{Quorum: map[string]bool{}, Writers: map[string]netip.Addr{}}
	if in.Config == nil {
		return p
	}
	for _, svc := range in.Config.Services {
		sp := computeService(in, svc)
		p.Quorum[sp.Name] = sp.QuorumUp
		if sp.Writer.IsValid() {
			p.Writers[sp.Name] = sp.Writer
		}
		p.Services = append(p.Services, sp)
	}
	return p
}

// SingleWriter tells whether svc takes writes: its mysql check requires a writable server
// (`writable: true`). Such a service holds at most one real server in its ring.
func SingleWriter(svc config.Service) bool {
	return svc.Check.Type == config.CheckMySQL && svc.Check.MySQL != nil && svc.Check.MySQL.Writable
}

// chooseWriter picks the one real server of a single-writer service that takes new flows, and
// fills sp.Writable. The choice depends only on the checks' results and the previous writer,
// never on MACs or timing, so that two directors that saw the same checks choose the same
// server without talking:
//
//   - the previous writer, while it is up (its check says healthy and writable);
//   - else, once every real server's check has a verdict (none is starting), the first up
//     real server in config order;
//   - else none: choosing while a server earlier in config order has not answered yet would
//     let the order of the first check results decide, which differs between directors.
//
// A real server with drain: true (or a dynamic weight of 0) is never chosen. The chosen server
// stays the writer when its MAC is unknown (no writer then, rather than a different one).
func chooseWriter(in Input, svc config.Service, sp *ServicePlan) netip.Addr {
	var (
		candidates []netip.Addr
		starting   []string
	)
	for _, rs := range svc.RealServers {
		addr := rs.Addr.Unmap()
		st, known := in.Health[TargetFor(svc, rs)]
		if !known || st.Starting {
			starting = append(starting, addr.String())
		}
		if !known || !st.Up {
			continue
		}
		sp.Writable = append(sp.Writable, addr)
		if rs.Drain || (st.Weight != nil && *st.Weight == 0) {
			continue
		}
		candidates = append(candidates, addr)
	}
	var w netip.Addr
	switch prev := in.Writers[sp.Name]; {
	case prev.IsValid() && slices.Contains(candidates, prev):
		w = prev
	case len(candidates) == 0:
	case len(starting) > 0:
		sp.Notes = append(sp.Notes, fmt.Sprintf("single writer: not chosen yet, waiting for the first checks of %s",
			strings.Join(starting, ", ")))
		return netip.Addr{}
	default:
		w = candidates[0]
	}
	if len(sp.Writable) > 1 {
		var others []string
		for _, a := range sp.Writable {
			if a != w {
				others = append(others, a.String())
			}
		}
		who := "none"
		if w.IsValid() {
			who = w.String()
		}
		sp.Notes = append(sp.Notes, fmt.Sprintf("single writer: %s serves; also writable: %s", who, strings.Join(others, ", ")))
	}
	return w
}

// desire is what Compute decided for one real server before quorum is applied.
type desire struct {
	spec    control.BackendSpec
	present bool
}

func computeService(in Input, svc config.Service) ServicePlan {
	sp := ServicePlan{Name: ServiceName(svc), Spec: svc.Spec()}
	noCheck := svc.Check.Type == config.CheckNone

	var (
		sum     uint64
		desires []desire
	)
	writer := netip.Addr{}
	if sp.SingleWriter = SingleWriter(svc); sp.SingleWriter {
		writer = chooseWriter(in, svc, &sp)
		sp.Writer = writer
	}
	for _, rs := range svc.RealServers {
		addr := rs.Addr.Unmap()
		st, known := in.Health[TargetFor(svc, rs)]
		up := noCheck || (known && st.Up)
		weight := rs.Weight
		if weight == 0 {
			weight = 1
		}
		if up && !noCheck && st.Weight != nil {
			weight = min(*st.Weight, control.MaxWeight)
		}
		if sp.SingleWriter && up && !rs.Drain && addr != writer {
			// Writable but not the writer: out of the service, as a failed server is (a
			// second writer behind the VIP is a split brain of the database).
			desires = append(desires, desire{})
			continue
		}
		if up && !rs.Drain {
			sum += uint64(weight)
		}

		b := control.BackendSpec{Addr: addr, Local: rs.Local, Weight: weight}
		mac, ok := macFor(in, addr, rs.MAC, rs.Local)
		if !ok {
			sp.Notes = append(sp.Notes, fmt.Sprintf("%s: no MAC yet", addr))
			desires = append(desires, desire{})
			continue
		}
		b.MAC = mac
		switch {
		case !up && !svc.Check.Drain:
			desires = append(desires, desire{})
			continue
		case !up || rs.Drain || weight == 0:
			b.Draining, b.Weight = true, 0
		}
		desires = append(desires, desire{spec: b, present: true})
	}

	prev := true
	if q, ok := in.Quorum[sp.Name]; ok {
		prev = q
	}
	quorum := int64(max(svc.Quorum, 1))
	hyst := int64(max(svc.Hysteresis, 0))
	switch s := int64(sum); {
	case s < quorum-hyst:
		sp.QuorumUp = false
	case s >= quorum+hyst:
		sp.QuorumUp = true
	default:
		sp.QuorumUp = prev
	}
	if !sp.QuorumUp {
		sp.Notes = append(sp.Notes, fmt.Sprintf("quorum down: up weight %d, quorum %d, hysteresis %d", sum, quorum, hyst))
	}

	for _, d := range desires {
		if !d.present {
			continue
		}
		if !sp.QuorumUp && !d.spec.Draining {
			d.spec.Draining, d.spec.Weight = true, 0
		}
		sp.Backends = append(sp.Backends, d.spec)
	}

	if rs := svc.Sorry; rs != nil {
		addr := rs.Addr.Unmap()
		if mac, ok := macFor(in, addr, rs.MAC, rs.Local); ok {
			sp.Sorry = &control.BackendSpec{Addr: addr, MAC: mac, Local: rs.Local, Weight: rs.Weight, Sorry: true}
		} else {
			sp.Notes = append(sp.Notes, fmt.Sprintf("sorry server %s: no MAC yet", addr))
		}
	}
	return sp
}

// macFor is the MAC of a real server: the configured one, else the resolved one. A local server
// needs none.
func macFor(in Input, addr netip.Addr, cfg net.HardwareAddr, local bool) (net.HardwareAddr, bool) {
	if len(cfg) > 0 || local {
		return slices.Clone(cfg), true // a local server's frames go up the stack: no MAC needed
	}
	if in.MAC != nil {
		if mac, ok := in.MAC(addr); ok && control.CheckMAC(mac) == nil {
			return slices.Clone(mac), true
		}
	}
	return nil, false
}
