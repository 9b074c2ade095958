package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/clock/clocktest"
	"github.com/xdplb/xdplb/internal/wait"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// fakeProber returns a settable result and records its use.
type fakeProber struct {
	mu      sync.Mutex
	healthy bool
	weight  *uint32
	probes  int
	closed  int
	block   bool          // Probe waits for ctx to end
	started chan struct{} // receives when a blocking Probe starts
	ended   chan struct{} // closed when a blocking Probe returns
}

func newFakeProber(healthy bool) *fakeProber {
	return &fakeProber{healthy: healthy, started: make(chan struct{}, 1), ended: make(chan struct{})}
}

func (p *fakeProber) set(healthy bool, weight *uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.healthy, p.weight = healthy, weight
}

func (p *fakeProber) Probe(ctx context.Context) Result {
	p.mu.Lock()
	p.probes++
	healthy, weight, block := p.healthy, p.weight, p.block
	p.mu.Unlock()
	if block {
		p.started <- struct{}{}
		<-ctx.Done()
		close(p.ended)
		return Result{Err: ctx.Err()}
	}
	if !healthy {
		return Result{Err: errors.New("fake: refused"), Latency: time.Millisecond}
	}
	return Result{Healthy: true, Weight: weight, Latency: time.Millisecond}
}

func (p *fakeProber) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed++
	return nil
}

func (p *fakeProber) counts() (probes, closed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.probes, p.closed
}

// syncBuffer is a log sink for several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func target(svc, addr string) Target { return Target{Service: svc, Addr: netip.MustParseAddr(addr)} }

func spec(tg Target, p Prober, up bool) Spec {
	return Spec{Target: tg, Prober: p, Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3, InitialUp: up}
}

func seeded() Option { return WithRand(rand.New(rand.NewPCG(1, 2))) }

// step advances the fake clock by one interval and waits until n targets have rearmed.
func step(t *testing.T, clk *clocktest.Fake, n int) {
	t.Helper()
	clk.Advance(time.Second)
	clk.WaitParked(t, n)
}

func statusOf(t *testing.T, m *Monitor, tg Target) Status {
	t.Helper()
	for _, s := range m.Status() {
		if s.Target == tg {
			return s
		}
	}
	t.Fatalf("no status for %v", tg)
	return Status{}
}

func recvEvent(t *testing.T, m *Monitor) Event {
	t.Helper()
	select {
	case ev := <-m.Events():
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
		return Event{}
	}
}

// drainEvents returns the events queued, in order. Called after step, when every probe the
// Advance fired has been recorded: an event is then in the queue (m.pending) or in the Events
// channel, and the pump sends it to the channel before it takes it off the queue, so an empty
// queue seen before an empty channel means there is nothing more.
func drainEvents(t *testing.T, m *Monitor) []Event {
	t.Helper()
	var evs []Event
	for {
		m.mu.Lock()
		queued := len(m.pending) > 0
		m.mu.Unlock()
		select {
		case ev := <-m.Events():
			evs = append(evs, ev)
			continue
		default:
		}
		if !queued {
			return evs
		}
		evs = append(evs, recvEvent(t, m)) // the pump is about to send it
	}
}

// noEvent fails if an event is queued (see drainEvents).
func noEvent(t *testing.T, m *Monitor) {
	t.Helper()
	if evs := drainEvents(t, m); len(evs) > 0 {
		t.Fatalf("expected no event, seen %+v", evs)
	}
}

