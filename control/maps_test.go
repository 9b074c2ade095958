package control

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/control/maglev"
	"github.com/xdplb/xdplb/loader"
)

// testSizes keep the maps small so that full-table paths are cheap to reach.
var testSizes = loader.Sizes{Services: 4, Backends: 6, Peers: 2, Conntrack: 1024, Persist: 1024, RingSize: 251}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF, CAP_NET_ADMIN) to load BPF maps: run `sudo go test ./control/`")
	}
}

func load(t testing.TB, s loader.Sizes) (*loader.Objects, *Maps) {
	t.Helper()
	requireRoot(t)
	o, err := loader.Load(s, 7)
	if errors.Is(err, loader.ErrNotRoot) || errors.Is(err, os.ErrPermission) {
		t.Skipf("cannot load BPF objects: %v", err)
	}
	if err != nil {
		t.Fatalf("%+v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o, NewMaps(o)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var (
	vip     = netip.MustParseAddr("10.0.0.100")
	mysql   = ServiceKey{VIP: vip, Port: 3306, Proto: TCP}
	mysqlX  = ServiceKey{VIP: vip, Port: 33060, Proto: TCP}
	be1     = netip.MustParseAddr("10.0.0.11")
	be2     = netip.MustParseAddr("10.0.0.12")
	be3     = netip.MustParseAddr("10.0.0.13")
	mac1, _ = net.ParseMAC("02:00:00:00:00:0b")
	mac2, _ = net.ParseMAC("02:00:00:00:00:0c")
	mac3, _ = net.ParseMAC("02:00:00:00:00:0d")
)

func mapService(t *testing.T, o *loader.Objects, k ServiceKey) loader.Service {
	t.Helper()
	var v loader.Service
	must(t, o.Services.Lookup(k.mapKey(), &v))
	return v
}

func vipCount(t *testing.T, o *loader.Objects, a netip.Addr) uint32 {
	t.Helper()
	var v loader.VIP
	err := o.VIPs.Lookup(loader.Addr16(a), &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0
	}
	must(t, err)
	return v.Services
}

func mapBackend(t *testing.T, o *loader.Objects, id uint32) loader.Backend {
	t.Helper()
	var v loader.Backend
	must(t, o.Backends.Lookup(id, &v))
	return v
}

// ring reads the ring in a slot of service id; nil when the slot has none.
func ring(t *testing.T, o *loader.Objects, id, slot uint32) []uint32 {
	t.Helper()
	var inner *ebpf.Map
	err := o.Maglev.Lookup(id*2+slot, &inner)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	must(t, err)
	defer inner.Close()
	out := make([]uint32, inner.MaxEntries())
	for i := range out {
		must(t, inner.Lookup(uint32(i), &out[i]))
	}
	return out
}

func activeRing(t *testing.T, o *loader.Objects, k ServiceKey) []uint32 {
	t.Helper()
	s := mapService(t, o, k)
	return ring(t, o, s.Id, s.ActiveSlot)
}

func wantRing(t *testing.T, o *loader.Objects, k ServiceKey, bs ...maglev.Backend) {
	t.Helper()
	got := activeRing(t, o, k)
	if len(bs) == 0 {
		if got != nil {
			t.Fatalf("%s: active slot has a ring, want none", k)
		}
		return
	}
	want, err := maglev.Build(bs, o.Layout.RingSize)
	must(t, err)
	if !slices.Equal(got, want) {
		t.Fatalf("%s: active ring differs from maglev.Build(%v)", k, bs)
	}
}

func TestServiceLifecycle(t *testing.T) {
	o, m := load(t, testSizes)

	must(t, m.AddService(ServiceSpec{Key: mysql}))
	must(t, m.AddService(ServiceSpec{Key: mysqlX, Persistence: 120 * time.Second}))
	if s := mapService(t, o, mysql); s.Id != 0 || s.PersistTimeout != 0 || s.Flags != 0 || s.Sched != loader.SchedMaglev {
		t.Fatalf("first service: %+v", s)
	}
	if s := mapService(t, o, mysqlX); s.Id != 1 || s.PersistTimeout != 120 || s.Flags != loader.SvcFlagHashSrcOnly {
		t.Fatalf("second service: %+v", s)
	}
	if n := vipCount(t, o, vip); n != 2 {
		t.Fatalf("vips[%s] = %d, want 2", vip, n)
	}

	// Adding an existing key updates its persistence in place.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac1}))
	before := mapService(t, o, mysql)
	must(t, m.AddService(ServiceSpec{Key: mysql, Persistence: 30 * time.Second}))
	after := mapService(t, o, mysql)
	if after.Id != before.Id || after.ActiveSlot != before.ActiveSlot || after.PersistTimeout != 30 || after.Flags != loader.SvcFlagHashSrcOnly {
		t.Fatalf("update: before %+v, after %+v", before, after)
	}
	wantRing(t, o, mysql, maglev.Backend{ID: 1, Key: "10.0.0.11", Weight: 1})
	must(t, m.AddService(ServiceSpec{Key: mysql}))
	if s := mapService(t, o, mysql); s.PersistTimeout != 0 || s.Flags != 0 {
		t.Fatalf("persistence off: %+v", s)
	}
	if n := vipCount(t, o, vip); n != 2 {
		t.Fatalf("vips[%s] = %d after update, want 2", vip, n)
	}

	// Updating a service repairs its VIP's count.
	must(t, o.VIPs.Delete(loader.Addr16(vip)))
	must(t, m.AddService(ServiceSpec{Key: mysql}))
	if n := vipCount(t, o, vip); n != 2 {
		t.Fatalf("vips[%s] = %d after repair, want 2", vip, n)
	}

	// Delete frees the id, its ring, its backends and its clients' persistence; the next
	// service reuses the id.
	pk := loader.PersistKey{Service: 0, Client: loader.Addr16(netip.MustParseAddr("192.0.2.1"))}
	must(t, o.Persist.Put(pk, loader.PersistEntry{Backend: 1}))
	otherPK := loader.PersistKey{Service: 1, Client: pk.Client}
	must(t, o.Persist.Put(otherPK, loader.PersistEntry{Backend: 1}))
	must(t, m.DeleteService(mysql))
	var pe loader.PersistEntry
	if err := o.Persist.Lookup(pk, &pe); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("persistence entry of the deleted service: %v, want it gone", err)
	}
	must(t, o.Persist.Lookup(otherPK, &pe))
	if n := vipCount(t, o, vip); n != 1 {
		t.Fatalf("vips[%s] = %d, want 1", vip, n)
	}
	if r := ring(t, o, 0, 0); r != nil {
		t.Fatal("ring of deleted service left in slot 0")
	}
	if r := ring(t, o, 0, 1); r != nil {
		t.Fatal("ring of deleted service left in slot 1")
	}
	if b := mapBackend(t, o, 1); b != (loader.Backend{}) {
		t.Fatalf("backend of deleted service left: %+v", b)
	}
	if err := m.DeleteService(mysql); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	other := ServiceKey{VIP: netip.MustParseAddr("fd00::100"), Port: 3306, Proto: UDP}
	must(t, m.AddService(ServiceSpec{Key: other}))
	if s := mapService(t, o, other); s.Id != 0 {
		t.Fatalf("new service id %d, want the freed id 0", s.Id)
	}
	must(t, m.DeleteService(mysqlX))
	if n := vipCount(t, o, vip); n != 0 {
		t.Fatalf("vips[%s] = %d after deleting every service, want no entry", vip, n)
	}
	if n := vipCount(t, o, other.VIP); n != 1 {
		t.Fatalf("vips[%s] = %d, want 1", other.VIP, n)
	}

	// An IPv4-mapped VIP is the IPv4 VIP.
	mapped := ServiceKey{VIP: netip.MustParseAddr("::ffff:10.0.0.100"), Port: 3306, Proto: TCP}
	must(t, m.AddService(ServiceSpec{Key: mapped}))
	mapService(t, o, mysql)
}

func TestServiceTableFull(t *testing.T) {
	_, m := load(t, testSizes)
	for port := range uint16(testSizes.Services) {
		must(t, m.AddService(ServiceSpec{Key: ServiceKey{VIP: vip, Port: port + 1, Proto: TCP}}))
	}
	err := m.AddService(ServiceSpec{Key: ServiceKey{VIP: vip, Port: 99, Proto: TCP}})
	if err == nil || !strings.Contains(err.Error(), "--services") || !strings.Contains(err.Error(), "full") {
		t.Fatalf("full service table: %v, want an error naming --services", err)
	}
	// Updating an existing service still works.
	must(t, m.AddService(ServiceSpec{Key: ServiceKey{VIP: vip, Port: 1, Proto: TCP}, Persistence: time.Minute}))
}

func TestBackends(t *testing.T) {
	o, m := load(t, testSizes)
	must(t, m.AddService(ServiceSpec{Key: mysql}))
	id := mapService(t, o, mysql).Id
	wantRing(t, o, mysql)

	slot := mapService(t, o, mysql).ActiveSlot
	flipped := func() {
		t.Helper()
		s := mapService(t, o, mysql).ActiveSlot
		if s == slot {
			t.Fatalf("active slot still %d after a rebuild", s)
		}
		slot = s
	}

	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac1}))
	flipped()
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be2, MAC: mac2, Weight: 3}))
	flipped()
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be3, MAC: mac3, Local: true}))
	flipped()
	for i, want := range []loader.Backend{
		{Addr: loader.Addr16(be1), Mac: [6]uint8(mac1), Flags: loader.BackendUsed, Service: id, Weight: 1},
		{Addr: loader.Addr16(be2), Mac: [6]uint8(mac2), Flags: loader.BackendUsed, Service: id, Weight: 3},
		{Addr: loader.Addr16(be3), Mac: [6]uint8(mac3), Flags: loader.BackendUsed | loader.BackendLocal, Service: id, Weight: 1},
	} {
		if got := mapBackend(t, o, uint32(i+1)); got != want {
			t.Fatalf("backend id %d = %+v, want %+v", i+1, got, want)
		}
	}
	wantRing(t, o, mysql,
		maglev.Backend{ID: 1, Key: "10.0.0.11", Weight: 1},
		maglev.Backend{ID: 2, Key: "10.0.0.12", Weight: 3},
		maglev.Backend{ID: 3, Key: "10.0.0.13", Weight: 1})
	must(t, m.Rebuild(mysql))
	flipped()

	// Same address: an update of the same id, not a second entry.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be2, MAC: mac2, Weight: 1}))
	flipped()
	if b := mapBackend(t, o, 2); b.Weight != 1 {
		t.Fatalf("updated weight %d, want 1", b.Weight)
	}
	if b := mapBackend(t, o, 4); b.Flags != 0 {
		t.Fatalf("update allocated id 4: %+v", b)
	}

	// Draining: out of the ring, still in the table.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac1, Draining: true, Weight: 2}))
	if b := mapBackend(t, o, 1); b.Flags != loader.BackendUsed|loader.BackendDraining || b.Weight != 2 {
		t.Fatalf("draining backend: %+v", b)
	}
	wantRing(t, o, mysql,
		maglev.Backend{ID: 2, Key: "10.0.0.12", Weight: 1},
		maglev.Backend{ID: 3, Key: "10.0.0.13", Weight: 1})

	// Delete, then the next backend reuses the lowest free id.
	must(t, m.DeleteBackend(mysql, be2))
	if b := mapBackend(t, o, 2); b != (loader.Backend{}) {
		t.Fatalf("deleted backend left: %+v", b)
	}
	wantRing(t, o, mysql, maglev.Backend{ID: 3, Key: "10.0.0.13", Weight: 1})
	if err := m.DeleteBackend(mysql, be2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	must(t, m.AddService(ServiceSpec{Key: mysqlX}))
	must(t, m.SetBackend(mysqlX, BackendSpec{Addr: be1, MAC: mac1}))
	if b := mapBackend(t, o, 2); b.Service != mapService(t, o, mysqlX).Id || loader.AddrFrom16(b.Addr) != be1 {
		t.Fatalf("new backend of %s did not take the freed id 2: %+v", mysqlX, b)
	}

	// No usable backend: the new slot gets no ring.
	must(t, m.DeleteBackend(mysql, be3))
	wantRing(t, o, mysql)
	must(t, m.DeleteBackend(mysql, be1))
	wantRing(t, o, mysql)
	if err := m.SetBackend(ServiceKey{VIP: vip, Port: 1, Proto: TCP}, BackendSpec{Addr: be1, MAC: mac1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("backend of a missing service: %v, want ErrNotFound", err)
	}
}

func TestSorry(t *testing.T) {
	o, m := load(t, testSizes)
	must(t, m.AddService(ServiceSpec{Key: mysql}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac1}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be2, MAC: mac2, Sorry: true}))
	if s := mapService(t, o, mysql); s.SorryBackend != 2 {
		t.Fatalf("sorry_backend = %d, want 2", s.SorryBackend)
	}
	if b := mapBackend(t, o, 2); b.Flags != loader.BackendUsed|loader.BackendSorry {
		t.Fatalf("sorry backend flags %#x", b.Flags)
	}
	wantRing(t, o, mysql, maglev.Backend{ID: 1, Key: "10.0.0.11", Weight: 1})

	// Another sorry server replaces the first.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be3, MAC: mac3, Sorry: true}))
	if s := mapService(t, o, mysql); s.SorryBackend != 3 {
		t.Fatalf("sorry_backend = %d, want 3", s.SorryBackend)
	}
	if b := mapBackend(t, o, 2); b != (loader.Backend{}) {
		t.Fatalf("replaced sorry server left: %+v", b)
	}
	// A sorry server turned regular joins the ring and is no longer the sorry server.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be3, MAC: mac3}))
	if s := mapService(t, o, mysql); s.SorryBackend != 0 {
		t.Fatalf("sorry_backend = %d, want 0", s.SorryBackend)
	}
	wantRing(t, o, mysql,
		maglev.Backend{ID: 1, Key: "10.0.0.11", Weight: 1},
		maglev.Backend{ID: 3, Key: "10.0.0.13", Weight: 1})
	// A regular server turned sorry leaves the ring.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac1, Sorry: true}))
	if s := mapService(t, o, mysql); s.SorryBackend != 1 {
		t.Fatalf("sorry_backend = %d, want 1", s.SorryBackend)
	}
	wantRing(t, o, mysql, maglev.Backend{ID: 3, Key: "10.0.0.13", Weight: 1})
	must(t, m.DeleteBackend(mysql, be1))
	if s := mapService(t, o, mysql); s.SorryBackend != 0 {
		t.Fatalf("sorry_backend = %d after deleting it, want 0", s.SorryBackend)
	}
}

