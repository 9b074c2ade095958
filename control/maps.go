package control

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/control/maglev"
	"github.com/xdplb/xdplb/loader"
)

// Maps edits the maps of one attached program: services, their backends and Maglev rings, peers.
//
// Every change is ordered so that a packet never sees an inconsistent state: a backend entry is
// written before any ring names it and cleared only after no ring does; a ring is filled
// completely in a new map before the service's active slot is flipped to it.
//
// The kernel's maps are the only state: Maps caches nothing, so a short-lived CLI and a
// long-lived daemon see each other's changes. Methods are safe for concurrent use within a
// process; across processes, writers serialize with Lock.
//
// Ids are allocated lowest-free: a service gets the lowest unused id below the services size,
// a backend the lowest unused id from 1. A Maglev ring holds backend ids, so two directors get
// byte-identical rings (and pick the same real server for a flow) when their backend ids are
// equal: the daemon guarantees it by adding backends in config order on fresh maps.
type Maps struct {
	o  *loader.Objects
	mu sync.Mutex
	// retired records when each service's idle ring stopped being the active one, as seen by
	// this process. Rewriting a ring in place is safe once no packet can still be reading it.
	retired map[uint32]time.Time
}

// ringQuiet is how long a ring must have been idle before it is rewritten in place. A packet is
// processed in microseconds; anything far longer proves no reader is left. Without a record (a
// ring retired by another process) a new ring map is installed instead, for which the kernel
// waits out an RCU grace period itself (milliseconds).
var ringQuiet = time.Second

// NewMaps wraps the objects of a loaded (loader.Load) or attached (loader.Open) program.
func NewMaps(o *loader.Objects) *Maps {
	return &Maps{o: o}
}

// svc is a services entry.
type svc struct {
	key ServiceKey
	val loader.Service
}

// backend is a used backends entry.
type backend struct {
	id  uint32
	val loader.Backend
}

func (b backend) addr() netip.Addr { return loader.AddrFrom16(b.val.Addr) }

// inRing tells whether the backend takes new flows through the Maglev ring.
func (b backend) inRing() bool {
	const out = loader.BackendDraining | loader.BackendSorry
	return b.val.Flags&loader.BackendUsed != 0 && b.val.Flags&out == 0 && b.val.Weight > 0
}

// AddService adds a service with the lowest free id, or updates the persistence of an existing
// one in place (its id, backends and rings are kept). A new service has no ring: its packets are
// dropped (counted as drop_no_backend) until it gets a backend.
func (m *Maps) AddService(s ServiceSpec) error {
	s.Key = s.Key.normal()
	if err := s.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	mk := s.Key.mapKey()
	var cur loader.Service
	err := m.o.Services.Lookup(mk, &cur)
	if err == nil {
		setPersistence(&cur, s.Persistence)
		if err := m.o.Services.Update(mk, cur, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("update service %s: %w", s.Key, err)
		}
		return m.recountVIP(s.Key.VIP) // repairs a count left wrong by an interrupted writer
	}
	if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("look up service %s: %w", s.Key, err)
	}

	svcs, err := m.services()
	if err != nil {
		return err
	}
	used := map[uint32]bool{}
	sameVIP := uint32(0)
	for _, x := range svcs {
		used[x.val.Id] = true
		if x.key.VIP == s.Key.VIP {
			sameVIP++
		}
	}
	size := m.o.Services.MaxEntries()
	id := uint32(0)
	for id < size && used[id] {
		id++
	}
	if id >= size {
		return fmt.Errorf("cannot add service %s: the service table is full (%d services); its size is set by `xdplb attach --services N` (a new size needs detach and attach)", s.Key, size)
	}

	// A clean slate for the id: no rings, stats or backends left by an interrupted delete.
	if err := m.clearServiceID(id); err != nil {
		return err
	}
	val := loader.Service{Id: id, Sched: loader.SchedMaglev}
	setPersistence(&val, s.Persistence)
	// The VIP first: alone it only makes the data path look the service up (and drop IPv4
	// fragments to the VIP, which it could not balance anyway).
	if err := m.o.VIPs.Put(loader.Addr16(s.Key.VIP), loader.VIP{Services: sameVIP + 1}); err != nil {
		return fmt.Errorf("add VIP %s: %w", s.Key.VIP, err)
	}
	if err := m.o.Services.Update(mk, val, ebpf.UpdateNoExist); err != nil {
		m.setVIPCount(s.Key.VIP, sameVIP)
		return fmt.Errorf("add service %s: %w", s.Key, err)
	}
	return nil
}

