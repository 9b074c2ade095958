package reconcile

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/health"
)

var (
	vip     = netip.MustParseAddr("10.0.0.100")
	key     = control.ServiceKey{VIP: vip, Port: 3306, Proto: control.TCP}
	r1      = netip.MustParseAddr("10.0.0.11")
	r2      = netip.MustParseAddr("10.0.0.12")
	r3      = netip.MustParseAddr("10.0.0.13")
	sorryIP = netip.MustParseAddr("10.0.0.99")
	mac1, _ = net.ParseMAC("02:00:00:00:00:0b")
	mac2, _ = net.ParseMAC("02:00:00:00:00:0c")
	mac3, _ = net.ParseMAC("02:00:00:00:00:0d")
	macS, _ = net.ParseMAC("02:00:00:00:00:99")
	macX, _ = net.ParseMAC("02:00:00:00:00:ee")
)

// service is the base of every case: r1 has its MAC in the config, r2's is resolved, r3's is
// unknown; the sorry server's MAC is in the config.
func service() config.Service {
	return config.Service{
		Name:      "mysql",
		Key:       key,
		Scheduler: "maglev",
		Quorum:    1,
		Check:     config.Check{Type: config.CheckTCP},
		Sorry:     &config.RealServer{Addr: sorryIP, MAC: macS, Weight: 1},
		RealServers: []config.RealServer{
			{Addr: r1, Weight: 1, MAC: mac1},
			{Addr: r2, Weight: 1},
			{Addr: r3, Weight: 1},
		},
	}
}

// resolver knows r2's MAC, and a wrong one for r1 (the config's must win).
func resolver(a netip.Addr) (net.HardwareAddr, bool) {
	switch a {
	case r1:
		return macX, true
	case r2:
		return mac2, true
	}
	return nil, false
}

func up(addrs ...netip.Addr) map[health.Target]RSState {
	m := map[health.Target]RSState{}
	for _, a := range addrs {
		m[health.Target{Service: "mysql", Addr: a}] = RSState{Up: true}
	}
	return m
}

func weight(w uint32) *uint32 { return &w }

// describe writes a backend as "10.0.0.11 ring w1 02:00:00:00:00:0b".
func describe(b control.BackendSpec) string {
	state := "ring"
	switch {
	case b.Sorry:
		state = "sorry"
	case b.Draining:
		state = "drain"
	}
	s := fmt.Sprintf("%s %s w%d", b.Addr, state, b.Weight)
	if b.Local {
		s += " local"
	}
	if len(b.MAC) > 0 {
		s += " " + b.MAC.String()
	}
	return s
}