func TestMonitorRiseFall(t *testing.T) {
	var logs syncBuffer
	clk := clocktest.NewFake(t0)
	m := NewMonitor(slog.New(slog.NewTextHandler(&logs, nil)), clk, seeded())
	defer m.Close()
	tg := target("db", "10.0.0.2")
	p := newFakeProber(false)
	m.Set([]Spec{spec(tg, p, true)})
	clk.BlockUntil(1)

	for i := 1; i <= 2; i++ {
		step(t, clk, 1)
		if s := statusOf(t, m, tg); !s.Up || s.Checks != uint64(i) || s.Failures != uint64(i) || s.LastErr != "fake: refused" {
			t.Fatalf("after %d failed probes (fall 3): expected up with %d checks and the error, seen %+v", i, i, s)
		}
	}
	noEvent(t, m)
	step(t, clk, 1)
	if s := statusOf(t, m, tg); s.Up || s.Checks != 3 {
		t.Fatalf("after 3 failed probes (fall 3): expected down, seen %+v", s)
	}
	ev := recvEvent(t, m)
	if ev.Target != tg || ev.Up || ev.Reason != "fake: refused" {
		t.Fatalf("down event: seen %+v", ev)
	}
	for range 3 {
		step(t, clk, 1) // still failing: no more events, no more log lines
	}
	noEvent(t, m)

	p.set(true, nil)
	step(t, clk, 1)
	if s := statusOf(t, m, tg); s.Up {
		t.Fatalf("after 1 good probe (rise 2): expected still down, seen %+v", s)
	}
	noEvent(t, m)
	step(t, clk, 1)
	if s := statusOf(t, m, tg); !s.Up || s.LastErr != "" || s.Checks != 8 || s.Failures != 6 {
		t.Fatalf("after 2 good probes (rise 2): expected up, 8 checks, 6 failures, seen %+v", s)
	}
	if ev := recvEvent(t, m); !ev.Up || ev.Reason != "" || ev.Latency != time.Millisecond {
		t.Fatalf("up event: seen %+v", ev)
	}

	out := logs.String()
	if n := strings.Count(out, "real server down"); n != 1 {
		t.Errorf("expected 1 'real server down' log line, seen %d:\n%s", n, out)
	}
	if n := strings.Count(out, "real server up"); n != 1 {
		t.Errorf("expected 1 'real server up' log line, seen %d:\n%s", n, out)
	}
	if lines := strings.Count(out, "\n"); lines != 2 {
		t.Errorf("expected 2 log lines in all (one per state change), seen %d:\n%s", lines, out)
	}
	for _, want := range []string{"service=db", "addr=10.0.0.2", `reason="fake: refused"`, "checks=3"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestMonitorOffsets(t *testing.T) {
	clk := clocktest.NewFake(t0)
	m := NewMonitor(nil, clk, seeded())
	defer m.Close()
	const n = 100
	var specs []Spec
	for i := range n {
		specs = append(specs, spec(target("db", netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}).String()), newFakeProber(true), true))
	}
	m.Set(specs)
	clk.BlockUntil(n)
	dl := clk.Deadlines()
	distinct := map[time.Time]bool{}
	for _, d := range dl {
		if d.Before(t0) || !d.Before(t0.Add(time.Second)) {
			t.Fatalf("first probe at %v: expected within [start, start+interval)", d.Sub(t0))
		}
		distinct[d] = true
	}
	if len(distinct) < n/2 {
		t.Fatalf("first probes of %d targets at only %d distinct times: not spread", n, len(distinct))
	}
	// After one interval every target has probed exactly once, at its offset.
	step(t, clk, n)
	for i, s := range m.Status() {
		if s.Checks != 1 || s.LastCheck.Before(t0) || !s.LastCheck.Before(t0.Add(time.Second)) {
			t.Fatalf("target %d after one interval: expected 1 check within the first interval, seen %+v", i, s)
		}
	}
	// The next probes are one interval after the first ones.
	for i, d := range clk.Deadlines() {
		if want := dl[i].Add(time.Second); !d.Equal(want) {
			t.Fatalf("second probe %d at %v, expected %v", i, d.Sub(t0), want.Sub(t0))
		}
	}

	// Same seed, same offsets.
	clk2 := clocktest.NewFake(t0)
	m2 := NewMonitor(nil, clk2, seeded())
	defer m2.Close()
	for i := range specs {
		specs[i].Prober = newFakeProber(true)
	}
	m2.Set(specs)
	clk2.BlockUntil(n)
	for i, d := range clk2.Deadlines() {
		if !d.Equal(dl[i]) {
			t.Fatalf("same seed: offset %d is %v, first run %v", i, d.Sub(t0), dl[i].Sub(t0))
		}
	}
}

