package control

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/loader"
)

// State is everything the maps hold that a person asks about, as `xdplb list` shows it.
//
// Its JSON form (`xdplb list --json`) is stable; names are snake_case, addresses and MACs are
// strings, durations are whole seconds:
//
//	{
//	  "iface": "ens33", "mode": "native", "program_id": 42,   // set by the caller; omitted when empty
//	  "mode_note": "veth peer p-db2 has no XDP program: ...", // likewise
//	  "ring_size": 65537, "hash_seed": 0,
//	  "services": [{
//	    "id": 0, "vip": "10.0.0.100", "port": 3306, "proto": "tcp", "scheduler": "maglev",
//	    "persistence_seconds": 120, "active_slot": 1, "sorry_backend_id": 0,
//	    "traffic": {"packets": 0, "bytes": 0, "new_flows": 0},
//	    "backends": [{
//	      "id": 1, "addr": "10.0.0.11", "mac": "02:00:00:00:00:0b", "weight": 1,
//	      "local": false, "draining": false, "sorry": false,
//	      "traffic": {"packets": 0, "bytes": 0, "new_flows": 0}
//	    }]
//	  }],
//	  "peers": ["02:00:00:00:00:aa"],
//	  "lease": {"set": true, "expired": false, "remaining_ms": 8123.4},  // the director lease
//	  "counters": {"packets": 0, "tx": 0, ...}                 // every counter of bpf/structs.h
//	}
//
// Services are sorted by VIP, port and protocol; backends by id; peers by MAC.
type State struct {
	// Iface, Mode and ProgramID describe the attachment; Snapshot leaves them empty for the
	// caller that knows them.
	Iface     string
	Mode      string
	ProgramID uint32
	// ModeNote says what Mode means on this interface when that needs saying (a veth whose
	// peer has no XDP program: see loader.ModeNote); set by the caller.
	ModeNote string

	RingSize uint32
	HashSeed uint32
	Services []ServiceState
	Peers    []net.HardwareAddr
	Lease    Lease    // the director lease (see SetLease)
	Counters Counters // summed over CPUs
}

// ServiceState is one service with its backends.
type ServiceState struct {
	Key          ServiceKey
	ID           uint32
	Scheduler    string // "maglev"
	Persistence  time.Duration
	ActiveSlot   uint32
	SorryBackend uint32 // backend id of the sorry server; 0 = none
	Backends     []BackendState
	Traffic      Traffic
}

// BackendState is one backend of a service.
type BackendState struct {
	ID       uint32
	Addr     netip.Addr
	MAC      net.HardwareAddr // all zeros for a local backend given no MAC
	Weight   uint32
	Local    bool
	Draining bool
	Sorry    bool
	Traffic  Traffic
}

// Traffic is a service's or a backend's traffic, summed over CPUs.
type Traffic struct {
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"` // whole frames as received
	NewFlows uint64 `json:"new_flows"`
}

// Counters are the data path's verdict counters (struct counters in bpf/structs.h).
type Counters loader.Counters

// Counter is one named counter.
type Counter struct {
	Name  string // as in bpf/structs.h: "tx", "pass_peer", ...
	Value uint64
}

// List returns every counter in the order of bpf/structs.h.
func (c Counters) List() []Counter {
	var out []Counter
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Type.Kind() != reflect.Uint64 {
			continue
		}
		out = append(out, Counter{Name: snake(f.Name), Value: v.Field(i).Uint()})
	}
	return out
}

// snake turns bpf2go's field names back into the C ones: PassIpv6Ext → pass_ipv6_ext.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// MarshalJSON writes an object of every counter by its C name, in the C order.
func (c Counters) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, x := range c.List() {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%d", x.Name, x.Value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON writes; unknown names are ignored.
func (c *Counters) UnmarshalJSON(data []byte) error {
	var m map[string]uint64
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Type.Kind() == reflect.Uint64 {
			v.Field(i).SetUint(m[snake(f.Name)])
		}
	}
	return nil
}

func (c *Counters) add(o loader.Counters) {
	a, b := reflect.ValueOf(c).Elem(), reflect.ValueOf(o)
	for i := range a.NumField() {
		if a.Field(i).Kind() == reflect.Uint64 {
			a.Field(i).SetUint(a.Field(i).Uint() + b.Field(i).Uint())
		}
	}
}

