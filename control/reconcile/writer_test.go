package reconcile

import (
	"bytes"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/health"
)

// writerService is service() with a mysql check that requires a writable server, and every MAC
// known (the MAC rule is tested on its own below).
func writerService() config.Service {
	s := service()
	s.Check = config.Check{Type: config.CheckMySQL, MySQL: &config.MySQLCheck{User: "monitor", Writable: true}}
	s.RealServers[1].MAC = mac2
	s.RealServers[2].MAC = mac3
	return s
}

// hs builds a health map of the "mysql" service: u = up, d = down (after its checks), s =
// starting (no verdict yet); a missing address is not known yet.
func hs(states map[netip.Addr]byte) map[health.Target]RSState {
	m := map[health.Target]RSState{}
	for a, c := range states {
		m[health.Target{Service: "mysql", Addr: a}] = RSState{Up: c == 'u', Starting: c == 's'}
	}
	return m
}

// ringOf is the addresses in the ring of the plan's first service.
func ringOf(p Plan) []netip.Addr {
	var out []netip.Addr
	for _, b := range p.Services[0].Backends {
		if InRing(b) {
			out = append(out, b.Addr)
		}
	}
	return out
}

func TestSingleWriterCompute(t *testing.T) {
	cfgWith := func(f func(*config.Service)) *config.Config {
		s := writerService()
		if f != nil {
			f(&s)
		}
		return &config.Config{Services: []config.Service{s}}
	}
	for _, tc := range []struct {
		name     string
		svc      func(*config.Service)
		health   map[netip.Addr]byte
		prev     netip.Addr // the writer of the previous plan
		want     []netip.Addr
		writable []netip.Addr
		notes    []string
	}{{
		name:     "two writable, none serving yet: the first in config order only",
		health:   map[netip.Addr]byte{r1: 'u', r2: 'u', r3: 'd'},
		want:     []netip.Addr{r1},
		writable: []netip.Addr{r1, r2},
		notes:    []string{"single writer: 10.0.0.11 serves; also writable: 10.0.0.12"},
	}, {
		name:     "three writable: still one",
		health:   map[netip.Addr]byte{r1: 'u', r2: 'u', r3: 'u'},
		want:     []netip.Addr{r1},
		writable: []netip.Addr{r1, r2, r3},
	}, {
		name:     "the serving one stays while it is writable, even when an earlier one becomes writable",
		health:   map[netip.Addr]byte{r1: 'u', r2: 'u', r3: 'u'},
		prev:     r3,
		want:     []netip.Addr{r3},
		writable: []netip.Addr{r1, r2, r3},
	}, {
		name:     "the serving one went down: exactly one other, the first writable in config order",
		health:   map[netip.Addr]byte{r1: 'd', r2: 'u', r3: 'u'},
		prev:     r1,
		want:     []netip.Addr{r2},
		writable: []netip.Addr{r2, r3},
	}, {
		name:     "one writable: no alarm note",
		health:   map[netip.Addr]byte{r1: 'd', r2: 'd', r3: 'u'},
		want:     []netip.Addr{r3},
		writable: []netip.Addr{r3},
	}, {
		name:   "none serving and a server still starting: no writer until every check has a verdict",
		health: map[netip.Addr]byte{r1: 's', r2: 'u', r3: 'd'},
		want:   nil, writable: []netip.Addr{r2},
		notes: []string{"single writer: not chosen yet, waiting for the first checks of 10.0.0.11"},
	}, {
		name:   "a server never reported counts as starting",
		health: map[netip.Addr]byte{r2: 'u', r3: 'd'},
		want:   nil, writable: []netip.Addr{r2},
	}, {
		name:     "a serving writer is kept while another starts",
		health:   map[netip.Addr]byte{r1: 's', r2: 'u', r3: 'd'},
		prev:     r2,
		want:     []netip.Addr{r2},
		writable: []netip.Addr{r2},
	}, {
		name:     "drain: true is writable but never the writer",
		svc:      func(s *config.Service) { s.RealServers[0].Drain = true },
		health:   map[netip.Addr]byte{r1: 'u', r2: 'u', r3: 'd'},
		want:     []netip.Addr{r2},
		writable: []netip.Addr{r1, r2},
	}, {
		name:     "the chosen writer's MAC is unknown: no writer rather than another one",
		svc:      func(s *config.Service) { s.RealServers[0].MAC = nil },
		health:   map[netip.Addr]byte{r1: 'u', r2: 'u', r3: 'd'},
		want:     nil,
		writable: []netip.Addr{r1, r2},
		notes:    []string{"10.0.0.11: no MAC yet"},
	}, {
		name:     "a service without writable: every up server in the ring (unchanged)",
		svc:      func(s *config.Service) { s.Check.MySQL.Writable = false },
		health:   map[netip.Addr]byte{r1: 'u', r2: 'u', r3: 'u'},
		want:     []netip.Addr{r1, r2, r3},
		writable: nil,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Config: cfgWith(tc.svc), Health: hs(tc.health)}
			if tc.prev.IsValid() {
				in.Writers = map[string]netip.Addr{"mysql": tc.prev}
			}
			p := Compute(in)
			if got := ringOf(p); !slices.Equal(got, tc.want) {
				t.Errorf("ring: expected %v, seen %v (backends %v)", tc.want, got, p.Services[0].Backends)
			}
			sp := p.Services[0]
			if !slices.Equal(sp.Writable, tc.writable) {
				t.Errorf("writable: expected %v, seen %v", tc.writable, sp.Writable)
			}
			if len(tc.want) == 1 && (sp.Writer != tc.want[0] || p.Writers["mysql"] != tc.want[0]) {
				t.Errorf("writer: expected %v, seen %v (plan writers %v)", tc.want[0], sp.Writer, p.Writers)
			}
			for _, n := range tc.notes {
				if !slices.ContainsFunc(sp.Notes, func(s string) bool { return strings.Contains(s, n) }) {
					t.Errorf("notes: expected one containing %q, seen %q", n, sp.Notes)
				}
			}
		})
	}
}

// TestSingleWriterDirectorsAgree feeds two directors' reconcilers the same health history, one
// of them starting later (with no memory of the earlier steps, as a fresh director): they hold
// the same writer at every step after both have one.
func TestSingleWriterDirectorsAgree(t *testing.T) {
	cfg := &config.Config{Services: []config.Service{writerService()}}
	steps := []map[netip.Addr]byte{
		{r1: 's', r2: 's', r3: 's'}, // both start: no verdict yet
		{r1: 's', r2: 'u', r3: 'd'}, // r2 rises before r1: must not be chosen yet
		{r1: 'u', r2: 'u', r3: 'd'}, // every verdict in: r1, the first in config order
		{r1: 'u', r2: 'u', r3: 'u'}, // a third writable: keep r1
		{r1: 'd', r2: 'u', r3: 'u'}, // r1 read-only: r2
		{r1: 'u', r2: 'u', r3: 'u'}, // r1 writable again: keep r2 (no flap)
	}
	want := []netip.Addr{{}, {}, r1, r1, r2, r2}
	a, b := New(nil, nil), New(nil, nil)
	for i, st := range steps {
		pa, _ := a.Update(Input{Config: cfg, Health: hs(st)})
		pb, _ := b.Update(Input{Config: cfg, Health: hs(st)})
		if pa.Writers["mysql"] != want[i] || pb.Writers["mysql"] != want[i] {
			t.Fatalf("step %d %v: expected writer %v on both, seen %v and %v", i, st, want[i], pa.Writers["mysql"], pb.Writers["mysql"])
		}
		if n := len(ringOf(pa)); n > 1 {
			t.Fatalf("step %d: %d servers in the ring", i, n)
		}
	}
}