// SetBackend is SetBackends with the other backends kept: setting what the maps already hold
// writes nothing, and the others' entries (a local one without a MAC, a draining one with
// weight 0, the sorry server) come through unchanged.
func TestSetBackendKeepsOthers(t *testing.T) {
	o, m := load(t, testSizes)
	must(t, m.AddService(ServiceSpec{Key: mysql}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, Local: true}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be2, MAC: mac2, Draining: true}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be3, MAC: mac3, Sorry: true}))
	before := mapService(t, o, mysql)
	var entries []loader.Backend
	for id := uint32(1); id <= 3; id++ {
		entries = append(entries, mapBackend(t, o, id))
	}
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be2, MAC: mac2, Draining: true}))
	if after := mapService(t, o, mysql); after != before {
		t.Fatalf("setting an unchanged backend rewrote the service: before %+v, after %+v", before, after)
	}
	for i, want := range entries {
		if got := mapBackend(t, o, uint32(i+1)); got != want {
			t.Fatalf("backend id %d = %+v, want %+v", i+1, got, want)
		}
	}
	wantRing(t, o, mysql, maglev.Backend{ID: 1, Key: "10.0.0.11", Weight: 1})
}

func TestBackendTableFull(t *testing.T) {
	_, m := load(t, testSizes)
	must(t, m.AddService(ServiceSpec{Key: mysql}))
	for i := range testSizes.Backends - 1 {
		must(t, m.SetBackend(mysql, BackendSpec{Addr: netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)}), MAC: mac1}))
	}
	err := m.SetBackend(mysql, BackendSpec{Addr: netip.MustParseAddr("10.0.2.1"), MAC: mac1})
	if err == nil || !strings.Contains(err.Error(), "--backends") || !strings.Contains(err.Error(), "full") {
		t.Fatalf("full backend table: %v, want an error naming --backends", err)
	}
	// Updating an existing one still works.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: netip.AddrFrom4([4]byte{10, 0, 1, 1}), MAC: mac2}))
}

