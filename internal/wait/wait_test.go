package wait

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestFor(t *testing.T) {
	var n atomic.Int32
	go func() {
		time.Sleep(10 * time.Millisecond)
		n.Store(1)
	}()
	took := Until(t, 5*time.Second, "the flag", func() bool { return n.Load() == 1 })
	if took < 10*time.Millisecond {
		t.Errorf("Until returned after %v, before the flag was set (10ms)", took)
	}
	calls := 0
	if took := For(t, time.Second, "at once", func() error { calls++; return nil }); calls != 1 || took > time.Second {
		t.Errorf("a condition that holds: %d calls, %v; expected one call", calls, took)
	}
}

// recorder is a testing.TB that records Fatalf and stops the goroutine as testing.T does.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	panic(r)
}

func TestForFails(t *testing.T) {
	r := &recorder{TB: t}
	func() {
		defer func() {
			if p := recover(); p != r {
				t.Fatalf("expected Fatalf, recovered %v", p)
			}
		}()
		calls := 0
		For(r, 30*time.Millisecond, "the thing", func() error {
			calls++
			return errors.New(fmt.Sprint("seen ", calls))
		})
	}()
	if !strings.HasPrefix(r.msg, "the thing: not within 30ms: seen ") {
		t.Errorf("failure message %q: expected what, the limit and the last error", r.msg)
	}
}
