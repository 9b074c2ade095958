package vrrp

import (
	"fmt"
	"net/netip"
	"time"
)

// State is the state of a virtual router (RFC 5798 6.4), plus Fault (keepalived's: an interface
// or a tracked check is down, so the router must not be Master).
type State uint8

// The states. The zero State is Init.
const (
	Init State = iota
	Backup
	Master
	Fault
)

func (s State) String() string {
	switch s {
	case Init:
		return "init"
	case Backup:
		return "backup"
	case Master:
		return "master"
	case Fault:
		return "fault"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Config is one virtual router's configuration.
type Config struct {
	VRID uint8 // 1..255
	// Priority is 1..254, or 255 for the address owner, which always starts as Master and always
	// preempts. 0 means keepalived's default, 100.
	Priority uint8
	// Interval is the advertisement interval: whole seconds (1..255 s) in v2, centiseconds (10 ms ..
	// 40.95 s) in v3. 0 means 1 s.
	Interval time.Duration
	Version  Version // 2 or 3; 0 means 3
	// Preempt lets a higher-priority Backup take over from a lower-priority Master (the daemon
	// defaults it to true; keepalived's "nopreempt" turns it off). The owner always preempts.
	Preempt bool
	// PreemptDelay holds off preemption after Startup (keepalived's preempt_delay): see Machine.
	PreemptDelay time.Duration
	// AcceptMode lets a non-owner Master accept packets addressed to the virtual addresses
	// (RFC 5798 6.1). The Machine carries it for the runner; it changes no transition.
	AcceptMode bool
}

func (c Config) withDefaults() Config {
	if c.Priority == 0 {
		c.Priority = 100
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Version == 0 {
		c.Version = V3
	}
	return c
}

// Validate reports whether c, with its defaults applied, is usable.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.VRID == 0 {
		return fmt.Errorf("vrrp: vrid 0")
	}
	switch c.Version {
	case V2:
		if c.Interval < time.Second || c.Interval > MaxV2Interval || c.Interval%time.Second != 0 {
			return fmt.Errorf("vrrp: v2 advertisement interval %v: want whole seconds in 1s..255s", c.Interval)
		}
	case V3:
		if c.Interval < 10*time.Millisecond || c.Interval > MaxV3Interval || c.Interval%(10*time.Millisecond) != 0 {
			return fmt.Errorf("vrrp: v3 advertisement interval %v: want centiseconds in 10ms..40.95s", c.Interval)
		}
	default:
		return fmt.Errorf("vrrp: version %d: want 2 or 3", c.Version)
	}
	if c.PreemptDelay < 0 {
		return fmt.Errorf("vrrp: negative preempt delay %v", c.PreemptDelay)
	}
	return nil
}

// Event is an input of the Machine: Startup, Shutdown, AdvertRecv, Timeout, IfaceDown, IfaceUp,
// TrackDown or TrackUp.
type Event interface{ isEvent() }

// Startup starts the virtual router (RFC 5798 6.4.1).
type Startup struct{}

// Shutdown stops it: a Master resigns with a priority-0 advertisement.
type Shutdown struct{}

// AdvertRecv is an advertisement that passed Parse.
type AdvertRecv struct {
	Priority uint8
	Interval time.Duration // v3: the sender's; 0 keeps the current Master_Adver_Interval
	From     netip.Addr    // IP source address: the sender's primary address
}

// Timeout is the expiry of a timer the Machine started.
type Timeout struct{ Timer TimerID }

// IfaceDown reports that the interface the router runs on lost its link or address.
type IfaceDown struct{}

// IfaceUp reports that it is back.
type IfaceUp struct{}

// TrackDown reports that the tracked checks (aggregated by the runner) failed.
type TrackDown struct{}

// TrackUp reports that they pass again.
type TrackUp struct{}

func (Startup) isEvent()    {}
func (Shutdown) isEvent()   {}
func (AdvertRecv) isEvent() {}
func (Timeout) isEvent()    {}
func (IfaceDown) isEvent()  {}
func (IfaceUp) isEvent()    {}
func (TrackDown) isEvent()  {}
func (TrackUp) isEvent()    {}

// TimerID names one of the Machine's timers.
type TimerID uint8

// The timers. The zero TimerID is none.
const (
	TimerAdvert       TimerID = iota + 1 // Adver_Timer: Master sends the next advertisement
	TimerMasterDown                      // Master_Down_Timer: Backup takes over
	TimerPreemptDelay                    // end of the preempt-delay window after Startup
	numTimers         = iota
)

func (t TimerID) String() string {
	switch t {
	case TimerAdvert:
		return "advert"
	case TimerMasterDown:
		return "master_down"
	case TimerPreemptDelay:
		return "preempt_delay"
	}
	return fmt.Sprintf("timer(%d)", uint8(t))
}

// Action is an output of the Machine, for the runner to carry out in order: SendAdvert, AddVIPs,
// RemoveVIPs, Announce, StartTimer, StopTimer, StateChange or SplitBrain.
type Action interface{ isAction() }

// SendAdvert sends an advertisement with this priority (0: resign).
type SendAdvert struct{ Priority uint8 }

// AddVIPs adds the virtual addresses to the interface.
type AddVIPs struct{}

// RemoveVIPs removes them.
type RemoveVIPs struct{}

// Announce sends the gratuitous ARP / unsolicited neighbour advertisement burst for the virtual
// addresses.
type Announce struct{}

// StartTimer (re)starts a timer: a running one is reset to fire After from now.
type StartTimer struct {
	Timer TimerID
	After time.Duration
}

// StopTimer stops a timer.
type StopTimer struct{ Timer TimerID }

// StateChange reports a transition, with why.
type StateChange struct {
	From, To State
	Reason   string
}

// SplitBrain reports that another router advertised as Master with a lower priority (or an equal
// priority and a lower address) while we are Master. We stay Master and re-assert at once.
type SplitBrain struct {
	Peer         netip.Addr
	PeerPriority uint8
}

func (SendAdvert) isAction()  {}
func (AddVIPs) isAction()     {}
func (RemoveVIPs) isAction()  {}
func (Announce) isAction()    {}
func (StartTimer) isAction()  {}
func (StopTimer) isAction()   {}
func (StateChange) isAction() {}
func (SplitBrain) isAction()  {}

// Machine is the VRRP state machine of one virtual router: Handle maps (state, event) to (state,
// actions). It does no I/O and starts no goroutine; timers are StartTimer/StopTimer actions the
// runner carries out (Timers keeps their deadlines) and Timeout events it feeds back. A Machine is
// not safe for concurrent use: one goroutine owns it.
//
// Transitions follow RFC 5798 6.4 (RFC 3768 6.4 for v2), with keepalived's Fault state:
//
//   - Startup (from Init): the owner (priority 255) becomes Master; anyone else Backup with the
//     master-down timer at Master_Down_Interval. With interface or tracking faults pending, Fault.
//   - Backup: a priority-0 advertisement sets the master-down timer to Skew_Time. An
//     advertisement with a priority ≥ ours, or any when we do not preempt, resets it to
//     Master_Down_Interval, after (v3) adopting the sender's interval. A lower-priority one is
//     ignored so that the timer runs out and we take over. Master-down expiry → Master.
//   - Master: a priority-0 advertisement makes us advertise at once. A higher priority, or an equal
//     one from a higher address, → Backup. A lower one is a split brain: SplitBrain, and we
//     advertise at once so that the other Master yields.
//   - Shutdown: Master resigns (priority-0 advertisement) and drops its addresses; → Init.
//   - IfaceDown / TrackDown → Fault (a Master drops its addresses; on TrackDown, whose link
//     still works, it also resigns with priority 0). When the last fault clears, the machine
//     restarts as on Startup.
//
// Preempt delay (keepalived's preempt_delay): on entering Backup through Startup (including the
// restart after a Fault) with Preempt and PreemptDelay > 0, a window of PreemptDelay opens
// (TimerPreemptDelay). Within it, lower-priority advertisements are treated as from an acceptable
// Master: they reset the master-down timer, so we do not take over. When the window closes they
// are ignored again and we take over within Master_Down_Interval of the last one. The window does
// not stop a takeover when nobody advertises, and it is not reopened by later Master→Backup
// transitions (keepalived also reopens it on seeing a lower-priority Master after a higher one; we
// do not).
//
// Our own advertisements (From == the local address) are ignored. A Timeout for a timer the
// machine does not consider running (stopped, or already fired) is ignored.
type Machine struct {
	cfg   Config
	local netip.Addr
	state State

	masterInterval time.Duration // Master_Adver_Interval
	masterAddr     netip.Addr
	masterPriority uint8

	ifaceDown, trackDown bool
	armed                [numTimers + 1]bool
	deadline             [numTimers + 1]time.Time
}

// NewMachine returns a Machine in Init for c (see Config for defaults) whose primary address,
// the tie-breaker between equal priorities, is localAddr. It panics if c.Validate fails: check
// the configuration first.
func NewMachine(c Config, localAddr netip.Addr) *Machine {
	if err := c.Validate(); err != nil {
		panic(err)
	}
	c = c.withDefaults()
	return &Machine{cfg: c, local: localAddr.Unmap(), masterInterval: c.Interval}
}

// Config returns the machine's configuration, defaults applied.
func (m *Machine) Config() Config { return m.cfg }

// State returns the current state.
func (m *Machine) State() State { return m.state }

// MasterAdverInterval returns Master_Adver_Interval: the interval of the Master we follow (v3),
// else ours.
func (m *Machine) MasterAdverInterval() time.Duration { return m.masterInterval }

// SkewTime returns Skew_Time: ((256-Priority) × Master_Adver_Interval)/256 in v3, (256-Priority)/256 s
// in v2.
func (m *Machine) SkewTime() time.Duration {
	unit := m.masterInterval
	if m.cfg.Version == V2 {
		unit = time.Second
	}
	return time.Duration(256-int64(m.cfg.Priority)) * unit / 256
}

// MasterDownInterval returns Master_Down_Interval: 3 × Master_Adver_Interval + Skew_Time.
func (m *Machine) MasterDownInterval() time.Duration {
	return 3*m.masterInterval + m.SkewTime()
}

// MasterAddr returns the address of the current Master: ours when Master, the last accepted
// advertiser when Backup, invalid when unknown.
func (m *Machine) MasterAddr() netip.Addr { return m.masterAddr }

// MasterPriority returns the current Master's priority (0 when unknown).
func (m *Machine) MasterPriority() uint8 { return m.masterPriority }

// Deadline returns when a running timer fires, as computed from the now passed to Handle.
func (m *Machine) Deadline(t TimerID) (time.Time, bool) {
	if t == 0 || t > numTimers || !m.armed[t] {
		return time.Time{}, false
	}
	return m.deadline[t], true
}

// InPreemptDelay reports whether the preempt-delay window is open.
func (m *Machine) InPreemptDelay() bool { return m.armed[TimerPreemptDelay] }

// Handle applies ev at time now and returns the actions to carry out, in order.
func (m *Machine) Handle(now time.Time, ev Event) []Action {
	t := &tx{m: m, now: now}
	switch ev := ev.(type) {
	case Startup:
		if m.state == Init {
			t.start("startup")
		}
	case Shutdown:
		switch m.state {
		case Master:
			t.stopAll()
			t.add(SendAdvert{Priority: 0}, RemoveVIPs{})
			t.become(Init, "shutdown")
		case Backup, Fault:
			t.stopAll()
			t.become(Init, "shutdown")
		}
	case AdvertRecv:
		m.advert(t, ev)
	case Timeout:
		m.timeout(t, ev.Timer)
	case IfaceDown:
		m.ifaceDown = true
		m.fault(t, "interface down", false)
	case TrackDown:
		m.trackDown = true
		m.fault(t, "tracking down", true)
	case IfaceUp:
		m.ifaceDown = false
		m.recover(t, "interface up")
	case TrackUp:
		m.trackDown = false
		m.recover(t, "tracking up")
	}
	return t.out
}

func (m *Machine) advert(t *tx, ev AdvertRecv) {
	from := ev.From.Unmap()
	if from == m.local {
		return
	}
	switch m.state {
	case Backup:
		preempt := m.cfg.Preempt || m.cfg.Priority == 255
		switch {
		case ev.Priority == 0:
			t.startTimer(TimerMasterDown, m.SkewTime())
		case !preempt || ev.Priority >= m.cfg.Priority || m.armed[TimerPreemptDelay]:
			if m.cfg.Version == V3 && ev.Interval > 0 {
				m.masterInterval = ev.Interval
			}
			m.masterAddr, m.masterPriority = from, ev.Priority
			t.startTimer(TimerMasterDown, m.MasterDownInterval())
		default:
			// A lower-priority Master: let the master-down timer run out and take over.
		}
	case Master:
		switch {
		case ev.Priority == 0:
			t.add(SendAdvert{Priority: m.cfg.Priority})
			t.startTimer(TimerAdvert, m.cfg.Interval)
		case ev.Priority > m.cfg.Priority || (ev.Priority == m.cfg.Priority && from.Compare(m.local) > 0):
			t.stopTimer(TimerAdvert)
			t.add(RemoveVIPs{})
			if m.cfg.Version == V3 && ev.Interval > 0 {
				m.masterInterval = ev.Interval
			}
			m.masterAddr, m.masterPriority = from, ev.Priority
			t.startTimer(TimerMasterDown, m.MasterDownInterval())
			reason := "higher priority advertisement from " + from.String()
			if ev.Priority == m.cfg.Priority {
				reason = "equal priority advertisement from higher address " + from.String()
			}
			t.become(Backup, reason)
		default:
			t.add(SplitBrain{Peer: from, PeerPriority: ev.Priority}, SendAdvert{Priority: m.cfg.Priority})
		}
	}
}

func (m *Machine) timeout(t *tx, id TimerID) {
	if id == 0 || id > numTimers || !m.armed[id] {
		return
	}
	m.armed[id] = false
	switch {
	case id == TimerAdvert && m.state == Master:
		t.add(SendAdvert{Priority: m.cfg.Priority})
		t.startTimer(TimerAdvert, m.cfg.Interval)
	case id == TimerMasterDown && m.state == Backup:
		t.becomeMaster("master down timer expired")
	case id == TimerPreemptDelay:
		// The window closes: lower-priority advertisements are ignored from now on.
	}
}

func (m *Machine) fault(t *tx, reason string, canSend bool) {
	switch m.state {
	case Master:
		t.stopAll()
		if canSend {
			t.add(SendAdvert{Priority: 0})
		}
		t.add(RemoveVIPs{})
		t.become(Fault, reason)
	case Backup:
		t.stopAll()
		t.become(Fault, reason)
	}
}

func (m *Machine) recover(t *tx, reason string) {
	if m.state == Fault && !m.ifaceDown && !m.trackDown {
		t.start(reason)
	}
}

// tx collects the actions of one Handle call.
type tx struct {
	m   *Machine
	now time.Time
	out []Action
}

func (t *tx) add(a ...Action) { t.out = append(t.out, a...) }

func (t *tx) startTimer(id TimerID, d time.Duration) {
	t.m.armed[id] = true
	t.m.deadline[id] = t.now.Add(d)
	t.add(StartTimer{Timer: id, After: d})
}

func (t *tx) stopTimer(id TimerID) {
	if t.m.armed[id] {
		t.m.armed[id] = false
		t.add(StopTimer{Timer: id})
	}
}

func (t *tx) stopAll() {
	for id := TimerID(1); id <= numTimers; id++ {
		t.stopTimer(id)
	}
}

// become records the transition; the StateChange goes first in the action list.
func (t *tx) become(s State, reason string) {
	from := t.m.state
	t.m.state = s
	t.out = append([]Action{StateChange{From: from, To: s, Reason: reason}}, t.out...)
}

// start is RFC 5798 6.4.1 (Initialize), from Init or a cleared Fault.
func (t *tx) start(reason string) {
	m := t.m
	m.masterInterval = m.cfg.Interval
	m.masterAddr, m.masterPriority = netip.Addr{}, 0
	switch {
	case m.ifaceDown || m.trackDown:
		t.become(Fault, reason+" with a fault pending")
	case m.cfg.Priority == 255:
		t.becomeMaster(reason + ": address owner")
	default:
		t.startTimer(TimerMasterDown, m.MasterDownInterval())
		if m.cfg.Preempt && m.cfg.PreemptDelay > 0 {
			t.startTimer(TimerPreemptDelay, m.cfg.PreemptDelay)
		}
		t.become(Backup, reason)
	}
}

func (t *tx) becomeMaster(reason string) {
	m := t.m
	t.stopTimer(TimerMasterDown)
	t.stopTimer(TimerPreemptDelay)
	m.masterInterval = m.cfg.Interval
	m.masterAddr, m.masterPriority = m.local, m.cfg.Priority
	t.add(AddVIPs{}, SendAdvert{Priority: m.cfg.Priority}, Announce{})
	t.startTimer(TimerAdvert, m.cfg.Interval)
	t.become(Master, reason)
}