// TestSingleWriterAlarmLog: one line per change of the writable set while it has two or more,
// naming the nodes, and one when it is back to one.
func TestSingleWriterAlarmLog(t *testing.T) {
	var logs bytes.Buffer
	r := New(slog.New(slog.NewTextHandler(&logs, nil)), nil)
	cfg := &config.Config{Services: []config.Service{writerService()}}
	count := func() int { return strings.Count(logs.String(), "several writable real servers") }
	r.Update(Input{Config: cfg, Health: hs(map[netip.Addr]byte{r1: 'u', r2: 'd', r3: 'd'})})
	if count() != 0 {
		t.Fatalf("alarm with one writable server:\n%s", logs.String())
	}
	r.Update(Input{Config: cfg, Health: hs(map[netip.Addr]byte{r1: 'u', r2: 'u', r3: 'd'})})
	r.Update(Input{Config: cfg, Health: hs(map[netip.Addr]byte{r1: 'u', r2: 'u', r3: 'd'})})
	if count() != 1 || !strings.Contains(logs.String(), `level=ERROR msg="several writable real servers behind a single-writer service: only the writer takes connections" service=mysql writable="10.0.0.11 10.0.0.12" writer=10.0.0.11`) {
		t.Fatalf("expected one ERROR line naming 10.0.0.11 and 10.0.0.12, seen:\n%s", logs.String())
	}
	r.Update(Input{Config: cfg, Health: hs(map[netip.Addr]byte{r1: 'u', r2: 'u', r3: 'u'})})
	if count() != 2 || !strings.Contains(logs.String(), `writable="10.0.0.11 10.0.0.12 10.0.0.13"`) {
		t.Fatalf("expected a second line for the third writable server, seen:\n%s", logs.String())
	}
	r.Update(Input{Config: cfg, Health: hs(map[netip.Addr]byte{r1: 'u', r2: 'd', r3: 'd'})})
	if count() != 2 || !strings.Contains(logs.String(), `level=INFO msg="single writable real server again" service=mysql writer=10.0.0.11`) {
		t.Fatalf("expected the alarm to clear with one INFO line, seen:\n%s", logs.String())
	}
}

// TestSingleWriterSeed001: seed 001's dual master — one real server, the other master as the
// sorry server — keeps its keepalived behaviour under the single-writer rule: the sorry server
// is no real server (not checked, not counted as writable), takes new flows only when the
// real server fails, and raises no alarm.
func TestSingleWriterSeed001(t *testing.T) {
	s := writerService()
	s.RealServers = s.RealServers[:1] // master A; master B (10.0.0.99) is the sorry server
	cfg := &config.Config{Services: []config.Service{s}}
	var logs bytes.Buffer
	r := New(slog.New(slog.NewTextHandler(&logs, nil)), nil)
	p, _ := r.Update(Input{Config: cfg, Health: hs(map[netip.Addr]byte{r1: 'u'})})
	if sp := p.Services[0]; !slices.Equal(ringOf(p), []netip.Addr{r1}) || sp.Writer != r1 || len(sp.Writable) != 1 || !sp.QuorumUp {
		t.Fatalf("A up: expected A the writer with quorum, seen ring %v, plan %+v", ringOf(p), sp)
	}
	p, _ = r.Update(Input{Config: cfg, Health: hs(map[netip.Addr]byte{r1: 'd'})})
	if sp := p.Services[0]; sp.QuorumUp || sp.Sorry == nil || sp.Sorry.Addr != sorryIP || len(ringOf(p)) != 0 {
		t.Fatalf("A down: expected the sorry server B to take new flows, seen %+v", sp)
	}
	if strings.Contains(logs.String(), "several writable") {
		t.Fatalf("alarm raised for seed 001's form:\n%s", logs.String())
	}
}

// TestSingleWriterAdopted: a restarted daemon adopts the writer of its pinned ring; it keeps
// serving while the other real servers' first checks run, and stays when they turn out
// writable too (a fresh choice would take the first in config order).
func TestSingleWriterAdopted(t *testing.T) {
	cfg := &config.Config{Services: []config.Service{writerService()}}
	// r3 was in the pinned ring: it starts up; r1 and r2 start with no verdict.
	start := map[netip.Addr]byte{r1: 's', r2: 's', r3: 'u'}
	fresh := New(nil, nil)
	if p, _ := fresh.Update(Input{Config: cfg, Health: hs(start)}); len(ringOf(p)) != 0 {
		t.Fatalf("without an adopted writer, expected none while checks start, seen %v", ringOf(p))
	}
	r := New(nil, nil)
	r.AdoptWriters(map[string]netip.Addr{"mysql": r3})
	for i, st := range []map[netip.Addr]byte{start, {r1: 'u', r2: 'd', r3: 'u'}} {
		p, _ := r.Update(Input{Config: cfg, Health: hs(st)})
		if !slices.Equal(ringOf(p), []netip.Addr{r3}) {
			t.Fatalf("step %d %v: expected the adopted writer r3 alone in the ring, seen %v", i, st, ringOf(p))
		}
	}
}
