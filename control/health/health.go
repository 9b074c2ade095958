// Package health runs the health checks of real servers and turns their results into up/down
// states with rise/fall hysteresis. It knows nothing of BPF maps: the reconciler consumes its
// events.
package health

import (
	"context"
	"net/netip"
	"time"
)

// Result is the outcome of one probe.
type Result struct {
	Healthy bool
	// Weight overrides the configured weight when set (exec checks with `dynamic`).
	Weight *uint32
	// Err says why the probe failed (nil when healthy). Never contains a secret.
	Err error
	// Latency is how long the probe took.
	Latency time.Duration
}

// Prober checks one real server once. Probe must return by ctx's deadline.
type Prober interface {
	Probe(ctx context.Context) Result
	// Close releases kept connections cleanly (a MySQL COM_QUIT, not a reset).
	Close() error
}

// Target names a real server of a service.
type Target struct {
	Service string     // the service's name or key string
	Addr    netip.Addr // real server address
}

// Event is a change of a real server's state, sent by the Monitor.
type Event struct {
	Target  Target
	Up      bool
	Weight  *uint32 // from the latest healthy Result, if it set one
	Reason  string  // last error text when going down; "" when up
	Latency time.Duration
}