func TestValidation(t *testing.T) {
	_, m := load(t, testSizes)
	must(t, m.AddService(ServiceSpec{Key: mysql}))
	bcast, _ := net.ParseMAC("ff:ff:ff:ff:ff:ff")
	mcast, _ := net.ParseMAC("01:00:5e:00:00:01")
	long, _ := net.ParseMAC("02:00:00:00:00:00:00:01")
	for _, tc := range []struct {
		desc string
		err  error
		want string
	}{
		{"no VIP", m.AddService(ServiceSpec{Key: ServiceKey{Port: 1, Proto: TCP}}), "VIP missing"},
		{"multicast VIP", m.AddService(ServiceSpec{Key: ServiceKey{VIP: netip.MustParseAddr("224.0.0.1"), Proto: TCP}}), "multicast"},
		{"unspecified VIP", m.AddService(ServiceSpec{Key: ServiceKey{VIP: netip.MustParseAddr("::"), Proto: TCP}}), "unspecified"},
		{"loopback VIP", m.AddService(ServiceSpec{Key: ServiceKey{VIP: netip.MustParseAddr("127.0.0.1"), Proto: TCP}}), "loopback"},
		{"broadcast VIP", m.AddService(ServiceSpec{Key: ServiceKey{VIP: netip.MustParseAddr("255.255.255.255"), Proto: TCP}}), "broadcast"},
		{"bad proto", m.AddService(ServiceSpec{Key: ServiceKey{VIP: vip, Proto: 1}}), "want tcp or udp"},
		{"negative persistence", m.AddService(ServiceSpec{Key: mysql, Persistence: -time.Second}), "persistence"},
		{"huge persistence", m.AddService(ServiceSpec{Key: mysql, Persistence: MaxPersistence + time.Second}), "persistence"},
		{"fractional persistence", m.AddService(ServiceSpec{Key: mysql, Persistence: 1500 * time.Millisecond}), "whole seconds"},
		{"no MAC", m.SetBackend(mysql, BackendSpec{Addr: be1}), "no MAC"},
		{"broadcast MAC", m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: bcast}), "multicast or broadcast"},
		{"multicast MAC", m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mcast}), "multicast or broadcast"},
		{"zero MAC", m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: make(net.HardwareAddr, 6)}), "all zeros"},
		{"long MAC", m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: long}), "6 bytes"},
		{"heavy", m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac1, Weight: 65536}), "weight"},
		{"family", m.SetBackend(mysql, BackendSpec{Addr: netip.MustParseAddr("fd00::11"), MAC: mac1}), "IPv6 real server"},
		{"no backend address", m.SetBackend(mysql, BackendSpec{MAC: mac1}), "backend address missing"},
		{"peer MAC", m.AddPeer(bcast, PeerStatic), "multicast or broadcast"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.desc, tc.err, tc.want)
		}
	}
	// Nothing was written by the failures.
	st, err := m.Snapshot()
	must(t, err)
	if len(st.Services) != 1 || len(st.Services[0].Backends) != 0 || st.Services[0].Persistence != 0 {
		t.Fatalf("failed calls changed the maps: %+v", st)
	}
	// Local needs no MAC; weight 0 is allowed only while draining.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, Local: true}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be2, MAC: mac2, Draining: true}))
}

