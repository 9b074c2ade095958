package vrrp

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

var (
	t0     = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	local  = netip.MustParseAddr("10.0.0.2")
	lower  = netip.MustParseAddr("10.0.0.1") // a peer with a lower address than ours
	higher = netip.MustParseAddr("10.0.0.3") // a peer with a higher address than ours
)

const (
	skew100 = 156 * time.Second / 256   // (256-100)/256 × 1 s = 609.375 ms
	mdi100  = 3*time.Second + skew100   // 3.609375 s
	skew200 = 56 * time.Second / 256    // 218.75 ms
	mdi200  = 3*time.Second + skew200   // 3.21875 s
	mdi100i = 6*time.Second + 2*skew100 // v3, Master_Adver_Interval 2 s: 7.21875 s
	mdi255  = 3*time.Second + time.Second/256
)

func cfg100() Config {
	return Config{VRID: 51, Priority: 100, Interval: time.Second, Version: V3, Preempt: true}
}

func TestMachineTransitions(t *testing.T) {
	startBackup := []Event{Startup{}}
	startMaster := []Event{Startup{}, Timeout{TimerMasterDown}}
	startFault := []Event{Startup{}, IfaceDown{}}
	owner := cfg100()
	owner.Priority = 255
	nopreempt := cfg100()
	nopreempt.Preempt = false
	delay := cfg100()
	delay.PreemptDelay = 30 * time.Second
	v2 := cfg100()
	v2.Version = V2
	for _, tc := range []struct {
		name  string
		cfg   Config
		setup []Event
		ev    Event
		state State
		want  []Action
	}{
		// Init (RFC 5798 6.4.1)
		{"init startup → backup", cfg100(), nil, Startup{}, Backup, []Action{
			StateChange{Init, Backup, "startup"}, StartTimer{TimerMasterDown, mdi100}}},
		{"init startup owner → master", owner, nil, Startup{}, Master, []Action{
			StateChange{Init, Master, "startup: address owner"}, AddVIPs{}, SendAdvert{255}, Announce{},
			StartTimer{TimerAdvert, time.Second}}},
		{"init startup preempt delay", delay, nil, Startup{}, Backup, []Action{
			StateChange{Init, Backup, "startup"}, StartTimer{TimerMasterDown, mdi100},
			StartTimer{TimerPreemptDelay, 30 * time.Second}}},
		{"init startup nopreempt ignores delay", func() Config { c := delay; c.Preempt = false; return c }(), nil, Startup{}, Backup, []Action{
			StateChange{Init, Backup, "startup"}, StartTimer{TimerMasterDown, mdi100}}},
		{"init startup v2", v2, nil, Startup{}, Backup, []Action{
			StateChange{Init, Backup, "startup"}, StartTimer{TimerMasterDown, mdi100}}},
		{"init startup with interface down → fault", cfg100(), []Event{IfaceDown{}}, Startup{}, Fault, []Action{
			StateChange{Init, Fault, "startup with a fault pending"}}},
		{"init advert ignored", cfg100(), nil, AdvertRecv{Priority: 200, From: higher}, Init, nil},
		{"init timeout ignored", cfg100(), nil, Timeout{TimerMasterDown}, Init, nil},
		{"init shutdown ignored", cfg100(), nil, Shutdown{}, Init, nil},
		{"init interface down recorded", cfg100(), nil, IfaceDown{}, Init, nil},
		{"init interface up ignored", cfg100(), nil, IfaceUp{}, Init, nil},

		// Backup (RFC 5798 6.4.2)
		{"backup master down → master", cfg100(), startBackup, Timeout{TimerMasterDown}, Master, []Action{
			StateChange{Backup, Master, "master down timer expired"}, AddVIPs{}, SendAdvert{100}, Announce{},
			StartTimer{TimerAdvert, time.Second}}},
		{"backup master down in preempt delay → master", delay, startBackup, Timeout{TimerMasterDown}, Master, []Action{
			StateChange{Backup, Master, "master down timer expired"}, StopTimer{TimerPreemptDelay}, AddVIPs{},
			SendAdvert{100}, Announce{}, StartTimer{TimerAdvert, time.Second}}},
		{"backup priority 0 → skew", cfg100(), startBackup, AdvertRecv{Priority: 0, Interval: time.Second, From: higher}, Backup, []Action{
			StartTimer{TimerMasterDown, skew100}}},
		{"backup higher priority resets", cfg100(), startBackup, AdvertRecv{Priority: 200, Interval: time.Second, From: lower}, Backup, []Action{
			StartTimer{TimerMasterDown, mdi100}}},
		{"backup equal priority resets", cfg100(), startBackup, AdvertRecv{Priority: 100, Interval: time.Second, From: lower}, Backup, []Action{
			StartTimer{TimerMasterDown, mdi100}}},
		{"backup higher priority v3 adopts interval", cfg100(), startBackup, AdvertRecv{Priority: 200, Interval: 2 * time.Second, From: higher}, Backup, []Action{
			StartTimer{TimerMasterDown, mdi100i}}},
		{"backup v2 keeps interval", v2, startBackup, AdvertRecv{Priority: 200, Interval: 2 * time.Second, From: higher}, Backup, []Action{
			StartTimer{TimerMasterDown, mdi100}}},
		{"backup lower priority ignored (preempt)", cfg100(), startBackup, AdvertRecv{Priority: 50, Interval: time.Second, From: higher}, Backup, nil},
		{"backup lower priority resets (nopreempt)", nopreempt, startBackup, AdvertRecv{Priority: 50, Interval: time.Second, From: higher}, Backup, []Action{
			StartTimer{TimerMasterDown, mdi100}}},
		{"backup lower priority resets (preempt delay)", delay, startBackup, AdvertRecv{Priority: 50, Interval: time.Second, From: higher}, Backup, []Action{
			StartTimer{TimerMasterDown, mdi100}}},
		{"backup own advert ignored", cfg100(), startBackup, AdvertRecv{Priority: 200, Interval: time.Second, From: local}, Backup, nil},
		{"backup stale advert timeout ignored", cfg100(), startBackup, Timeout{TimerAdvert}, Backup, nil},
		{"backup unknown timer ignored", cfg100(), startBackup, Timeout{TimerID(9)}, Backup, nil},
		{"backup startup ignored", cfg100(), startBackup, Startup{}, Backup, nil},
		{"backup shutdown → init", cfg100(), startBackup, Shutdown{}, Init, []Action{
			StateChange{Backup, Init, "shutdown"}, StopTimer{TimerMasterDown}}},
		{"backup interface down → fault", delay, startBackup, IfaceDown{}, Fault, []Action{
			StateChange{Backup, Fault, "interface down"}, StopTimer{TimerMasterDown}, StopTimer{TimerPreemptDelay}}},
		{"backup tracking down → fault", cfg100(), startBackup, TrackDown{}, Fault, []Action{
			StateChange{Backup, Fault, "tracking down"}, StopTimer{TimerMasterDown}}},

		// Master (RFC 5798 6.4.3)
		{"master advert timer", cfg100(), startMaster, Timeout{TimerAdvert}, Master, []Action{
			SendAdvert{100}, StartTimer{TimerAdvert, time.Second}}},
		{"master priority 0 → advertise now", cfg100(), startMaster, AdvertRecv{Priority: 0, Interval: time.Second, From: higher}, Master, []Action{
			SendAdvert{100}, StartTimer{TimerAdvert, time.Second}}},
		{"master higher priority → backup", cfg100(), startMaster, AdvertRecv{Priority: 101, Interval: time.Second, From: lower}, Backup, []Action{
			StateChange{Master, Backup, "higher priority advertisement from 10.0.0.1"}, StopTimer{TimerAdvert}, RemoveVIPs{},
			StartTimer{TimerMasterDown, mdi100}}},
		{"master higher priority nopreempt → backup", nopreempt, startMaster, AdvertRecv{Priority: 101, Interval: time.Second, From: lower}, Backup, []Action{
			StateChange{Master, Backup, "higher priority advertisement from 10.0.0.1"}, StopTimer{TimerAdvert}, RemoveVIPs{},
			StartTimer{TimerMasterDown, mdi100}}},
		{"master higher priority v3 adopts interval", cfg100(), startMaster, AdvertRecv{Priority: 101, Interval: 2 * time.Second, From: lower}, Backup, []Action{
			StateChange{Master, Backup, "higher priority advertisement from 10.0.0.1"}, StopTimer{TimerAdvert}, RemoveVIPs{},
			StartTimer{TimerMasterDown, mdi100i}}},
		{"master equal priority higher address → backup", cfg100(), startMaster, AdvertRecv{Priority: 100, Interval: time.Second, From: higher}, Backup, []Action{
			StateChange{Master, Backup, "equal priority advertisement from higher address 10.0.0.3"}, StopTimer{TimerAdvert}, RemoveVIPs{},
			StartTimer{TimerMasterDown, mdi100}}},
		{"master equal priority lower address → split brain", cfg100(), startMaster, AdvertRecv{Priority: 100, Interval: time.Second, From: lower}, Master, []Action{
			SplitBrain{Peer: lower, PeerPriority: 100}, SendAdvert{100}}},
		{"master lower priority → split brain", cfg100(), startMaster, AdvertRecv{Priority: 99, Interval: time.Second, From: higher}, Master, []Action{
			SplitBrain{Peer: higher, PeerPriority: 99}, SendAdvert{100}}},
		{"master own advert ignored", cfg100(), startMaster, AdvertRecv{Priority: 100, Interval: time.Second, From: local}, Master, nil},
		{"master stale master-down timeout ignored", cfg100(), startMaster, Timeout{TimerMasterDown}, Master, nil},
		{"master shutdown → init", cfg100(), startMaster, Shutdown{}, Init, []Action{
			StateChange{Master, Init, "shutdown"}, StopTimer{TimerAdvert}, SendAdvert{0}, RemoveVIPs{}}},
		{"master interface down → fault", cfg100(), startMaster, IfaceDown{}, Fault, []Action{
			StateChange{Master, Fault, "interface down"}, StopTimer{TimerAdvert}, RemoveVIPs{}}},
		{"master tracking down → fault, resigns", cfg100(), startMaster, TrackDown{}, Fault, []Action{
			StateChange{Master, Fault, "tracking down"}, StopTimer{TimerAdvert}, SendAdvert{0}, RemoveVIPs{}}},
		{"owner equal priority higher address → backup", owner, []Event{Startup{}}, AdvertRecv{Priority: 255, Interval: time.Second, From: higher}, Backup, []Action{
			StateChange{Master, Backup, "equal priority advertisement from higher address 10.0.0.3"}, StopTimer{TimerAdvert}, RemoveVIPs{},
			StartTimer{TimerMasterDown, mdi255}}},

		// Fault (keepalived)
		{"fault interface up → backup", cfg100(), startFault, IfaceUp{}, Backup, []Action{
			StateChange{Fault, Backup, "interface up"}, StartTimer{TimerMasterDown, mdi100}}},
		{"fault interface up owner → master", owner, startFault, IfaceUp{}, Master, []Action{
			StateChange{Fault, Master, "interface up: address owner"}, AddVIPs{}, SendAdvert{255}, Announce{},
			StartTimer{TimerAdvert, time.Second}}},
		{"fault tracking up → backup", cfg100(), []Event{Startup{}, TrackDown{}}, TrackUp{}, Backup, []Action{
			StateChange{Fault, Backup, "tracking up"}, StartTimer{TimerMasterDown, mdi100}}},
		{"fault interface up, tracking still down", cfg100(), []Event{Startup{}, IfaceDown{}, TrackDown{}}, IfaceUp{}, Fault, nil},
		{"fault tracking up, interface still down", cfg100(), []Event{Startup{}, IfaceDown{}, TrackDown{}}, TrackUp{}, Fault, nil},
		{"fault advert ignored", cfg100(), startFault, AdvertRecv{Priority: 200, Interval: time.Second, From: higher}, Fault, nil},
		{"fault down again ignored", cfg100(), startFault, TrackDown{}, Fault, nil},
		{"fault startup ignored", cfg100(), startFault, Startup{}, Fault, nil},
		{"fault shutdown → init", cfg100(), startFault, Shutdown{}, Init, []Action{
			StateChange{Fault, Init, "shutdown"}}},
		{"fault preempt delay reopens", delay, startFault, IfaceUp{}, Backup, []Action{
			StateChange{Fault, Backup, "interface up"}, StartTimer{TimerMasterDown, mdi100},
			StartTimer{TimerPreemptDelay, 30 * time.Second}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMachine(tc.cfg, local)
			for _, ev := range tc.setup {
				m.Handle(t0, ev)
			}
			got := m.Handle(t0.Add(time.Millisecond), tc.ev)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("actions:\n got %#v\nwant %#v", got, tc.want)
			}
			if m.State() != tc.state {
				t.Errorf("state %v, want %v", m.State(), tc.state)
			}
		})
	}
}

