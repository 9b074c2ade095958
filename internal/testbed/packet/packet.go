// Package packet builds Ethernet frames for tests and benchmarks of the data path: Ethernet with
// optional 802.1Q tags, ARP, IPv4 (options, fragments), IPv6 (extension headers), TCP, UDP, ICMP
// and VRRP, with correct IPv4 header, TCP, UDP, ICMPv6 and VRRP checksums, plus deliberate
// corruptions (header length, length fields, IP version, truncation).
//
// A Builder is a value: every method returns a modified copy and never changes the receiver, so a
// partly built frame can be shared and extended in several ways:
//
//	base := packet.Eth(client, director).IPv4(src, vip)
//	syn := base.TCP(40000, 3306, packet.SYN).Build()
//	dns := base.UDP(40000, 53).Payload([]byte("q")).Build()
//
// Arguments are always given source first, then destination (Eth, IPv4, IPv6, TCP, UDP), which
// is not the wire order of Ethernet (destination first). Misuse that cannot produce a frame (TCP
// without an IP layer, an IPv6 address passed to IPv4, options longer than 40 bytes) panics: these
// are programming errors in a test.
package packet

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// MAC is an Ethernet address in wire order.
type MAC [6]byte

// Broadcast is the Ethernet broadcast address.
var Broadcast = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ParseMAC parses the colon-separated hexadecimal form ("02:00:00:00:00:01").
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return MAC{}, err
	}
	if len(hw) != 6 {
		return MAC{}, fmt.Errorf("mac %q: want 6 bytes, got %d", s, len(hw))
	}
	return MAC(hw), nil
}

