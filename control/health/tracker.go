package health

// Tracker turns probe results into an up/down state with hysteresis: a down server needs Rise
// consecutive successes to go up, an up server Fall consecutive failures to go down. A success
// resets the failure count and a failure the success count. Not safe for concurrent use.
type Tracker struct {
	Rise, Fall int
	up         bool
	streak     int // consecutive results against the current state
}

// NewTracker returns a Tracker in state up; rise and fall below 1 count as 1.
func NewTracker(rise, fall int, up bool) *Tracker {
	return &Tracker{Rise: max(rise, 1), Fall: max(fall, 1), up: up}
}

// Observe records one result and reports whether the state changed.
func (t *Tracker) Observe(healthy bool) (changed bool) {
	if healthy == t.up {
		t.streak = 0
		return false
	}
	t.streak++
	need := t.Fall
	if !t.up {
		need = t.Rise
	}
	if t.streak < max(need, 1) {
		return false
	}
	t.up = healthy
	t.streak = 0
	return true
}

// Up is the current state.
func (t *Tracker) Up() bool { return t.up }

// Streak is the number of consecutive results so far that go against the current state.
func (t *Tracker) Streak() int { return t.streak }