func TestCompute(t *testing.T) {
	for _, tc := range []struct {
		name     string
		svc      func(*config.Service)
		health   map[health.Target]RSState
		mac      func(netip.Addr) (net.HardwareAddr, bool)
		prev     map[string]bool
		want     []string
		sorry    string // "" = none
		quorumUp bool
		notes    []string // each must appear in some note
	}{{
		name:   "nothing known yet: all down, quorum down",
		health: nil,
		mac:    resolver,
		want:   nil,
		sorry:  "10.0.0.99 sorry w1 02:00:00:00:00:99",
		notes:  []string{"10.0.0.13: no MAC yet", "quorum down"},
	}, {
		name:     "rise: up servers with a MAC join the ring, config MAC wins",
		health:   up(r1, r2, r3),
		mac:      resolver,
		want:     []string{"10.0.0.11 ring w1 02:00:00:00:00:0b", "10.0.0.12 ring w1 02:00:00:00:00:0c"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: true,
		notes:    []string{"10.0.0.13: no MAC yet"},
	}, {
		name:     "no resolver: only config MACs",
		health:   up(r1, r2),
		mac:      nil,
		want:     []string{"10.0.0.11 ring w1 02:00:00:00:00:0b"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: true,
		notes:    []string{"10.0.0.12: no MAC yet"},
	}, {
		name:     "down without check.drain: removed",
		health:   map[health.Target]RSState{{Service: "mysql", Addr: r1}: {Up: true}, {Service: "mysql", Addr: r2}: {Up: false}},
		mac:      resolver,
		want:     []string{"10.0.0.11 ring w1 02:00:00:00:00:0b"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: true,
	}, {
		name:     "down with check.drain: draining",
		svc:      func(s *config.Service) { s.Check.Drain = true },
		health:   up(r1),
		mac:      resolver,
		want:     []string{"10.0.0.11 ring w1 02:00:00:00:00:0b", "10.0.0.12 drain w0 02:00:00:00:00:0c"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: true,
	}, {
		name:     "real-server drain flag: draining while up, not counted for quorum",
		svc:      func(s *config.Service) { s.RealServers[1].Drain = true; s.Quorum = 2 },
		health:   up(r1, r2),
		mac:      resolver,
		prev:     map[string]bool{"mysql": true},
		want:     []string{"10.0.0.11 drain w0 02:00:00:00:00:0b", "10.0.0.12 drain w0 02:00:00:00:00:0c"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: false,
	}, {
		name: "local server needs no MAC; weights from config",
		svc: func(s *config.Service) {
			s.RealServers[2].Local = true
			s.RealServers[0].Weight = 5
		},
		health:   up(r1, r3),
		mac:      resolver,
		want:     []string{"10.0.0.11 ring w5 02:00:00:00:00:0b", "10.0.0.13 ring w1 local"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: true,
	}, {
		name: "dynamic weight: overrides the config, 0 drains",
		health: map[health.Target]RSState{
			{Service: "mysql", Addr: r1}: {Up: true, Weight: weight(7)},
			{Service: "mysql", Addr: r2}: {Up: true, Weight: weight(0)},
		},
		mac:      resolver,
		want:     []string{"10.0.0.11 ring w7 02:00:00:00:00:0b", "10.0.0.12 drain w0 02:00:00:00:00:0c"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: true,
	}, {
		name:   "quorum lost: up servers drain, the sorry server takes new flows",
		svc:    func(s *config.Service) { s.Quorum = 3 },
		health: up(r1, r2),
		mac:    resolver,
		prev:   map[string]bool{"mysql": true},
		want:   []string{"10.0.0.11 drain w0 02:00:00:00:00:0b", "10.0.0.12 drain w0 02:00:00:00:00:0c"},
		sorry:  "10.0.0.99 sorry w1 02:00:00:00:00:99",
		notes:  []string{"quorum down: up weight 2, quorum 3"},
	}, {
		name:   "hysteresis: down stays down below quorum + hysteresis",
		svc:    func(s *config.Service) { s.Quorum, s.Hysteresis = 3, 1; s.RealServers[0].Weight = 2 },
		health: up(r1, r2), // sum 3 < 4
		mac:    resolver,
		prev:   map[string]bool{"mysql": false},
		want:   []string{"10.0.0.11 drain w0 02:00:00:00:00:0b", "10.0.0.12 drain w0 02:00:00:00:00:0c"},
		sorry:  "10.0.0.99 sorry w1 02:00:00:00:00:99",
	}, {
		name:     "hysteresis: down comes up at quorum + hysteresis",
		svc:      func(s *config.Service) { s.Quorum, s.Hysteresis = 3, 1; s.RealServers[0].Weight = 3 },
		health:   up(r1, r2), // sum 4
		mac:      resolver,
		prev:     map[string]bool{"mysql": false},
		want:     []string{"10.0.0.11 ring w3 02:00:00:00:00:0b", "10.0.0.12 ring w1 02:00:00:00:00:0c"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: true,
	}, {
		name:     "hysteresis: up stays up down to quorum - hysteresis",
		svc:      func(s *config.Service) { s.Quorum, s.Hysteresis = 3, 1 },
		health:   up(r1, r2), // sum 2
		mac:      resolver,
		prev:     map[string]bool{"mysql": true},
		want:     []string{"10.0.0.11 ring w1 02:00:00:00:00:0b", "10.0.0.12 ring w1 02:00:00:00:00:0c"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: true,
	}, {
		name:   "hysteresis: up goes down below quorum - hysteresis",
		svc:    func(s *config.Service) { s.Quorum, s.Hysteresis = 3, 1 },
		health: up(r1), // sum 1 < 2
		mac:    resolver,
		prev:   map[string]bool{"mysql": true},
		want:   []string{"10.0.0.11 drain w0 02:00:00:00:00:0b"},
		sorry:  "10.0.0.99 sorry w1 02:00:00:00:00:99",
	}, {
		name:     "check none: every server counts as up",
		svc:      func(s *config.Service) { s.Check.Type = config.CheckNone },
		mac:      resolver,
		want:     []string{"10.0.0.11 ring w1 02:00:00:00:00:0b", "10.0.0.12 ring w1 02:00:00:00:00:0c"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: true,
	}, {
		name:     "sorry server MAC unknown: left out with a note",
		svc:      func(s *config.Service) { s.Sorry = &config.RealServer{Addr: r3} },
		health:   up(r1),
		mac:      resolver,
		want:     []string{"10.0.0.11 ring w1 02:00:00:00:00:0b"},
		quorumUp: true,
		notes:    []string{"sorry server 10.0.0.13: no MAC yet"},
	}, {
		name:     "sorry server MAC resolved",
		svc:      func(s *config.Service) { s.Sorry = &config.RealServer{Addr: r2} },
		health:   up(r1),
		mac:      resolver,
		want:     []string{"10.0.0.11 ring w1 02:00:00:00:00:0b"},
		sorry:    "10.0.0.12 sorry w0 02:00:00:00:00:0c",
		quorumUp: true,
	}, {
		name:     "unnamed service: targets use the key",
		svc:      func(s *config.Service) { s.Name = "" },
		health:   map[health.Target]RSState{{Service: "TCP 10.0.0.100:3306", Addr: r2}: {Up: true}},
		mac:      resolver,
		want:     []string{"10.0.0.12 ring w1 02:00:00:00:00:0c"},
		sorry:    "10.0.0.99 sorry w1 02:00:00:00:00:99",
		quorumUp: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			svc := service()
			if tc.svc != nil {
				tc.svc(&svc)
			}
			p := Compute(Input{Config: &config.Config{Services: []config.Service{svc}}, Health: tc.health, MAC: tc.mac, Quorum: tc.prev})
			if len(p.Services) != 1 {
				t.Fatalf("%d services, want 1", len(p.Services))
			}
			sp := p.Services[0]
			var got []string
			for _, b := range sp.Backends {
				got = append(got, describe(b))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("backends\n got %q\nwant %q", got, tc.want)
			}
			var sorry string
			if sp.Sorry != nil {
				sorry = describe(*sp.Sorry)
			}
			if sorry != tc.sorry {
				t.Errorf("sorry %q, want %q", sorry, tc.sorry)
			}
			if sp.QuorumUp != tc.quorumUp || p.Quorum[sp.Name] != tc.quorumUp {
				t.Errorf("quorum up %v (plan %v), want %v", sp.QuorumUp, p.Quorum[sp.Name], tc.quorumUp)
			}
			if !tc.quorumUp {
				for _, b := range sp.Backends {
					if InRing(b) {
						t.Errorf("quorum down but %s is in the ring", b.Addr)
					}
				}
			}
			for _, n := range tc.notes {
				if !slices.ContainsFunc(sp.Notes, func(s string) bool { return strings.Contains(s, n) }) {
					t.Errorf("notes %q: none contains %q", sp.Notes, n)
				}
			}
			for _, b := range sp.Backends {
				if err := b.Validate(); err != nil {
					t.Errorf("invalid backend: %v", err)
				}
			}
		})
	}
}

func TestTargetFor(t *testing.T) {
	svc := service()
	if got := TargetFor(svc, svc.RealServers[0]); got != (health.Target{Service: "mysql", Addr: r1}) {
		t.Fatalf("named: %+v", got)
	}
	svc.Name = ""
	if got := TargetFor(svc, config.RealServer{Addr: netip.MustParseAddr("::ffff:10.0.0.11")}); got != (health.Target{Service: "TCP 10.0.0.100:3306", Addr: r1}) {
		t.Fatalf("unnamed: %+v", got)
	}
}

func TestComputeEmpty(t *testing.T) {
	if p := Compute(Input{}); len(p.Services) != 0 || p.Quorum == nil {
		t.Fatalf("nil config: %+v", p)
	}
}
