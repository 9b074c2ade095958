package loader_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/xdplb/xdplb/internal/testbed/packet"
	"github.com/xdplb/xdplb/loader"
)

// TestXDPMalformed feeds broken and unusual frames to one loaded program. Only frames that are
// valid (IPv4 with options) may be forwarded, every verdict is the documented one, and after each
// frame packets = tx + pass_* + drop_* still holds.
func TestXDPMalformed(t *testing.T) {
	e := newProgEnv(t)
	configure(e)

	type malformedCase struct {
		desc         string
		in           []byte
		wantAction   uint32
		wantCounters loader.Counters
		valid        bool // a well-formed frame that must be forwarded
	}
	var (
		passMalformed = loader.Counters{Packets: 1, PassMalformed: 1}
		passNotIP     = loader.Counters{Packets: 1, PassNotIp: 1}
		dropMalformed = loader.Counters{Packets: 1, DropMalformed: 1}
		dropFragment  = loader.Counters{Packets: 1, DropFragment: 1}
		passExt       = loader.Counters{Packets: 1, PassIpv6Ext: 1}
		notUnicast    = loader.Counters{Packets: 1, PassNotUnicast: 1}
		noService     = loader.Counters{Packets: 1, PassNoService: 1}
	)
	full4 := to4(vip4).TCP(40000, portMySQL, packet.SYN).Build()
	full6 := to6(vip6).TCP(40000, 443, packet.SYN).Build()
	tagged := eth().VLAN(42).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build()

	var tests []malformedCase
	add := func(desc string, in []byte, action uint32, want loader.Counters) {
		tests = append(tests, malformedCase{desc: desc, in: in, wantAction: action, wantCounters: want})
	}

	// Shorter than an Ethernet header: the kernel refuses such input (checked in the loop).
	for n := range 14 {
		add(fmt.Sprintf("%d-byte frame", n), full4[:n], xdpPass, passMalformed)
	}
	add("Ethernet header only, IPv4 type", full4[:14], xdpPass, passMalformed)
	add("Ethernet header only, IPv6 type", full6[:14], xdpPass, passMalformed)
	for n := 14; n < 18; n++ {
		add(fmt.Sprintf("VLAN tag cut at %d bytes", n), tagged[:n], xdpPass, passMalformed)
	}
	add("VLAN tag, then nothing", tagged[:18], xdpPass, passMalformed)
	for n := 14; n < 14+20; n += 3 {
		add(fmt.Sprintf("IPv4 header cut at %d bytes", n-14), full4[:n], xdpPass, passMalformed)
	}
	add("IPv4 header cut at 19 bytes", full4[:14+19], xdpPass, passMalformed)
	for n := 14; n < 14+40; n += 7 {
		add(fmt.Sprintf("IPv6 header cut at %d bytes", n-14), full6[:n], xdpPass, passMalformed)
	}
	add("IPv6 header cut at 39 bytes", full6[:14+39], xdpPass, passMalformed)
	for ihl := range uint8(5) {
		add(fmt.Sprintf("IHL %d", ihl), to4(vip4).TCP(40000, portMySQL, packet.SYN).IHL(ihl).Build(), xdpPass, passMalformed)
	}
	add("IHL 15 beyond total length", to4(vip4).IHL(15).Build(), xdpPass, passMalformed)
	add("IHL 15 beyond the frame", to4(vip4).IHL(15).TotalLength(60).Build(), xdpPass, passMalformed)
	add("IHL 6 without options, no room for TCP", to4(vip4).TCP(40000, portMySQL, packet.SYN).IHL(6).Truncate(14+20+19).TotalLength(20+19).Build(), xdpDrop, dropMalformed)
	add("total length beyond the frame", to4(vip4).TCP(40000, portMySQL, packet.SYN).TotalLength(41).Build(), xdpPass, passMalformed)
	add("total length 65535", to4(vip4).TCP(40000, portMySQL, packet.SYN).TotalLength(0xffff).Build(), xdpPass, passMalformed)
	add("total length below the header", to4(vip4).TCP(40000, portMySQL, packet.SYN).TotalLength(19).Build(), xdpPass, passMalformed)
	add("total length below the options", to4(vip4).Options(1, 1, 1, 1).TCP(40000, portMySQL, packet.SYN).TotalLength(20).Build(), xdpPass, passMalformed)
	add("total length 0", to4(vip4).TCP(40000, portMySQL, packet.SYN).TotalLength(0).Build(), xdpPass, passMalformed)
	add("IPv6 version in an IPv4 frame", to4(vip4).TCP(40000, portMySQL, packet.SYN).Version(6).Build(), xdpPass, passMalformed)
	add("IPv4 version in an IPv6 frame", to6(vip6).TCP(40000, 443, packet.SYN).Version(4).Build(), xdpPass, passMalformed)
	add("IPv4 packet in an IPv6-typed frame", to4(vip4).EtherType(packet.EtherTypeIPv6).TCP(40000, portMySQL, packet.SYN).Build(), xdpPass, passMalformed)
	add("IPv6 payload length beyond the frame", to6(vip6).TCP(40000, 443, packet.SYN).PayloadLength(21).Build(), xdpPass, passMalformed)
	add("IPv6 payload length 65535", to6(vip6).TCP(40000, 443, packet.SYN).PayloadLength(0xffff).Build(), xdpPass, passMalformed)
	add("IPv6 payload length 0 (jumbogram without hop-by-hop)", to6(vip6).TCP(40000, 443, packet.SYN).PayloadLength(0).Build(), xdpDrop, dropMalformed)
	for n := 0; n < 20; n += 4 {
		add(fmt.Sprintf("TCP header of %d bytes", n), to4(vip4).TCP(40000, portMySQL, packet.SYN).TotalLength(uint16(20+n)).Truncate(14+20+n).Build(), xdpDrop, dropMalformed)
		add(fmt.Sprintf("IPv6 TCP header of %d bytes", n), to6(vip6).TCP(40000, 443, packet.SYN).PayloadLength(uint16(n)).Truncate(14+40+n).Build(), xdpDrop, dropMalformed)
	}
	for n := 0; n < 8; n += 3 {
		add(fmt.Sprintf("UDP header of %d bytes", n), to4(vip4).UDP(5353, 53).TotalLength(uint16(20+n)).Truncate(14+20+n).Build(), xdpDrop, dropMalformed)
		add(fmt.Sprintf("IPv6 UDP header of %d bytes", n), to6(vip6).UDP(5353, 53).PayloadLength(uint16(n)).Truncate(14+40+n).Build(), xdpDrop, dropMalformed)
	}
	add("TCP header of 19 bytes, frame truncated too", to4(vip4).TCP(40000, portMySQL, packet.SYN).TotalLength(39).Truncate(14+39).Build(), xdpDrop, dropMalformed)
	add("UDP header of 7 bytes behind VLAN", eth().VLAN(1).IPv4(client4, vip4).UDP(5353, 53).TotalLength(27).Truncate(18+27).Build(), xdpDrop, dropMalformed)

	tests = append(tests,
		malformedCase{desc: "IPv4 router-alert option", in: to4(vip4).Options(0x94, 4, 0, 0).TCP(40000, portMySQL, packet.SYN).Build(), wantAction: xdpTX, wantCounters: loader.Counters{Packets: 1, Tx: 1, NewFlow: 1}, valid: true},
		malformedCase{desc: "IPv4 with 40 bytes of options", in: to4(vip4).Options(bytes.Repeat([]byte{1}, 39)...).UDP(5353, 53).Payload([]byte("q")).Build(), wantAction: xdpTX, wantCounters: loader.Counters{Packets: 1, Tx: 1, NewFlow: 1}, valid: true},
	)

	add("first fragment", to4(vip4).Frag(0, true).TCP(40000, portMySQL, packet.SYN).Build(), xdpDrop, dropFragment)
	add("middle fragment", to4(vip4).Frag(8, true).Proto(packet.ProtoTCP).Payload(make([]byte, 8)).Build(), xdpDrop, dropFragment)
	add("last fragment", to4(vip4).Frag(65528, false).Proto(packet.ProtoUDP).Payload(make([]byte, 8)).Build(), xdpDrop, dropFragment)
	add("fragment with no room for a TCP header", to4(vip4).Frag(8, false).Proto(packet.ProtoTCP).Build(), xdpDrop, dropFragment)
	add("ICMP fragment", to4(vip4).Frag(8, false).Proto(packet.ProtoICMP).Build(), xdpDrop, dropFragment)
	add("fragment to another address", to4(other4).Frag(0, true).UDP(1, 2).Build(), xdpPass, noService)
	for _, nh := range []uint8{packet.ProtoHopByHop, packet.ProtoRouting, packet.ProtoFragment, packet.ProtoESP, packet.ProtoAH, packet.ProtoDstOpts, 135, 139, 140} {
		add(fmt.Sprintf("IPv6 extension header %d", nh), to6(vip6).ExtHeader(nh, make([]byte, 6)).TCP(40000, 443, packet.SYN).Build(), xdpPass, passExt)
	}
	add("IPv6 extension header cut short", to6(vip6).ExtHeader(packet.ProtoHopByHop, nil).PayloadLength(2).Truncate(14+42).Build(), xdpPass, passExt)
	add("IPv6 to a v4-mapped VIP", to6(netip.AddrFrom16(vip4.As16())).TCP(40000, portMySQL, packet.SYN).Build(), xdpPass, noService)
	add("IPv6 UDP to a v4-mapped VIP", to6(netip.AddrFrom16(vip4.As16())).UDP(5353, 53).Build(), xdpPass, noService)
	add("IPv6 no next header", to6(vip6).Proto(packet.ProtoNoNext).Build(), xdpPass, noService)
	add("IPv4 protocol 0", to4(vip4).Proto(0).Payload(make([]byte, 20)).Build(), xdpPass, noService)
	add("GRE to a VIP", to4(vip4).Proto(47).Payload(make([]byte, 20)).Build(), xdpPass, noService)

	for _, et := range []uint16{0x0000, 0x0040, packet.EtherTypeARP, 0x8035, 0x8137, packet.EtherTypeLLDP, 0x88e5, 0x8847, 0xffff} {
		add(fmt.Sprintf("ethertype %#04x", et), eth().EtherType(et).Payload(full4[14:]).Build(), xdpPass, passNotIP)
	}
	add("ethertype 802.1Q inside 802.1Q", eth().VLAN(1).VLAN(2).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build(), xdpPass, passNotIP)
	add("ethertype 802.1ad outer tag", eth().Tag(packet.EtherTypeQinQ, 1).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build(), xdpPass, passNotIP)

	for _, dst := range []packet.MAC{packet.Broadcast, packet.MustMAC("01:00:5e:00:00:01"), packet.MustMAC("33:33:00:00:00:01"), packet.MustMAC("03:00:00:00:00:00")} {
		add(fmt.Sprintf("to %v, TCP to a VIP", dst), packet.Eth(macRouter, dst).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build(), xdpPass, notUnicast)
		add(fmt.Sprintf("to %v, IPv6 TCP to a VIP", dst), packet.Eth(macRouter, dst).IPv6(client6, vip6).TCP(40000, 443, packet.SYN).Build(), xdpPass, notUnicast)
		add(fmt.Sprintf("to %v, tagged UDP to a VIP", dst), packet.Eth(macRouter, dst).VLAN(3).IPv4(client4, vip4).UDP(5353, 53).Build(), xdpPass, notUnicast)
		add(fmt.Sprintf("to %v, TCP to another address", dst), packet.Eth(macRouter, dst).IPv4(client4, other4).TCP(40000, portMySQL, packet.SYN).Build(), xdpPass, noService)
	}

	before := e.counters()
	refused := 0
	for _, tt := range tests {
		in := append([]byte{}, tt.in...)
		action, out, err := e.run(in)
		after := e.counters()
		switch {
		case err != nil && len(in) < 14:
			// The kernel requires an Ethernet header's worth of input; nothing ran.
			refused++
			if d := counterMismatch(before, after, loader.Counters{}); d != "" {
				t.Errorf("%s: refused by the kernel, yet counters moved: %s", tt.desc, d)
			}
		case err != nil:
			t.Errorf("%s: run: %v", tt.desc, err)
		default:
			if action != tt.wantAction {
				t.Errorf("%s: verdict %s, want %s", tt.desc, actionName(action), actionName(tt.wantAction))
			}
			if action == xdpTX && !tt.valid {
				t.Errorf("%s: forwarded", tt.desc)
			}
			if action != xdpTX && !bytes.Equal(out, tt.in) {
				t.Errorf("%s: %s changed the frame", tt.desc, actionName(action))
			}
			if d := counterMismatch(before, after, tt.wantCounters); d != "" {
				t.Errorf("%s: counter deltas: %s", tt.desc, d)
			}
		}
		checkInvariant(t, after)
		before = after
	}
	t.Logf("%d malformed and unusual frames, %d refused by the kernel as too short", len(tests), refused)

	// Zero bytes: refused by the kernel or at least not forwarded.
	action, _, err := e.run(nil)
	if err == nil && action == xdpTX {
		t.Errorf("empty frame forwarded")
	}
	t.Logf("empty frame: %s, %v", actionName(action), err)
	checkInvariant(t, e.counters())
}
