// Package wait is how tests poll for something that happens on another goroutine or in another
// process and gives no signal to block on (a state reported by a status call, a line in a log, a
// map entry). Where a fake clock drives the goroutine, wait on the clock instead
// (clocktest.Fake.BlockUntil). Only tests import this package.
package wait

import (
	"errors"
	"testing"
	"time"
)

// maxPause is the longest pause between two calls of a condition.
const maxPause = 20 * time.Millisecond

// For calls cond until it returns nil, and returns how long that took. The first call is
// immediate; the pauses between calls grow from 1 ms to 20 ms. When limit passes first, it fails
// tb with what, the limit, and the error cond returned last (what was seen instead).
func For(tb testing.TB, limit time.Duration, what string, cond func() error) time.Duration {
	tb.Helper()
	start := time.Now()
	pause := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			tb.Fatalf("%s: not within %v: %v", what, limit, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, maxPause)
	}
}

// Until is For with a condition that has nothing to say while it does not hold.
func Until(tb testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	return For(tb, limit, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("it did not happen")
