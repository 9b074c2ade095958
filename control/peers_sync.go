package control

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
)

// SyncPeers brings the peers map in line with the config's static peers and the peers the
// daemon has heard, and returns the MACs it added and removed (sorted).
//
// It only ever removes a peer that the config alone vouched for and that the config no longer
// lists: a learned peer is kept for the life of the pins, because a director that fell silent
// (its daemon killed, VRRP filtered) may still run a data path, and forgetting it brings back the
// forwarding loop. An entry made by hand (no flags) is left alone. Invalid MACs are skipped with
// an error; the other changes are still made.
func SyncPeers(m *Maps, static, learned []net.HardwareAddr) (added, removed []net.HardwareAddr, err error) {
	have, err := m.PeerEntries()
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	want := map[string]uint32{}
	var order []net.HardwareAddr
	for _, src := range []struct {
		list []net.HardwareAddr
		flag uint32
	}{{static, PeerStatic}, {learned, PeerLearned}} {
		for _, w := range src.list {
			if cerr := CheckMAC(w); cerr != nil {
				errs = append(errs, fmt.Errorf("peer %s: %w", w, cerr))
				continue
			}
			k := w.String()
			if _, ok := want[k]; !ok {
				order = append(order, w)
			}
			want[k] |= src.flag
		}
	}
	slices.SortFunc(order, func(a, b net.HardwareAddr) int { return bytes.Compare(a, b) })

	known := map[string]bool{}
	for _, h := range have {
		known[h.MAC.String()] = true
		if h.Flags&PeerStatic == 0 || want[h.MAC.String()]&PeerStatic != 0 {
			continue
		}
		// The config dropped it.
		if h.Flags&PeerLearned != 0 {
			if serr := m.setPeerFlags(h.MAC, h.Flags&^PeerStatic); serr != nil {
				errs = append(errs, serr)
			}
			continue
		}
		if derr := m.DeletePeer(h.MAC); derr != nil && !errors.Is(derr, ErrNotFound) {
			errs = append(errs, derr)
			continue
		}
		removed = append(removed, h.MAC)
	}
	for _, w := range order {
		if aerr := m.AddPeer(w, want[w.String()]); aerr != nil {
			errs = append(errs, aerr)
			continue
		}
		if !known[w.String()] {
			added = append(added, slices.Clone(w))
		}
	}
	return added, removed, errors.Join(errs...)
}
