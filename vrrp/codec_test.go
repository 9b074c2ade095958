package vrrp

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

var (
	src4 = netip.MustParseAddr("192.0.2.1")
	vip1 = netip.MustParseAddr("192.0.2.10")
	vip2 = netip.MustParseAddr("192.0.2.11")
	src6 = netip.MustParseAddr("fe80::1")
	vip6 = netip.MustParseAddr("2001:db8::10")
)

// goldens are hand-encoded advertisements. Each checksum was computed by hand, by summing the
// 16-bit words listed in its comment (one's complement, carries folded back) and complementing.
var goldens = []struct {
	name     string
	adv      Advert
	src, dst netip.Addr
	pseudo   bool
	wire     []byte
}{
	{
		name: "v2 IPv4 auth PASS secret 2 VIPs",
		adv: Advert{Version: V2, VRID: 51, Priority: 100, Interval: time.Second, Auth: AuthPass,
			Password: "secret", Addrs: []netip.Addr{vip1, vip2}},
		src: src4, dst: GroupV4,
		wire: []byte{
			0x21,       // version 2, type 1 (ADVERTISEMENT)
			0x33,       // VRID 51
			0x64,       // priority 100
			0x02,       // count IP addrs 2
			0x01,       // auth type 1 (PASS)
			0x01,       // advert interval 1 s
			0xb9, 0x66, // checksum: 2133+6402+0101+c000+020a+c000+020b+7365+6372+6574+0000 = 3_4696 → 4699 → ~ = b966
			192, 0, 2, 10, // 192.0.2.10
			192, 0, 2, 11, // 192.0.2.11
			's', 'e', 'c', 'r', 'e', 't', 0, 0, // authentication data: "secret", zero-padded to 8
		},
	},
	{
		name: "v3 IPv4 with pseudo-header 100cs",
		adv: Advert{Version: V3, VRID: 51, Priority: 100, Interval: time.Second,
			Addrs: []netip.Addr{vip1, vip2}},
		src: src4, dst: GroupV4, pseudo: true,
		wire: []byte{
			0x31,       // version 3, type 1
			0x33,       // VRID 51
			0x64,       // priority 100
			0x02,       // count IPv4 addrs 2
			0x00, 0x64, // rsvd 0, max advert interval 100 cs
			0x43, 0xbb, // checksum: pseudo-header c000+0201 (192.0.2.1) + e000+0012 (224.0.0.18)
			//             + 0070 (zero, protocol 112) + 0010 (length 16)
			//             + message 3133+6402+0064+c000+020a+c000+020b = 2_bc42 → bc44 → ~ = 43bb
			192, 0, 2, 10, // 192.0.2.10
			192, 0, 2, 11, // 192.0.2.11
		},
	},
	{
		name: "v3 IPv4 without pseudo-header 100cs",
		adv: Advert{Version: V3, VRID: 51, Priority: 100, Interval: time.Second,
			Addrs: []netip.Addr{vip1, vip2}},
		src: src4, dst: GroupV4, pseudo: false,
		wire: []byte{
			0x31, 0x33, 0x64, 0x02, // version 3 type 1, VRID 51, priority 100, 2 addrs
			0x00, 0x64, // rsvd 0, max advert interval 100 cs
			0xe6, 0x4f, // checksum: message only 3133+6402+0064+c000+020a+c000+020b = 1_19af → 19b0 → ~ = e64f
			192, 0, 2, 10, // 192.0.2.10
			192, 0, 2, 11, // 192.0.2.11
		},
	},
	{
		name: "v3 IPv6 100cs",
		adv: Advert{Version: V3, VRID: 51, Priority: 100, Interval: time.Second,
			Addrs: []netip.Addr{vip6}},
		src: src6, dst: GroupV6,
		wire: []byte{
			0x31,       // version 3, type 1
			0x33,       // VRID 51
			0x64,       // priority 100
			0x01,       // count IPv6 addrs 1
			0x00, 0x64, // rsvd 0, max advert interval 100 cs
			0x3e, 0x7f, // checksum: pseudo-header fe80+0001 (fe80::1) + ff02+0012 (ff02::12)
			//             + 0000+0018 (length 24) + 0000+0070 (zeros, next header 112)
			//             + message 3133+6402+0064+2001+0db8+0010 = 3_c17d → c180 → ~ = 3e7f
			0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // 2001:db8::10
		},
	},
}