// MustMAC is ParseMAC that panics on error, for constants in tests.
func MustMAC(s string) MAC {
	m, err := ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// IsUnicast reports whether the group bit (the low bit of the first byte) is clear.
func (m MAC) IsUnicast() bool { return m[0]&1 == 0 }

// Ethernet types.
const (
	EtherTypeIPv4  = 0x0800
	EtherTypeARP   = 0x0806
	EtherTypeVLAN  = 0x8100 // 802.1Q
	EtherTypeQinQ  = 0x88a8 // 802.1ad service tag
	EtherTypeIPv6  = 0x86dd
	EtherTypeLLDP  = 0x88cc
	ethHeaderLen   = 14
	vlanTagLen     = 4
	ipv4HeaderLen  = 20
	ipv6HeaderLen  = 40
	tcpHeaderLen   = 20
	udpHeaderLen   = 8
	maxIPv4Options = 40
)

// IP protocol numbers used by the builder.
const (
	ProtoHopByHop = 0
	ProtoICMP     = 1
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoESP      = 50
	ProtoAH       = 51
	ProtoICMPv6   = 58
	ProtoNoNext   = 59
	ProtoDstOpts  = 60
	ProtoVRRP     = 112
)

// TCPFlags is the TCP flags byte.
type TCPFlags uint8

// TCP flags.
const (
	FIN TCPFlags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
)

// ARP operations.
const (
	ARPRequest = 1
	ARPReply   = 2
)

type l3Kind uint8

const (
	l3None l3Kind = iota
	l3ARP
	l3IPv4
	l3IPv6
)

type l4Kind uint8

const (
	l4None l4Kind = iota
	l4TCP
	l4UDP
	l4ICMP
	l4VRRP
	l4Raw
)

type tag struct{ tpid, tci uint16 }

type extHeader struct {
	typ  uint8
	body []byte
}

// opt is an optional field override.
type opt[T any] struct {
	v   T
	set bool
}

func some[T any](v T) opt[T] { return opt[T]{v: v, set: true} }

type arpFields struct {
	op                   uint16
	senderMAC, targetMAC MAC
	senderIP, targetIP   netip.Addr
}

// Builder describes one frame; Build serializes it. The zero value is not useful: start with Eth.
type Builder struct {
	// Ethernet
	src, dst  MAC
	tags      []tag
	etherType opt[uint16]

	// Network layer
	l3             l3Kind
	arp            arpFields
	ipSrc, ipDst   netip.Addr
	ttl            opt[uint8]
	tos            uint8
	ipID           uint16
	dontFrag, more bool
	fragOff        uint16 // bytes
	options        []byte
	ext            []extHeader

	// Transport layer
	l4             l4Kind
	proto          uint8
	sport, dport   uint16
	tcpFlags       TCPFlags
	seq, ack       uint32
	icmpType       uint8
	icmpCode       uint8
	echo           bool // ICMP echo request, type chosen by the IP version at Build
	vrid, vrrpPrio uint8
	vrrpAddrs      []netip.Addr
	payload        []byte

	// Framing and corruptions
	padTo         int
	truncate      opt[int]
	ihl           opt[uint8]
	totLen        opt[uint16]
	payloadLen    opt[uint16]
	version       opt[uint8]
	badL4Checksum bool
}

// Eth starts a frame from src to dst. With nothing else added it is a bare Ethernet header with
// ethertype 0 followed by the payload.
func Eth(src, dst MAC) Builder {
	return Builder{src: src, dst: dst, seq: 1}
}

// VLAN appends an 802.1Q tag (TPID 0x8100, priority 0) with VLAN id vid. Calling it twice gives a
// double-tagged frame, outer tag first.
func (b Builder) VLAN(vid uint16) Builder {
	return b.Tag(EtherTypeVLAN, vid&0x0fff)
}

// Tag appends a VLAN tag with any TPID (0x88a8 for an 802.1ad outer tag) and raw TCI.
func (b Builder) Tag(tpid, tci uint16) Builder {
	b.tags = append(slices.Clip(b.tags), tag{tpid, tci})
	return b
}

// EtherType sets the innermost ethertype field. Without a network layer the payload follows the
// Ethernet (and VLAN) header directly, which builds any non-IP frame; with one it overrides the
// type the layer implies (an IPv4 packet labelled IPv6, say).
func (b Builder) EtherType(t uint16) Builder {
	b.etherType = some(t)
	return b
}

// ARP makes the frame an IPv4-over-Ethernet ARP packet with operation op (ARPRequest, ARPReply).
func (b Builder) ARP(op uint16, senderMAC MAC, senderIP netip.Addr, targetMAC MAC, targetIP netip.Addr) Builder {
	b.l3 = l3ARP
	b.arp = arpFields{op: op, senderMAC: senderMAC, senderIP: mustV4(senderIP), targetMAC: targetMAC, targetIP: mustV4(targetIP)}
	return b
}

// IPv4 adds an IPv4 header (TTL 64, identification 1) from src to dst.
func (b Builder) IPv4(src, dst netip.Addr) Builder {
	b.l3 = l3IPv4
	b.ipSrc, b.ipDst = mustV4(src), mustV4(dst)
	b.ipID = 1
	return b
}

// IPv6 adds an IPv6 header (hop limit 64) from src to dst.
func (b Builder) IPv6(src, dst netip.Addr) Builder {
	if !src.IsValid() || !dst.IsValid() {
		panic("packet: IPv6 needs valid addresses")
	}
	b.l3 = l3IPv6
	b.ipSrc, b.ipDst = netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
	return b
}

func mustV4(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if !a.Is4() {
		panic(fmt.Sprintf("packet: %v is not an IPv4 address", a))
	}
	return a
}

// TTL sets the IPv4 TTL or the IPv6 hop limit (default 64; 255 for VRRP).
func (b Builder) TTL(ttl uint8) Builder {
	b.ttl = some(ttl)
	return b
}

// TOS sets the IPv4 type-of-service byte or the IPv6 traffic class.
func (b Builder) TOS(tos uint8) Builder {
	b.tos = tos
	return b
}

// ID sets the IPv4 identification (default 1).
func (b Builder) ID(id uint16) Builder {
	b.ipID = id
	return b
}

// Options sets the IPv4 options, padded with zero bytes (end of option list) to a multiple of 4.
// The header length field follows (5 + len/4) unless IHL overrides it.
func (b Builder) Options(opts ...byte) Builder {
	b.mustL3(l3IPv4, "Options")
	o := slices.Clone(opts)
	for len(o)%4 != 0 {
		o = append(o, 0)
	}
	if len(o) > maxIPv4Options {
		panic(fmt.Sprintf("packet: %d bytes of IPv4 options, at most %d fit", len(o), maxIPv4Options))
	}
	b.options = o
	return b
}

// Frag sets the IPv4 fragment offset (in bytes, a multiple of 8) and the more-fragments flag.
// The layer above is still serialized as given: for a later fragment use Proto and Payload.
func (b Builder) Frag(offset int, more bool) Builder {
	b.mustL3(l3IPv4, "Frag")
	if offset < 0 || offset%8 != 0 || offset/8 > 0x1fff {
		panic(fmt.Sprintf("packet: fragment offset %d: want a multiple of 8 below 65536", offset))
	}
	b.fragOff, b.more = uint16(offset), more
	return b
}

// DontFragment sets the IPv4 DF flag (not a fragment).
func (b Builder) DontFragment() Builder {
	b.mustL3(l3IPv4, "DontFragment")
	b.dontFrag = true
	return b
}

// ExtHeader appends an IPv6 extension header of type typ (ProtoHopByHop, ProtoRouting,
// ProtoFragment, ProtoDstOpts, ProtoAH, ...). body follows the two bytes of next header and
// length and is zero-padded to a multiple of 8 bytes overall; the length byte is computed (in AH's
// 4-byte units for ProtoAH). For ProtoFragment give 6 bytes: offset/flags (2) and identification
// (4). ESP (ProtoESP) has no next-header field in clear: the bytes after it are opaque.
func (b Builder) ExtHeader(typ uint8, body []byte) Builder {
	b.mustL3(l3IPv6, "ExtHeader")
	b.ext = append(slices.Clip(b.ext), extHeader{typ: typ, body: slices.Clone(body)})
	return b
}

// TCP adds a TCP header (sequence number 1, window 65535, no options) with the given flags.
func (b Builder) TCP(sport, dport uint16, flags TCPFlags) Builder {
	b.l4, b.proto = l4TCP, ProtoTCP
	b.sport, b.dport, b.tcpFlags = sport, dport, flags
	return b
}

// Seq sets the TCP sequence and acknowledgement numbers.
func (b Builder) Seq(seq, ack uint32) Builder {
	b.seq, b.ack = seq, ack
	return b
}

// UDP adds a UDP header.
func (b Builder) UDP(sport, dport uint16) Builder {
	b.l4, b.proto = l4UDP, ProtoUDP
	b.sport, b.dport = sport, dport
	return b
}

// ICMP adds an ICMP header (ICMPv6 under IPv6) of the given type and code, with the 4 bytes after
// the checksum (identifier and sequence for an echo) zero.
func (b Builder) ICMP(typ, code uint8) Builder {
	b.l4, b.proto = l4ICMP, ProtoICMP
	b.icmpType, b.icmpCode, b.echo = typ, code, false
	return b
}

// Echo is an ICMP echo request: type 8 under IPv4, 128 under IPv6.
func (b Builder) Echo() Builder {
	b = b.ICMP(8, 0)
	b.echo = true
	return b
}

// VRRP adds a VRRP advertisement (IP protocol 112) for virtual router vrid: version 2 (no
// authentication, 1 s interval) under IPv4, version 3 (1 s interval) under IPv6. The TTL defaults
// to 255, as RFC 5798 requires.
func (b Builder) VRRP(vrid, priority uint8, addrs ...netip.Addr) Builder {
	b.l4, b.proto = l4VRRP, ProtoVRRP
	b.vrid, b.vrrpPrio = vrid, priority
	b.vrrpAddrs = slices.Clone(addrs)
	return b
}

// Proto makes the layer above IP raw bytes (the payload) under protocol number p.
func (b Builder) Proto(p uint8) Builder {
	b.l4, b.proto = l4Raw, p
	return b
}

// Payload sets the bytes after the innermost header.
func (b Builder) Payload(p []byte) Builder {
	b.payload = slices.Clone(p)
	return b
}

// PadTo appends zero bytes after the packet until the frame is n bytes long (an Ethernet trailer,
// as NICs add to reach the 60-byte minimum). IP length fields do not count it.
func (b Builder) PadTo(n int) Builder {
	b.padTo = n
	return b
}

// IHL overrides the IPv4 header length field (in 4-byte words, 0..15). The header checksum is
// computed over the corrupted header, so that field is the only thing wrong.
func (b Builder) IHL(words uint8) Builder {
	b.mustL3(l3IPv4, "IHL")
	b.ihl = some(words & 0x0f)
	return b
}

// TotalLength overrides the IPv4 total length field.
func (b Builder) TotalLength(n uint16) Builder {
	b.mustL3(l3IPv4, "TotalLength")
	b.totLen = some(n)
	return b
}

// PayloadLength overrides the IPv6 payload length field.
func (b Builder) PayloadLength(n uint16) Builder {
	b.mustL3(l3IPv6, "PayloadLength")
	b.payloadLen = some(n)
	return b
}

// Version overrides the IP version field.
func (b Builder) Version(v uint8) Builder {
	b.version = some(v & 0x0f)
	return b
}

// BadL4Checksum flips the bits of the TCP/UDP/ICMP/VRRP checksum after computing it.
func (b Builder) BadL4Checksum() Builder {
	b.badL4Checksum = true
	return b
}

// Truncate cuts the finished frame (after PadTo) to its first n bytes; a longer n changes nothing.
func (b Builder) Truncate(n int) Builder {
	if n < 0 {
		panic("packet: negative truncation")
	}
	b.truncate = some(n)
	return b
}

// mustL3 panics unless the network layer is k: options and corruptions of one IP version make
// no sense for another.
func (b Builder) mustL3(k l3Kind, method string) {
	if b.l3 != k {
		name := "IPv4"
		if k == l3IPv6 {
			name = "IPv6"
		}
		panic(fmt.Sprintf("packet: %s needs the %s layer first", method, name))
	}
}

// Build serializes the frame.
func (b Builder) Build() []byte {
	if b.l4 != l4None && b.l3 != l3IPv4 && b.l3 != l3IPv6 {
		panic("packet: a transport layer needs IPv4 or IPv6 first")
	}
	if b.l4 == l4ICMP && b.l3 == l3IPv6 {
		b.proto = ProtoICMPv6
		if b.echo {
			b.icmpType = 128
		}
	}

	frame := make([]byte, 0, 128+len(b.payload)+len(b.options))
	frame = append(frame, b.dst[:]...)
	frame = append(frame, b.src[:]...)
	etherType := map[l3Kind]uint16{l3ARP: EtherTypeARP, l3IPv4: EtherTypeIPv4, l3IPv6: EtherTypeIPv6}[b.l3]
	if b.etherType.set {
		etherType = b.etherType.v
	}
	for _, t := range b.tags {
		frame = binary.BigEndian.AppendUint16(frame, t.tpid)
		frame = binary.BigEndian.AppendUint16(frame, t.tci)
	}
	frame = binary.BigEndian.AppendUint16(frame, etherType)

	switch b.l3 {
	case l3None:
		frame = append(frame, b.payload...)
	case l3ARP:
		frame = b.appendARP(frame)
	case l3IPv4:
		frame = b.appendIPv4(frame)
	case l3IPv6:
		frame = b.appendIPv6(frame)
	}

	for len(frame) < b.padTo {
		frame = append(frame, 0)
	}
	if b.truncate.set && b.truncate.v < len(frame) {
		frame = frame[:b.truncate.v]
	}
	return frame
}

func (b Builder) appendARP(frame []byte) []byte {
	frame = binary.BigEndian.AppendUint16(frame, 1) // hardware: Ethernet
	frame = binary.BigEndian.AppendUint16(frame, EtherTypeIPv4)
	frame = append(frame, 6, 4)
	frame = binary.BigEndian.AppendUint16(frame, b.arp.op)
	frame = append(frame, b.arp.senderMAC[:]...)
	frame = append(frame, b.arp.senderIP.AsSlice()...)
	frame = append(frame, b.arp.targetMAC[:]...)
	frame = append(frame, b.arp.targetIP.AsSlice()...)
	return append(frame, b.payload...)
}

func (b Builder) ttlOr(def uint8) uint8 {
	if b.ttl.set {
		return b.ttl.v
	}
	if b.l4 == l4VRRP {
		return 255
	}
	return def
}

func (b Builder) appendIPv4(frame []byte) []byte {
	l4 := b.transport()
	hlen := ipv4HeaderLen + len(b.options)
	tot := uint16(hlen + len(l4))
	if b.totLen.set {
		tot = b.totLen.v
	}
	ihl := uint8(hlen / 4)
	if b.ihl.set {
		ihl = b.ihl.v
	}
	version := uint8(4)
	if b.version.set {
		version = b.version.v
	}
	frag := b.fragOff / 8
	if b.dontFrag {
		frag |= 0x4000
	}
	if b.more {
		frag |= 0x2000
	}

	h := make([]byte, hlen)
	h[0] = version<<4 | ihl
	h[1] = b.tos
	binary.BigEndian.PutUint16(h[2:], tot)
	binary.BigEndian.PutUint16(h[4:], b.ipID)
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8] = b.ttlOr(64)
	h[9] = b.proto
	copy(h[12:], b.ipSrc.AsSlice())
	copy(h[16:], b.ipDst.AsSlice())
	copy(h[20:], b.options)
	binary.BigEndian.PutUint16(h[10:], Checksum(h))

	b.fillL4Checksum(l4, pseudoV4(b.ipSrc, b.ipDst, b.proto, len(l4)))
	frame = append(frame, h...)
	return append(frame, l4...)
}

