package health

import (
	"cmp"
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/xdplb/xdplb/internal/clock"
)

// Spec is one real server for the Monitor to check.
type Spec struct {
	Target            Target
	Prober            Prober // owned by the Monitor from Set on: it Closes it
	Interval, Timeout time.Duration
	Rise, Fall        int
	InitialUp         bool
	// CheckID describes the prober's configuration (check type, port, options). Set restarts a
	// target whose CheckID changed, as it does one whose timing changed. Optional.
	CheckID string
}

// same reports whether a running target needs no restart for spec o.
func (s Spec) same(o Spec) bool {
	return s.Target == o.Target && s.Interval == o.Interval && s.Timeout == o.Timeout &&
		s.Rise == o.Rise && s.Fall == o.Fall && s.CheckID == o.CheckID
}

// Status is what the Monitor knows of one target.
type Status struct {
	Target      Target
	Up          bool
	Weight      *uint32 // dynamic weight in force, if any
	LastErr     string
	LastLatency time.Duration
	LastCheck   time.Time // zero before the first probe
	Checks      uint64
	Failures    uint64
	// Starting: down with no verdict yet: the target started down (not InitialUp) and has
	// neither risen nor failed a check since.
	Starting bool
	// Since is when the current state (starting, up, down) began: when the target was added,
	// or its last change.
	Since time.Time
}

// State is the word for s's state: "starting", "up" or "down".
func (s Status) State() string {
	switch {
	case s.Up:
		return "up"
	case s.Starting:
		return "starting"
	}
	return "down"
}

// Option configures a Monitor.
type Option func(*Monitor)

// WithRand sets the random source of the start offsets (default: seeded from the runtime).
func WithRand(r *rand.Rand) Option { return func(m *Monitor) { m.rand = r } }

// WithEventBuffer sets the capacity of the Events channel (default 64).
func WithEventBuffer(n int) Option { return func(m *Monitor) { m.bufSize = max(n, 0) } }

// Monitor probes real servers, one goroutine each, and reports their state changes.
//
// Each target is probed every Interval, starting at a random offset in [0, Interval) so that
// checks do not fire in lockstep; each probe gets a context with Timeout as deadline. The offsets
// are drawn on a grid of Interval/100 (at most 10 ms) common to all targets, so that targets
// sharing a slot wake the process once between them: at a thousand checks a second the
// wake-ups, not the probes, would otherwise be most of the CPU. Later probes keep to the grid.
// Results go through a Tracker; a change of state (or of the dynamic weight while up) becomes an Event.
// No event is sent for a target's initial state. A target that starts down is starting until
// its verdict: up after Rise successes, or down after Fall failures in a row; the latter is one
// event (down, with the error). Its first failure is one log line, since nothing else would say
// why it never came up.
type Monitor struct {
	log     *slog.Logger
	clock   clock.Clock
	epoch   time.Time // origin of the schedule grid
	rand    *rand.Rand
	bufSize int

	mu      sync.Mutex
	targets map[Target]*runner
	closed  bool
	wg      sync.WaitGroup // probe goroutines

	// Event queue: the latest undelivered event per target, in order of first queuing.
	queue   []Target
	pending map[Target]queued
	seq     uint64
	notify  chan struct{} // cap 1: the queue changed
	events  chan Event
	done    chan struct{} // closed by Close
	pumped  chan struct{} // closed when the pump goroutine ends
}

type queued struct {
	ev  Event
	seq uint64
}

// runner is one target's goroutine and state. Fields below mu are guarded by Monitor.mu.
type runner struct {
	spec    Spec
	first   time.Time // deadline of the first probe
	cancel  context.CancelFunc
	done    chan struct{}
	tracker *Tracker
	weight  *uint32
	status  Status
	// While starting: failures in a row, and whether the first one was logged.
	startFails  int
	startLogged bool
}

// RealClock is clock.Real under its old name, for bench/controlplane.go, which another branch
// of issue 12 is moving: drop it once that code passes clock.Real{} (or nil).
type RealClock = clock.Real

