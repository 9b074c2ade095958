//go:build linux

package netns_test

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

func TestLAN(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	var id string
	t.Run("topology", func(t *testing.T) {
		lan := netns.NewLAN(t)
		id = lan.ID
		a := lan.AddNode("a", "10.99.0.1/24")
		b := lan.AddNode("b", "10.99.0.2/24")
		if err := b.SetupRealServer(netip.MustParseAddr("10.99.0.100")); err != nil {
			t.Fatal(err)
		}
		if v, err := b.ReadSysctl("net.ipv4.conf.eth0.arp_ignore"); err != nil || v != "1" {
			t.Fatalf("arp_ignore on b's eth0: expected 1, seen %q (err %v)", v, err)
		}
		if v, err := a.ReadSysctl("net.ipv4.conf.eth0.arp_ignore"); err != nil || v != "0" {
			t.Fatalf("arp_ignore on a's eth0 (sysctls must be per namespace): expected 0, seen %q (err %v)", v, err)
		}
		b.ServeWhoAmI(t, ":8080", "b") // every address of b, the VIP on lo too
		capture := a.StartCapture(t, netns.NodeLink)

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ans, err := a.AskWhoAmI(ctx, "10.99.0.2:8080")
		if err != nil || ans.Name != "b" {
			t.Fatalf("who-am-I from a to b: expected %q, seen %q (err %v)", "b", ans.Name, err)
		}
		// b must not answer ARP for the VIP on its lo, though it would accept the connection.
		vipCtx, vipCancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer vipCancel()
		if ans, err := a.AskWhoAmI(vipCtx, "10.99.0.100:8080"); err == nil {
			t.Fatalf("dial to the VIP on b's lo: expected no answer (b has arp_ignore=1), seen %q", ans.Name)
		}
		if mac, state, err := a.Neighbour(netns.NodeLink, netip.MustParseAddr("10.99.0.100")); err != nil || mac != nil {
			t.Fatalf("a's neighbour entry for the VIP: expected none usable, seen %v %s (err %v)", mac, state, err)
		}
		frames, err := capture.Stop()
		if err != nil {
			t.Fatal(err)
		}
		var out, in int
		for _, f := range frames {
			if f.Outgoing() {
				out++
			} else {
				in++
			}
		}
		if out == 0 || in == 0 {
			t.Fatalf("capture on a's eth0: expected frames both ways, seen %d out, %d in", out, in)
		}
		mac, state, err := a.Neighbour(netns.NodeLink, b.Addr())
		if err != nil || mac.String() != b.MAC.String() {
			t.Fatalf("a's neighbour entry for b: expected %s, seen %q (%s, err %v)", b.MAC, mac, state, err)
		}
		if _, err := a.Exec(ctx, "ip", "link", "show", "eth0"); err != nil {
			t.Fatal(err)
		}
	})
	left, err := netns.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range left {
		if strings.Contains(n, id) {
			t.Errorf("after cleanup: expected no namespace %s*, seen %s", netns.Prefix+id, n)
		}
	}
}