// sim runs one Machine on a fake clock, carrying out its timer actions with Timers.
type sim struct {
	t      *testing.T
	m      *Machine
	now    time.Time
	timers Timers
	log    []Action // every action, in order
}

func newSim(t *testing.T, c Config) *sim {
	return &sim{t: t, m: NewMachine(c, local), now: t0}
}

func (s *sim) handle(ev Event) []Action {
	acts := s.m.Handle(s.now, ev)
	s.timers.Apply(s.now, acts)
	s.log = append(s.log, acts...)
	return acts
}

// until advances the clock to at, firing the timers due on the way at their deadlines.
func (s *sim) until(at time.Time) {
	for {
		next, ok := s.timers.Next()
		if !ok || next.After(at) {
			break
		}
		s.now = next
		for id, ok := s.timers.Pop(s.now); ok; id, ok = s.timers.Pop(s.now) {
			s.handle(Timeout{Timer: id})
		}
	}
	s.now = at
}

func (s *sim) at(d time.Duration) time.Time { return t0.Add(d) }

// advertise delivers adverts from a peer every period in [from, to).
func (s *sim) advertise(from, to, period time.Duration, ev AdvertRecv) {
	for d := from; d < to; d += period {
		s.until(s.at(d))
		s.handle(ev)
	}
}