func goldenOptions(a Advert, pseudo bool) ParseOptions {
	return ParseOptions{Version: a.Version, VRID: a.VRID, TTL: 255, PseudoHeader: pseudo,
		Auth: a.Auth, Password: a.Password, Interval: a.Interval}
}

func TestCodecGoldenMarshal(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			got, err := g.adv.Marshal(g.src, g.dst, g.pseudo)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, g.wire) {
				t.Fatalf("Marshal:\n got % x\nwant % x", got, g.wire)
			}
		})
	}
}

func TestCodecGoldenParse(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			got, err := Parse(g.wire, g.src, g.dst, goldenOptions(g.adv, g.pseudo))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, g.adv) {
				t.Fatalf("Parse:\n got %+v\nwant %+v", got, g.adv)
			}
		})
	}
}

func TestCodecRoundTrip(t *testing.T) {
	many := make([]netip.Addr, 255)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
	}
	many6 := make([]netip.Addr, 255)
	for i := range many6 {
		many6[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
	}
	for _, tc := range []struct {
		name     string
		adv      Advert
		src, dst netip.Addr
		pseudo   bool
	}{
		{"v2 no auth", Advert{Version: V2, VRID: 1, Priority: 255, Interval: 255 * time.Second, Addrs: []netip.Addr{vip1}}, src4, GroupV4, false},
		{"v2 8-byte password", Advert{Version: V2, VRID: 255, Priority: 1, Interval: 3 * time.Second, Auth: AuthPass, Password: "12345678", Addrs: many}, src4, GroupV4, false},
		{"v2 empty password", Advert{Version: V2, VRID: 7, Priority: 0, Interval: time.Second, Auth: AuthPass, Addrs: []netip.Addr{vip1}}, src4, GroupV4, false},
		{"v3 min interval unicast", Advert{Version: V3, VRID: 9, Priority: 200, Interval: 10 * time.Millisecond, Addrs: []netip.Addr{vip1}}, src4, netip.MustParseAddr("192.0.2.2"), true},
		{"v3 max interval no pseudo", Advert{Version: V3, VRID: 9, Priority: 200, Interval: MaxV3Interval, Addrs: many}, src4, GroupV4, false},
		{"v3 IPv6 255 addrs", Advert{Version: V3, VRID: 9, Priority: 0, Interval: 1500 * time.Millisecond, Addrs: many6}, src6, GroupV6, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.adv.Marshal(tc.src, tc.dst, tc.pseudo)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(b, tc.src, tc.dst, goldenOptions(tc.adv, tc.pseudo))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.adv) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tc.adv)
			}
		})
	}
}

// refill recomputes the checksum of a mutated packet.
func refill(b []byte, src, dst netip.Addr, pseudo bool) []byte {
	b[6], b[7] = 0, 0
	c := checksum(b, src, dst, pseudo)
	b[6], b[7] = byte(c>>8), byte(c)
	return b
}

func TestParseRejects(t *testing.T) {
	v2, v3, v3n, v6 := goldens[0], goldens[1], goldens[2], goldens[3]
	// mutate copies a golden packet, applies f and, if fix, recomputes the checksum.
	mutate := func(g int, fix bool, f func(b []byte) []byte) []byte {
		b := f(bytes.Clone(goldens[g].wire))
		if fix {
			refill(b, goldens[g].src, goldens[g].dst, goldens[g].adv.Version == V3 && (goldens[g].pseudo || goldens[g].src.Is6()))
		}
		return b
	}
	o2 := goldenOptions(v2.adv, false)
	o3 := goldenOptions(v3.adv, true)
	o6 := goldenOptions(v6.adv, false)
	with := func(o ParseOptions, f func(*ParseOptions)) ParseOptions { f(&o); return o }
	for _, tc := range []struct {
		name     string
		b        []byte
		src, dst netip.Addr
		o        ParseOptions
		want     Reason
	}{
		{"ttl 254", v3.wire, src4, GroupV4, with(o3, func(o *ParseOptions) { o.TTL = 254 }), ReasonTTL},
		{"ttl unknown", v3.wire, src4, GroupV4, with(o3, func(o *ParseOptions) { o.TTL = 0 }), ReasonTTL},
		{"hop limit 1", v6.wire, src6, GroupV6, with(o6, func(o *ParseOptions) { o.TTL = 1 }), ReasonTTL},
		{"empty", nil, src4, GroupV4, o3, ReasonTruncated},
		{"short header", v3.wire[:7], src4, GroupV4, o3, ReasonTruncated},
		{"short of an address", v3.wire[:15], src4, GroupV4, o3, ReasonTruncated},
		{"count says 3", mutate(1, true, func(b []byte) []byte { b[3] = 3; return b }), src4, GroupV4, o3, ReasonTruncated},
		{"v2 without auth data", v2.wire[:16], src4, GroupV4, o2, ReasonTruncated},
		{"v2 short auth data", v2.wire[:23], src4, GroupV4, o2, ReasonTruncated},
		{"ipv6 short", v6.wire[:23], src6, GroupV6, o6, ReasonTruncated},
		{"9 trailing bytes", mutate(1, true, func(b []byte) []byte { return append(b, make([]byte, 9)...) }), src4, GroupV4, o3, ReasonOversize},
		{"count says 1, 12 extra", mutate(1, true, func(b []byte) []byte { b[3] = 1; return append(b, 1, 2, 3, 4, 5, 6, 7, 8) }), src4, GroupV4, o3, ReasonOversize},
		{"version 4", mutate(1, true, func(b []byte) []byte { b[0] = 0x41; return b }), src4, GroupV4, o3, ReasonVersion},
		{"version 1 any", mutate(1, true, func(b []byte) []byte { b[0] = 0x11; return b }), src4, GroupV4, with(o3, func(o *ParseOptions) { o.Version = 0 }), ReasonVersion},
		{"v3 expected, v2 got", v2.wire, src4, GroupV4, with(o2, func(o *ParseOptions) { o.Version = V3 }), ReasonVersion},
		{"v2 expected, v3 got", v3n.wire, src4, GroupV4, with(o3, func(o *ParseOptions) { o.Version = V2; o.PseudoHeader = false }), ReasonVersion},
		{"type 2", mutate(1, true, func(b []byte) []byte { b[0] = 0x32; return b }), src4, GroupV4, o3, ReasonType},
		{"type 0", mutate(0, true, func(b []byte) []byte { b[0] = 0x20; return b }), src4, GroupV4, o2, ReasonType},
		{"bad checksum", mutate(1, false, func(b []byte) []byte { b[7] ^= 1; return b }), src4, GroupV4, o3, ReasonChecksum},
		{"flipped address", mutate(0, false, func(b []byte) []byte { b[11] ^= 0x80; return b }), src4, GroupV4, o2, ReasonChecksum},
		{"pseudo-header expected, not sent", v3n.wire, src4, GroupV4, o3, ReasonChecksum},
		{"pseudo-header sent, not expected", v3.wire, src4, GroupV4, with(o3, func(o *ParseOptions) { o.PseudoHeader = false }), ReasonChecksum},
		{"pseudo-header other destination", v3.wire, src4, netip.MustParseAddr("192.0.2.2"), o3, ReasonChecksum},
		{"ipv6 other source", v6.wire, netip.MustParseAddr("fe80::2"), GroupV6, o6, ReasonChecksum},
		{"vrid 52", v3.wire, src4, GroupV4, with(o3, func(o *ParseOptions) { o.VRID = 52 }), ReasonVRID},
		{"vrid 0", mutate(1, true, func(b []byte) []byte { b[1] = 0; return b }), src4, GroupV4, with(o3, func(o *ParseOptions) { o.VRID = 0 }), ReasonVRID},
		{"auth none, PASS expected", mutate(0, true, func(b []byte) []byte { b[4] = 0; return b }), src4, GroupV4, o2, ReasonAuth},
		{"auth PASS, none expected", v2.wire, src4, GroupV4, with(o2, func(o *ParseOptions) { o.Auth = AuthNone; o.Password = "" }), ReasonAuth},
		{"auth AH", mutate(0, true, func(b []byte) []byte { b[4] = 2; return b }), src4, GroupV4, with(o2, func(o *ParseOptions) { o.Auth = 2; o.Password = "" }), ReasonAuth},
		{"wrong password", v2.wire, src4, GroupV4, with(o2, func(o *ParseOptions) { o.Password = "secreT" }), ReasonAuth},
		{"password prefix", v2.wire, src4, GroupV4, with(o2, func(o *ParseOptions) { o.Password = "secre" }), ReasonAuth},
		{"v2 interval 2s", v2.wire, src4, GroupV4, with(o2, func(o *ParseOptions) { o.Interval = 2 * time.Second }), ReasonInterval},
		{"v2 interval 0", mutate(0, true, func(b []byte) []byte { b[5] = 0; return b }), src4, GroupV4, with(o2, func(o *ParseOptions) { o.Interval = 0 }), ReasonInterval},
		{"v3 interval 0", mutate(1, true, func(b []byte) []byte { b[4], b[5] = 0xf0, 0; return b }), src4, GroupV4, o3, ReasonInterval},
		{"count 0", mutate(1, true, func(b []byte) []byte { b[3] = 0; return b[:8] }), src4, GroupV4, o3, ReasonAddrCount},
		{"v2 count 0", mutate(0, true, func(b []byte) []byte { b[3] = 0; return append(b[:8], b[16:]...) }), src4, GroupV4, o2, ReasonAddrCount},
		{"mixed families", v3.wire, src4, GroupV6, o3, ReasonFamily},
		{"invalid source", v3.wire, netip.Addr{}, GroupV4, o3, ReasonFamily},
		{"v2 over IPv6", v2.wire, src6, GroupV6, o2, ReasonFamily},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Parse(tc.b, tc.src, tc.dst, tc.o)
			var re *RejectError
			if !errors.As(err, &re) {
				t.Fatalf("Parse = %+v, %v; want a *RejectError", a, err)
			}
			if re.Reason != tc.want {
				t.Fatalf("reason %v (%v), want %v", re.Reason, err, tc.want)
			}
		})
	}
}

func TestParseLenient(t *testing.T) {
	v2, v3 := goldens[0], goldens[1]
	t.Run("8 trailing bytes", func(t *testing.T) {
		b := refill(append(bytes.Clone(v3.wire), 1, 2, 3, 4, 5, 6, 7, 8), src4, GroupV4, true)
		a, err := Parse(b, src4, GroupV4, goldenOptions(v3.adv, true))
		if err != nil || !reflect.DeepEqual(a, v3.adv) {
			t.Fatalf("Parse = %+v, %v", a, err)
		}
	})
	t.Run("any version, vrid, interval", func(t *testing.T) {
		if _, err := Parse(v2.wire, src4, GroupV4, ParseOptions{TTL: 255, Auth: AuthPass, Password: "secret"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("password truncated to 8 like keepalived", func(t *testing.T) {
		b, err := Advert{Version: V2, VRID: 1, Priority: 1, Interval: time.Second, Auth: AuthPass,
			Password: "longpass", Addrs: []netip.Addr{vip1}}.Marshal(src4, GroupV4, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(b, src4, GroupV4, ParseOptions{TTL: 255, Auth: AuthPass, Password: "longpassword"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("v2 auth none ignores auth data", func(t *testing.T) {
		b := bytes.Clone(v2.wire)
		b[4] = 0
		refill(b, src4, GroupV4, false)
		a, err := Parse(b, src4, GroupV4, ParseOptions{TTL: 255})
		if err != nil || a.Auth != AuthNone || a.Password != "" {
			t.Fatalf("Parse = %+v, %v", a, err)
		}
	})
	t.Run("v3 reserved bits ignored", func(t *testing.T) {
		b := bytes.Clone(v3.wire)
		b[4] |= 0xf0
		refill(b, src4, GroupV4, true)
		a, err := Parse(b, src4, GroupV4, goldenOptions(v3.adv, true))
		if err != nil || a.Interval != time.Second {
			t.Fatalf("Parse = %+v, %v", a, err)
		}
	})
	t.Run("4in6 source", func(t *testing.T) {
		m := netip.AddrFrom16(src4.As16())
		if _, err := Parse(v3.wire, m, GroupV4, goldenOptions(v3.adv, true)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestMarshalErrors(t *testing.T) {
	ok := Advert{Version: V3, VRID: 1, Priority: 100, Interval: time.Second, Addrs: []netip.Addr{vip1}}
	with := func(f func(*Advert)) Advert { a := ok; f(&a); return a }
	for _, tc := range []struct {
		name     string
		a        Advert
		src, dst netip.Addr
	}{
		{"version 0", with(func(a *Advert) { a.Version = 0 }), src4, GroupV4},
		{"vrid 0", with(func(a *Advert) { a.VRID = 0 }), src4, GroupV4},
		{"no addresses", with(func(a *Advert) { a.Addrs = nil }), src4, GroupV4},
		{"256 addresses", with(func(a *Advert) { a.Addrs = make([]netip.Addr, 256) }), src4, GroupV4},
		{"invalid address", with(func(a *Advert) { a.Addrs = []netip.Addr{vip1, {}} }), src4, GroupV4},
		{"mixed families", with(func(a *Advert) { a.Addrs = []netip.Addr{vip1, vip6} }), src4, GroupV4},
		{"v3 interval 0", with(func(a *Advert) { a.Interval = 0 }), src4, GroupV4},
		{"v3 interval 5ms", with(func(a *Advert) { a.Interval = 5 * time.Millisecond }), src4, GroupV4},
		{"v3 interval 41s", with(func(a *Advert) { a.Interval = 41 * time.Second }), src4, GroupV4},
		{"v3 auth", with(func(a *Advert) { a.Auth = AuthPass; a.Password = "x" }), src4, GroupV4},
		{"v3 family of src", ok, src6, GroupV6},
		{"v3 invalid dst", ok, src4, netip.Addr{}},
		{"v2 IPv6", with(func(a *Advert) { a.Version = V2; a.Addrs = []netip.Addr{vip6} }), src6, GroupV6},
		{"v2 interval 1.5s", with(func(a *Advert) { a.Version = V2; a.Interval = 1500 * time.Millisecond }), src4, GroupV4},
		{"v2 interval 256s", with(func(a *Advert) { a.Version = V2; a.Interval = 256 * time.Second }), src4, GroupV4},
		{"v2 password 9 bytes", with(func(a *Advert) { a.Version = V2; a.Auth = AuthPass; a.Password = "123456789" }), src4, GroupV4},
		{"v2 password without PASS", with(func(a *Advert) { a.Version = V2; a.Password = "x" }), src4, GroupV4},
		{"v2 auth AH", with(func(a *Advert) { a.Version = V2; a.Auth = 2 }), src4, GroupV4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := tc.a.Marshal(tc.src, tc.dst, true); err == nil {
				t.Fatalf("Marshal = % x, want an error", b)
			}
		})
	}
}

func TestCodecReasons(t *testing.T) {
	seen := map[string]bool{}
	for i, r := range Reasons {
		if r != Reason(i+1) {
			t.Errorf("Reasons[%d] = %d", i, r)
		}
		s := r.String()
		if s == "" || seen[s] {
			t.Errorf("reason %d: name %q empty or repeated", r, s)
		}
		seen[s] = true
	}
	if len(Reasons) != int(ReasonFamily) {
		t.Errorf("Reasons has %d, want %d", len(Reasons), ReasonFamily)
	}
	if got := Reason(200).String(); got != "reason_200" {
		t.Errorf("unknown reason: %q", got)
	}
	err := error(&RejectError{Reason: ReasonTTL, Detail: "ttl 64, want 255"})
	if got, want := err.Error(), "vrrp: reject (ttl): ttl 64, want 255"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
