// Package vrrp runs VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798) for the virtual IPs, interoperating
// with keepalived, so that xdplb directors replace a keepalived + LVS-DR pair.
//
// The package has a pure core and an I/O side. The core does no I/O and is tested without
// sockets or sleeping:
//
//   - codec.go: [Advert.Marshal] and [Parse], the VRRP payload of an IP packet (checksums,
//     keepalived's v2 "auth_type PASS", the switchable v3 IPv4 pseudo-header). Parse rejects with
//     a [*RejectError] whose [Reason] names a metric.
//   - fsm.go: [Machine], the state machine of one virtual router: [Machine.Handle] maps (state,
//     [Event]) to (state, [Action]s). Timers are actions; [Timers] (timers.go) keeps their
//     deadlines for a runner that waits on one timer of an injected [clock.Clock].
//
// The I/O side (sockets, the virtual addresses, gratuitous ARP / neighbour advertisements, the
// runner) executes the actions. The package knows nothing of BPF or of the control plane.
package vrrp
