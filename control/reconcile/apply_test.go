package reconcile

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/health"
	"github.com/xdplb/xdplb/internal/testbed/packet"
	"github.com/xdplb/xdplb/loader"
)

var testSizes = loader.Sizes{Services: 4, Backends: 16, Peers: 2, Conntrack: 1024, Persist: 1024, RingSize: 251}

func load(t *testing.T) (*loader.Objects, *control.Maps) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF) to load BPF maps")
	}
	o, err := loader.Load(testSizes, 7)
	if errors.Is(err, loader.ErrNotRoot) || errors.Is(err, os.ErrPermission) {
		t.Skipf("cannot load BPF objects: %v", err)
	}
	if err != nil {
		t.Fatalf("%+v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o, control.NewMaps(o)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var keyX = control.ServiceKey{VIP: vip, Port: 33060, Proto: control.TCP}

// twoServices: "mysql" with r1, r2 (config MACs) and a sorry server; "x" with r2, persistent.
func twoServices() *config.Config {
	a := service()
	a.RealServers = []config.RealServer{{Addr: r1, Weight: 1, MAC: mac1}, {Addr: r2, Weight: 1, MAC: mac2}}
	b := config.Service{
		Name: "x", Key: keyX, Scheduler: "maglev", Quorum: 1, Persistence: time.Minute,
		Check:       config.Check{Type: config.CheckTCP},
		RealServers: []config.RealServer{{Addr: r2, Weight: 1, MAC: mac2}},
	}
	return &config.Config{Services: []config.Service{a, b}}
}

func health2(svc string, addrs ...netip.Addr) map[health.Target]RSState {
	m := up(addrs...)
	for _, a := range addrs {
		m[health.Target{Service: svc, Addr: a}] = RSState{Up: true}
	}
	return m
}

func snapshot(t *testing.T, m *control.Maps) control.State {
	t.Helper()
	st, err := m.Snapshot()
	must(t, err)
	return st
}

func findService(t *testing.T, st control.State, k control.ServiceKey) control.ServiceState {
	t.Helper()
	for _, s := range st.Services {
		if s.Key == k {
			return s
		}
	}
	t.Fatalf("service %s not in the maps", k)
	return control.ServiceState{}
}

// activeRing reads the ring in the service's active slot; nil when there is none.
func activeRing(t *testing.T, o *loader.Objects, s control.ServiceState) []uint32 {
	t.Helper()
	var inner *ebpf.Map
	err := o.Maglev.Lookup(s.ID*2+s.ActiveSlot, &inner)
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

// backends describes the backends of a service in the maps, by id.
func backends(s control.ServiceState) []string {
	var out []string
	for _, b := range s.Backends {
		out = append(out, describe(control.BackendSpec{Addr: b.Addr, MAC: b.MAC, Weight: b.Weight, Local: b.Local, Draining: b.Draining, Sorry: b.Sorry}))
	}
	return out
}

func wantChanges(t *testing.T, got Changes, added, removed, updated []string) {
	t.Helper()
	if !slices.Equal(got.ServicesAdded, added) || !slices.Equal(got.ServicesRemoved, removed) || !slices.Equal(got.ServicesUpdated, updated) {
		t.Fatalf("changes %+v, want added %q removed %q updated %q", got, added, removed, updated)
	}
}

func TestApply(t *testing.T) {
	o, m := load(t)
	cfg := twoServices()
	in := Input{Config: cfg, Health: health2("x", r1, r2)}

	c, err := Apply(m, Compute(in))
	must(t, err)
	wantChanges(t, c, []string{"mysql", "x"}, nil, nil)
	st := snapshot(t, m)
	a := findService(t, st, key)
	if got, want := backends(a), []string{
		"10.0.0.11 ring w1 02:00:00:00:00:0b",
		"10.0.0.12 ring w1 02:00:00:00:00:0c",
		"10.0.0.99 sorry w1 02:00:00:00:00:99",
	}; !slices.Equal(got, want) {
		t.Fatalf("mysql backends %q, want %q", got, want)
	}
	if x := findService(t, st, keyX); x.Persistence != time.Minute || len(x.Backends) != 1 {
		t.Fatalf("x: %+v", x)
	}
	ring := activeRing(t, o, a)

	// Idempotent: nothing changes, not even the active slot.
	c, err = Apply(m, Compute(in))
	must(t, err)
	if !c.Empty() {
		t.Fatalf("second Apply changed %+v", c)
	}
	a2 := findService(t, snapshot(t, m), key)
	if a2.ActiveSlot != a.ActiveSlot || !slices.Equal(activeRing(t, o, a2), ring) {
		t.Fatal("second Apply rebuilt the ring")
	}

	// r2 down: out of mysql (no drain) and of x; x has no ring, only its own service changes.
	in.Health = health2("x", r1)
	c, err = Apply(m, Compute(in))
	must(t, err)
	wantChanges(t, c, nil, nil, []string{"mysql", "x"})
	if got := backends(findService(t, snapshot(t, m), key)); len(got) != 2 || !strings.HasPrefix(got[0], "10.0.0.11 ring") {
		t.Fatalf("mysql after r2 down: %q", got)
	}

	// Persistence change only: updated in place.
	cfg.Services[0].Persistence = 30 * time.Second
	c, err = Apply(m, Compute(in))
	must(t, err)
	wantChanges(t, c, nil, nil, []string{"mysql"})
	if p := findService(t, snapshot(t, m), key).Persistence; p != 30*time.Second {
		t.Fatalf("persistence %v", p)
	}

	// A service removed from the config leaves the maps.
	cfg.Services = cfg.Services[:1]
	c, err = Apply(m, Compute(in))
	must(t, err)
	wantChanges(t, c, nil, []string{"TCP 10.0.0.100:33060"}, nil)
	if st := snapshot(t, m); len(st.Services) != 1 || st.Services[0].Key != key {
		t.Fatalf("services after removal: %+v", st.Services)
	}
	c, err = Apply(m, Compute(in))
	must(t, err)
	if !c.Empty() {
		t.Fatalf("Apply after removal changed %+v", c)
	}

	// Drain on down keeps r1's entry at weight 0; the empty ring leaves new flows to the sorry server.
	cfg.Services[0].Check.Drain = true
	in.Health = nil
	_, err = Apply(m, Compute(in))
	must(t, err)
	a = findService(t, snapshot(t, m), key)
	if got, want := backends(a), []string{
		"10.0.0.11 drain w0 02:00:00:00:00:0b",
		"10.0.0.12 drain w0 02:00:00:00:00:0c",
		"10.0.0.99 sorry w1 02:00:00:00:00:99",
	}; !slices.Equal(got, want) {
		t.Fatalf("all down with drain: %q, want %q", got, want)
	}
	if activeRing(t, o, a) != nil {
		t.Fatal("ring left with every server down")
	}
}

func TestReconcilerTwoMaps(t *testing.T) {
	oa, ma := load(t)
	ob, mb := load(t)
	var logs bytes.Buffer
	r := New(slog.New(slog.NewTextHandler(&logs, nil)), []*control.Maps{ma, mb})
	cfg := twoServices()
	cfg.Services[0].Quorum = 2
	in := Input{Config: cfg, Health: health2("x", r1, r2)}

	same := func() {
		t.Helper()
		sa, sb := snapshot(t, ma), snapshot(t, mb)
		ja, _ := json.Marshal(sa)
		jb, _ := json.Marshal(sb)
		if !bytes.Equal(ja, jb) {
			t.Fatalf("the two maps differ:\n%s\n%s", ja, jb)
		}
		for i := range sa.Services {
			if !slices.Equal(activeRing(t, oa, sa.Services[i]), activeRing(t, ob, sb.Services[i])) {
				t.Fatalf("%s: rings differ", sa.Services[i].Key)
			}
		}
	}
	lines := func() []string {
		s := strings.TrimSpace(logs.String())
		logs.Reset()
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	wantLogs := func(want ...string) {
		t.Helper()
		got := lines()
		if len(got) != len(want) {
			t.Fatalf("log lines %q, want %d matching %q", got, len(want), want)
		}
		for i, w := range want {
			if !strings.Contains(got[i], w) {
				t.Fatalf("log line %d %q, want it to contain %q (all: %q)", i, got[i], w, got)
			}
		}
	}

	p, err := r.Update(in)
	must(t, err)
	if len(p.Services) != 2 || !p.Quorum["mysql"] {
		t.Fatalf("plan %+v", p)
	}
	same()
	wantLogs(
		`msg="service added" service=mysql`,
		`msg="service added" service=x`,
		`msg="backend in ring" service=mysql backend=10.0.0.11`,
		`msg="backend in ring" service=mysql backend=10.0.0.12`,
		`msg="sorry server set" service=mysql sorry=10.0.0.99`,
		`msg="backend in ring" service=x backend=10.0.0.12`,
	)
	slot := findService(t, snapshot(t, ma), key).ActiveSlot

	// Nothing changed: nothing written, nothing logged.
	_, err = r.Update(in)
	must(t, err)
	wantLogs()
	if s := findService(t, snapshot(t, ma), key).ActiveSlot; s != slot {
		t.Fatal("an Update without changes flipped the active slot")
	}

	// r2 down: quorum (2) lost for mysql, r1 drains, the sorry server takes new flows; x has none up.
	in.Health = health2("x", r1)
	p, err = r.Update(in)
	must(t, err)
	same()
	if p.Quorum["mysql"] {
		t.Fatal("quorum still up")
	}
	wantLogs(
		`msg="quorum lost" service=mysql new_flows="sorry server 10.0.0.99"`,
		`msg="quorum lost" service=x new_flows="dropped (no sorry server)"`,
		`msg="backend out of ring: draining" service=mysql backend=10.0.0.11`,
		`msg="backend out of ring: removed" service=mysql backend=10.0.0.12`,
		`msg="backend out of ring: removed" service=x backend=10.0.0.12`,
	)
	if activeRing(t, oa, findService(t, snapshot(t, ma), key)) != nil || activeRing(t, ob, findService(t, snapshot(t, mb), key)) != nil {
		t.Fatal("ring left while quorum is down")
	}

	// Back up: quorum regained.
	in.Health = health2("x", r1, r2)
	_, err = r.Update(in)
	must(t, err)
	same()
	wantLogs(
		`level=INFO msg="quorum regained" service=mysql`, // regaining is no warning
		`msg="quorum regained" service=x`,
		`msg="backend in ring" service=mysql backend=10.0.0.11`,
		`msg="backend in ring" service=mysql backend=10.0.0.12`,
		`msg="backend in ring" service=x backend=10.0.0.12`,
	)

	// A service removed from the config.
	cfg.Services = cfg.Services[:1]
	_, err = r.Update(in)
	must(t, err)
	same()
	wantLogs(`msg="service removed" service="TCP 10.0.0.100:33060"`)
	if n := len(snapshot(t, mb).Services); n != 1 {
		t.Fatalf("%d services left, want 1", n)
	}
}

// TestEndToEnd runs SYNs through the program: an up server's MAC while quorum holds, the sorry
// server's when it is lost, while the established flow goes on to its draining server.
func TestEndToEnd(t *testing.T) {
	o, m := load(t)
	r := New(nil, []*control.Maps{m})
	cfg := twoServices()
	cfg.Services = cfg.Services[:1]
	cfg.Services[0].Quorum = 2
	in := Input{Config: cfg, Health: up(r1, r2)}
	_, err := r.Update(in)
	must(t, err)

	client := netip.MustParseAddr("192.0.2.7")
	clientMAC := packet.MustMAC("02:00:00:00:00:99")
	director := packet.MustMAC("02:00:00:00:00:01")
	run := func(sport uint16) net.HardwareAddr {
		t.Helper()
		in := packet.Eth(clientMAC, director).IPv4(client, vip).TCP(sport, 3306, packet.SYN).Build()
		opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
		ret, err := o.Program.Run(&opts)
		must(t, err)
		if ret != 3 { // XDP_TX
			t.Fatalf("sport %d: verdict %d, want XDP_TX", sport, ret)
		}
		return net.HardwareAddr(slices.Clone(opts.DataOut[:6]))
	}

	first := run(40000)
	if !bytes.Equal(first, mac1) && !bytes.Equal(first, mac2) {
		t.Fatalf("new flow went to %s, want a real server", first)
	}

	// r2 down: quorum lost. New flows go to the sorry server; the tracked one finishes on its
	// server if that one is still up (drains), else it is rescheduled to the sorry server.
	in.Health = up(r1)
	p, err := r.Update(in)
	must(t, err)
	if p.Services[0].QuorumUp {
		t.Fatal("quorum still up")
	}
	if got := run(40001); !bytes.Equal(got, macS) {
		t.Fatalf("new flow with quorum lost went to %s, want the sorry server %s", got, macS)
	}
	want := first
	if bytes.Equal(first, mac2) {
		want = macS
	}
	if got := run(40000); !bytes.Equal(got, want) {
		t.Fatalf("established flow went to %s, want %s", got, want)
	}

	// Quorum regained: new flows to real servers again.
	in.Health = up(r1, r2)
	_, err = r.Update(in)
	must(t, err)
	if got := run(40002); !bytes.Equal(got, mac1) && !bytes.Equal(got, mac2) {
		t.Fatalf("new flow after quorum regained went to %s", got)
	}
}