// Snapshot reads services, backends, peers and counters. It is not atomic across maps: a
// concurrent writer can make it show a change half done, never a corrupt entry.
func (m *Maps) Snapshot() (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()

	st := State{RingSize: m.o.Layout.RingSize, HashSeed: m.o.Layout.HashSeed}
	svcs, err := m.services()
	if err != nil {
		return st, err
	}
	bes, err := m.backends()
	if err != nil {
		return st, err
	}
	byService := map[uint32][]BackendState{}
	for _, b := range bes {
		t, err := readTraffic(m.o.BackendStats, b.id)
		if err != nil {
			return st, fmt.Errorf("read statistics of backend %s: %w", b.addr(), err)
		}
		byService[b.val.Service] = append(byService[b.val.Service], BackendState{
			ID:       b.id,
			Addr:     b.addr(),
			MAC:      net.HardwareAddr(bytes.Clone(b.val.Mac[:])),
			Weight:   b.val.Weight,
			Local:    b.val.Flags&loader.BackendLocal != 0,
			Draining: b.val.Flags&loader.BackendDraining != 0,
			Sorry:    b.val.Flags&loader.BackendSorry != 0,
			Traffic:  t,
		})
	}
	for _, s := range svcs {
		t, err := readTraffic(m.o.SvcStats, s.val.Id)
		if err != nil {
			return st, fmt.Errorf("read statistics of service %s: %w", s.key, err)
		}
		st.Services = append(st.Services, ServiceState{
			Key:          s.key,
			ID:           s.val.Id,
			Scheduler:    schedName(s.val.Sched),
			Persistence:  time.Duration(s.val.PersistTimeout) * time.Second,
			ActiveSlot:   s.val.ActiveSlot,
			SorryBackend: s.val.SorryBackend,
			Backends:     byService[s.val.Id],
			Traffic:      t,
		})
	}
	slices.SortFunc(st.Services, func(a, b ServiceState) int {
		return cmp.Or(a.Key.VIP.Compare(b.Key.VIP), cmp.Compare(a.Key.Port, b.Key.Port), cmp.Compare(a.Key.Proto, b.Key.Proto))
	})
	if st.Peers, err = m.peers(); err != nil {
		return st, err
	}
	if st.Lease, err = m.lease(); err != nil {
		return st, err
	}
	st.Counters, err = ReadCounters(m.o.Stats)
	return st, err
}

// ReadCounters sums the per-CPU verdict counters in a `stats` map.
func ReadCounters(stats *ebpf.Map) (Counters, error) {
	var per []loader.Counters
	var c Counters
	if err := stats.Lookup(uint32(0), &per); err != nil {
		return c, fmt.Errorf("read counters: %w", err)
	}
	for _, p := range per {
		c.add(p)
	}
	return c, nil
}

func schedName(s uint32) string {
	if s == loader.SchedMaglev {
		return "maglev"
	}
	return fmt.Sprintf("sched-%d", s)
}

func readTraffic(m *ebpf.Map, id uint32) (Traffic, error) {
	var (
		per []loader.Traffic
		t   Traffic
	)
	if err := m.Lookup(id, &per); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return t, nil
		}
		return t, err
	}
	for _, x := range per {
		t.Packets += x.Packets
		t.Bytes += x.Bytes
		t.NewFlows += x.NewFlows
	}
	return t, nil
}

// The JSON shapes, kept apart from the Go ones so each can change without the other.
type (
	jsonState struct {
		Iface     string        `json:"iface,omitempty"`
		Mode      string        `json:"mode,omitempty"`
		ProgramID uint32        `json:"program_id,omitempty"`
		ModeNote  string        `json:"mode_note,omitempty"`
		RingSize  uint32        `json:"ring_size"`
		HashSeed  uint32        `json:"hash_seed"`
		Services  []jsonService `json:"services"`
		Peers     []string      `json:"peers"`
		Lease     jsonLease     `json:"lease"`
		Counters  Counters      `json:"counters"`
	}
	jsonLease struct {
		Set         bool    `json:"set"`
		Expired     bool    `json:"expired"`
		RemainingMS float64 `json:"remaining_ms"` // negative: passed that long ago
	}
	jsonService struct {
		ID                 uint32        `json:"id"`
		VIP                netip.Addr    `json:"vip"`
		Port               uint16        `json:"port"`
		Proto              Proto         `json:"proto"`
		Scheduler          string        `json:"scheduler"`
		PersistenceSeconds uint32        `json:"persistence_seconds"`
		ActiveSlot         uint32        `json:"active_slot"`
		SorryBackendID     uint32        `json:"sorry_backend_id"`
		Traffic            Traffic       `json:"traffic"`
		Backends           []jsonBackend `json:"backends"`
	}
	jsonBackend struct {
		ID       uint32     `json:"id"`
		Addr     netip.Addr `json:"addr"`
		MAC      string     `json:"mac"`
		Weight   uint32     `json:"weight"`
		Local    bool       `json:"local"`
		Draining bool       `json:"draining"`
		Sorry    bool       `json:"sorry"`
		Traffic  Traffic    `json:"traffic"`
	}
)

