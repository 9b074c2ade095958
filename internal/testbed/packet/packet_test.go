package packet

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

var (
	client   = MustMAC("02:00:00:00:00:aa")
	director = MustMAC("02:00:00:00:00:01")
	src4     = netip.MustParseAddr("192.0.2.10")
	dst4     = netip.MustParseAddr("10.0.0.100")
	src6     = netip.MustParseAddr("2001:db8::10")
	dst6     = netip.MustParseAddr("fd00::100")
)

// unhex reads annotated golden bytes: hex digits, with everything after a '#' on a line ignored.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	var digits strings.Builder
	for line := range strings.SplitSeq(s, "\n") {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("golden bytes: %v", err)
	}
	return b
}

// The golden frames were checked with `tcpdump -vvv` (which verifies every checksum).
func TestGolden(t *testing.T) {
	tests := []struct {
		desc string
		got  []byte
		want string
	}{{
		desc: "IPv4 TCP SYN",
		got:  Eth(client, director).IPv4(src4, dst4).TCP(40000, 3306, SYN).Build(),
		want: `
			02 00 00 00 00 01  # destination MAC
			02 00 00 00 00 aa  # source MAC
			08 00              # IPv4
			45 00 00 28        # version 4, IHL 5, TOS 0, total length 40
			00 01 00 00        # id 1, no flags, offset 0
			40 06 ae 61        # TTL 64, TCP, header checksum
			c0 00 02 0a        # 192.0.2.10
			0a 00 00 64        # 10.0.0.100
			9c 40 0c ea        # ports 40000 -> 3306
			00 00 00 01        # seq 1
			00 00 00 00        # ack 0
			50 02 ff ff        # data offset 5, SYN, window 65535
			3a 49 00 00        # checksum, urgent pointer`,
	}, {
		desc: "802.1Q IPv6 UDP",
		got:  Eth(client, director).VLAN(100).IPv6(src6, dst6).UDP(40000, 53).Payload([]byte("xyzw")).Build(),
		want: `
			02 00 00 00 00 01 02 00 00 00 00 aa  # MACs
			81 00 00 64                          # 802.1Q, VLAN 100
			86 dd                                # IPv6
			60 00 00 00                          # version 6, class 0, flow 0
			00 0c 11 40                          # payload length 12, UDP, hop limit 64
			20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 10  # 2001:db8::10
			fd 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00  # fd00::100
			9c 40 00 35 00 0c 44 a6              # ports 40000 -> 53, length 12, checksum
			78 79 7a 77                          # "xyzw"`,
	}, {
		desc: "ARP request",
		got:  Eth(client, Broadcast).ARP(ARPRequest, client, src4, MAC{}, dst4).Build(),
		want: `
			ff ff ff ff ff ff 02 00 00 00 00 aa 08 06
			00 01 08 00 06 04 00 01  # Ethernet, IPv4, sizes 6 and 4, request
			02 00 00 00 00 aa c0 00 02 0a  # sender
			00 00 00 00 00 00 0a 00 00 64  # target`,
	}, {
		desc: "VRRPv2 advertisement",
		got: Eth(client, MustMAC("01:00:5e:00:00:12")).
			IPv4(src4, netip.MustParseAddr("224.0.0.18")).VRRP(51, 100, dst4).Build(),
		want: `
			01 00 5e 00 00 12 02 00 00 00 00 aa 08 00
			45 00 00 28 00 01 00 00 ff 70 19 48  # TTL 255, protocol 112
			c0 00 02 0a e0 00 00 12
			21 33 64 01  # version 2 advertisement, vrid 51, priority 100, 1 address
			00 01 70 66  # no authentication, interval 1 s, checksum
			0a 00 00 64  # 10.0.0.100
			00 00 00 00 00 00 00 00  # authentication data`,
	}}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if want := unhex(t, tt.want); !bytes.Equal(tt.got, want) {
				t.Errorf("got\n%s\nwant\n%s", hex.Dump(tt.got), hex.Dump(want))
			}
		})
	}
}

