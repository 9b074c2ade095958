package loader_test

import (
	"testing"

	"github.com/xdplb/xdplb/internal/testbed/packet"
	"github.com/xdplb/xdplb/loader"
)

// TestXDPOwnMAC: once the loader has written the interface MAC into meta (as attach does), a
// unicast frame to any other MAC (flooded by a switch, or seen by a promiscuous NIC) is passed,
// not forwarded; frames to our MAC are balanced as before.
func TestXDPOwnMAC(t *testing.T) {
	e := newProgEnv(t)
	configure(e)
	var l loader.Layout
	if err := e.o.Meta.Lookup(uint32(0), &l); err != nil {
		t.Fatal(err)
	}
	copy(l.Mac[:], macDirector[:])
	if err := e.o.Meta.Put(uint32(0), l); err != nil {
		t.Fatal(err)
	}

	other := packet.MustMAC("02:00:00:00:00:99")
	in := packet.Eth(macRouter, other).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build()
	before := e.counters()
	action, out := e.mustRun(in)
	after := e.counters()
	if action != xdpPass || string(out[:len(in)]) != string(in) {
		t.Errorf("frame to another host's MAC: %s, want XDP_PASS with the frame untouched", actionName(action))
	}
	if d := after.PassOtherHost - before.PassOtherHost; d != 1 || after.Tx != before.Tx {
		t.Errorf("pass_other_host +%d, tx +%d; want +1 and +0", d, after.Tx-before.Tx)
	}
	checkInvariant(t, after)

	action, out = e.mustRun(syn(vip4, 40001, portMySQL))
	if action != xdpTX || !sentTo(out, beMAC(1)) {
		t.Errorf("frame to our MAC: %s to %x, want XDP_TX to backend 1", actionName(action), out[:6])
	}
}