func setPersistence(v *loader.Service, d time.Duration) {
	v.PersistTimeout = uint32(d / time.Second)
	if v.PersistTimeout > 0 {
		v.Flags |= loader.SvcFlagHashSrcOnly
	} else {
		v.Flags &^= loader.SvcFlagHashSrcOnly
	}
}

// DeleteService removes a service with its backends, rings, statistics and persistence entries.
func (m *Maps) DeleteService(k ServiceKey) error {
	k = k.normal()
	if err := k.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	mk := k.mapKey()
	cur, err := m.service(k)
	if err != nil {
		return err
	}
	// The service first: from then on its packets pass to the kernel (or match the VIP's
	// port-0 service), so nothing reads the backends and rings removed below.
	if err := m.o.Services.Delete(mk); err != nil {
		return fmt.Errorf("delete service %s: %w", k, err)
	}
	if err := m.recountVIP(k.VIP); err != nil {
		return err
	}
	return m.clearServiceID(cur.Id)
}

// recountVIP sets the VIP's entry to the number of services using it, deleting it at zero.
func (m *Maps) recountVIP(vip netip.Addr) error {
	svcs, err := m.services()
	if err != nil {
		return err
	}
	n := uint32(0)
	for _, x := range svcs {
		if x.key.VIP == vip {
			n++
		}
	}
	return m.setVIPCount(vip, n)
}

// clearServiceID removes every trace of service id: rings, backends, statistics, persistence.
func (m *Maps) clearServiceID(id uint32) error {
	for slot := uint32(0); slot < 2; slot++ {
		if err := m.o.Maglev.Delete(id*2 + slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete Maglev ring %d of service id %d: %w", slot, id, err)
		}
	}
	bes, err := m.backends()
	if err != nil {
		return err
	}
	for _, b := range bes {
		if b.val.Service == id {
			if err := m.clearBackend(b.id); err != nil {
				return err
			}
		}
	}
	if err := zeroTraffic(m.o.SvcStats, id); err != nil {
		return fmt.Errorf("reset statistics of service id %d: %w", id, err)
	}
	return m.purgePersist(id)
}

// purgePersist deletes the persistence entries of service id, so a later service with the
// same id does not inherit its clients.
func (m *Maps) purgePersist(id uint32) error {
	var (
		k    loader.PersistKey
		v    loader.PersistEntry
		dead []loader.PersistKey
	)
	it := m.o.Persist.Iterate()
	for it.Next(&k, &v) {
		if k.Service == id {
			dead = append(dead, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read persistence entries: %w", err)
	}
	for _, k := range dead {
		if err := m.o.Persist.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete persistence entry: %w", err)
		}
	}
	return nil
}

func (m *Maps) setVIPCount(vip netip.Addr, n uint32) error {
	key := loader.Addr16(vip)
	if n == 0 {
		if err := m.o.VIPs.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete VIP %s: %w", vip, err)
		}
		return nil
	}
	if err := m.o.VIPs.Put(key, loader.VIP{Services: n}); err != nil {
		return fmt.Errorf("update VIP %s: %w", vip, err)
	}
	return nil
}

// SetBackend adds a backend to a service, or updates the one with the same address, then
// rebuilds the service's ring. A new backend gets the lowest free id from 1; a sorry server
// replaces the service's previous one. It is SetBackends with the service's other backends kept
// as they are, so it writes nothing when the maps already hold b.
func (m *Maps) SetBackend(k ServiceKey, b BackendSpec) error {
	k = k.normal()
	b.Addr = b.Addr.Unmap()
	if err := k.Validate(); err != nil {
		return err
	}
	if err := checkBackend(k, b); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	cur, err := m.service(k)
	if err != nil {
		return err
	}
	all, err := m.backends()
	if err != nil {
		return err
	}
	var specs []BackendSpec
	for _, x := range all {
		if x.val.Service != cur.Id || x.addr() == b.Addr || (b.Sorry && x.id == cur.SorryBackend) {
			continue // b takes the place of the entry with its address, and of a replaced sorry server
		}
		specs = append(specs, x.spec())
	}
	_, err = m.setBackends(k, cur, all, append(specs, b))
	return err
}

