package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/daemon"
)

func TestWriteVRRP(t *testing.T) {
	in := []daemon.VRRPStatus{
		{Name: "VI_1", Interface: "eth0", State: "MASTER", Priority: 100, Master: netip.MustParseAddr("10.0.0.1"), Transitions: 3,
			Peers: []daemon.VRRPPeer{{Addr: netip.MustParseAddr("10.0.0.2"), MAC: "02:00:00:00:00:02", Priority: 90, LastSeen: time.Now()}}},
		{Name: "VI_2", Interface: "eth1", State: "INIT", Priority: 90, SplitBrains: 2},
		{Name: "VI_3", Interface: "eth9", State: "BACKUP"},
	}
	var b strings.Builder
	writeVRRP(&b, in, []string{"eth0", "eth1"})
	want := "\nVRRP VI_1 on eth0: MASTER priority 100, master 10.0.0.1, peers 10.0.0.2 (02:00:00:00:00:02), 3 transitions\n" +
		"VRRP VI_2 on eth1: INIT priority 90, master -, peers none, 0 transitions, 2 split brains\n"
	if b.String() != want {
		t.Errorf("got\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	writeVRRP(&b, in, []string{"eth5"})
	if b.String() != "" {
		t.Errorf("no instance on the interface: %q", b.String())
	}
}
