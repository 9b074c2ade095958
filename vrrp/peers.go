package vrrp

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"time"
)

// Peer is another router seen advertising on our VRID with a valid advertisement.
type Peer struct {
	Addr     netip.Addr       // IP source of its advertisements
	MAC      net.HardwareAddr // Ethernet source of its last advertisement
	Priority uint8            // of its last advertisement (0: it resigned)
	LastSeen time.Time
}

// peerTable keeps the peers of one instance; owned by the runner goroutine.
type peerTable struct {
	timeout time.Duration
	peers   map[netip.Addr]*Peer
}

func newPeerTable(timeout time.Duration) *peerTable {
	return &peerTable{timeout: timeout, peers: map[netip.Addr]*Peer{}}
}

// seen records an advertisement and reports whether the set changed: a new peer, or a known one
// with another MAC or priority.
func (t *peerTable) seen(addr netip.Addr, mac net.HardwareAddr, prio uint8, now time.Time) bool {
	p, ok := t.peers[addr]
	if !ok {
		t.peers[addr] = &Peer{Addr: addr, MAC: slices.Clone(mac), Priority: prio, LastSeen: now}
		return true
	}
	changed := !bytes.Equal(p.MAC, mac) || p.Priority != prio
	p.MAC, p.Priority, p.LastSeen = slices.Clone(mac), prio, now
	return changed
}

// expire drops the peers silent for the timeout or longer and reports whether any was dropped.
func (t *peerTable) expire(now time.Time) bool {
	changed := false
	for a, p := range t.peers {
		if now.Sub(p.LastSeen) >= t.timeout {
			delete(t.peers, a)
			changed = true
		}
	}
	return changed
}

// next returns when the next peer expires.
func (t *peerTable) next() (time.Time, bool) {
	var at time.Time
	ok := false
	for _, p := range t.peers {
		if e := p.LastSeen.Add(t.timeout); !ok || e.Before(at) {
			at, ok = e, true
		}
	}
	return at, ok
}

// list returns a copy of the peers, sorted by address.
func (t *peerTable) list() []Peer {
	out := make([]Peer, 0, len(t.peers))
	for _, p := range t.peers {
		c := *p
		c.MAC = slices.Clone(p.MAC)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Peer) int { return a.Addr.Compare(b.Addr) })
	return out
}