// spec is the BackendSpec that specValue turns into b's entry.
func (b backend) spec() BackendSpec {
	s := BackendSpec{
		Addr:     b.addr(),
		Weight:   b.val.Weight,
		Local:    b.val.Flags&loader.BackendLocal != 0,
		Draining: b.val.Flags&loader.BackendDraining != 0,
		Sorry:    b.val.Flags&loader.BackendSorry != 0,
	}
	if b.val.Mac != ([6]uint8{}) {
		s.MAC = net.HardwareAddr(slices.Clone(b.val.Mac[:]))
	}
	return s
}

// checkBackend checks b on its own and against the service k.
func checkBackend(k ServiceKey, b BackendSpec) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if b.Addr.Is4() != k.VIP.Is4() {
		return fmt.Errorf("backend %s: an IPv%d real server cannot serve the IPv%d VIP of %s",
			b.Addr, ipVersion(b.Addr), ipVersion(k.VIP), k)
	}
	return nil
}

func ipVersion(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// DeleteBackend takes a backend out of the ring, then clears it. Flows tracked to it become
// stale and the data path reschedules them (counted as ct_stale).
func (m *Maps) DeleteBackend(k ServiceKey, addr netip.Addr) error {
	k = k.normal()
	addr = addr.Unmap()
	if err := k.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	cur, err := m.service(k)
	if err != nil {
		return err
	}
	all, err := m.backends()
	if err != nil {
		return err
	}
	var (
		mine []backend
		gone *backend
	)
	for _, x := range all {
		if x.val.Service != cur.Id {
			continue
		}
		if x.addr() == addr {
			gone = &x
			continue
		}
		mine = append(mine, x)
	}
	if gone == nil {
		return fmt.Errorf("backend %s of %s: %w", addr, k, ErrNotFound)
	}
	if cur.SorryBackend == gone.id {
		cur.SorryBackend = 0
	}
	if err := m.writeRing(k, cur, mine); err != nil {
		return err
	}
	return m.clearBackend(gone.id)
}

// SetBackends makes the service's backends exactly want, plus sorry as its sorry server (nil =
// none), with at most one ring rebuild; it writes nothing and reports changed = false when the
// maps already hold exactly that (address, MAC, weight and flags of every backend, and the
// sorry pointer).
//
// A backend keeps its id while its address stays; new ones get the lowest free ids in the order
// given (want first, then sorry), so two directors applying the same sequence of configs to
// fresh maps get the same ids and byte-identical rings. Ids of backends removed by this call are
// not reused by it. Writes follow the file's order: new and updated entries that the ring or the
// sorry pointer will name are written first, then the new ring and the service (active slot
// flipped, sorry pointer set), then entries that left the ring are rewritten and removed ones
// cleared (flows tracked to them become stale and the data path reschedules them).
func (m *Maps) SetBackends(k ServiceKey, want []BackendSpec, sorry *BackendSpec) (changed bool, err error) {
	k = k.normal()
	if err := k.Validate(); err != nil {
		return false, err
	}
	specs := slices.Clone(want)
	for i := range specs {
		specs[i].Sorry = false
	}
	if sorry != nil {
		s := *sorry
		s.Sorry = true
		s.Draining = false
		specs = append(specs, s)
	}
	seen := map[netip.Addr]bool{}
	for i := range specs {
		b := &specs[i]
		b.Addr = b.Addr.Unmap()
		if err := checkBackend(k, *b); err != nil {
			return false, err
		}
		if seen[b.Addr] {
			return false, fmt.Errorf("backend %s of %s: given twice (addresses are unique within a service)", b.Addr, k)
		}
		seen[b.Addr] = true
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	cur, err := m.service(k)
	if err != nil {
		return false, err
	}
	all, err := m.backends()
	if err != nil {
		return false, err
	}
	return m.setBackends(k, cur, all, specs)
}

// setBackends is SetBackends once specs are checked (unmapped addresses, each given once) and
// cur and all read under m.mu, which the caller holds.
func (m *Maps) setBackends(k ServiceKey, cur loader.Service, all []backend, specs []BackendSpec) (changed bool, err error) {
	seen := map[netip.Addr]bool{}
	for _, b := range specs {
		seen[b.Addr] = true
	}
	used := map[uint32]bool{}
	old := map[netip.Addr]backend{}
	for _, x := range all {
		used[x.id] = true
		if x.val.Service == cur.Id {
			old[x.addr()] = x
		}
	}

	var (
		next     []backend // the service's backends after the change, in the order given
		isNew    []bool
		sorryID  uint32
		differs  = len(old) != len(specs)
		size     = m.o.Backends.MaxEntries()
		nextFree = uint32(1)
	)
	for _, b := range specs {
		nb := backend{val: specValue(b, cur.Id)}
		o, had := old[b.Addr]
		if had {
			nb.id = o.id
			if o.val != nb.val {
				differs = true
			}
		} else {
			differs = true
			for nextFree < size && used[nextFree] {
				nextFree++
			}
			if nextFree >= size {
				return false, fmt.Errorf("cannot add backend %s to %s: the backend table is full (%d backends); its size is set by `xdplb attach --backends N` (a new size needs detach and attach)",
					b.Addr, k, size-1)
			}
			nb.id = nextFree
			used[nextFree] = true
		}
		if b.Sorry {
			sorryID = nb.id
		}
		next = append(next, nb)
		isNew = append(isNew, !had)
	}
	if cur.SorryBackend != sorryID {
		differs = true
	}
	if !differs {
		return false, nil
	}
	cur.SorryBackend = sorryID

	// Entries the new ring or the sorry pointer name, and new entries, before the ring.
	undo := func() {
		for i, nb := range next {
			if isNew[i] {
				m.clearBackend(nb.id) // nothing names it
			}
		}
	}
	for i, nb := range next {
		if !isNew[i] && !(nb.inRing() || nb.id == sorryID) {
			continue
		}
		if !isNew[i] && old[nb.addr()].val == nb.val {
			continue
		}
		if isNew[i] {
			if err := zeroTraffic(m.o.BackendStats, nb.id); err != nil {
				undo()
				return true, fmt.Errorf("reset statistics of backend id %d: %w", nb.id, err)
			}
		}
		if err := m.o.Backends.Put(nb.id, nb.val); err != nil {
			undo()
			return true, fmt.Errorf("write backend %s of %s: %w", nb.addr(), k, err)
		}
	}
	if err := m.writeRing(k, cur, next); err != nil {
		undo()
		return true, err
	}
	// Entries that left the ring, after it.
	for i, nb := range next {
		if isNew[i] || nb.inRing() || nb.id == sorryID || old[nb.addr()].val == nb.val {
			continue
		}
		if err := m.o.Backends.Put(nb.id, nb.val); err != nil {
			return true, fmt.Errorf("write backend %s of %s: %w", nb.addr(), k, err)
		}
	}
	// Removed entries last: nothing names them any more.
	gone := make([]backend, 0, len(old))
	for a, x := range old {
		if !seen[a] {
			gone = append(gone, x)
		}
	}
	slices.SortFunc(gone, func(a, b backend) int { return cmp.Compare(a.id, b.id) })
	for _, x := range gone {
		if err := m.clearBackend(x.id); err != nil {
			return true, fmt.Errorf("remove backend %s of %s: %w", x.addr(), k, err)
		}
	}
	return true, nil
}

// specValue is the backends entry of b in service id.
func specValue(b BackendSpec, id uint32) loader.Backend {
	v := loader.Backend{
		Addr:    loader.Addr16(b.Addr),
		Flags:   loader.BackendUsed,
		Service: id,
		Weight:  b.weight(),
	}
	copy(v.Mac[:], b.MAC)
	if b.Local {
		v.Flags |= loader.BackendLocal
	}
	if b.Draining {
		v.Flags |= loader.BackendDraining
	}
	if b.Sorry {
		v.Flags |= loader.BackendSorry
	}
	return v
}

func (m *Maps) clearBackend(id uint32) error {
	if err := m.o.Backends.Put(id, loader.Backend{}); err != nil {
		return fmt.Errorf("clear backend id %d: %w", id, err)
	}
	if err := zeroTraffic(m.o.BackendStats, id); err != nil {
		return fmt.Errorf("reset statistics of backend id %d: %w", id, err)
	}
	return nil
}

// Rebuild writes a new Maglev ring for the service from its usable backends (used, not
// draining, not sorry, weight > 0) into the idle slot, then flips the active slot. With no
// usable backend the idle slot is left without a ring: new flows go to the sorry server, or
// are dropped.
func (m *Maps) Rebuild(k ServiceKey) error {
	k = k.normal()
	if err := k.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	cur, err := m.service(k)
	if err != nil {
		return err
	}
	all, err := m.backends()
	if err != nil {
		return err
	}
	var mine []backend
	for _, x := range all {
		if x.val.Service == cur.Id {
			mine = append(mine, x)
		}
	}
	return m.writeRing(k, cur, mine)
}

// ringBackends is the input of maglev.Build for a service's backends.
func ringBackends(bes []backend) []maglev.Backend {
	var out []maglev.Backend
	for _, b := range bes {
		if b.inRing() {
			out = append(out, maglev.Backend{ID: b.id, Key: b.addr().String(), Weight: b.val.Weight})
		}
	}
	return out
}

// writeRing puts a ring built from bes into the service's idle slot, then writes cur with the
// slot flipped (and whatever else the caller changed in cur, such as the sorry server).
func (m *Maps) writeRing(k ServiceKey, cur loader.Service, bes []backend) error {
	slot := 1 - cur.ActiveSlot&1
	outer := cur.Id*2 + slot
	in := ringBackends(bes)
	if len(in) == 0 {
		if err := m.o.Maglev.Delete(outer); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear Maglev ring of %s: %w", k, err)
		}
	} else {
		table, err := maglev.Build(in, m.o.Layout.RingSize)
		if err != nil {
			return fmt.Errorf("build Maglev ring of %s: %w", k, err)
		}
		if !m.rewriteIdleRing(cur.Id, outer, table) {
			ring, err := loader.NewRing(table)
			if err != nil {
				return fmt.Errorf("Maglev ring of %s: %w", k, err)
			}
			err = m.o.Maglev.Put(outer, ring)
			ring.Close() // the outer map holds its own reference
			if err != nil {
				return fmt.Errorf("install Maglev ring of %s: %w", k, err)
			}
		}
	}
	cur.ActiveSlot = slot
	if err := m.o.Services.Update(k.mapKey(), cur, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("switch %s to its new ring: %w", k, err)
	}
	if m.retired == nil {
		m.retired = map[uint32]time.Time{}
	}
	m.retired[cur.Id] = time.Now() // the slot just left is idle from now on
	return nil
}

// rewriteIdleRing overwrites the ring already installed in the idle slot when it has been idle
// long enough (see ringQuiet). It saves creating a map and the kernel's RCU wait on installing
// it, which dominate an apply. false: the caller installs a new ring.
func (m *Maps) rewriteIdleRing(svcID, outer uint32, table []uint32) bool {
	since, ok := m.retired[svcID]
	if !ok || time.Since(since) < ringQuiet {
		return false
	}
	var ring *ebpf.Map
	if err := m.o.Maglev.Lookup(outer, &ring); err != nil || ring == nil {
		return false
	}
	defer ring.Close()
	if info, err := ring.Info(); err != nil || info.MaxEntries != uint32(len(table)) {
		return false
	}
	return loader.FillRing(ring, table) == nil
}

// service reads a services entry; the error wraps ErrNotFound when there is none.
func (m *Maps) service(k ServiceKey) (loader.Service, error) {
	var v loader.Service
	err := m.o.Services.Lookup(k.mapKey(), &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return v, fmt.Errorf("service %s: %w", k, ErrNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("look up service %s: %w", k, err)
	}
	return v, nil
}

// services reads the services map.
func (m *Maps) services() ([]svc, error) {
	var (
		out []svc
		k   loader.ServiceKey
		v   loader.Service
	)
	it := m.o.Services.Iterate()
	for it.Next(&k, &v) {
		out = append(out, svc{key: keyFromMap(k), val: v})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read services: %w", err)
	}
	return out, nil
}

// backends reads the used entries of the backends array, by id.
func (m *Maps) backends() ([]backend, error) {
	var out []backend
	keep := func(id uint32, v loader.Backend) {
		if id != 0 && v.Flags&loader.BackendUsed != 0 {
			out = append(out, backend{id: id, val: v})
		}
	}
	const chunk = 4096
	size := int(m.o.Backends.MaxEntries())
	keys := make([]uint32, min(chunk, size))
	vals := make([]loader.Backend, len(keys))
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.o.Backends.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			keep(keys[i], vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil // an array's batches come in id order
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break // kernel without batch operations (< 5.6)
		}
		if err != nil {
			return nil, fmt.Errorf("read backends: %w", err)
		}
	}
	out = out[:0]
	var (
		id uint32
		v  loader.Backend
	)
	it := m.o.Backends.Iterate()
	for it.Next(&id, &v) {
		keep(id, v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read backends: %w", err)
	}
	slices.SortFunc(out, func(a, b backend) int { return cmp.Compare(a.id, b.id) })
	return out, nil
}

// zeroTraffic resets one entry of a per-CPU traffic map.
func zeroTraffic(m *ebpf.Map, id uint32) error {
	n, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	return m.Put(id, make([]loader.Traffic, n))
}
