//go:build linux

package test

import (
	"strings"
	"testing"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// TestAttachAutoModeVeth (issue 11 point 4): a node of a LAN whose eth0 is a veth with its peer
// (the bridge port) in the LAN's namespace. Without an XDP program on that port, `attach`
// in auto mode picks generic and says why, and so does `list`; with one there it picks native.
// Forced native without a program on the peer: `list` warns that forwarded frames are dropped.
func TestAttachAutoModeVeth(t *testing.T) {
	requireRoot(t)
	requireCLI(t)
	lan := netns.NewLAN(t)
	n := lan.AddNode("d", "10.0.9.2/24")
	bare := lan.AddNode("e", "10.0.9.3/24")
	pinRoot, pinE := newPinRoot(t), newPinRoot(t)
	t.Cleanup(func() {
		runCLI(n.NS, pinRoot, "detach", netns.NodeLink)
		runCLI(bare.NS, pinE, "detach", netns.NodeLink)
	})

	out, err := runCLI(n.NS, pinRoot, "attach", netns.NodeLink)
	why := "veth peer " + n.PeerLink + " has no XDP program"
	if err != nil || !strings.Contains(out, "attached to eth0 in generic mode") || !strings.Contains(out, why) {
		t.Fatalf("attach (auto) with no XDP program on the bridge port: expected generic and %q, seen %q (%v)", why, out, err)
	}
	if mode, _, err := n.XDPAttachMode(netns.NodeLink); err != nil || mode != "generic" {
		t.Fatalf("expected a generic program on eth0, seen %q (%v)", mode, err)
	}
	list, err := runCLI(n.NS, pinRoot, "list")
	if err != nil || !strings.Contains(list, "eth0: generic mode") || !strings.Contains(list, why) {
		t.Errorf("list: expected generic mode and %q, seen %q (%v)", why, list, err)
	}
	t.Logf("auto without a program on %s:\n%s\n%s", n.PeerLink, out, list)
	if _, err := runCLI(n.NS, pinRoot, "detach", netns.NodeLink); err != nil {
		t.Fatal(err)
	}

	lan.AttachPassXDP(n)
	out, err = runCLI(n.NS, pinRoot, "attach", netns.NodeLink)
	if err != nil || !strings.Contains(out, "attached to eth0 in native mode") || strings.Contains(out, "note:") {
		t.Fatalf("attach (auto) with XDP_PASS on the bridge port: expected native, no note, seen %q (%v)", out, err)
	}
	if list, err := runCLI(n.NS, pinRoot, "list"); err != nil || !strings.Contains(list, "eth0: native mode") || strings.Contains(list, "XDP program") {
		t.Errorf("list with XDP_PASS on the bridge port: expected native mode and no note, seen %q (%v)", list, err)
	}

	out, err = runCLI(bare.NS, pinE, "attach", netns.NodeLink, "--mode", "native")
	if err != nil || !strings.Contains(out, "WARNING: veth peer "+bare.PeerLink+" has no XDP program") {
		t.Fatalf("attach --mode native with no XDP program on the bridge port: expected the warning, seen %q (%v)", out, err)
	}
	if list, err := runCLI(bare.NS, pinE, "list"); err != nil || !strings.Contains(list, "native mode") ||
		!strings.Contains(list, "WARNING: veth peer "+bare.PeerLink+" has no XDP program, so the frames this program forwards (XDP_TX) are dropped") {
		t.Errorf("list, native without a program on the peer: expected the warning, seen %q (%v)", list, err)
	}
}
