package main

import (
	"bytes"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestRealserver runs `xdplb realserver up` twice and `down` twice in a new network namespace
// with one veth, and checks the VIPs on lo and the ARP sysctls of all and of the interface.
func TestRealserver(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces): run `sudo go test ./cmd/xdplb/`")
	}
	ns := newNetNS(t)
	var setupErr error
	ns.Do(func() {
		setupErr = addTestLink("rs0")
		if setupErr == nil {
			lo, err := netlink.LinkByName("lo")
			if err == nil {
				err = netlink.LinkSetUp(lo)
			}
			setupErr = err
		}
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	cli := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		var code int
		ns.Do(func() { code = run(append([]string{"xdplb", "realserver"}, args...), &out, &errb) })
		return out.String() + errb.String(), code
	}
	loAddrs := func() []string {
		var got []string
		ns.Do(func() {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				t.Error(err)
				return
			}
			addrs, err := netlink.AddrList(lo, netlink.FAMILY_ALL)
			if err != nil {
				t.Error(err)
				return
			}
			for _, a := range addrs {
				p, _ := netip.AddrFromSlice(a.IP)
				ones, _ := a.Mask.Size()
				got = append(got, netip.PrefixFrom(p.Unmap(), ones).String())
			}
		})
		return got
	}
	sysctl := func(key string) string {
		var v string
		ns.Do(func() {
			b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + key)
			if err != nil {
				t.Error(err)
			}
			v = strings.TrimSpace(string(b))
		})
		return v
	}
	keys := []string{"all/arp_ignore", "all/arp_announce", "rs0/arp_ignore", "rs0/arp_announce", "rs0p/arp_ignore"}
	want := func(when string, vals ...string) {
		t.Helper()
		for i, k := range keys {
			if got := sysctl(k); got != vals[i] {
				t.Errorf("%s: expected %s = %s, seen %s", when, k, vals[i], got)
			}
		}
	}

	if out, code := cli("up"); code != 2 || !strings.Contains(out, "missing --vip") {
		t.Errorf("up without --vip: expected exit 2 and `missing --vip`, seen %d: %s", code, out)
	}
	if out, code := cli("up", "--vip", "10.0.0.300"); code != 2 || !strings.Contains(out, "bad --vip") {
		t.Errorf("up with a bad VIP: expected exit 2 and `bad --vip`, seen %d: %s", code, out)
	}
	out, code := cli("up", "--vip", "10.0.0.100", "--vip", "fd00::100")
	if code != 0 {
		t.Fatalf("up: expected exit 0, seen %d: %s", code, out)
	}
	for _, s := range []string{"added 10.0.0.100/32 to lo", "added fd00::100/128 to lo", "net.ipv4.conf.all.arp_ignore = 1 (was 0)", "net.ipv4.conf.rs0.arp_announce = 2 (was 0)"} {
		if !strings.Contains(out, s) {
			t.Errorf("up: expected %q in the output, seen:\n%s", s, out)
		}
	}
	addrs := loAddrs()
	for _, a := range []string{"10.0.0.100/32", "fd00::100/128"} {
		if !slices.Contains(addrs, a) {
			t.Errorf("after up: expected %s on lo, seen %v", a, addrs)
		}
	}
	want("after up", "1", "2", "1", "2", "1")

	out, code = cli("up", "--vip", "10.0.0.100", "--vip", "fd00::100")
	if code != 0 || !strings.Contains(out, "10.0.0.100/32 already on lo") || !strings.Contains(out, "net.ipv4.conf.all.arp_ignore = 1 already") {
		t.Errorf("up again: expected exit 0 and `already`, seen %d:\n%s", code, out)
	}

	// Only the named interface: rs0p keeps its value.
	out, code = cli("down", "--vip", "10.0.0.100", "--vip", "fd00::100", "--iface", "rs0")
	if code != 0 || !strings.Contains(out, "removed 10.0.0.100/32 from lo") {
		t.Fatalf("down: expected exit 0 and `removed`, seen %d:\n%s", code, out)
	}
	for _, a := range loAddrs() {
		if a == "10.0.0.100/32" || a == "fd00::100/128" {
			t.Errorf("after down: expected %s gone from lo", a)
		}
	}
	want("after down --iface rs0", "0", "0", "0", "0", "1")

	out, code = cli("down", "--vip", "10.0.0.100")
	if code != 0 || !strings.Contains(out, "10.0.0.100/32 not on lo") {
		t.Errorf("down again: expected exit 0 and `not on lo`, seen %d:\n%s", code, out)
	}
	want("after down", "0", "0", "0", "0", "0")
}
