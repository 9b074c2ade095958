package loader_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/internal/testbed/packet"
	"github.com/xdplb/xdplb/loader"
)

// l4Packet is what the oracle's parser extracts from a frame it would balance.
type l4Packet struct {
	dst   netip.Addr
	proto uint8
	dport uint16
}

// parseBalanceable is the oracle's own parser, written from the protocol definitions rather than
// from the BPF code: it accepts Ethernet with at most one 802.1Q tag carrying either IPv4 (IHL at
// least 5, total length covering the header and within the frame, neither MF nor a fragment
// offset) or IPv6 (payload length within the frame, next header TCP or UDP directly), and a whole
// TCP (20 bytes) or UDP (8 bytes) header inside the IP payload. Anything else is not balanceable.
func parseBalanceable(frame []byte) (l4Packet, bool) {
	if len(frame) < 14 {
		return l4Packet{}, false
	}
	etherType := binary.BigEndian.Uint16(frame[12:14])
	ip := frame[14:]
	if etherType == 0x8100 {
		if len(frame) < 18 {
			return l4Packet{}, false
		}
		etherType = binary.BigEndian.Uint16(frame[16:18])
		ip = frame[18:]
	}

	var p l4Packet
	var l4 []byte // the IP payload, bounded by the IP length field
	switch etherType {
	case 0x0800:
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return p, false
		}
		headerLen := int(ip[0]&0x0f) * 4
		totalLen := int(binary.BigEndian.Uint16(ip[2:4]))
		if headerLen < 20 || totalLen < headerLen || totalLen > len(ip) {
			return p, false
		}
		flagsOffset := binary.BigEndian.Uint16(ip[6:8])
		moreFragments, offset := flagsOffset&0x2000 != 0, flagsOffset&0x1fff
		if moreFragments || offset != 0 {
			return p, false
		}
		p.proto = ip[9]
		p.dst = netip.AddrFrom4([4]byte(ip[16:20]))
		l4 = ip[headerLen:totalLen]
	case 0x86dd:
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return p, false
		}
		payloadLen := int(binary.BigEndian.Uint16(ip[4:6]))
		if 40+payloadLen > len(ip) {
			return p, false
		}
		p.proto = ip[6]
		p.dst = netip.AddrFrom16([16]byte(ip[24:40]))
		l4 = ip[40 : 40+payloadLen]
	default:
		return p, false
	}
	switch {
	case p.proto == 6 && len(l4) >= 20, p.proto == 17 && len(l4) >= 8:
		p.dport = binary.BigEndian.Uint16(l4[2:4])
		return p, true
	}
	return p, false
}

// verdictCounters are the counters of which exactly one moves per packet, by verdict.
func verdictCounters(d loader.Counters) (tx, pass, drop uint64) {
	v := reflect.ValueOf(d)
	for i := range v.NumField() {
		switch name := v.Type().Field(i).Name; {
		case name == "Tx":
			tx += v.Field(i).Uint()
		case strings.HasPrefix(name, "Pass"):
			pass += v.Field(i).Uint()
		case strings.HasPrefix(name, "Drop"):
			drop += v.Field(i).Uint()
		}
	}
	return tx, pass, drop
}

// coverSink keeps coverCounters' branches from being optimized away.
var coverSink int

// coverCounters has one branch per counter, so that the fuzzer's coverage-guided search (which
// sees only Go code) counts an input that moves a counter for the first time as interesting.
func coverCounters(d loader.Counters) {
	if d.Tx != 0 {
		coverSink++
	}
	if d.PassLocal != 0 {
		coverSink++
	}
	if d.PassPeer != 0 {
		coverSink++
	}
	if d.PassNotIp != 0 {
		coverSink++
	}
	if d.PassNotUnicast != 0 {
		coverSink++
	}
	if d.PassVrrp != 0 {
		coverSink++
	}
	if d.PassNoService != 0 {
		coverSink++
	}
	if d.PassIpv6Ext != 0 {
		coverSink++
	}
	if d.PassMalformed != 0 {
		coverSink++
	}
	if d.DropFragment != 0 {
		coverSink++
	}
	if d.DropMalformed != 0 {
		coverSink++
	}
	if d.DropNoBackend != 0 {
		coverSink++
	}
	if d.CtHit != 0 {
		coverSink++
	}
	if d.CtStale != 0 {
		coverSink++
	}
	if d.CtInsertFail != 0 {
		coverSink++
	}
	if d.PersistHit != 0 {
		coverSink++
	}
	if d.NewFlow != 0 {
		coverSink++
	}
	if d.Sorry != 0 {
		coverSink++
	}
}

