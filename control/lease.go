package control

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// The director lease: the daemon vouches for its data path until a time it renews in `meta`.
// Once the time has passed the program stops acting as a director (every frame to the local
// stack, ARP and neighbour solicitations for the VIPs dropped), so a data path whose daemon was
// killed neither balances frames back to the director that took over nor attracts clients.
// The time is CLOCK_MONOTONIC, the clock of bpf_ktime_get_coarse_ns.

// Lease is the state of a director lease.
type Lease struct {
	Set bool // false: no lease (attached without a daemon): the data path always directs
	// Remaining is how long the lease still runs; negative once it has passed (how long ago).
	Remaining time.Duration
}

// Expired reports whether the data path has stopped acting as a director.
func (l Lease) Expired() bool { return l.Set && l.Remaining < 0 }

func (l Lease) String() string {
	switch {
	case !l.Set:
		return "none (the data path directs until detached)"
	case l.Expired():
		return fmt.Sprintf("expired %v ago: no daemon vouches for this data path, it passes every frame to the local stack", (-l.Remaining).Round(time.Millisecond))
	}
	return fmt.Sprintf("%v left", l.Remaining.Round(time.Millisecond))
}

func monotonicNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read the monotonic clock: %w", err)
	}
	return uint64(ts.Nano()), nil
}

// SetLease vouches for the data path for d from now; d == 0 removes the lease (the data path
// then directs until it is detached).
func (m *Maps) SetLease(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("lease of %v: want 0 (none) or a positive duration", d)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.o.Layout
	if err := m.o.Meta.Lookup(uint32(0), &l); err != nil {
		return fmt.Errorf("read meta: %w", err)
	}
	l.LeaseUntil = 0
	if d > 0 {
		now, err := monotonicNow()
		if err != nil {
			return err
		}
		l.LeaseUntil = now + uint64(d)
	}
	if err := m.o.Meta.Put(uint32(0), l); err != nil {
		return fmt.Errorf("renew the director lease: %w", err)
	}
	return nil
}

// Lease reads the director lease.
func (m *Maps) Lease() (Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lease()
}

func (m *Maps) lease() (Lease, error) {
	l := m.o.Layout
	if err := m.o.Meta.Lookup(uint32(0), &l); err != nil {
		return Lease{}, fmt.Errorf("read meta: %w", err)
	}
	if l.LeaseUntil == 0 {
		return Lease{}, nil
	}
	now, err := monotonicNow()
	if err != nil {
		return Lease{}, err
	}
	return Lease{Set: true, Remaining: time.Duration(int64(l.LeaseUntil - now))}, nil
}
