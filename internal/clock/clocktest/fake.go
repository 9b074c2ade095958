// Package clocktest has the fake clock.Clock for tests. Only tests import it.
package clocktest

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/clock"
)

// Fake is a clock.Clock whose time moves only by Advance. Timers fire in deadline order (then
// creation order), each sending its own deadline, so what a receiver computes from the value it
// receives does not depend on scheduling. A timer made with d <= 0 fires at once.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	pending []*fakeTimer
	changed chan struct{} // closed and replaced whenever pending grows
}

// NewFake returns a Fake reading start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

type fakeTimer struct {
	c        *Fake
	ch       chan time.Time
	deadline time.Time
	seq      uint64
}

// Now returns the fake time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer makes a timer that fires when Advance reaches now+d.
func (c *Fake) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	c.arm(t, d)
	return t
}

// arm schedules t to fire after d, as a timer made now. c.mu is held and t is not pending.
func (c *Fake) arm(t *fakeTimer, d time.Duration) {
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
func (c *Fake) Advance(d time.Duration) {
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
func (c *Fake) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Deadlines returns the deadlines of the pending timers, earliest first.
func (c *Fake) Deadlines() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Time, 0, len(c.pending))
	for _, t := range c.pending {
		out = append(out, t.deadline)
	}
	slices.SortFunc(out, time.Time.Compare)
	return out
}

// BlockUntil waits until at least n timers are pending. A test that advanced the clock calls it
// to wait until the goroutines that own the n timers have handled what fired and are parked on
// their next timers; what it asserts then does not depend on whether they had run yet.
func (c *Fake) BlockUntil(n int) {
	_ = c.BlockUntilContext(context.Background(), n)
}

// BlockUntilContext waits until at least n timers are pending or ctx ends.
func (c *Fake) BlockUntilContext(ctx context.Context, n int) error {
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

// ParkedLimit bounds how long WaitParked waits.
const ParkedLimit = 5 * time.Second

// WaitParked is BlockUntil for a test: it waits until at least n timers are pending (after an
// Advance: until the goroutines that own them have handled what fired and are parked on their
// next timers) and fails tb when that does not happen within ParkedLimit.
func (c *Fake) WaitParked(tb testing.TB, n int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ParkedLimit)
	defer cancel()
	if err := c.BlockUntilContext(ctx, n); err != nil {
		tb.Fatalf("expected the goroutines parked on %d timers, seen %d pending after %v", n, c.Pending(), ParkedLimit)
	}
}