// sum16 is a deliberately naive ones' complement sum, independent of the package's Checksum.
func sum16(chunks ...[]byte) uint16 {
	var all []byte
	for _, c := range chunks {
		all = append(all, c...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint64
	for i := 0; i < len(all); i += 2 {
		s += uint64(all[i])<<8 | uint64(all[i+1])
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// TestChecksumsVerify checks that every checksum the builder writes verifies: a ones' complement
// sum over the covered bytes (with the pseudo-header where the protocol has one) of 0xffff.
func TestChecksumsVerify(t *testing.T) {
	payloads := [][]byte{nil, {1}, []byte("odd length payload"), bytes.Repeat([]byte{0xff}, 1000)}
	for _, p := range payloads {
		for _, tt := range []struct {
			desc string
			b    Builder
		}{
			{"v4 tcp", Eth(client, director).IPv4(src4, dst4).TCP(1, 2, SYN|ACK).Seq(7, 9)},
			{"v4 tcp options", Eth(client, director).IPv4(src4, dst4).Options(1, 1, 0x94, 4, 0, 0).TCP(1, 2, ACK)},
			{"v4 udp", Eth(client, director).VLAN(7).IPv4(src4, dst4).UDP(53, 53)},
			{"v4 icmp", Eth(client, director).IPv4(src4, dst4).Echo()},
			{"v4 vrrp", Eth(client, director).IPv4(src4, dst4).VRRP(1, 255, dst4, src4)},
			{"v6 tcp", Eth(client, director).IPv6(src6, dst6).TCP(1, 2, FIN)},
			{"v6 udp", Eth(client, director).IPv6(src6, dst6).UDP(1, 2)},
			{"v6 icmp", Eth(client, director).IPv6(src6, dst6).Echo()},
			{"v6 vrrp", Eth(client, director).IPv6(src6, dst6).VRRP(1, 255, dst6)},
			{"v6 ext tcp", Eth(client, director).IPv6(src6, dst6).ExtHeader(ProtoHopByHop, nil).TCP(1, 2, SYN)},
		} {
			frame := tt.b.Payload(p).Build()
			l3 := frame[12:]
			for binary.BigEndian.Uint16(l3) == EtherTypeVLAN {
				l3 = l3[4:]
			}
			etherType, l3 := binary.BigEndian.Uint16(l3), l3[2:]
			var l4, pseudo []byte
			var proto uint8
			switch etherType {
			case EtherTypeIPv4:
				hlen := int(l3[0]&0x0f) * 4
				if s := sum16(l3[:hlen]); s != 0xffff {
					t.Errorf("%s, %d byte payload: IPv4 header sums to %#04x", tt.desc, len(p), s)
				}
				proto, l4 = l3[9], l3[hlen:]
				pseudo = append(append([]byte{}, l3[12:20]...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
				if proto == ProtoICMP || proto == ProtoVRRP {
					pseudo = nil
				}
			case EtherTypeIPv6:
				l4, proto = l3[40:], l3[6]
				for proto == ProtoHopByHop {
					proto, l4 = l4[0], l4[8*(1+int(l4[1])):]
				}
				n := len(l4)
				pseudo = append(append([]byte{}, l3[8:40]...), byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, proto)
			}
			if s := sum16(pseudo, l4); s != 0xffff {
				t.Errorf("%s, %d byte payload: protocol %d checksum sums to %#04x", tt.desc, len(p), proto, s)
			}
			if s := sum16(pseudo, tt.b.Payload(p).BadL4Checksum().Build()[len(frame)-len(l4):]); s == 0xffff {
				t.Errorf("%s: BadL4Checksum left a valid checksum", tt.desc)
			}
		}
	}
}

func TestBuilderIsAValue(t *testing.T) {
	base := Eth(client, director).IPv4(src4, dst4)
	before := base.Build()
	a := base.VLAN(1).Options(1).TCP(1, 2, SYN).Payload([]byte("a")).Build()
	b := base.VLAN(2).UDP(3, 4).Build()
	if !bytes.Equal(base.Build(), before) {
		t.Errorf("deriving frames changed the base builder")
	}
	if a[15] != 1 || b[15] != 2 || a[18+9] != ProtoTCP || b[18+9] != ProtoUDP {
		t.Errorf("derived frames share state:\n%s\n%s", hex.Dump(a), hex.Dump(b))
	}
}

func TestLayout(t *testing.T) {
	tests := []struct {
		desc  string
		frame []byte
		check func(f []byte) bool
	}{
		{"QinQ tags in call order", Eth(client, director).Tag(EtherTypeQinQ, 5).VLAN(6).IPv4(src4, dst4).Build(),
			func(f []byte) bool {
				return bytes.Equal(f[12:22], []byte{0x88, 0xa8, 0, 5, 0x81, 0, 0, 6, 8, 0})
			}},
		{"raw ethertype", Eth(client, director).EtherType(EtherTypeLLDP).Payload([]byte{1, 2}).Build(),
			func(f []byte) bool { return len(f) == 16 && f[12] == 0x88 && f[13] == 0xcc && f[15] == 2 }},
		{"ethertype override keeps the IP layer", Eth(client, director).EtherType(EtherTypeIPv6).IPv4(src4, dst4).Build(),
			func(f []byte) bool { return f[12] == 0x86 && f[14] == 0x45 }},
		{"options set IHL", Eth(client, director).IPv4(src4, dst4).Options(1, 1, 1, 1, 1).Build(),
			func(f []byte) bool { return f[14] == 0x47 && len(f) == 14+28 && f[14+24] == 1 && f[14+25] == 0 }},
		{"fragment fields", Eth(client, director).IPv4(src4, dst4).Frag(1480, true).Proto(ProtoUDP).Build(),
			func(f []byte) bool { return binary.BigEndian.Uint16(f[20:]) == 0x2000|185 && f[23] == ProtoUDP }},
		{"don't fragment", Eth(client, director).IPv4(src4, dst4).DontFragment().Build(),
			func(f []byte) bool { return binary.BigEndian.Uint16(f[20:]) == 0x4000 }},
		{"ipv6 extension chain", Eth(client, director).IPv6(src6, dst6).
			ExtHeader(ProtoHopByHop, nil).ExtHeader(ProtoDstOpts, make([]byte, 7)).ExtHeader(ProtoFragment, []byte{0, 1, 0, 0, 0, 9}).UDP(1, 2).Build(),
			func(f []byte) bool {
				ext := f[54:]
				return f[20] == ProtoHopByHop && binary.BigEndian.Uint16(f[18:]) == 8+16+8+8 &&
					ext[0] == ProtoDstOpts && ext[1] == 0 &&
					ext[8] == ProtoFragment && ext[9] == 1 &&
					ext[24] == ProtoUDP && ext[25] == 0 && ext[27] == 1 && ext[31] == 9
			}},
		{"AH length in 4-byte units", Eth(client, director).IPv6(src6, dst6).ExtHeader(ProtoAH, make([]byte, 14)).TCP(1, 2, SYN).Build(),
			func(f []byte) bool { return f[54] == ProtoTCP && f[55] == 16/4-2 }},
		{"icmpv6 protocol", Eth(client, director).Echo().IPv6(src6, dst6).Build(),
			func(f []byte) bool { return f[20] == ProtoICMPv6 && f[54] == 128 }},
		{"vrrp ttl 255 unless set", Eth(client, director).IPv4(src4, dst4).VRRP(1, 1).TTL(3).Build(),
			func(f []byte) bool { return f[22] == 3 }},
		{"IHL corruption", Eth(client, director).IPv4(src4, dst4).IHL(3).Build(),
			func(f []byte) bool { return f[14] == 0x43 && sum16(f[14:34]) == 0xffff }},
		{"total length corruption", Eth(client, director).IPv4(src4, dst4).TCP(1, 2, 0).TotalLength(1000).Build(),
			func(f []byte) bool { return binary.BigEndian.Uint16(f[16:]) == 1000 && len(f) == 54 }},
		{"payload length corruption", Eth(client, director).IPv6(src6, dst6).UDP(1, 2).PayloadLength(9).Build(),
			func(f []byte) bool { return binary.BigEndian.Uint16(f[18:]) == 9 && len(f) == 62 }},
		{"version corruption", Eth(client, director).IPv6(src6, dst6).Version(4).Build(),
			func(f []byte) bool { return f[14] == 0x40 }},
		{"pad then truncate", Eth(client, director).IPv4(src4, dst4).PadTo(60).Truncate(59).Build(),
			func(f []byte) bool { return len(f) == 59 && binary.BigEndian.Uint16(f[16:]) == 20 }},
		{"truncate beyond the end", Eth(client, director).Truncate(100).Build(),
			func(f []byte) bool { return len(f) == 14 }},
	}
	for _, tt := range tests {
		if !tt.check(tt.frame) {
			t.Errorf("%s:\n%s", tt.desc, hex.Dump(tt.frame))
		}
	}
}

func TestMisusePanics(t *testing.T) {
	for desc, f := range map[string]func(){
		"tcp without ip":      func() { Eth(client, director).TCP(1, 2, SYN).Build() },
		"ipv6 address as v4":  func() { Eth(client, director).IPv4(src6, dst4) },
		"options on ipv6":     func() { Eth(client, director).IPv6(src6, dst6).Options(1) },
		"too many options":    func() { Eth(client, director).IPv4(src4, dst4).Options(make([]byte, 41)...) },
		"unaligned frag":      func() { Eth(client, director).IPv4(src4, dst4).Frag(3, false) },
		"ext header on ipv4":  func() { Eth(client, director).IPv4(src4, dst4).ExtHeader(ProtoHopByHop, nil) },
		"negative truncation": func() { Eth(client, director).Truncate(-1) },
		"bad mac":             func() { MustMAC("02:00") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", desc)
				}
			}()
			f()
		}()
	}
}

func TestMAC(t *testing.T) {
	if m := MustMAC("02:00:00:00:00:0a"); m.String() != "02:00:00:00:00:0a" || !m.IsUnicast() {
		t.Errorf("MustMAC round trip: %v", m)
	}
	if Broadcast.IsUnicast() || MustMAC("33:33:00:00:00:01").IsUnicast() {
		t.Errorf("group addresses reported unicast")
	}
	if _, err := ParseMAC("02:00:00:00:00:00:00:01"); err == nil {
		t.Errorf("ParseMAC accepted an 8-byte address")
	}
}

// FuzzChecksum checks the checksums of TCP and UDP frames over arbitrary ports and payloads.
func FuzzChecksum(f *testing.F) {
	f.Add(uint16(1), uint16(2), []byte("x"), false)
	f.Add(uint16(0xffff), uint16(0), []byte{}, true)
	f.Fuzz(func(t *testing.T, sport, dport uint16, payload []byte, v6 bool) {
		if len(payload) > 9000 {
			t.Skip("longer than a jumbo frame")
		}
		b := Eth(client, director).IPv4(src4, dst4)
		pseudo := append(src4.AsSlice(), dst4.AsSlice()...)
		l3len := 20
		if v6 {
			b = Eth(client, director).IPv6(src6, dst6)
			pseudo = append(src6.AsSlice(), dst6.AsSlice()...)
			l3len = 40
		}
		for _, seg := range []struct {
			b     Builder
			proto byte
		}{{b.TCP(sport, dport, ACK), ProtoTCP}, {b.UDP(sport, dport), ProtoUDP}} {
			frame := seg.b.Payload(payload).Build()
			l4 := frame[14+l3len:]
			ps := append(append([]byte{}, pseudo...), 0, seg.proto, byte(len(l4)>>8), byte(len(l4)))
			if s := sum16(ps, l4); s != 0xffff {
				t.Errorf("protocol %d: checksum sums to %#04x", seg.proto, s)
			}
		}
	})
}
