package control

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

func TestSyncPeers(t *testing.T) {
	_, m := load(t, testSizes) // room for 2 peers
	a, _ := net.ParseMAC("02:00:00:00:00:0a")
	b, _ := net.ParseMAC("02:00:00:00:00:0b")
	c, _ := net.ParseMAC("02:00:00:00:00:0c")
	check := func(want ...net.HardwareAddr) {
		t.Helper()
		got, err := m.Peers()
		must(t, err)
		if len(got) != len(want) {
			t.Fatalf("peers %v, want %v", got, want)
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("peers %v, want %v", got, want)
			}
		}
	}

	added, removed, err := SyncPeers(m, []net.HardwareAddr{b, a, b}) // repeated: once
	must(t, err)
	if len(added) != 2 || len(removed) != 0 {
		t.Errorf("first sync: added %v removed %v", added, removed)
	}
	check(a, b)

	// The same set again: nothing to do.
	added, removed, err = SyncPeers(m, []net.HardwareAddr{a, b})
	must(t, err)
	if len(added)+len(removed) != 0 {
		t.Errorf("no-op sync: added %v removed %v", added, removed)
	}

	// b expires, c is learned: the table is full (2), so the removal must come first.
	added, removed, err = SyncPeers(m, []net.HardwareAddr{a, c})
	must(t, err)
	if len(added) != 1 || !bytes.Equal(added[0], c) || len(removed) != 1 || !bytes.Equal(removed[0], b) {
		t.Errorf("swap: added %v removed %v", added, removed)
	}
	check(a, c)

	// More than fits: the error says so, what fits is kept.
	_, _, err = SyncPeers(m, []net.HardwareAddr{a, b, c})
	if err == nil || !strings.Contains(err.Error(), "full") {
		t.Errorf("overfull: %v", err)
	}
	check(a, c)

	// An invalid MAC is reported and skipped; the rest is applied.
	added, removed, err = SyncPeers(m, []net.HardwareAddr{a, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
	if err == nil || len(added) != 0 || len(removed) != 1 || !bytes.Equal(removed[0], c) {
		t.Errorf("invalid MAC: added %v removed %v err %v", added, removed, err)
	}
	check(a)

	// Empty: everything goes.
	_, removed, err = SyncPeers(m, nil)
	must(t, err)
	if len(removed) != 1 {
		t.Errorf("empty: removed %v", removed)
	}
	check()
}