// NewMonitor returns a Monitor with no targets. log may be nil (no logging); clk nil is the
// system clock.
func NewMonitor(log *slog.Logger, clk clock.Clock, opts ...Option) *Monitor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if clk == nil {
		clk = clock.Real{}
	}
	m := &Monitor{
		log:     log,
		clock:   clk,
		bufSize: 64,
		targets: make(map[Target]*runner),
		pending: make(map[Target]queued),
		notify:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		pumped:  make(chan struct{}),
	}
	for _, o := range opts {
		o(m)
	}
	m.epoch = m.clock.Now()
	if m.rand == nil {
		m.rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	m.events = make(chan Event, m.bufSize)
	go m.pump()
	return m
}

// Events delivers state changes. The receiver always gets the latest state of each target last:
// while it does not read, newer events of a target replace older undelivered ones, and probing
// never waits for it. The channel is closed by Close.
func (m *Monitor) Events() <-chan Event { return m.events }

// Set makes specs the targets: it starts new targets, stops and Closes the probers of removed
// ones, and restarts changed ones with their new prober, carrying over their up/down state
// (not InitialUp) so that a reload does not flap them. Unchanged targets keep running with
// their state and old prober; the new prober passed for them is Closed. A target listed twice
// counts once (the first). After Close, Set only Closes the probers it is given.
func (m *Monitor) Set(specs []Spec) {
	var toClose []Prober
	var stopped []*runner
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		for _, s := range specs {
			closeProber(m.log, s)
		}
		return
	}
	want := make(map[Target]Spec, len(specs))
	for _, s := range specs {
		if _, dup := want[s.Target]; dup {
			toClose = append(toClose, s.Prober)
			continue
		}
		want[s.Target] = s
	}
	for t, r := range m.targets {
		s, ok := want[t]
		switch {
		case !ok:
			r.cancel()
			stopped = append(stopped, r)
			delete(m.targets, t)
			m.dropEvent(t)
		case r.spec.same(s):
			toClose = append(toClose, s.Prober)
			delete(want, t)
		default:
			r.cancel()
			stopped = append(stopped, r)
			s.InitialUp = r.tracker.Up()
			want[t] = s
		}
	}
	// Start in a fixed order so that a seeded random source gives the same offsets every run.
	starts := make([]Spec, 0, len(want))
	for _, s := range want {
		starts = append(starts, s)
	}
	slices.SortFunc(starts, func(a, b Spec) int { return compareTargets(a.Target, b.Target) })
	for _, s := range starts {
		old := m.targets[s.Target]
		m.start(s, old)
	}
	m.mu.Unlock()

	for _, r := range stopped {
		<-r.done
	}
	for _, p := range toClose {
		closeProber(m.log, Spec{Prober: p})
	}
}