func (b Builder) appendIPv6(frame []byte) []byte {
	l4 := b.transport()

	// Extension headers, each pointing at the next; the last points at the transport.
	var ext []byte
	for i, e := range b.ext {
		next := b.proto
		if i+1 < len(b.ext) {
			next = b.ext[i+1].typ
		}
		if e.typ == ProtoESP {
			body := padTo8(e.body, 0)
			ext = append(ext, body...)
			continue
		}
		h := padTo8(append([]byte{next, 0}, e.body...), 0)
		if e.typ == ProtoAH {
			h[1] = uint8(len(h)/4 - 2)
		} else {
			h[1] = uint8(len(h)/8 - 1)
		}
		ext = append(ext, h...)
	}
	first := b.proto
	if len(b.ext) > 0 {
		first = b.ext[0].typ
	}

	plen := uint16(len(ext) + len(l4))
	if b.payloadLen.set {
		plen = b.payloadLen.v
	}
	version := uint8(6)
	if b.version.set {
		version = b.version.v
	}
	h := make([]byte, ipv6HeaderLen)
	binary.BigEndian.PutUint32(h, uint32(version)<<28|uint32(b.tos)<<20)
	binary.BigEndian.PutUint16(h[4:], plen)
	h[6] = first
	h[7] = b.ttlOr(64)
	copy(h[8:], b.ipSrc.AsSlice())
	copy(h[24:], b.ipDst.AsSlice())

	b.fillL4Checksum(l4, pseudoV6(b.ipSrc, b.ipDst, b.proto, len(l4)))
	frame = append(frame, h...)
	frame = append(frame, ext...)
	return append(frame, l4...)
}