func (s *sim) wantState(at time.Duration, want State) {
	s.t.Helper()
	s.until(s.at(at))
	if got := s.m.State(); got != want {
		s.t.Fatalf("at %v: state %v, want %v", at, got, want)
	}
}

func TestMachineTakeoverAfterMasterDownInterval(t *testing.T) {
	s := newSim(t, cfg100())
	s.handle(Startup{})
	s.wantState(mdi100-time.Nanosecond, Backup)
	s.wantState(mdi100, Master)
	if d, ok := s.m.Deadline(TimerAdvert); !ok || d != s.at(mdi100+time.Second) {
		t.Fatalf("advert deadline %v %v", d, ok)
	}
	// The master advertises every second.
	s.until(s.at(mdi100 + 3*time.Second))
	n := 0
	for _, a := range s.log {
		if a == (SendAdvert{100}) {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d adverts, want 4 (takeover + 3)", n)
	}
}

func TestMachinePreemptTakesOverFromLowerMaster(t *testing.T) {
	c := cfg100()
	c.Priority = 200
	s := newSim(t, c)
	s.handle(Startup{})
	// A lower-priority master keeps advertising: we ignore it and take over at Master_Down_Interval.
	s.advertise(500*time.Millisecond, 3*time.Second, time.Second, AdvertRecv{Priority: 100, Interval: time.Second, From: higher})
	s.wantState(mdi200-time.Nanosecond, Backup)
	s.wantState(mdi200, Master)
}

func TestMachineNoPreempt(t *testing.T) {
	c := cfg100()
	c.Priority = 200
	c.Preempt = false
	s := newSim(t, c)
	s.handle(Startup{})
	// A higher-priority Backup coming up does not take over while the Master advertises.
	adv := AdvertRecv{Priority: 100, Interval: time.Second, From: higher}
	s.advertise(500*time.Millisecond, 20*time.Second, time.Second, adv)
	s.wantState(20*time.Second, Backup)
	if s.m.MasterAddr() != higher || s.m.MasterPriority() != 100 {
		t.Fatalf("master %v/%d", s.m.MasterAddr(), s.m.MasterPriority())
	}
	// When it stops (last advert at 19.5 s), we take over after Master_Down_Interval.
	s.wantState(19500*time.Millisecond+mdi200-time.Nanosecond, Backup)
	s.wantState(19500*time.Millisecond+mdi200, Master)
}

func TestMachinePreemptDelay(t *testing.T) {
	c := cfg100()
	c.Priority = 200
	c.PreemptDelay = 5 * time.Second
	s := newSim(t, c)
	s.handle(Startup{})
	if !s.m.InPreemptDelay() {
		t.Fatal("no preempt-delay window after startup")
	}
	// A lower-priority master advertises at 0.5, 1.5, ... 4.5 s: within the 5 s window each
	// advert resets the master-down timer, so we stay Backup well past Master_Down_Interval.
	adv := AdvertRecv{Priority: 100, Interval: time.Second, From: higher}
	s.advertise(500*time.Millisecond, 5*time.Second, time.Second, adv)
	s.wantState(5*time.Second, Backup)
	if s.m.InPreemptDelay() {
		t.Fatal("preempt-delay window still open at 5 s")
	}
	// Adverts after the window closes are ignored again...
	s.until(s.at(5500 * time.Millisecond))
	if acts := s.handle(adv); acts != nil {
		t.Fatalf("advert after the window: %v", acts)
	}
	// ...so we take over Master_Down_Interval after the last one inside it (4.5 s).
	s.wantState(4500*time.Millisecond+mdi200-time.Nanosecond, Backup)
	s.wantState(4500*time.Millisecond+mdi200, Master)
}

func TestMachinePreemptDelayDoesNotBlockTakeoverWithoutMaster(t *testing.T) {
	c := cfg100()
	c.PreemptDelay = time.Minute
	s := newSim(t, c)
	s.handle(Startup{})
	s.wantState(mdi100, Master)
	if s.m.InPreemptDelay() {
		t.Fatal("preempt-delay window open in Master")
	}
}

func TestMachinePriorityZeroHandover(t *testing.T) {
	s := newSim(t, cfg100())
	s.handle(Startup{})
	s.until(s.at(time.Second))
	s.handle(AdvertRecv{Priority: 200, Interval: time.Second, From: higher})
	// The master resigns at 1.5 s: we take over after Skew_Time, not Master_Down_Interval.
	s.until(s.at(1500 * time.Millisecond))
	s.handle(AdvertRecv{Priority: 0, Interval: time.Second, From: higher})
	if got := s.m.SkewTime(); got != skew100 {
		t.Fatalf("SkewTime %v, want %v", got, skew100)
	}
	s.wantState(1500*time.Millisecond+skew100-time.Nanosecond, Backup)
	s.wantState(1500*time.Millisecond+skew100, Master)
}

func TestMachineIntervalAdoptionV3(t *testing.T) {
	s := newSim(t, cfg100())
	s.handle(Startup{})
	adv := AdvertRecv{Priority: 200, Interval: 2 * time.Second, From: higher}
	s.advertise(0, 10*time.Second, 2*time.Second, adv)
	if got := s.m.MasterAdverInterval(); got != 2*time.Second {
		t.Fatalf("MasterAdverInterval %v", got)
	}
	if got, want := s.m.SkewTime(), 2*skew100; got != want {
		t.Fatalf("SkewTime %v, want %v", got, want)
	}
	if got := s.m.MasterDownInterval(); got != mdi100i {
		t.Fatalf("MasterDownInterval %v, want %v", got, mdi100i)
	}
	// Our own interval (1 s) would have us take over at 8 s + 3.6 s; the master's 2 s gives 8 s + 7.2 s.
	s.wantState(8*time.Second+mdi100i-time.Nanosecond, Backup)
	s.wantState(8*time.Second+mdi100i, Master)
	// As Master we advertise at our own interval again.
	if got := s.m.MasterAdverInterval(); got != time.Second {
		t.Fatalf("MasterAdverInterval as Master %v", got)
	}
}

func TestMachineV2Timing(t *testing.T) {
	c := cfg100()
	c.Version = V2
	c.Interval = 3 * time.Second
	s := newSim(t, c)
	s.handle(Startup{})
	// v2: Skew_Time = (256-Priority)/256 s, whatever the interval.
	if got := s.m.SkewTime(); got != skew100 {
		t.Fatalf("SkewTime %v", got)
	}
	if got, want := s.m.MasterDownInterval(), 9*time.Second+skew100; got != want {
		t.Fatalf("MasterDownInterval %v, want %v", got, want)
	}
}

func TestMachineOwner(t *testing.T) {
	c := cfg100()
	c.Priority = 255
	c.Preempt = false // the owner preempts regardless
	s := newSim(t, c)
	s.handle(Startup{})
	s.wantState(0, Master)
	// An equal-priority router with a higher address wins the tie.
	s.handle(AdvertRecv{Priority: 255, Interval: time.Second, From: higher})
	s.wantState(0, Backup)
	// A lower-priority master is ignored by the owner, which takes over.
	s.advertise(time.Second, 10*time.Second, time.Second, AdvertRecv{Priority: 100, Interval: time.Second, From: higher})
	s.wantState(10*time.Second, Master)
}

func TestMachineSplitBrain(t *testing.T) {
	s := newSim(t, cfg100())
	s.handle(Startup{})
	s.wantState(mdi100, Master)
	acts := s.handle(AdvertRecv{Priority: 50, Interval: time.Second, From: lower})
	want := []Action{SplitBrain{Peer: lower, PeerPriority: 50}, SendAdvert{100}}
	if !reflect.DeepEqual(acts, want) {
		t.Fatalf("actions %#v, want %#v", acts, want)
	}
	if s.m.State() != Master || s.m.MasterAddr() != local || s.m.MasterPriority() != 100 {
		t.Fatalf("state %v master %v/%d", s.m.State(), s.m.MasterAddr(), s.m.MasterPriority())
	}
}

// TestMachinePairConverges runs two machines whose adverts reach each other at once, both starting
// together with equal priorities: exactly one, the higher address, ends Master.
func TestMachinePairConverges(t *testing.T) {
	for _, tc := range []struct {
		name         string
		prioA, prioB uint8
		wantMaster   int
	}{
		{"equal priority, higher address wins", 100, 100, 1},
		{"higher priority wins", 150, 100, 0},
		{"higher priority with lower address wins", 100, 101, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrs := []netip.Addr{lower, higher}
			ms := []*Machine{}
			ts := make([]Timers, 2)
			for i, p := range []uint8{tc.prioA, tc.prioB} {
				c := cfg100()
				c.Priority = p
				ms = append(ms, NewMachine(c, addrs[i]))
			}
			now := t0
			var deliver func(i int, acts []Action)
			deliver = func(i int, acts []Action) {
				ts[i].Apply(now, acts)
				for _, a := range acts {
					if sa, ok := a.(SendAdvert); ok {
						j := 1 - i
						deliver(j, ms[j].Handle(now, AdvertRecv{Priority: sa.Priority, Interval: time.Second, From: addrs[i]}))
					}
				}
			}
			// Both start as Master (as after a partition heals).
			for i := range ms {
				ms[i].Handle(now, Startup{})
				ts[i].Apply(now, ms[i].Handle(now, Timeout{TimerMasterDown}))
			}
			for now.Before(t0.Add(30 * time.Second)) {
				next, ok := ts[0].Next()
				i := 0
				if n1, ok1 := ts[1].Next(); ok1 && (!ok || n1.Before(next)) {
					next, i = n1, 1
				}
				now = next
				if id, ok := ts[i].Pop(now); ok {
					deliver(i, ms[i].Handle(now, Timeout{Timer: id}))
				}
			}
			for i, m := range ms {
				want := Backup
				if i == tc.wantMaster {
					want = Master
				}
				if m.State() != want {
					t.Errorf("machine %d (%v, priority %d): %v, want %v", i, addrs[i], m.Config().Priority, m.State(), want)
				}
			}
		})
	}
}