// start launches s's goroutine. old, if not nil, is the runner it replaces (already cancelled).
// m.mu is held.
func (m *Monitor) start(s Spec, old *runner) {
	if s.Interval <= 0 {
		s.Interval = 2 * time.Second
	}
	if s.Timeout <= 0 || s.Timeout > s.Interval {
		s.Timeout = min(time.Second, s.Interval)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{
		spec:    s,
		first:   m.firstProbe(s.Interval),
		cancel:  cancel,
		done:    make(chan struct{}),
		tracker: NewTracker(s.Rise, s.Fall, s.InitialUp),
		status:  Status{Target: s.Target, Up: s.InitialUp, Starting: !s.InitialUp, Since: m.clock.Now()},
	}
	if old != nil {
		r.weight = old.weight
		r.status = old.status
		r.startFails, r.startLogged = old.startFails, old.startLogged
	}
	m.targets[s.Target] = r
	m.wg.Add(1)
	var prev chan struct{}
	if old != nil {
		prev = old.done
	}
	go m.run(ctx, r, prev)
}

// run is a target's goroutine: wait for the timer, probe, record, rearm. It Closes the prober
// when it ends. prev, if not nil, is closed when the runner this one replaces has ended, so
// that two probers of one target never run at once.
func (m *Monitor) run(ctx context.Context, r *runner, prev <-chan struct{}) {
	defer m.wg.Done()
	defer close(r.done)
	defer closeProber(m.log, r.spec)
	if prev != nil {
		<-prev
	}
	s := r.spec
	next := r.first
	timer := m.clock.NewTimer(max(next.Sub(m.clock.Now()), 0))
	defer timer.Stop()
	for {
		var at time.Time
		select {
		case <-ctx.Done():
			return
		case at = <-timer.C():
		}
		pctx, cancel := context.WithTimeout(ctx, s.Timeout)
		start := time.Now()
		res := s.Prober.Probe(pctx)
		if res.Latency == 0 {
			res.Latency = time.Since(start)
		}
		cancel()
		if ctx.Err() != nil {
			return // stopped during the probe: the result says nothing of the server
		}
		m.record(r, at, res)
		// The next deadline follows from the previous one, not from when the timer was seen to
		// fire, so that the target stays on its grid slot. If the process stalled for whole
		// intervals, the missed probes are skipped, not run back to back.
		next = next.Add(s.Interval)
		now := m.clock.Now()
		if behind := now.Sub(next); behind >= s.Interval {
			next = next.Add(behind / s.Interval * s.Interval)
		}
		timer.Reset(max(next.Sub(now), 0))
	}
}

// maxGrain bounds the grid of the probe schedule (see Monitor).
const maxGrain = 10 * time.Millisecond

// firstProbe draws the deadline of a new target's first probe: a random point of the grid in
// (now, now+interval). m.mu is held (m.rand).
func (m *Monitor) firstProbe(interval time.Duration) time.Time {
	grain := max(min(interval/100, maxGrain), 1)
	now := m.clock.Now()
	slots := int64(interval / grain)
	if slots < 2 {
		return now.Add(time.Duration(m.rand.Int64N(int64(interval))))
	}
	since := now.Sub(m.epoch)
	start := m.epoch.Add((since + grain - 1) / grain * grain) // the first grid point >= now
	// start-now < grain: slots 1 to slots-1 after start are in (now, now+interval).
	return start.Add(time.Duration(1+m.rand.Int64N(slots-1)) * grain)
}

// record updates r with one result and queues an event if its state changed.
func (m *Monitor) record(r *runner, at time.Time, res Result) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.targets[r.spec.Target] != r {
		return // replaced or removed meanwhile
	}
	st := &r.status
	st.Checks++
	st.LastCheck = at
	st.LastLatency = res.Latency
	st.LastErr = ""
	if !res.Healthy {
		st.Failures++
		st.LastErr = "unhealthy"
		if res.Err != nil {
			st.LastErr = res.Err.Error()
		}
	}
	streak := r.tracker.Streak() + 1
	changed := r.tracker.Observe(res.Healthy)
	weightChanged := false
	if res.Healthy && res.Weight != nil && (r.weight == nil || *r.weight != *res.Weight) {
		// A healthy result without a weight keeps the last one (keepalived: exit 0 leaves
		// the dynamic weight unchanged).
		w := *res.Weight
		r.weight = &w
		weightChanged = true
	}
	st.Up = r.tracker.Up()
	st.Weight = r.weight
	t := r.spec.Target
	// A starting target gets its verdict by rising, or by failing Fall checks in a row: the
	// evidence that takes an up server down. Its first failure is logged at once, so that a
	// server that never comes up says why.
	firstFailure, settled := false, false
	if st.Starting {
		if res.Healthy {
			r.startFails = 0
		} else {
			r.startFails++
			firstFailure = !r.startLogged
			r.startLogged = true
		}
		settled = changed || r.startFails >= max(r.spec.Fall, 1)
	}
	if changed || settled {
		st.Starting = false
		st.Since = at
	}
	if firstFailure {
		m.log.Warn("real server down from the start", "service", t.Service, "addr", t.Addr, "reason", st.LastErr)
	}
	switch {
	case settled && !st.Up:
		// its verdict: down (logged above at its first failure)
	case changed && st.Up:
		m.log.Info("real server up", "service", t.Service, "addr", t.Addr, "checks", streak,
			"latency", res.Latency)
	case changed:
		m.log.Warn("real server down", "service", t.Service, "addr", t.Addr, "reason", st.LastErr,
			"checks", streak)
	case weightChanged && st.Up:
		m.log.Info("real server weight", "service", t.Service, "addr", t.Addr, "weight", *r.weight)
	default:
		return
	}
	ev := Event{Target: t, Up: st.Up, Latency: res.Latency}
	if st.Up {
		ev.Weight = copyWeight(r.weight)
	} else {
		ev.Reason = st.LastErr
	}
	m.queueEvent(ev)
}

