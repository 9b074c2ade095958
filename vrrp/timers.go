package vrrp

import "time"

// Timers keeps the deadlines of a Machine's timers for a runner that waits on one Timer:
//
//	acts := m.Handle(now, ev); timers.Apply(now, acts)
//	... when the Timer fires (or on any wake-up):
//	for id, ok := timers.Pop(now); ok; id, ok = timers.Pop(now) {
//		timers.Apply(now, m.Handle(now, Timeout{Timer: id}))
//	}
//	if next, ok := timers.Next(); ok { t.Reset(next.Sub(now)) }
//
// Popping one timer at a time and applying the actions before the next Pop means a timer stopped
// by an earlier timeout is never delivered. The zero Timers has nothing running.
type Timers struct {
	armed    [numTimers + 1]bool
	deadline [numTimers + 1]time.Time
}

// Apply carries out the StartTimer and StopTimer actions among acts; it ignores the others.
func (t *Timers) Apply(now time.Time, acts []Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case StartTimer:
			if a.Timer > 0 && a.Timer <= numTimers {
				t.armed[a.Timer], t.deadline[a.Timer] = true, now.Add(a.After)
			}
		case StopTimer:
			if a.Timer > 0 && a.Timer <= numTimers {
				t.armed[a.Timer] = false
			}
		}
	}
}

// Next returns the earliest deadline of the running timers.
func (t *Timers) Next() (time.Time, bool) {
	var next time.Time
	ok := false
	for id := TimerID(1); id <= numTimers; id++ {
		if t.armed[id] && (!ok || t.deadline[id].Before(next)) {
			next, ok = t.deadline[id], true
		}
	}
	return next, ok
}

// Pop stops and returns the running timer with the earliest deadline at or before now.
func (t *Timers) Pop(now time.Time) (TimerID, bool) {
	var best TimerID
	for id := TimerID(1); id <= numTimers; id++ {
		if t.armed[id] && !t.deadline[id].After(now) && (best == 0 || t.deadline[id].Before(t.deadline[best])) {
			best = id
		}
	}
	if best == 0 {
		return 0, false
	}
	t.armed[best] = false
	return best, true
}
