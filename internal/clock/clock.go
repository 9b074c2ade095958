// Package clock is the time source of the goroutines that wait on timers (the VRRP instance and
// hello runners, the health monitor, the daemon's loops), injected so that tests drive time
// instead of sleeping. The fake is in package clocktest.
package clock

import "time"

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	// NewTimer returns a running one-shot timer that sends the time on C after d.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Clock's user needs.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it was still pending.
	Stop() bool
	// Reset rearms the timer to fire after d, discarding a time it sent and nobody received
	// (time.Timer's semantics since Go 1.23); it reports whether the timer was still pending.
	Reset(d time.Duration) bool
}

// Real is the system clock.
type Real struct{}

// Now is time.Now.
func (Real) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time        { return t.t.C }
func (t realTimer) Stop() bool                 { return t.t.Stop() }
func (t realTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }
