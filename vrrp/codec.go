package vrrp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Version is the VRRP protocol version: 2 (RFC 3768) or 3 (RFC 5798).
type Version uint8

// The supported versions.
const (
	V2 Version = 2
	V3 Version = 3
)

// AuthType is the VRRPv2 authentication type. VRRPv3 has no authentication.
type AuthType uint8

const (
	// AuthNone sends eight zero bytes of authentication data (v2); received data is ignored.
	AuthNone AuthType = 0
	// AuthPass is keepalived's "auth_type PASS": the password in clear, zero-padded to 8 bytes.
	AuthPass AuthType = 1
	// authAH (RFC 2338 IP Authentication Header) is not supported: such packets are rejected.
)

// Wire constants.
const (
	// Proto is the IP protocol number (IPv4) / next header (IPv6) of VRRP.
	Proto = 112
	// TTL is the only TTL / hop limit an advertisement may be sent or received with.
	TTL = 255
	// TypeAdvertisement is the only VRRP packet type.
	TypeAdvertisement = 1

	headerLen = 8 // version/type, VRID, priority, count, auth type|rsvd+interval, checksum
	authLen   = 8 // v2 authentication data, always present in v2
	// MaxTrailing is how many bytes after the advertisement (addresses and, in v2, the
	// authentication data) Parse tolerates and ignores. They are still covered by the checksum
	// (the sender's checksum spans everything it sent). Eight bytes covers a v3 sender that
	// appends a v2-style authentication area; anything longer is ReasonOversize.
	MaxTrailing = 8
	// MaxV3Interval is the largest VRRPv3 advertisement interval (4095 centiseconds).
	MaxV3Interval = 4095 * 10 * time.Millisecond
	// MaxV2Interval is the largest VRRPv2 advertisement interval (255 seconds).
	MaxV2Interval = 255 * time.Second
)

// Multicast destinations of advertisements (RFC 5798 5.1.1.2 and 5.1.2.2).
var (
	GroupV4 = netip.AddrFrom4([4]byte{224, 0, 0, 18})
	GroupV6 = netip.MustParseAddr("ff02::12")
)

// Advert is a decoded VRRP advertisement.
type Advert struct {
	Version  Version
	VRID     uint8
	Priority uint8
	// Interval is the advertisement interval: whole seconds on the v2 wire (1..255 s), centiseconds
	// on the v3 wire (10 ms..40.95 s).
	Interval time.Duration
	Auth     AuthType // v2 only; AuthNone in v3
	Password string   // v2 AuthPass, at most 8 bytes (trailing NULs are padding and dropped)
	Addrs    []netip.Addr
}

// Marshal encodes a as the VRRP payload of an IP packet from src to dst (no IP header), with the
// checksum filled in. pseudoHeader selects whether a v3 IPv4 checksum covers the IPv4
// pseudo-header (RFC 5798 5.2.8; keepalived's default); v3 over IPv6 always does and v2 never
// does. src and dst are only used by v3 (v2 is IPv4-only and its checksum covers the VRRP
// message alone).
func (a Advert) Marshal(src, dst netip.Addr, pseudoHeader bool) ([]byte, error) {
	if a.VRID == 0 {
		return nil, errors.New("vrrp: marshal: vrid 0")
	}
	n := len(a.Addrs)
	if n == 0 || n > 255 {
		return nil, fmt.Errorf("vrrp: marshal: %d addresses, want 1..255", n)
	}
	is6 := a.Addrs[0].Unmap().Is6()
	for _, ad := range a.Addrs {
		if !ad.IsValid() {
			return nil, errors.New("vrrp: marshal: invalid address")
		}
		if ad.Unmap().Is6() != is6 {
			return nil, errors.New("vrrp: marshal: addresses of mixed families")
		}
	}
	alen := 4
	if is6 {
		alen = 16
	}
	size := headerLen + n*alen
	var b []byte
	switch a.Version {
	case V2:
		if is6 {
			return nil, errors.New("vrrp: marshal: v2 carries IPv4 addresses only")
		}
		if a.Interval <= 0 || a.Interval > MaxV2Interval || a.Interval%time.Second != 0 {
			return nil, fmt.Errorf("vrrp: marshal: v2 interval %v, want whole seconds in 1s..255s", a.Interval)
		}
		switch a.Auth {
		case AuthNone:
			if a.Password != "" {
				return nil, errors.New("vrrp: marshal: password without auth type PASS")
			}
		case AuthPass:
			if len(a.Password) > authLen {
				return nil, fmt.Errorf("vrrp: marshal: password longer than %d bytes", authLen)
			}
		default:
			return nil, fmt.Errorf("vrrp: marshal: unsupported auth type %d", a.Auth)
		}
		b = make([]byte, size+authLen)
		b[4] = byte(a.Auth)
		b[5] = byte(a.Interval / time.Second)
		copy(b[size:], a.Password)
	case V3:
		if a.Auth != AuthNone || a.Password != "" {
			return nil, errors.New("vrrp: marshal: v3 has no authentication")
		}
		if a.Interval <= 0 || a.Interval > MaxV3Interval || a.Interval%(10*time.Millisecond) != 0 {
			return nil, fmt.Errorf("vrrp: marshal: v3 interval %v, want centiseconds in 10ms..40.95s", a.Interval)
		}
		s, d := src.Unmap(), dst.Unmap()
		if !s.IsValid() || !d.IsValid() || s.Is6() != is6 || d.Is6() != is6 {
			return nil, errors.New("vrrp: marshal: source and destination must be of the addresses' family")
		}
		b = make([]byte, size)
		binary.BigEndian.PutUint16(b[4:], uint16(a.Interval/(10*time.Millisecond)))
	default:
		return nil, fmt.Errorf("vrrp: marshal: version %d", a.Version)
	}
	b[0] = byte(a.Version)<<4 | TypeAdvertisement
	b[1] = a.VRID
	b[2] = a.Priority
	b[3] = byte(n)
	off := headerLen
	for _, ad := range a.Addrs {
		ad = ad.Unmap()
		if is6 {
			x := ad.As16()
			copy(b[off:], x[:])
		} else {
			x := ad.As4()
			copy(b[off:], x[:])
		}
		off += alen
	}
	binary.BigEndian.PutUint16(b[6:], checksum(b, src, dst, a.Version == V3 && (is6 || pseudoHeader)))
	return b, nil
}

// Reason is why Parse rejected a packet. String gives a name fit for a metric label.
type Reason uint8

// The reject reasons.
const (
	ReasonTruncated Reason = iota + 1 // shorter than the header, or than its address count (and v2 auth data) say
	ReasonOversize                    // more than MaxTrailing bytes after the advertisement
	ReasonVersion                     // not 2 or 3, or not the expected version
	ReasonType                        // not an ADVERTISEMENT (type 1)
	ReasonChecksum                    // bad checksum
	ReasonTTL                         // TTL / hop limit not 255: the packet was routed
	ReasonVRID                        // VRID 0 or not ours
	ReasonAuth                        // v2 auth type or password mismatch
	ReasonInterval                    // interval 0, or (v2) not our advertisement interval
	ReasonAddrCount                   // address count 0
	ReasonFamily                      // source/destination family mismatch, or v2 over IPv6
)

// Reasons lists every Reason, for registering metrics.
var Reasons = []Reason{
	ReasonTruncated, ReasonOversize, ReasonVersion, ReasonType, ReasonChecksum, ReasonTTL,
	ReasonVRID, ReasonAuth, ReasonInterval, ReasonAddrCount, ReasonFamily,
}

var reasonNames = [...]string{
	ReasonTruncated: "truncated",
	ReasonOversize:  "oversize",
	ReasonVersion:   "version",
	ReasonType:      "type",
	ReasonChecksum:  "checksum",
	ReasonTTL:       "ttl",
	ReasonVRID:      "vrid",
	ReasonAuth:      "auth",
	ReasonInterval:  "interval",
	ReasonAddrCount: "addr_count",
	ReasonFamily:    "family",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "reason_" + strconv.Itoa(int(r))
}

// RejectError is the error Parse returns.
type RejectError struct {
	Reason Reason
	Detail string
}

func (e *RejectError) Error() string {
	return "vrrp: reject (" + e.Reason.String() + "): " + e.Detail
}

func reject(r Reason, format string, args ...any) error {
	return &RejectError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ParseOptions are what Parse checks a packet against.
type ParseOptions struct {
	// Version is the expected version; 0 accepts 2 and 3.
	Version Version
	// VRID is the expected VRID (ReasonVRID otherwise); 0 accepts any VRID 1..255, for a reader
	// that demultiplexes several instances.
	VRID uint8
	// TTL is the IPv4 TTL / IPv6 hop limit of the packet; anything but 255 is ReasonTTL.
	TTL int
	// PseudoHeader makes a v3 IPv4 checksum cover the IPv4 pseudo-header (RFC 5798, keepalived's
	// default); some peers leave it out. v3 over IPv6 always covers it; v2 never does.
	PseudoHeader bool
	// Auth is the expected v2 auth type (ReasonAuth otherwise). Ignored for v3.
	Auth AuthType
	// Password is the v2 AuthPass password; like keepalived, only its first 8 bytes count.
	Password string
	// Interval is our v2 advertisement interval: a v2 advert with another is ReasonInterval
	// (RFC 3768 7.1). 0 skips the check. Ignored for v3, whose backups adopt the master's.
	Interval time.Duration
}

// Parse decodes and checks the VRRP payload b of an IP packet from src to dst. Every error is a
// *RejectError. The checks run in this order: TTL, source/destination family, header length,
// version, type, v2 over IPv6 (family), length against the address count, checksum, VRID,
// address count, interval, authentication. Up to MaxTrailing bytes after the advertisement are
// ignored.
func Parse(b []byte, src, dst netip.Addr, o ParseOptions) (Advert, error) {
	if o.TTL != TTL {
		return Advert{}, reject(ReasonTTL, "ttl %d, want %d", o.TTL, TTL)
	}
	s, d := src.Unmap(), dst.Unmap()
	if !s.IsValid() || !d.IsValid() || s.Is6() != d.Is6() {
		return Advert{}, reject(ReasonFamily, "source %v, destination %v", src, dst)
	}
	is6 := s.Is6()
	if len(b) < headerLen {
		return Advert{}, reject(ReasonTruncated, "%d bytes, header is %d", len(b), headerLen)
	}
	v := Version(b[0] >> 4)
	if (v != V2 && v != V3) || (o.Version != 0 && v != o.Version) {
		return Advert{}, reject(ReasonVersion, "version %d, want %s", v, wantVersion(o.Version))
	}
	if t := b[0] & 0x0f; t != TypeAdvertisement {
		return Advert{}, reject(ReasonType, "type %d", t)
	}
	if v == V2 && is6 {
		return Advert{}, reject(ReasonFamily, "v2 over IPv6")
	}
	alen := 4
	if is6 {
		alen = 16
	}
	n := int(b[3])
	want := headerLen + n*alen
	if v == V2 {
		want += authLen
	}
	if len(b) < want {
		return Advert{}, reject(ReasonTruncated, "%d bytes, %d addresses need %d", len(b), n, want)
	}
	if len(b) > want+MaxTrailing {
		return Advert{}, reject(ReasonOversize, "%d bytes, %d addresses need %d", len(b), n, want)
	}
	if c := checksum(b, s, d, v == V3 && (is6 || o.PseudoHeader)); c != 0 {
		return Advert{}, reject(ReasonChecksum, "checksum %#04x does not verify", binary.BigEndian.Uint16(b[6:]))
	}
	a := Advert{Version: v, VRID: b[1], Priority: b[2]}
	if a.VRID == 0 || (o.VRID != 0 && a.VRID != o.VRID) {
		return Advert{}, reject(ReasonVRID, "vrid %d, want %d", a.VRID, o.VRID)
	}
	if n == 0 {
		return Advert{}, reject(ReasonAddrCount, "no addresses")
	}
	if v == V2 {
		a.Interval = time.Duration(b[5]) * time.Second
		if a.Interval == 0 || (o.Interval != 0 && a.Interval != o.Interval) {
			return Advert{}, reject(ReasonInterval, "interval %v, want %v", a.Interval, o.Interval)
		}
		a.Auth = AuthType(b[4])
		if a.Auth != AuthNone && a.Auth != AuthPass {
			return Advert{}, reject(ReasonAuth, "unsupported auth type %d", a.Auth)
		}
		if a.Auth != o.Auth {
			return Advert{}, reject(ReasonAuth, "auth type %d, want %d", a.Auth, o.Auth)
		}
		if a.Auth == AuthPass {
			var pw [authLen]byte
			copy(pw[:], o.Password)
			got := b[headerLen+n*alen : headerLen+n*alen+authLen]
			if string(got) != string(pw[:]) {
				return Advert{}, reject(ReasonAuth, "password mismatch")
			}
			end := authLen
			for end > 0 && got[end-1] == 0 {
				end--
			}
			a.Password = string(got[:end])
		}
	} else {
		a.Interval = time.Duration(binary.BigEndian.Uint16(b[4:])&0x0fff) * 10 * time.Millisecond
		if a.Interval == 0 {
			return Advert{}, reject(ReasonInterval, "interval 0")
		}
	}
	a.Addrs = make([]netip.Addr, n)
	for i := range n {
		p := b[headerLen+i*alen:]
		if is6 {
			a.Addrs[i] = netip.AddrFrom16([16]byte(p[:16]))
		} else {
			a.Addrs[i] = netip.AddrFrom4([4]byte(p[:4]))
		}
	}
	return a, nil
}

func wantVersion(v Version) string {
	if v == 0 {
		return "2 or 3"
	}
	return strconv.Itoa(int(v))
}

// checksum returns the Internet checksum (RFC 1071) of b, preceded by the IPv4 or IPv6
// pseudo-header of a VRRP packet from src to dst when pseudo is set. On a packet whose checksum
// field is filled in it returns 0 if the checksum verifies; on one whose field is zero it returns
// the value to store.
func checksum(b []byte, src, dst netip.Addr, pseudo bool) uint16 {
	var sum uint32
	add := func(p []byte) {
		for len(p) >= 2 {
			sum += uint32(p[0])<<8 | uint32(p[1])
			p = p[2:]
		}
		if len(p) == 1 {
			sum += uint32(p[0]) << 8
		}
	}
	if pseudo {
		s, d := src.Unmap(), dst.Unmap()
		if s.Is4() {
			x, y := s.As4(), d.As4()
			add(x[:])
			add(y[:])
			sum += Proto + uint32(len(b)) // zero, protocol; length
		} else {
			x, y := s.As16(), d.As16()
			add(x[:])
			add(y[:])
			sum += uint32(len(b))>>16 + uint32(len(b))&0xffff + Proto // 32-bit length; zeros, next header
		}
	}
	add(b)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
