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
	check := func(want ...PeerEntry) {
		t.Helper()
		got, err := m.PeerEntries()
		must(t, err)
		if len(got) != len(want) {
			t.Fatalf("peers %v, want %v", got, want)
		}
		for i := range got {
			if !bytes.Equal(got[i].MAC, want[i].MAC) || got[i].Flags != want[i].Flags {
				t.Fatalf("peers %v, want %v", got, want)
			}
		}
	}
	none := []net.HardwareAddr(nil)
	list := func(l ...net.HardwareAddr) []net.HardwareAddr { return l }

	// a static, b learned (twice: once).
	added, removed, err := SyncPeers(m, list(a), list(b, b))
	must(t, err)
	if len(added) != 2 || len(removed) != 0 {
		t.Errorf("first sync: added %v removed %v", added, removed)
	}
	check(PeerEntry{a, PeerStatic}, PeerEntry{b, PeerLearned})

	// b falls silent (no longer reported as heard): it stays, it may still run a data path.
	added, removed, err = SyncPeers(m, list(a), none)
	must(t, err)
	if len(added)+len(removed) != 0 {
		t.Errorf("silent learned peer: added %v removed %v", added, removed)
	}
	check(PeerEntry{a, PeerStatic}, PeerEntry{b, PeerLearned})

	// a is heard too: both flags.
	_, _, err = SyncPeers(m, list(a), list(a))
	must(t, err)
	check(PeerEntry{a, PeerStatic | PeerLearned}, PeerEntry{b, PeerLearned})

	// The config drops a: learned as well, so it stays, as a learned peer only.
	added, removed, err = SyncPeers(m, none, none)
	must(t, err)
	if len(added)+len(removed) != 0 {
		t.Errorf("config drops a learned peer: added %v removed %v", added, removed)
	}
	check(PeerEntry{a, PeerLearned}, PeerEntry{b, PeerLearned})

	// The table is full (2): a third peer is an error that names the size; the others stay.
	_, _, err = SyncPeers(m, none, list(c))
	if err == nil || !strings.Contains(err.Error(), "full") {
		t.Errorf("overfull: %v", err)
	}
	check(PeerEntry{a, PeerLearned}, PeerEntry{b, PeerLearned})

	// A peer only the config vouched for goes when the config drops it; the removal comes
	// before the additions, so a full table makes room.
	_, m = load(t, testSizes)
	_, _, err = SyncPeers(m, list(a, c), none)
	must(t, err)
	added, removed, err = SyncPeers(m, list(a), list(b))
	must(t, err)
	if len(added) != 1 || !bytes.Equal(added[0], b) || len(removed) != 1 || !bytes.Equal(removed[0], c) {
		t.Errorf("config drops a static peer: added %v removed %v", added, removed)
	}
	check(PeerEntry{a, PeerStatic}, PeerEntry{b, PeerLearned})

	// An invalid MAC is reported and skipped; the rest is applied.
	_, removed, err = SyncPeers(m, none, list(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}))
	if err == nil || !strings.Contains(err.Error(), "broadcast") || len(removed) != 1 || !bytes.Equal(removed[0], a) {
		t.Errorf("invalid MAC: removed %v err %v", removed, err)
	}
	check(PeerEntry{b, PeerLearned})

	// An entry made by hand (bpftool, no flags) is never removed by a sync.
	_, m = load(t, testSizes)
	must(t, m.AddPeer(c, 0))
	_, removed, err = SyncPeers(m, none, none)
	must(t, err)
	if len(removed) != 0 {
		t.Errorf("hand-made entry: removed %v", removed)
	}
	check(PeerEntry{c, 0})
}