func TestPeers(t *testing.T) {
	_, m := load(t, testSizes)
	must(t, m.AddPeer(mac2, PeerStatic))
	must(t, m.AddPeer(mac1, PeerStatic))
	must(t, m.AddPeer(mac1, PeerStatic)) // known: no-op, even with the table full
	err := m.AddPeer(mac3, PeerStatic)
	if err == nil || !strings.Contains(err.Error(), "--peers") {
		t.Fatalf("full peer table: %v, want an error naming --peers", err)
	}
	peers, err := m.Peers()
	must(t, err)
	if len(peers) != 2 || !bytes.Equal(peers[0], mac1) || !bytes.Equal(peers[1], mac2) {
		t.Fatalf("peers %v, want [%v %v]", peers, mac1, mac2)
	}
	must(t, m.DeletePeer(mac1))
	if err := m.DeletePeer(mac1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
}

func TestSnapshot(t *testing.T) {
	o, m := load(t, testSizes)
	v6 := ServiceKey{VIP: netip.MustParseAddr("fd00::100"), Port: 0, Proto: UDP}
	must(t, m.AddService(ServiceSpec{Key: v6}))
	must(t, m.AddService(ServiceSpec{Key: mysql, Persistence: 2 * time.Minute}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac1, Weight: 5}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be2, Local: true, Draining: true}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be3, MAC: mac3, Sorry: true}))
	must(t, m.AddPeer(mac2, PeerStatic))

	// Counters and traffic as the data path would leave them on two CPUs.
	ncpu, err := ebpf.PossibleCPU()
	must(t, err)
	per := make([]loader.Counters, ncpu)
	per[0].Packets, per[0].Tx = 3, 2
	per[ncpu-1].Packets, per[ncpu-1].Tx, per[ncpu-1].PassPeer = 2, 1, 1
	must(t, o.Stats.Put(uint32(0), per))
	tr := make([]loader.Traffic, ncpu)
	tr[0] = loader.Traffic{Packets: 2, Bytes: 120, NewFlows: 1}
	tr[ncpu-1] = loader.Traffic{Packets: 1, Bytes: 60, NewFlows: 1}
	must(t, o.BackendStats.Put(uint32(1), tr))
	must(t, o.SvcStats.Put(mapService(t, o, mysql).Id, tr))

	st, err := m.Snapshot()
	must(t, err)
	if st.RingSize != testSizes.RingSize || st.HashSeed != 7 {
		t.Fatalf("layout: ring %d seed %d", st.RingSize, st.HashSeed)
	}
	if len(st.Services) != 2 || st.Services[0].Key != mysql || st.Services[1].Key != v6 {
		t.Fatalf("services %+v, want %s then %s", st.Services, mysql, v6)
	}
	s := st.Services[0]
	wantTraffic := Traffic{Packets: 3, Bytes: 180, NewFlows: 2}
	if s.ID != 1 || s.Persistence != 2*time.Minute || s.Scheduler != "maglev" || s.SorryBackend != 3 || s.Traffic != wantTraffic {
		t.Fatalf("service %+v", s)
	}
	if s.ActiveSlot != mapService(t, o, mysql).ActiveSlot {
		t.Fatalf("active slot %d", s.ActiveSlot)
	}
	if len(s.Backends) != 3 {
		t.Fatalf("backends %+v", s.Backends)
	}
	b1, b2, b3 := s.Backends[0], s.Backends[1], s.Backends[2]
	if b1.ID != 1 || b1.Addr != be1 || !bytes.Equal(b1.MAC, mac1) || b1.Weight != 5 || b1.Local || b1.Draining || b1.Sorry || b1.Traffic != wantTraffic {
		t.Fatalf("backend 1 %+v", b1)
	}
	if b2.ID != 2 || b2.Addr != be2 || !b2.Local || !b2.Draining || b2.Sorry || b2.Weight != 0 {
		t.Fatalf("backend 2 %+v", b2)
	}
	if b3.ID != 3 || !b3.Sorry || b3.Local || b3.Draining {
		t.Fatalf("backend 3 %+v", b3)
	}
	if len(st.Services[1].Backends) != 0 {
		t.Fatalf("%s has backends %+v", v6, st.Services[1].Backends)
	}
	if len(st.Peers) != 1 || !bytes.Equal(st.Peers[0], mac2) {
		t.Fatalf("peers %v", st.Peers)
	}
	if st.Counters.Packets != 5 || st.Counters.Tx != 3 || st.Counters.PassPeer != 1 {
		t.Fatalf("counters %+v", st.Counters)
	}

	// JSON: the documented names, and a round trip.
	st.Iface = "eth9"
	b, err := json.Marshal(st)
	must(t, err)
	for _, want := range []string{
		`"iface":"eth9"`, `"ring_size":251`, `"vip":"10.0.0.100"`, `"port":3306`, `"proto":"tcp"`,
		`"persistence_seconds":120`, `"sorry_backend_id":3`, `"mac":"02:00:00:00:00:0b"`,
		`"peers":["02:00:00:00:00:0c"]`, `"counters":{"packets":5,"tx":3,"pass_local":0,"pass_peer":1,`,
		`"traffic":{"packets":3,"bytes":180,"new_flows":2}`, `"vip":"fd00::100","port":0,"proto":"udp"`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s:\n%s", want, b)
		}
	}
	var back State
	must(t, json.Unmarshal(b, &back))
	b2j, err := json.Marshal(back)
	must(t, err)
	if !bytes.Equal(b, b2j) {
		t.Fatalf("JSON round trip differs:\n%s\n%s", b, b2j)
	}

	// Deleting a backend and a service resets their traffic for whoever reuses the id.
	must(t, m.DeleteService(mysql))
	must(t, m.AddService(ServiceSpec{Key: mysql}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac1}))
	st, err = m.Snapshot()
	must(t, err)
	if s := st.Services[0]; s.Traffic != (Traffic{}) || s.Backends[0].Traffic != (Traffic{}) {
		t.Fatalf("reused ids kept old traffic: %+v", s)
	}
}

