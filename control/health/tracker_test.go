package health

import (
	"fmt"
	"testing"
)

func TestTracker(t *testing.T) {
	tests := []struct {
		desc       string
		rise, fall int
		up         bool
		in         string // results: + healthy, - unhealthy
		want       string // state after each result: U up, D down
		changes    int
	}{
		{desc: "up stays up on successes", rise: 2, fall: 3, up: true, in: "+++", want: "UUU"},
		{desc: "up goes down after fall failures", rise: 2, fall: 3, up: true, in: "---", want: "UUD", changes: 1},
		{desc: "success resets failures", rise: 2, fall: 3, up: true, in: "--+--", want: "UUUUU"},
		{desc: "down needs rise successes", rise: 2, fall: 3, up: false, in: "++", want: "DU", changes: 1},
		{desc: "failure resets successes", rise: 2, fall: 3, up: false, in: "+-+-++", want: "DDDDDU", changes: 1},
		{desc: "flap with rise=fall=1", rise: 1, fall: 1, up: true, in: "-+-+", want: "DUDU", changes: 4},
		{desc: "zero counts act as 1", rise: 0, fall: 0, up: true, in: "-+", want: "DU", changes: 2},
		{desc: "full cycle", rise: 2, fall: 3, up: true, in: "---+++", want: "UUDDUU", changes: 2},
		{desc: "down stays down on failures", rise: 2, fall: 3, up: false, in: "----", want: "DDDD"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			tr := NewTracker(tt.rise, tt.fall, tt.up)
			if tr.Up() != tt.up {
				t.Fatalf("initial state: expected up=%t, seen %t", tt.up, tr.Up())
			}
			var got []byte
			changes := 0
			for i, c := range tt.in {
				before := tr.Up()
				changed := tr.Observe(c == '+')
				if changed != (before != tr.Up()) {
					t.Fatalf("result %d: Observe returned changed=%t but state went %t -> %t", i, changed, before, tr.Up())
				}
				if changed {
					changes++
				}
				got = append(got, "DU"[b2i(tr.Up())])
			}
			if string(got) != tt.want || changes != tt.changes {
				t.Fatalf("results %q (rise %d, fall %d): expected states %q with %d changes, seen %q with %d",
					tt.in, tt.rise, tt.fall, tt.want, tt.changes, got, changes)
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func ExampleTracker() {
	tr := NewTracker(2, 3, true)
	for _, ok := range []bool{false, false, false, true, true} {
		if tr.Observe(ok) {
			fmt.Println("up:", tr.Up())
		}
	}
	// Output:
	// up: false
	// up: true
}