func TestMachineFaultAndRecovery(t *testing.T) {
	s := newSim(t, cfg100())
	s.handle(Startup{})
	s.wantState(mdi100, Master)
	s.handle(TrackDown{})
	s.handle(IfaceDown{})
	s.wantState(10*time.Second, Fault)
	if _, ok := s.timers.Next(); ok {
		t.Fatal("a timer runs in Fault")
	}
	s.handle(TrackUp{})
	s.wantState(10*time.Second, Fault)
	s.handle(IfaceUp{})
	s.wantState(10*time.Second, Backup)
	s.wantState(10*time.Second+mdi100, Master)
}

func TestMachineShutdown(t *testing.T) {
	s := newSim(t, cfg100())
	s.handle(Startup{})
	s.wantState(mdi100, Master)
	acts := s.handle(Shutdown{})
	want := []Action{StateChange{Master, Init, "shutdown"}, StopTimer{TimerAdvert}, SendAdvert{0}, RemoveVIPs{}}
	if !reflect.DeepEqual(acts, want) {
		t.Fatalf("actions %#v, want %#v", acts, want)
	}
	if _, ok := s.timers.Next(); ok {
		t.Fatal("a timer runs after shutdown")
	}
	// It can start again.
	s.handle(Startup{})
	s.wantState(mdi100+mdi100-time.Nanosecond, Backup)
}