func copyWeight(w *uint32) *uint32 {
	if w == nil {
		return nil
	}
	v := *w
	return &v
}

// queueEvent puts ev in the queue, replacing an undelivered event of its target. m.mu is held.
func (m *Monitor) queueEvent(ev Event) {
	m.seq++
	if _, ok := m.pending[ev.Target]; !ok {
		m.queue = append(m.queue, ev.Target)
	}
	m.pending[ev.Target] = queued{ev: ev, seq: m.seq}
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

// dropEvent removes t's undelivered event. m.mu is held.
func (m *Monitor) dropEvent(t Target) {
	if _, ok := m.pending[t]; !ok {
		return
	}
	delete(m.pending, t)
	m.queue = slices.DeleteFunc(m.queue, func(x Target) bool { return x == t })
}

// pump moves queued events to the Events channel.
func (m *Monitor) pump() {
	defer close(m.pumped)
	defer close(m.events)
	for {
		m.mu.Lock()
		var head queued
		have := len(m.queue) > 0
		if have {
			head = m.pending[m.queue[0]]
		}
		m.mu.Unlock()
		if !have {
			select {
			case <-m.notify:
				continue
			case <-m.done:
				return
			}
		}
		select {
		case m.events <- copyEvent(head.ev):
			m.mu.Lock()
			if q, ok := m.pending[head.ev.Target]; ok && q.seq == head.seq {
				delete(m.pending, head.ev.Target)
				m.queue = slices.DeleteFunc(m.queue, func(x Target) bool { return x == head.ev.Target })
			}
			// Otherwise a newer event replaced it while we sent: it stays queued.
			m.mu.Unlock()
		case <-m.notify:
		case <-m.done:
			return
		}
	}
}

func copyEvent(ev Event) Event {
	ev.Weight = copyWeight(ev.Weight)
	return ev
}

// Status returns every target's status, sorted by Target.
func (m *Monitor) Status() []Status {
	m.mu.Lock()
	out := make([]Status, 0, len(m.targets))
	for _, r := range m.targets {
		s := r.status
		s.Weight = copyWeight(s.Weight)
		out = append(out, s)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int { return compareTargets(a.Target, b.Target) })
	return out
}

// Close stops every target, Closes their probers, waits for the goroutines and closes the
// Events channel (undelivered events are dropped). Safe to call twice.
func (m *Monitor) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.pumped
		return
	}
	m.closed = true
	for t, r := range m.targets {
		r.cancel()
		delete(m.targets, t)
	}
	m.mu.Unlock()
	m.wg.Wait()
	close(m.done)
	<-m.pumped
}

func compareTargets(a, b Target) int {
	if n := cmp.Compare(a.Service, b.Service); n != 0 {
		return n
	}
	return a.Addr.Compare(b.Addr)
}

func closeProber(log *slog.Logger, s Spec) {
	if s.Prober == nil {
		return
	}
	if err := s.Prober.Close(); err != nil {
		log.Warn("close health check", "service", s.Target.Service, "addr", s.Target.Addr, "err", err)
	}
}