func TestCounterNames(t *testing.T) {
	names := []string{}
	for _, c := range (Counters{}).List() {
		names = append(names, c.Name)
	}
	want := []string{"packets", "tx", "pass_local", "pass_peer", "pass_not_ip", "pass_not_unicast", "pass_other_host",
		"pass_vrrp", "pass_no_service", "pass_ipv6_ext", "pass_malformed", "pass_orphaned", "drop_fragment",
		"drop_malformed", "drop_no_backend", "drop_orphan_nd", "ct_hit", "ct_stale", "ct_insert_fail", "persist_hit",
		"new_flow", "sorry"}
	if !slices.Equal(names, want) {
		t.Fatalf("counter names %v, want those of bpf/structs.h %v", names, want)
	}
}

// frame is an Ethernet + IPv4 + TCP SYN from client to dst:dport, sent to the director's MAC.
func frame(src netip.Addr, srcMAC net.HardwareAddr, dst netip.Addr, sport, dport uint16) []byte {
	director := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	b := make([]byte, 0, 54)
	b = append(b, director...)
	b = append(b, srcMAC...)
	b = binary.BigEndian.AppendUint16(b, 0x0800)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8], ip[9] = 64, 6
	copy(ip[12:], src.AsSlice())
	copy(ip[16:], dst.AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	b = append(b, ip...)
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12], tcp[13] = 5<<4, 0x02 // data offset 5, SYN
	return append(b, tcp...)
}