func padTo8(p []byte, fill byte) []byte {
	for len(p)%8 != 0 {
		p = append(p, fill)
	}
	return p
}

// transport serializes the layer above IP with a zero checksum; fillL4Checksum completes it.
func (b Builder) transport() []byte {
	var h []byte
	switch b.l4 {
	case l4None, l4Raw:
		return slices.Clone(b.payload)
	case l4TCP:
		h = make([]byte, tcpHeaderLen)
		binary.BigEndian.PutUint16(h[0:], b.sport)
		binary.BigEndian.PutUint16(h[2:], b.dport)
		binary.BigEndian.PutUint32(h[4:], b.seq)
		binary.BigEndian.PutUint32(h[8:], b.ack)
		h[12] = (tcpHeaderLen / 4) << 4
		h[13] = uint8(b.tcpFlags)
		binary.BigEndian.PutUint16(h[14:], 65535)
	case l4UDP:
		h = make([]byte, udpHeaderLen)
		binary.BigEndian.PutUint16(h[0:], b.sport)
		binary.BigEndian.PutUint16(h[2:], b.dport)
		binary.BigEndian.PutUint16(h[4:], uint16(udpHeaderLen+len(b.payload)))
	case l4ICMP:
		h = []byte{b.icmpType, b.icmpCode, 0, 0, 0, 0, 0, 0}
	case l4VRRP:
		h = b.vrrpHeader()
	}
	return append(h, b.payload...)
}