// TestMachineEveryTransitionReported checks that every state change comes with a StateChange.
func TestMachineEveryTransitionReported(t *testing.T) {
	m := NewMachine(cfg100(), local)
	prev := m.State()
	events := []Event{Startup{}, AdvertRecv{Priority: 200, Interval: time.Second, From: higher}, Timeout{TimerMasterDown},
		AdvertRecv{Priority: 50, From: lower}, Timeout{TimerAdvert}, AdvertRecv{Priority: 100, From: higher},
		TrackDown{}, TrackUp{}, IfaceDown{}, Shutdown{}, Startup{}, IfaceUp{}, Timeout{TimerMasterDown}, Shutdown{}}
	for _, ev := range events {
		acts := m.Handle(t0, ev)
		changes := 0
		for _, a := range acts {
			if sc, ok := a.(StateChange); ok {
				changes++
				if sc.From != prev || sc.To != m.State() || sc.Reason == "" {
					t.Errorf("%T: %+v, went %v → %v", ev, sc, prev, m.State())
				}
			}
		}
		if (prev != m.State()) != (changes == 1) || changes > 1 {
			t.Errorf("%T: %v → %v with %d StateChange", ev, prev, m.State(), changes)
		}
		prev = m.State()
	}
}

func TestMachineConfig(t *testing.T) {
	m := NewMachine(Config{VRID: 1}, local)
	if c := m.Config(); c.Priority != 100 || c.Interval != time.Second || c.Version != V3 {
		t.Fatalf("defaults: %+v", c)
	}
	for _, c := range []Config{
		{},
		{VRID: 1, Version: 4},
		{VRID: 1, Version: V2, Interval: 1500 * time.Millisecond},
		{VRID: 1, Version: V2, Interval: 256 * time.Second},
		{VRID: 1, Version: V3, Interval: 5 * time.Millisecond},
		{VRID: 1, Version: V3, Interval: 41 * time.Second},
		{VRID: 1, PreemptDelay: -time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", c)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("NewMachine of an invalid config did not panic")
		}
	}()
	NewMachine(Config{}, local)
}

