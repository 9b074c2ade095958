package clocktest

import (
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func TestFakeClock(t *testing.T) {
	clk := NewFake(t0)
	a, b, c := clk.NewTimer(3*time.Second), clk.NewTimer(time.Second), clk.NewTimer(2*time.Second)
	if clk.Pending() != 3 {
		t.Fatalf("pending: expected 3, seen %d", clk.Pending())
	}
	if !c.Stop() || c.Stop() {
		t.Fatal("Stop: expected true once, then false")
	}
	clk.Advance(2 * time.Second)
	select {
	case at := <-b.C():
		if !at.Equal(t0.Add(time.Second)) {
			t.Fatalf("timer fired with %v, expected its deadline", at)
		}
	default:
		t.Fatal("1s timer did not fire after Advance(2s)")
	}
	select {
	case <-a.C():
		t.Fatal("3s timer fired after Advance(2s)")
	default:
	}
	if !clk.Now().Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("Now: %v", clk.Now())
	}
	done := make(chan struct{})
	go func() { clk.BlockUntil(2); close(done) }()
	select {
	case <-done:
		t.Fatal("BlockUntil(2) returned with 1 pending timer")
	case <-time.After(10 * time.Millisecond):
	}
	clk.NewTimer(time.Second)
	<-done
	clk.WaitParked(t, 2)
	if z := clk.NewTimer(0); clk.Pending() != 2 || len(z.C()) != 1 {
		t.Fatal("a zero timer must fire at once and not be pending")
	}
}

func TestFakeClockReset(t *testing.T) {
	clk := NewFake(t0)
	a, b := clk.NewTimer(time.Second), clk.NewTimer(2*time.Second)
	if !a.Reset(3 * time.Second) {
		t.Fatal("Reset of a pending timer: expected true")
	}
	clk.Advance(2 * time.Second)
	select {
	case <-a.C():
		t.Fatal("timer reset to 3s fired at 2s")
	case at := <-b.C():
		if !at.Equal(t0.Add(2 * time.Second)) {
			t.Fatalf("2s timer sent %v", at.Sub(t0))
		}
	}
	// b fired and was received: Reset rearms it, from now.
	if b.Reset(time.Second) {
		t.Fatal("Reset of a fired timer: expected false")
	}
	clk.Advance(time.Second)
	at1, at2 := <-a.C(), <-b.C()
	if !at1.Equal(t0.Add(3*time.Second)) || !at2.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("after Reset: fired at %v and %v, expected 3s", at1.Sub(t0), at2.Sub(t0))
	}
	// A time sent but not received is dropped by Reset.
	clk.Advance(0)
	a.Reset(time.Second)
	clk.Advance(time.Second)
	a.Reset(time.Second)
	select {
	case at := <-a.C():
		t.Fatalf("stale time %v received after Reset", at.Sub(t0))
	default:
	}
	if clk.Pending() != 1 {
		t.Fatalf("pending after Reset: expected 1, seen %d", clk.Pending())
	}
	if a.Reset(0); len(a.C()) != 1 || clk.Pending() != 0 {
		t.Fatal("Reset(0) must fire at once and leave nothing pending")
	}
}
