package control

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
)

// SyncPeers makes the peers map hold exactly want (static config peers ∪ learned ones): it
// deletes the peers that are not wanted, then adds the missing ones, and returns what it added
// and removed (sorted). Pass the full wanted set: a peer left out of it is removed. Invalid or
// repeated MACs in want are skipped with an error; the other changes are still made.
func SyncPeers(m *Maps, want []net.HardwareAddr) (added, removed []net.HardwareAddr, err error) {
	have, err := m.Peers()
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	wanted := make([]net.HardwareAddr, 0, len(want))
	for _, w := range want {
		if cerr := CheckMAC(w); cerr != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", w, cerr))
			continue
		}
		if !containsMAC(wanted, w) {
			wanted = append(wanted, w)
		}
	}
	slices.SortFunc(wanted, func(a, b net.HardwareAddr) int { return bytes.Compare(a, b) })
	for _, h := range have {
		if containsMAC(wanted, h) {
			continue
		}
		if derr := m.DeletePeer(h); derr != nil && !errors.Is(derr, ErrNotFound) {
			errs = append(errs, derr)
			continue
		}
		removed = append(removed, h)
	}
	for _, w := range wanted {
		if containsMAC(have, w) {
			continue
		}
		if aerr := m.AddPeer(w); aerr != nil {
			errs = append(errs, aerr)
			continue
		}
		added = append(added, slices.Clone(w))
	}
	return added, removed, errors.Join(errs...)
}

func containsMAC(list []net.HardwareAddr, m net.HardwareAddr) bool {
	return slices.ContainsFunc(list, func(x net.HardwareAddr) bool { return bytes.Equal(x, m) })
}