func TestMachineTimers(t *testing.T) {
	var ts Timers
	ts.Apply(t0, []Action{StartTimer{TimerAdvert, 2 * time.Second}, StartTimer{TimerMasterDown, time.Second},
		StartTimer{TimerPreemptDelay, 3 * time.Second}, SendAdvert{1}, StopTimer{TimerPreemptDelay}})
	if next, ok := ts.Next(); !ok || next != t0.Add(time.Second) {
		t.Fatalf("Next = %v, %v", next, ok)
	}
	if id, ok := ts.Pop(t0.Add(999 * time.Millisecond)); ok {
		t.Fatalf("Pop before the deadline = %v", id)
	}
	if id, ok := ts.Pop(t0.Add(5 * time.Second)); !ok || id != TimerMasterDown {
		t.Fatalf("Pop = %v, %v", id, ok)
	}
	if id, ok := ts.Pop(t0.Add(5 * time.Second)); !ok || id != TimerAdvert {
		t.Fatalf("Pop = %v, %v", id, ok)
	}
	if id, ok := ts.Pop(t0.Add(5 * time.Second)); ok {
		t.Fatalf("Pop of a stopped timer = %v", id)
	}
	if _, ok := ts.Next(); ok {
		t.Fatal("Next with nothing running")
	}
	for _, id := range []TimerID{TimerAdvert, TimerMasterDown, TimerPreemptDelay, 9} {
		if id.String() == "" {
			t.Errorf("TimerID %d has no name", id)
		}
	}
	for _, s := range []State{Init, Backup, Master, Fault, 9} {
		if s.String() == "" {
			t.Errorf("State %d has no name", s)
		}
	}
}