func TestMonitorSet(t *testing.T) {
	clk := clocktest.NewFake(t0)
	m := NewMonitor(nil, clk, seeded())
	defer m.Close()
	a, b, c := target("db", "10.0.0.1"), target("db", "10.0.0.2"), target("db", "10.0.0.3")
	pa, pb := newFakeProber(false), newFakeProber(true)
	m.Set([]Spec{spec(a, pa, true), spec(b, pb, true)})
	clk.BlockUntil(2)
	for range 3 {
		step(t, clk, 2)
	}
	if s := statusOf(t, m, a); s.Up || s.Checks != 3 {
		t.Fatalf("a after 3 failures: expected down, seen %+v", s)
	}
	recvEvent(t, m)

	// a unchanged (new prober unused), b removed, c added.
	pa2, pc := newFakeProber(true), newFakeProber(true)
	m.Set([]Spec{spec(a, pa2, true), spec(c, pc, true)})
	if _, closed := pa2.counts(); closed != 1 {
		t.Fatalf("unused new prober of unchanged a: expected closed once, seen %d", closed)
	}
	if _, closed := pa.counts(); closed != 0 {
		t.Fatalf("prober of unchanged a: expected kept open, closed %d times", closed)
	}
	if _, closed := pb.counts(); closed != 1 {
		t.Fatalf("prober of removed b: expected closed once by the time Set returns, seen %d", closed)
	}
	st := m.Status()
	if len(st) != 2 || st[0].Target != a || st[1].Target != c {
		t.Fatalf("status after Set: expected a and c, sorted, seen %+v", st)
	}
	if st[0].Up || st[0].Checks != 3 {
		t.Fatalf("a kept its state: expected down with 3 checks, seen %+v", st[0])
	}
	clk.BlockUntil(2)
	step(t, clk, 2)
	if probes, _ := pa.counts(); probes != 4 {
		t.Fatalf("a's old prober still in use: expected 4 probes, seen %d", probes)
	}
	if probes, _ := pa2.counts(); probes != 0 {
		t.Fatalf("a's unused new prober: expected no probes, seen %d", probes)
	}

	// a changed (new interval): restarted with the new prober, keeping its down state.
	pa3 := newFakeProber(true)
	sa := spec(a, pa3, true)
	sa.Fall = 5
	pc2 := newFakeProber(true)
	m.Set([]Spec{sa, spec(c, pc2, true)})
	if _, closed := pa.counts(); closed != 1 {
		t.Fatalf("old prober of changed a: expected closed once, seen %d", closed)
	}
	if s := statusOf(t, m, a); s.Up || s.Checks != 4 {
		t.Fatalf("changed a: expected its down state and counters kept, seen %+v", s)
	}
	clk.BlockUntil(2)
	step(t, clk, 2)
	if probes, _ := pa3.counts(); probes != 1 {
		t.Fatalf("changed a's new prober: expected 1 probe, seen %d", probes)
	}
	step(t, clk, 2)
	if ev := recvEvent(t, m); ev.Target != a || !ev.Up {
		t.Fatalf("a after 2 good probes with the new prober: expected up event, seen %+v", ev)
	}

	m.Set(nil)
	if _, closed := pa3.counts(); closed != 1 {
		t.Fatalf("a's prober after Set(nil): expected closed, seen %d", closed)
	}
	if _, closed := pc.counts(); closed != 1 {
		t.Fatalf("c's prober after Set(nil): expected closed, seen %d", closed)
	}
	if len(m.Status()) != 0 {
		t.Fatalf("status after Set(nil): expected empty, seen %+v", m.Status())
	}
}

