package health

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// Clock is the time source of the Monitor, so tests can drive it without sleeping.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that sends the time it fired at on C after d.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer made by a Clock.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it was still pending.
	Stop() bool
	// Reset rearms the timer to fire after d, discarding a time it sent and nobody received
	// (time.Timer's semantics since Go 1.23); it reports whether the timer was still pending.
	Reset(d time.Duration) bool
}

// RealClock is the system clock.
type RealClock struct{}

// Now is time.Now.
func (RealClock) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time        { return t.t.C }
func (t realTimer) Stop() bool                 { return t.t.Stop() }
func (t realTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }

// FakeClock is a Clock whose time moves only by Advance. Timers fire in deadline order (then
// creation order), each sending its own deadline, so what a receiver computes from the value it
// receives does not depend on scheduling. A timer made with d <= 0 fires at once.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	pending []*fakeTimer
	changed chan struct{} // closed and replaced whenever pending grows
}

// NewFakeClock returns a FakeClock reading start.
func NewFakeClock(start time.Time) *FakeClock {
	return &FakeClock{now: start, changed: make(chan struct{})}
}

type fakeTimer struct {
	c        *FakeClock
	ch       chan time.Time
	deadline time.Time
	seq      uint64
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer makes a timer that fires when Advance reaches now+d.
func (c *FakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	c.arm(t, d)
	return t
}

// arm schedules t to fire after d, as a timer made now. c.mu is held and t is not pending.
func (c *FakeClock) arm(t *fakeTimer, d time.Duration) {
	c.seq++
	t.deadline, t.seq = c.now.Add(d), c.seq
	if d <= 0 {
		t.ch <- t.deadline
		return
	}
	c.pending = append(c.pending, t)
	close(c.changed)
	c.changed = make(chan struct{})
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return t.stop()
}

// stop removes t from the pending timers. c.mu is held.
func (t *fakeTimer) stop() bool {
	c := t.c
	i := slices.Index(c.pending, t)
	if i < 0 {
		return false
	}
	c.pending = slices.Delete(c.pending, i, i+1)
	return true
}

// Reset rearms t to fire after d, as a timer made now would (same ordering), dropping a time it
// sent that nobody received.
func (t *fakeTimer) Reset(d time.Duration) bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	was := t.stop()
	select {
	case <-t.ch:
	default:
	}
	c.arm(t, d)
	return was
}

// Advance moves the time forward by d and fires every timer whose deadline is reached, in
// deadline order. It does not wait for the receivers: use BlockUntil for that.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	var due, keep []*fakeTimer
	for _, t := range c.pending {
		if t.deadline.After(c.now) {
			keep = append(keep, t)
		} else {
			due = append(due, t)
		}
	}
	c.pending = keep
	slices.SortFunc(due, func(a, b *fakeTimer) int {
		if n := a.deadline.Compare(b.deadline); n != 0 {
			return n
		}
		return cmp.Compare(a.seq, b.seq)
	})
	for _, t := range due {
		t.ch <- t.deadline // buffered, and each timer fires once
	}
}

// Pending is the number of timers waiting to fire.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Deadlines returns the deadlines of the pending timers, earliest first.
func (c *FakeClock) Deadlines() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Time, 0, len(c.pending))
	for _, t := range c.pending {
		out = append(out, t.deadline)
	}
	slices.SortFunc(out, time.Time.Compare)
	return out
}

// BlockUntil waits until at least n timers are pending.
func (c *FakeClock) BlockUntil(n int) {
	_ = c.BlockUntilContext(context.Background(), n)
}

// BlockUntilContext waits until at least n timers are pending or ctx ends.
func (c *FakeClock) BlockUntilContext(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		ok, changed := len(c.pending) >= n, c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