// TestForward runs packets through the program after editing the maps with Maps.
func TestForward(t *testing.T) {
	o, m := load(t, testSizes)
	must(t, m.AddService(ServiceSpec{Key: mysql}))
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac1}))
	client := netip.MustParseAddr("192.0.2.7")
	clientMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	peerMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0xaa}
	must(t, m.AddPeer(peerMAC, PeerStatic))

	const (
		drop = 1
		pass = 2
		tx   = 3
	)
	run := func(desc string, in []byte, want uint32, wantDst net.HardwareAddr) {
		t.Helper()
		out, ret, err := runOut(o, in)
		if err != nil {
			t.Fatalf("%s: run: %v", desc, err)
		}
		if ret != want {
			t.Fatalf("%s: verdict %d, want %d", desc, ret, want)
		}
		if wantDst != nil && (!bytes.Equal(out[0:6], wantDst) || !bytes.Equal(out[6:12], in[0:6]) || !bytes.Equal(out[12:], in[12:])) {
			t.Fatalf("%s: out frame % x, want dst %s, src %s, rest unchanged", desc, out[:14], wantDst, net.HardwareAddr(in[0:6]))
		}
	}

	run("to the backend", frame(client, clientMAC, vip, 40000, 3306), tx, mac1)
	run("not a VIP", frame(client, clientMAC, be2, 40000, 3306), pass, nil)
	run("VIP port without service", frame(client, clientMAC, vip, 40000, 80), pass, nil)
	run("from a peer director", frame(client, peerMAC, vip, 40001, 3306), pass, nil)

	// The backend's new MAC is used at once, by tracked flows too.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac2}))
	run("tracked flow, new MAC", frame(client, clientMAC, vip, 40000, 3306), tx, mac2)

	// Only a draining backend: new flows have nowhere to go, tracked ones finish.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be1, MAC: mac2, Draining: true}))
	run("tracked flow to a draining backend", frame(client, clientMAC, vip, 40000, 3306), tx, mac2)
	run("new flow, nothing usable", frame(client, clientMAC, vip, 40002, 3306), drop, nil)

	// A sorry server takes new flows while the ring is empty.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be3, MAC: mac3, Sorry: true}))
	run("new flow to the sorry server", frame(client, clientMAC, vip, 40003, 3306), tx, mac3)

	// A local backend: the frame goes up the local stack.
	must(t, m.SetBackend(mysql, BackendSpec{Addr: be2, Local: true}))
	run("new flow to the local backend", frame(client, clientMAC, vip, 40004, 3306), pass, nil)

	// Deleted backend: its tracked flow is rescheduled.
	must(t, m.DeleteBackend(mysql, be1))
	run("stale flow rescheduled", frame(client, clientMAC, vip, 40000, 3306), pass, nil)

	st, err := m.Snapshot()
	must(t, err)
	c := st.Counters
	if c.Tx != 4 || c.PassPeer != 1 || c.DropNoBackend != 1 || c.Sorry != 1 || c.CtStale != 1 || c.PassLocal != 2 {
		t.Fatalf("counters after the run: %+v", c)
	}
	// Flows 40000 (rescheduled in place), 40003 and 40004 are tracked; 40002 was dropped.
	if n, err := m.TrackedFlows(); err != nil || n != 3 {
		t.Fatalf("tracked flows: %d, %v; want 3", n, err)
	}
}