func (b Builder) vrrpHeader() []byte {
	if b.l3 == l3IPv6 {
		// RFC 5798: version 3, type 1 (advertisement), 12-bit max advert interval in centiseconds.
		h := []byte{3<<4 | 1, b.vrid, b.vrrpPrio, uint8(len(b.vrrpAddrs)), 0, 100, 0, 0}
		for _, a := range b.vrrpAddrs {
			h = append(h, a.AsSlice()...)
		}
		return h
	}
	// RFC 3768: version 2, type 1, no authentication, 1 s interval, 8 bytes of authentication data.
	h := []byte{2<<4 | 1, b.vrid, b.vrrpPrio, uint8(len(b.vrrpAddrs)), 0, 1, 0, 0}
	for _, a := range b.vrrpAddrs {
		h = append(h, mustV4(a).AsSlice()...)
	}
	return append(h, make([]byte, 8)...)
}

// fillL4Checksum writes the checksum of the transport segment l4 in place. pseudo is the
// pseudo-header sum for protocols that cover it.
func (b Builder) fillL4Checksum(l4 []byte, pseudo uint32) {
	var off int
	switch b.l4 {
	case l4TCP:
		off = 16
	case l4UDP:
		off = 6
	case l4ICMP:
		off = 2
	case l4VRRP:
		off = 6
	default:
		return
	}
	if b.l4 == l4ICMP && b.l3 == l3IPv4 {
		pseudo = 0 // ICMPv4 covers only its own message
	}
	if b.l4 == l4VRRP && b.l3 == l3IPv4 {
		pseudo = 0 // VRRPv2 covers only its own message
	}
	c := finish(sum(pseudo, l4))
	if b.l4 == l4UDP && c == 0 {
		c = 0xffff // 0 means "no checksum" in UDP
	}
	if b.badL4Checksum {
		c = ^c
	}
	binary.BigEndian.PutUint16(l4[off:], c)
}

// Checksum is the Internet checksum (RFC 1071) of p: the ones' complement of the ones' complement
// sum of its 16-bit big-endian words, an odd last byte padded with zero.
func Checksum(p []byte) uint16 {
	return finish(sum(0, p))
}

func sum(acc uint32, p []byte) uint32 {
	for len(p) >= 2 {
		acc += uint32(binary.BigEndian.Uint16(p))
		p = p[2:]
	}
	if len(p) == 1 {
		acc += uint32(p[0]) << 8
	}
	return acc
}

func finish(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}

func pseudoV4(src, dst netip.Addr, proto uint8, n int) uint32 {
	acc := sum(0, src.AsSlice())
	acc = sum(acc, dst.AsSlice())
	return acc + uint32(proto) + uint32(n)
}

func pseudoV6(src, dst netip.Addr, proto uint8, n int) uint32 {
	acc := sum(0, src.AsSlice())
	acc = sum(acc, dst.AsSlice())
	return acc + uint32(n>>16) + uint32(n&0xffff) + uint32(proto)
}