// fuzzSeeds are valid and invalid frames for the fuzz world.
func fuzzSeeds() [][]byte {
	full := to4(vip4).TCP(40000, portMySQL, packet.SYN).Payload([]byte("hello")).Build()
	return [][]byte{
		full,
		to4(vip4).UDP(5353, 53).Payload([]byte("query")).Build(),
		to6(vip6).TCP(40000, 443, packet.SYN).Build(),
		to6(vip6).UDP(40000, 53).Payload([]byte("q6")).Build(),
		to4(vip4b).TCP(40000, 1234, packet.ACK).Build(),
		to4(vip4).TCP(1000, portPersist, packet.SYN).Build(),
		to4(vip4).TCP(1000, portSorry, packet.SYN).Build(),
		to4(vip4).TCP(1000, portNoBackend, packet.SYN).Build(),
		to4(vip4).TCP(1000, portLocal, packet.SYN).Build(),
		to4(vip4).TCP(1000, portSorryPers, packet.SYN).Build(),
		to4(vip4b).TCP(1000, 80, packet.SYN).Build(),
		eth().VLAN(42).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build(),
		eth().VLAN(42).IPv6(client6, vip6).UDP(40000, 53).Build(),
		to4(vip4).Options(0x94, 4, 0, 0).TCP(40000, portMySQL, packet.SYN).Build(),
		to4(vip4).TCP(40000, portMySQL, packet.SYN).PadTo(60).Build(),
		to4(vip4).Frag(0, true).TCP(40000, portMySQL, packet.SYN).Build(),
		to4(vip4).Frag(8, false).Proto(packet.ProtoUDP).Payload(make([]byte, 8)).Build(),
		to6(vip6).ExtHeader(packet.ProtoHopByHop, nil).TCP(40000, 443, packet.SYN).Build(),
		to6(netip.AddrFrom16(vip4.As16())).TCP(40000, portMySQL, packet.SYN).Build(),
		to4(vip4).Echo().Build(),
		to4(vip4).VRRP(1, 100, vip4).Build(),
		to4(other4).TCP(40000, portMySQL, packet.SYN).Build(),
		to4(vip4).TCP(40000, 22, packet.SYN).Build(),
		to4(vip4).TCP(40000, portMySQL, packet.SYN).TotalLength(30).Truncate(44).Build(),
		to4(vip4).TCP(40000, portMySQL, packet.SYN).IHL(4).Build(),
		to4(vip4).TCP(40000, portMySQL, packet.SYN).TotalLength(100).Build(),
		to6(vip6).TCP(40000, 443, packet.SYN).PayloadLength(100).Build(),
		packet.Eth(macPeer, macDirector).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build(),
		packet.Eth(macRouter, packet.Broadcast).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build(),
		packet.Eth(macRouter, packet.Broadcast).ARP(packet.ARPRequest, macRouter, client4, packet.MAC{}, vip4).Build(),
		eth().Tag(packet.EtherTypeQinQ, 1).VLAN(2).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build(),
		full[:13],
		full[:14],
		full[:20],
	}
}

// FuzzXDP runs arbitrary frames through the program. Whatever the frame, the counters account for
// exactly one verdict, only a forwarded frame is changed, and a frame is forwarded exactly when it
// is a valid unicast TCP/UDP packet for a service with remote backends, from a host that is not a
// peer director, to one of that service's backends, with only its MAC addresses rewritten.
func FuzzXDP(f *testing.F) {
	env := newProgEnv(f)
	configure(env)
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 1 || len(in) > 1500 {
			t.Skip("outside 1..1500 bytes")
		}
		e := *env
		e.tb = t
		orig := append([]byte{}, in...)
		before := e.counters()
		action, out, err := e.run(in)
		after := e.counters()
		checkInvariant(t, after)
		if err != nil {
			if len(in) >= 14 {
				t.Fatalf("run %d-byte frame: %v", len(in), err)
			}
			if d := counterMismatch(before, after, loader.Counters{}); d != "" {
				t.Fatalf("refused frame moved counters: %s", d)
			}
			return
		}
		if len(in) < 14 {
			t.Logf("the kernel ran a %d-byte frame", len(in))
		}
		if !bytes.Equal(in, orig) {
			t.Fatalf("input buffer modified")
		}

		delta := addCounters(after, before, -1)
		coverCounters(delta)
		tx, pass, drop := verdictCounters(delta)
		if delta.Packets != 1 || tx+pass+drop != 1 {
			t.Fatalf("counter deltas %+v: want packets +1 and one verdict counter +1", delta)
		}
		switch action {
		case xdpTX:
			if tx != 1 {
				t.Fatalf("XDP_TX but counted %+v", delta)
			}
		case xdpPass:
			if pass != 1 {
				t.Fatalf("XDP_PASS but counted %+v", delta)
			}
		case xdpDrop:
			if drop != 1 {
				t.Fatalf("XDP_DROP but counted %+v", delta)
			}
		default:
			t.Fatalf("verdict %s", actionName(action))
		}
		if action != xdpTX && !bytes.Equal(out, in) {
			t.Fatalf("%s changed the frame:\n%s", actionName(action), hex.Dump(out))
		}

		// What the oracle expects.
		want := uint32(xdpPass)
		var svc *worldService
		p, ok := parseBalanceable(in)
		unicast := in[0]&1 == 0
		fromPeer := len(in) >= 12 && packet.MAC(in[6:12]) == macPeer
		if ok && unicast && !fromPeer {
			if svc = lookupService(p.dst, p.dport, p.proto); svc != nil {
				want = svc.verdict
			}
		}
		if action == xdpTX && want != xdpTX {
			t.Fatalf("forwarded a frame that is not a valid unicast packet for a remote service (parsed %+v, ok %v):\n%s", p, ok, hex.Dump(in))
		}
		if svc != nil && action != want {
			t.Fatalf("%s for a valid packet to service %d (%v:%d/%d), want %s:\n%s",
				actionName(action), svc.svc.Id, p.dst, p.dport, p.proto, actionName(want), hex.Dump(in))
		}
		if action != xdpTX {
			return
		}
		if len(out) != len(in) {
			t.Fatalf("forwarded frame is %d bytes, was %d", len(out), len(in))
		}
		if !bytes.Equal(out[12:], in[12:]) {
			t.Fatalf("forwarding changed bytes beyond the MAC addresses:\nin:\n%sout:\n%s", hex.Dump(in), hex.Dump(out))
		}
		if !bytes.Equal(out[6:12], in[0:6]) {
			t.Fatalf("source MAC %x, want the original destination %x", out[6:12], in[0:6])
		}
		allowed := false
		for id := range svc.backends {
			allowed = allowed || sentTo(out, beMAC(id))
		}
		if !allowed {
			t.Fatalf("forwarded to %x, not a backend of service %d", out[:6], svc.svc.Id)
		}
	})
}