// runOut runs one frame and returns the frame the program left.
func runOut(o *loader.Objects, in []byte) ([]byte, uint32, error) {
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
	ret, err := o.Program.Run(&opts)
	return opts.DataOut, ret, err
}

func TestSetBackends(t *testing.T) {
	o, m := load(t, testSizes)
	must(t, m.AddService(ServiceSpec{Key: mysql}))
	be4 := netip.MustParseAddr("10.0.0.14")
	mac4, _ := net.ParseMAC("02:00:00:00:00:0e")
	want := []BackendSpec{
		{Addr: be1, MAC: mac1, Weight: 2},
		{Addr: be2, MAC: mac2, Draining: true},
		{Addr: be3, MAC: mac3},
	}
	changed, err := m.SetBackends(mysql, want, nil)
	must(t, err)
	if !changed {
		t.Fatal("first SetBackends: changed = false")
	}
	s := mapService(t, o, mysql)
	if s.ActiveSlot != 1 {
		t.Fatalf("active slot %d after one SetBackends, want 1 (one rebuild)", s.ActiveSlot)
	}
	wantRing(t, o, mysql,
		maglev.Backend{ID: 1, Key: "10.0.0.11", Weight: 2},
		maglev.Backend{ID: 3, Key: "10.0.0.13", Weight: 1})
	if b := mapBackend(t, o, 2); b.Flags != loader.BackendUsed|loader.BackendDraining || b.Weight != 0 {
		t.Fatalf("draining backend %+v", b)
	}
	before := activeRing(t, o, mysql)

	// The same again: nothing is written.
	changed, err = m.SetBackends(mysql, slices.Clone(want), nil)
	must(t, err)
	if changed {
		t.Fatal("second SetBackends with the same input: changed = true")
	}
	if s := mapService(t, o, mysql); s.ActiveSlot != 1 {
		t.Fatalf("active slot %d after an idempotent SetBackends, want 1", s.ActiveSlot)
	}
	if !slices.Equal(activeRing(t, o, mysql), before) {
		t.Fatal("ring changed by an idempotent SetBackends")
	}

	// be1 leaves, be2 joins the ring, be3 gets a new MAC, be4 becomes the sorry server: one rebuild.
	want = []BackendSpec{
		{Addr: be2, MAC: mac2},
		{Addr: be3, MAC: mac1},
	}
	changed, err = m.SetBackends(mysql, want, &BackendSpec{Addr: be4, MAC: mac4})
	must(t, err)
	if !changed {
		t.Fatal("changed = false after a change")
	}
	s = mapService(t, o, mysql)
	if s.ActiveSlot != 0 {
		t.Fatalf("active slot %d, want 0 (exactly one more rebuild)", s.ActiveSlot)
	}
	// Id 1 is freed only after the ring stopped naming it: the sorry server gets id 4.
	if s.SorryBackend != 4 {
		t.Fatalf("sorry backend %d, want 4", s.SorryBackend)
	}
	if b := mapBackend(t, o, 1); b != (loader.Backend{}) {
		t.Fatalf("removed backend left: %+v", b)
	}
	if b := mapBackend(t, o, 3); !bytes.Equal(b.Mac[:], mac1) {
		t.Fatalf("backend 3 MAC %x, want %s", b.Mac, mac1)
	}
	if b := mapBackend(t, o, 4); b.Flags != loader.BackendUsed|loader.BackendSorry {
		t.Fatalf("sorry backend flags %#x", b.Flags)
	}
	wantRing(t, o, mysql,
		maglev.Backend{ID: 2, Key: "10.0.0.12", Weight: 1},
		maglev.Backend{ID: 3, Key: "10.0.0.13", Weight: 1})

	// Changing only the sorry server is a change; dropping everything empties the ring.
	changed, err = m.SetBackends(mysql, want, nil)
	must(t, err)
	if !changed || mapService(t, o, mysql).SorryBackend != 0 {
		t.Fatal("removing the sorry server: not applied")
	}
	if b := mapBackend(t, o, 4); b != (loader.Backend{}) {
		t.Fatalf("removed sorry server left: %+v", b)
	}
	changed, err = m.SetBackends(mysql, nil, nil)
	must(t, err)
	if !changed {
		t.Fatal("removing every backend: changed = false")
	}
	wantRing(t, o, mysql)
	st, err := m.Snapshot()
	must(t, err)
	if n := len(st.Services[0].Backends); n != 0 {
		t.Fatalf("%d backends left, want 0", n)
	}

	// Bad input changes nothing.
	if _, err := m.SetBackends(mysql, []BackendSpec{{Addr: be1, MAC: mac1}, {Addr: be1, MAC: mac2}}, nil); err == nil {
		t.Fatal("duplicate address accepted")
	}
	if _, err := m.SetBackends(mysql, []BackendSpec{{Addr: netip.MustParseAddr("fd00::1"), MAC: mac1}}, nil); err == nil {
		t.Fatal("IPv6 backend for an IPv4 VIP accepted")
	}
	if _, err := m.SetBackends(mysql, []BackendSpec{{Addr: be1}}, nil); err == nil {
		t.Fatal("remote backend without MAC accepted")
	}
	if _, err := m.SetBackends(ServiceKey{VIP: vip, Port: 1, Proto: TCP}, nil, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing service: %v, want ErrNotFound", err)
	}
	if _, err := m.SetBackends(mysql, []BackendSpec{
		{Addr: be1, MAC: mac1}, {Addr: be2, MAC: mac1}, {Addr: be3, MAC: mac1}, {Addr: be4, MAC: mac1},
		{Addr: netip.MustParseAddr("10.0.0.15"), MAC: mac1}, {Addr: netip.MustParseAddr("10.0.0.16"), MAC: mac1},
	}, nil); err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("more backends than the table holds: %v, want a full-table error", err)
	}
	if st, _ := m.Snapshot(); len(st.Services[0].Backends) != 0 {
		t.Fatalf("a failed SetBackends left %d backends", len(st.Services[0].Backends))
	}
}