// MarshalJSON writes the documented form (see State).
func (s State) MarshalJSON() ([]byte, error) {
	j := jsonState{
		Iface: s.Iface, Mode: s.Mode, ProgramID: s.ProgramID, ModeNote: s.ModeNote,
		RingSize: s.RingSize, HashSeed: s.HashSeed,
		Services: []jsonService{}, Peers: []string{}, Counters: s.Counters,
		Lease: jsonLease{Set: s.Lease.Set, Expired: s.Lease.Expired(), RemainingMS: float64(s.Lease.Remaining) / float64(time.Millisecond)},
	}
	for _, p := range s.Peers {
		j.Peers = append(j.Peers, p.String())
	}
	for _, sv := range s.Services {
		js := jsonService{
			ID: sv.ID, VIP: sv.Key.VIP, Port: sv.Key.Port, Proto: sv.Key.Proto,
			Scheduler: sv.Scheduler, PersistenceSeconds: uint32(sv.Persistence / time.Second),
			ActiveSlot: sv.ActiveSlot, SorryBackendID: sv.SorryBackend, Traffic: sv.Traffic,
			Backends: []jsonBackend{},
		}
		for _, b := range sv.Backends {
			js.Backends = append(js.Backends, jsonBackend{
				ID: b.ID, Addr: b.Addr, MAC: b.MAC.String(), Weight: b.Weight,
				Local: b.Local, Draining: b.Draining, Sorry: b.Sorry, Traffic: b.Traffic,
			})
		}
		j.Services = append(j.Services, js)
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *State) UnmarshalJSON(data []byte) error {
	var j jsonState
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*s = State{
		Iface: j.Iface, Mode: j.Mode, ProgramID: j.ProgramID, ModeNote: j.ModeNote,
		RingSize: j.RingSize, HashSeed: j.HashSeed, Counters: j.Counters,
		Lease: Lease{Set: j.Lease.Set, Remaining: time.Duration(j.Lease.RemainingMS * float64(time.Millisecond))},
	}
	for _, p := range j.Peers {
		mac, err := net.ParseMAC(p)
		if err != nil {
			return fmt.Errorf("peer: %w", err)
		}
		s.Peers = append(s.Peers, mac)
	}
	for _, js := range j.Services {
		sv := ServiceState{
			Key:       ServiceKey{VIP: js.VIP, Port: js.Port, Proto: js.Proto},
			ID:        js.ID,
			Scheduler: js.Scheduler, Persistence: time.Duration(js.PersistenceSeconds) * time.Second,
			ActiveSlot: js.ActiveSlot, SorryBackend: js.SorryBackendID, Traffic: js.Traffic,
		}
		for _, b := range js.Backends {
			mac, err := net.ParseMAC(b.MAC)
			if err != nil {
				return fmt.Errorf("backend %s: %w", b.Addr, err)
			}
			sv.Backends = append(sv.Backends, BackendState{
				ID: b.ID, Addr: b.Addr, MAC: mac, Weight: b.Weight,
				Local: b.Local, Draining: b.Draining, Sorry: b.Sorry, Traffic: b.Traffic,
			})
		}
		s.Services = append(s.Services, sv)
	}
	return nil
}

// TrackedFlows counts the conntrack entries (established flows the data path remembers).
func (m *Maps) TrackedFlows() (int, error) {
	const chunk = 4096
	keys := make([]loader.FlowKey, chunk)
	vals := make([]loader.Flow, chunk)
	var (
		cursor ebpf.MapBatchCursor
		n      int
	)
	for {
		got, err := m.o.Conntrack.BatchLookup(&cursor, keys, vals, nil)
		n += got
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break // kernel without batch operations (< 5.6)
		}
		if err != nil {
			return 0, fmt.Errorf("count tracked flows: %w", err)
		}
	}
	n = 0
	var (
		k loader.FlowKey
		v loader.Flow
	)
	it := m.o.Conntrack.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("count tracked flows: %w", err)
	}
	return n, nil
}
