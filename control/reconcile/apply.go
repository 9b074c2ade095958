package reconcile

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/xdplb/xdplb/control"
)

// Changes is what Apply changed. Services are named as in the plan (ServicePlan.Name); removed
// ones, which the plan no longer names, by their key ("TCP 10.0.0.100:3306").
type Changes struct {
	ServicesAdded   []string
	ServicesRemoved []string
	ServicesUpdated []string // persistence or backends changed
}

// Empty tells whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.ServicesAdded)+len(c.ServicesRemoved)+len(c.ServicesUpdated) == 0
}

// Apply makes the maps hold the plan: services missing from the maps are added, those in the
// maps but not in the plan deleted (first, which frees their ids), persistence updated in place,
// and every service's backends set with one ring rebuild when they differ. It stops at the first
// error; each step is one control.Maps call, which orders its own writes so the data path never
// sees a half-written service, and a later Apply finishes the work.
func Apply(m *control.Maps, p Plan) (Changes, error) {
	var c Changes
	st, err := m.Snapshot()
	if err != nil {
		return c, err
	}
	have := map[control.ServiceKey]control.ServiceState{}
	for _, s := range st.Services {
		have[s.Key] = s
	}
	want := map[control.ServiceKey]bool{}
	for _, sp := range p.Services {
		want[normal(sp.Spec.Key)] = true
	}
	for _, s := range st.Services {
		if want[s.Key] {
			continue
		}
		if err := m.DeleteService(s.Key); err != nil {
			return c, fmt.Errorf("remove service %s: %w", s.Key, err)
		}
		c.ServicesRemoved = append(c.ServicesRemoved, s.Key.String())
	}
	for _, sp := range p.Services {
		cur, exists := have[normal(sp.Spec.Key)]
		updated := false
		switch {
		case !exists:
			if err := m.AddService(sp.Spec); err != nil {
				return c, fmt.Errorf("add service %s: %w", sp.Name, err)
			}
			c.ServicesAdded = append(c.ServicesAdded, sp.Name)
		case cur.Persistence != sp.Spec.Persistence:
			if err := m.AddService(sp.Spec); err != nil {
				return c, fmt.Errorf("update service %s: %w", sp.Name, err)
			}
			updated = true
		}
		changed, err := m.SetBackends(sp.Spec.Key, sp.Backends, sp.Sorry)
		if err != nil {
			return c, fmt.Errorf("set backends of %s: %w", sp.Name, err)
		}
		if exists && (updated || changed) {
			c.ServicesUpdated = append(c.ServicesUpdated, sp.Name)
		}
	}
	return c, nil
}

func normal(k control.ServiceKey) control.ServiceKey {
	k.VIP = k.VIP.Unmap()
	return k
}

// Reconciler applies plans to the maps of every attached interface and logs what changed.
type Reconciler struct {
	log  *slog.Logger
	maps []*control.Maps

	mu       sync.Mutex
	quorum   map[string]bool        // quorum state per service, carried between Updates
	writers  map[string]netip.Addr  // writer per single-writer service, carried between Updates
	writable map[string]string      // writable servers per single-writer service, as last logged
	prev     map[string]ServicePlan // the last plan applied to every Maps, by service name
}

// New returns a Reconciler for the maps of the attached interfaces (one Maps each); every plan
// goes to all of them. A nil log discards.
func New(log *slog.Logger, maps []*control.Maps) *Reconciler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{log: log, maps: maps, quorum: map[string]bool{}, writers: map[string]netip.Addr{},
		writable: map[string]string{}, prev: map[string]ServicePlan{}}
}

// AdoptWriters sets the writers of single-writer services (by service name) that the next
// Update keeps while they are up, as if an earlier Update had chosen them: a restarted daemon
// passes the writers of the pinned rings, so that it neither drops them while the other real
// servers' checks warm up nor picks another one.
func (r *Reconciler) AdoptWriters(w map[string]netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, a := range w {
		r.writers[n] = a
	}
}