// TestSetBackendsDeterministic: two directors applying the same sequence get the same ids and
// byte-identical rings.
func TestSetBackendsDeterministic(t *testing.T) {
	apply := func() (*loader.Objects, *Maps) {
		o, m := load(t, testSizes)
		must(t, m.AddService(ServiceSpec{Key: mysql}))
		must(t, m.AddService(ServiceSpec{Key: mysqlX}))
		for _, step := range []struct {
			k     ServiceKey
			want  []BackendSpec
			sorry *BackendSpec
		}{
			{mysql, []BackendSpec{{Addr: be3, MAC: mac3}, {Addr: be1, MAC: mac1, Weight: 3}}, nil},
			{mysqlX, []BackendSpec{{Addr: be2, MAC: mac2}}, &BackendSpec{Addr: be1, MAC: mac1}},
			{mysql, []BackendSpec{{Addr: be1, MAC: mac1, Weight: 3}, {Addr: be2, MAC: mac2}}, nil},
		} {
			_, err := m.SetBackends(step.k, step.want, step.sorry)
			must(t, err)
		}
		return o, m
	}
	oa, ma := apply()
	ob, mb := apply()
	sa, err := ma.Snapshot()
	must(t, err)
	sb, err := mb.Snapshot()
	must(t, err)
	ja, _ := json.Marshal(sa)
	jb, _ := json.Marshal(sb)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("two directors differ:\n%s\n%s", ja, jb)
	}
	for _, k := range []ServiceKey{mysql, mysqlX} {
		if ra, rb := activeRing(t, oa, k), activeRing(t, ob, k); !slices.Equal(ra, rb) {
			t.Fatalf("%s: rings differ", k)
		}
	}
	// be3 (id 1) left in the same call, so it is not reused: be2 gets id 5 (3 and 4 are mysqlX's).
	wantRing(t, oa, mysql,
		maglev.Backend{ID: 2, Key: "10.0.0.11", Weight: 3},
		maglev.Backend{ID: 5, Key: "10.0.0.12", Weight: 1})
}

// TestRingRewrittenInPlace: once the idle ring has been idle for ringQuiet, the next apply
// rewrites that ring map instead of installing a new one, and packets then read the new table.
func TestRingRewrittenInPlace(t *testing.T) {
	o, m := load(t, testSizes)
	old := ringQuiet
	ringQuiet = 0
	t.Cleanup(func() { ringQuiet = old })
	must(t, m.AddService(ServiceSpec{Key: mysql}))

	ringID := func(slot uint32) ebpf.MapID {
		t.Helper()
		var inner *ebpf.Map
		must(t, o.Maglev.Lookup(uint32(0)*2+slot, &inner)) // mysql is service id 0
		defer inner.Close()
		info, err := inner.Info()
		must(t, err)
		id, _ := info.ID()
		return id
	}
	steps := [][]BackendSpec{
		{{Addr: be1, MAC: mac1}},                         // slot 1: new ring (none there yet)
		{{Addr: be1, MAC: mac1}, {Addr: be2, MAC: mac2}}, // slot 0: new ring
		{{Addr: be2, MAC: mac2}},                         // slot 1 again: rewritten in place
	}
	var ids []ebpf.MapID
	for _, want := range steps {
		_, err := m.SetBackends(mysql, want, nil)
		must(t, err)
		var svc loader.Service
		must(t, o.Services.Lookup(mysql.mapKey(), &svc))
		ids = append(ids, ringID(svc.ActiveSlot))
	}
	if ids[2] != ids[0] {
		t.Errorf("third apply installed ring map %d; want slot 1's map %d rewritten in place", ids[2], ids[0])
	}
	// The rewritten ring holds exactly the new table (be2 has id 2).
	wantRing(t, o, mysql, maglev.Backend{ID: 2, Key: "10.0.0.12", Weight: 1})
}
