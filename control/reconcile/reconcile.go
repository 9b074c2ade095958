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
}

// InRing tells whether b takes new flows (a ring member).
func InRing(b control.BackendSpec) bool { return !b.Draining && !b.Sorry }

// Plan is the desired content of the maps.
type Plan struct {
	Services []ServicePlan
	Quorum   map[string]bool // quorum state per service name, for the next Input
}

// Compute derives the desired maps from the config, health and MACs. It is a pure function.
func Compute(in Input) Plan {
	p := Plan{Quorum: map[string]bool{}}
	if in.Config == nil {
		return p
	}
	for _, svc := range in.Config.Services {
		sp := computeService(in, svc)
		p.Quorum[sp.Name] = sp.QuorumUp
		p.Services = append(p.Services, sp)
	}
	return p
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