func TestMonitorCloseWaits(t *testing.T) {
	before := runtime.NumGoroutine()
	clk := clocktest.NewFake(t0)
	m := NewMonitor(nil, clk, seeded())
	blocking := newFakeProber(true)
	blocking.block = true
	var others []*fakeProber
	specs := []Spec{spec(target("db", "10.0.0.1"), blocking, true)}
	for i := range 10 {
		p := newFakeProber(i%2 == 0)
		others = append(others, p)
		specs = append(specs, spec(target("db", netip.AddrFrom4([4]byte{10, 0, 2, byte(i)}).String()), p, true))
	}
	m.Set(specs)
	clk.BlockUntil(len(specs))
	clk.Advance(time.Second)
	<-blocking.started // a probe is in flight
	m.Close()
	select {
	case <-blocking.ended:
	default:
		t.Fatal("Close returned while a probe was still running")
	}
	for i, p := range append(others, blocking) {
		if _, closed := p.counts(); closed != 1 {
			t.Fatalf("prober %d after Close: expected closed once, seen %d", i, closed)
		}
	}
	if _, ok := <-m.Events(); ok {
		t.Fatal("Events channel still open after Close")
	}
	m.Close() // twice is fine
	late := newFakeProber(true)
	m.Set([]Spec{spec(target("db", "10.0.0.9"), late, true)})
	if _, closed := late.counts(); closed != 1 {
		t.Fatalf("Set after Close: expected its prober closed, seen %d", closed)
	}

	wait.For(t, 2*time.Second, "no goroutine left after Close", func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("goroutine leak: %d before, %d after Close\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

func TestMonitorEventsCoalesce(t *testing.T) {
	clk := clocktest.NewFake(t0)
	m := NewMonitor(nil, clk, seeded(), WithEventBuffer(1))
	defer m.Close()
	a, b := target("db", "10.0.0.1"), target("db", "10.0.0.2")
	pa, pb := newFakeProber(true), newFakeProber(true)
	sa, sb := spec(a, pa, true), spec(b, pb, true)
	sa.Rise, sa.Fall, sb.Rise, sb.Fall = 1, 1, 1, 1
	m.Set([]Spec{sa, sb})
	clk.BlockUntil(2)
	// Nobody reads events: 21 state changes each must not block probing.
	for i := range 21 {
		pa.set(i%2 == 1, nil)
		pb.set(i%2 == 1, nil)
		step(t, clk, 2)
	}
	// Both end down (i = 20 is unhealthy).
	last := map[Target]Event{}
	evs := drainEvents(t, m)
	n := len(evs)
	for _, ev := range evs {
		last[ev.Target] = ev
	}
	if n > 4 {
		t.Errorf("expected coalesced events (at most 4 for 2 targets with a buffer of 1), seen %d", n)
	}
	for _, tg := range []Target{a, b} {
		ev, ok := last[tg]
		if !ok || ev.Up || ev.Reason == "" {
			t.Fatalf("latest event of %v: expected down with a reason, seen %+v (found %t)", tg, ev, ok)
		}
	}
	// And then the events follow the state one by one again.
	pa.set(true, nil)
	step(t, clk, 2)
	if ev := recvEvent(t, m); ev.Target != a || !ev.Up {
		t.Fatalf("after a comes back: expected a up, seen %+v", ev)
	}
}

func TestMonitorDynamicWeight(t *testing.T) {
	clk := clocktest.NewFake(t0)
	m := NewMonitor(nil, clk, seeded())
	defer m.Close()
	a := target("db", "10.0.0.1")
	p := newFakeProber(true)
	m.Set([]Spec{spec(a, p, true)})
	clk.BlockUntil(1)
	w := func(v uint32) *uint32 { return &v }

	p.set(true, w(5))
	step(t, clk, 1)
	if ev := recvEvent(t, m); !ev.Up || ev.Weight == nil || *ev.Weight != 5 {
		t.Fatalf("weight 5 while up: expected an up event with weight 5, seen %+v", ev)
	}
	step(t, clk, 1) // same weight: nothing
	p.set(true, nil)
	step(t, clk, 1) // healthy without a weight keeps it (keepalived: exit 0 leaves it)
	noEvent(t, m)
	if s := statusOf(t, m, a); s.Weight == nil || *s.Weight != 5 {
		t.Fatalf("status weight: expected 5, seen %v", s.Weight)
	}
	p.set(true, w(0))
	step(t, clk, 1)
	if ev := recvEvent(t, m); !ev.Up || ev.Weight == nil || *ev.Weight != 0 {
		t.Fatalf("weight 0 while up: expected an event with weight 0, seen %+v", ev)
	}
	// Down, then up with a new weight: the up event carries it.
	p.set(false, nil)
	for range 3 {
		step(t, clk, 1)
	}
	if ev := recvEvent(t, m); ev.Up {
		t.Fatalf("expected down event, seen %+v", ev)
	}
	p.set(true, w(9))
	step(t, clk, 1)
	noEvent(t, m)
	step(t, clk, 1)
	if ev := recvEvent(t, m); !ev.Up || ev.Weight == nil || *ev.Weight != 9 {
		t.Fatalf("up event after a weight change while down: expected weight 9, seen %+v", ev)
	}
}

// TestMonitorGrid: first probes fall on the common grid (Interval/100, at most 10 ms) even for
// targets added later, and later probes stay on it.
func TestMonitorGrid(t *testing.T) {
	clk := clocktest.NewFake(t0)
	m := NewMonitor(nil, clk, seeded())
	defer m.Close()
	clk.Advance(1234567 * time.Nanosecond) // off the grid
	const n = 50
	var specs []Spec
	for i := range n {
		specs = append(specs, spec(target("db", netip.AddrFrom4([4]byte{10, 0, 3, byte(i)}).String()), newFakeProber(true), true))
	}
	m.Set(specs)
	clk.BlockUntil(n)
	now := clk.Now()
	check := func(when string) {
		t.Helper()
		for _, d := range clk.Deadlines() {
			if d.Sub(t0)%(10*time.Millisecond) != 0 {
				t.Fatalf("%s: deadline %v off the 10 ms grid", when, d.Sub(t0))
			}
		}
	}
	check("first probes")
	for _, d := range clk.Deadlines() {
		if !d.After(now) || !d.Before(now.Add(time.Second)) {
			t.Fatalf("first probe at %v: expected within (now, now+interval)", d.Sub(now))
		}
	}
	step(t, clk, n)
	check("second probes")
}

// TestMonitorStarting: a target that starts down is "starting" until its verdict: up after Rise
// successes, down after Fall failures in a row (the evidence that takes an up server down), one
// event then. Its first failed check is logged at once with its error (else nothing would say
// why the server never came up), later failures are not.
func TestMonitorStarting(t *testing.T) {
	var logs syncBuffer
	clk := clocktest.NewFake(t0)
	m := NewMonitor(slog.New(slog.NewTextHandler(&logs, nil)), clk, seeded())
	defer m.Close()
	bad, good := target("db", "10.0.0.2"), target("db", "10.0.0.3")
	m.Set([]Spec{spec(bad, newFakeProber(false), false), spec(good, newFakeProber(true), false)}) // rise 2, fall 3
	clk.WaitParked(t, 2)
	for _, tg := range []Target{bad, good} {
		if s := statusOf(t, m, tg); s.State() != "starting" || !s.Since.Equal(t0) {
			t.Fatalf("%v before any check: expected starting since the start, seen %s since %v", tg.Addr, s.State(), s.Since)
		}
	}
	step(t, clk, 2)
	if s := statusOf(t, m, bad); s.State() != "starting" || s.LastErr != "fake: refused" {
		t.Fatalf("after 1 failed check of fall 3: expected still starting, with the error, seen %s (%q)", s.State(), s.LastErr)
	}
	if !strings.Contains(logs.String(), `msg="real server down from the start" service=db addr=10.0.0.2 reason="fake: refused"`) {
		t.Fatalf("expected the first failure logged at once, seen:\n%s", logs.String())
	}
	step(t, clk, 2)
	if ev := recvEvent(t, m); ev.Target != good || !ev.Up {
		t.Fatalf("expected the good target's up event after rise 2, seen %+v", ev)
	}
	noEvent(t, m)
	step(t, clk, 2)
	ev := recvEvent(t, m)
	if ev.Target != bad || ev.Up || ev.Reason != "fake: refused" {
		t.Fatalf("third failure from the start (fall 3): expected a down event with the error, seen %+v", ev)
	}
	s := statusOf(t, m, bad)
	if s.State() != "down" || !s.Since.After(t0) {
		t.Fatalf("after fall failures: expected down since then, seen %s since %v", s.State(), s.Since)
	}
	for range 3 {
		step(t, clk, 2)
	}
	noEvent(t, m)
	out := logs.String()
	if n := strings.Count(out, "real server down from the start"); n != 1 {
		t.Errorf("expected one 'down from the start' line, seen %d:\n%s", n, out)
	}
	if n := strings.Count(out, "\n"); n != 2 {
		t.Errorf("expected 2 log lines (first failure, up), seen %d:\n%s", n, out)
	}
}

// TestMonitorStartingFlaky: a failure, then a success, then failures: the count of failures in
// a row restarts, so a single early failure (a MAC not resolved yet) gives no down verdict.
func TestMonitorStartingFlaky(t *testing.T) {
	clk := clocktest.NewFake(t0)
	m := NewMonitor(nil, clk, seeded())
	defer m.Close()
	tg := target("db", "10.0.0.2")
	p := newFakeProber(false)
	m.Set([]Spec{spec(tg, p, false)}) // rise 2, fall 3
	clk.WaitParked(t, 1)
	for i, healthy := range []bool{false, false, true, false, false} {
		p.set(healthy, nil)
		step(t, clk, 1)
		if s := statusOf(t, m, tg); s.State() != "starting" {
			t.Fatalf("check %d: expected starting (never 3 failures in a row, never 2 successes), seen %s", i+1, s.State())
		}
	}
	noEvent(t, m)
	step(t, clk, 1)
	if ev := recvEvent(t, m); ev.Up || statusOf(t, m, tg).State() != "down" {
		t.Fatalf("third failure in a row: expected down, seen %+v", ev)
	}
}