// Update computes the plan for in and applies it to every Maps. When in.Quorum is nil the
// Reconciler's own quorum state (from the previous Update) is used, and the new state is kept
// for the next call, also when applying fails. It logs one line per change: service added or
// removed, backend into or out of the ring (or its weight changed), sorry server set or
// removed, quorum lost or regained; nothing when nothing changed. Errors of every Maps are
// returned joined; the others are still applied.
func (r *Reconciler) Update(in Input) (Plan, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if in.Quorum == nil {
		in.Quorum = r.quorum
	}
	if in.Writers == nil {
		in.Writers = r.writers
	}
	p := Compute(in)

	var (
		errs           []error
		added, removed []string
	)
	for i, m := range r.maps {
		c, err := Apply(m, p)
		for _, n := range c.ServicesAdded {
			if !slices.Contains(added, n) {
				added = append(added, n)
			}
		}
		for _, n := range c.ServicesRemoved {
			if !slices.Contains(removed, n) {
				removed = append(removed, n)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("maps %d: %w", i, err))
		}
	}

	for _, n := range removed {
		r.log.Info("service removed", "service", n)
	}
	for _, sp := range p.Services {
		if slices.Contains(added, sp.Name) {
			r.log.Info("service added", "service", sp.Name, "key", sp.Spec.Key.String(), "persistence", sp.Spec.Persistence)
		}
		r.logWritable(sp)
		if was, ok := r.quorum[sp.Name]; ok && was != sp.QuorumUp {
			if sp.QuorumUp {
				r.log.Info("quorum regained", "service", sp.Name)
			} else {
				r.log.Warn("quorum lost", "service", sp.Name, "new_flows", newFlows(sp))
			}
		} else if !ok && !sp.QuorumUp {
			r.log.Warn("quorum down", "service", sp.Name, "new_flows", newFlows(sp))
		}
	}
	r.quorum = p.Quorum
	r.writers = p.Writers
	for n := range r.writable {
		if !slices.ContainsFunc(p.Services, func(sp ServicePlan) bool { return sp.Name == n && sp.SingleWriter }) {
			delete(r.writable, n)
		}
	}

	if len(errs) > 0 {
		return p, errors.Join(errs...)
	}
	next := map[string]ServicePlan{}
	for _, sp := range p.Services {
		r.logBackends(r.prev[sp.Name], sp)
		next[sp.Name] = sp
	}
	r.prev = next
	return p, nil
}

// logWritable raises the single-writer alarm: one ERROR line each time the set of writable real
// servers of a single-writer service changes while it holds two or more, naming them and the
// writer; one INFO line when it is back to one or none.
func (r *Reconciler) logWritable(sp ServicePlan) {
	if !sp.SingleWriter {
		return
	}
	names := make([]string, len(sp.Writable))
	for i, a := range sp.Writable {
		names[i] = a.String()
	}
	now := strings.Join(names, " ")
	was, logged := r.writable[sp.Name]
	switch {
	case len(sp.Writable) >= 2 && now != was:
		writer := "none yet"
		if sp.Writer.IsValid() {
			writer = sp.Writer.String()
		}
		r.log.Error("several writable real servers behind a single-writer service: only the writer takes connections",
			"service", sp.Name, "writable", now, "writer", writer)
		r.writable[sp.Name] = now
	case len(sp.Writable) < 2 && logged:
		writer := "none"
		if sp.Writer.IsValid() {
			writer = sp.Writer.String()
		}
		r.log.Info("single writable real server again", "service", sp.Name, "writer", writer)
		delete(r.writable, sp.Name)
	}
}

// logBackends logs how the backends of a service changed from old to sp.
func (r *Reconciler) logBackends(old, sp ServicePlan) {
	before := map[string]control.BackendSpec{}
	for _, b := range old.Backends {
		before[b.Addr.String()] = b
	}
	now := map[string]bool{}
	for _, b := range sp.Backends {
		a := b.Addr.String()
		now[a] = true
		o, had := before[a]
		switch {
		case InRing(b) && (!had || !InRing(o)):
			r.log.Info("backend in ring", "service", sp.Name, "backend", a, "weight", b.Weight)
		case InRing(b) && o.Weight != b.Weight:
			r.log.Info("backend weight changed", "service", sp.Name, "backend", a, "from", o.Weight, "to", b.Weight)
		case !InRing(b) && had && InRing(o):
			r.log.Info("backend out of ring: draining", "service", sp.Name, "backend", a)
		case !InRing(b) && !had:
			r.log.Info("backend draining", "service", sp.Name, "backend", a)
		}
		if had && !bytes.Equal(o.MAC, b.MAC) {
			r.log.Info("backend MAC changed", "service", sp.Name, "backend", a, "from", o.MAC.String(), "to", b.MAC.String())
		}
	}
	for _, o := range old.Backends {
		if a := o.Addr.String(); !now[a] {
			if InRing(o) {
				r.log.Info("backend out of ring: removed", "service", sp.Name, "backend", a)
			} else {
				r.log.Info("backend removed", "service", sp.Name, "backend", a)
			}
		}
	}
	switch {
	case sp.Sorry != nil && (old.Sorry == nil || old.Sorry.Addr != sp.Sorry.Addr):
		r.log.Info("sorry server set", "service", sp.Name, "sorry", sp.Sorry.Addr.String())
	case sp.Sorry == nil && old.Sorry != nil:
		r.log.Info("sorry server removed", "service", sp.Name, "sorry", old.Sorry.Addr.String())
	}
}

// newFlows says where new flows of a service without quorum go.
func newFlows(sp ServicePlan) string {
	if sp.Sorry != nil {
		return "sorry server " + sp.Sorry.Addr.String()
	}
	return "dropped (no sorry server)"
}
