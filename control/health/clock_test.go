package health

import (
	"net/netip"
	"testing"
	"time"
)

func TestFakeClockReset(t *testing.T) {
	clk := NewFakeClock(t0)
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

// TestMonitorGrid: first probes fall on the common grid (Interval/100, at most 10 ms) even for
// targets added later, and later probes stay on it.
func TestMonitorGrid(t *testing.T) {
	clk := NewFakeClock(t0)
	m := NewMonitor(nil, clk, seeded())
	defer m.Close()
	clk.Advance(1234567 * time.Nanosecond) // off the grid
	const n = 50
	var specs []Spec
	for i := range n {
		specs = append(specs, spec(target("db", netip.AddrFrom4([4]byte{10, 0, 3, byte(i)}).String()), newFakeProber(true), true))
	}
	m.Set(specs)
	clk.BlockUntil(n)
	now := clk.Now()
	check := func(when string) {
		t.Helper()
		for _, d := range clk.Deadlines() {
			if d.Sub(t0)%(10*time.Millisecond) != 0 {
				t.Fatalf("%s: deadline %v off the 10 ms grid", when, d.Sub(t0))
			}
		}
	}
	check("first probes")
	for _, d := range clk.Deadlines() {
		if !d.After(now) || !d.Before(now.Add(time.Second)) {
			t.Fatalf("first probe at %v: expected within (now, now+interval)", d.Sub(now))
		}
	}
	step(t, clk, n)
	check("second probes")
}
