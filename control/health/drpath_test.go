package health

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/internal/testbed/netns"
)

func TestTCPFrame(t *testing.T) {
	for _, fam := range []struct{ src, dst string }{
		{"10.0.0.1", "10.0.0.100"},
		{"fd00::1", "fd00::100"},
	} {
		in := tcpFrame{
			srcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, dstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
			src: netip.AddrPortFrom(netip.MustParseAddr(fam.src), 40000), dst: netip.AddrPortFrom(netip.MustParseAddr(fam.dst), 3306),
			seq: 0x01020304, flags: tcpSYN, window: 64240, mss: 1460,
		}
		b := in.marshal()
		ipLen, pseudo := 20, []byte(nil)
		src, dst := in.src.Addr().AsSlice(), in.dst.Addr().AsSlice()
		if in.src.Addr().Is4() {
			if got := inetChecksum(0, b[14:34]); got != 0 {
				t.Fatalf("%s: IPv4 header does not sum to 0xffff (residue %#04x)", fam.src, got)
			}
			if tot := binary.BigEndian.Uint16(b[16:18]); int(tot) != len(b)-14 {
				t.Fatalf("IPv4 total length %d, frame carries %d", tot, len(b)-14)
			}
			pseudo = append(append(append([]byte{}, src...), dst...), 0, 6, 0, byte(len(b)-14-20))
		} else {
			ipLen = 40
			pseudo = append(append(append([]byte{}, src...), dst...), 0, 0, 0, byte(len(b)-14-40), 0, 0, 0, 6)
		}
		seg := b[14+ipLen:]
		if len(seg) != 24 || seg[12]>>4 != 6 || seg[20] != 2 || binary.BigEndian.Uint16(seg[22:]) != 1460 {
			t.Fatalf("%s: TCP header with MSS option: % x", fam.src, seg)
		}
		if got := inetChecksum(inetSum(0, pseudo), seg); got != 0 {
			t.Fatalf("%s: TCP checksum wrong (residue %#04x)", fam.src, got)
		}
		out, ok := parseTCPFrame(b)
		if !ok || out.src != in.src || out.dst != in.dst || out.seq != in.seq || out.flags != in.flags ||
			out.window != in.window || out.srcMAC.String() != in.srcMAC.String() || out.dstMAC.String() != in.dstMAC.String() {
			t.Fatalf("%s: round trip: sent %+v, parsed %+v (ok %t)", fam.src, in, out, ok)
		}
	}
	// RFC 1071 example: the checksum of 00 01 f2 03 f4 f5 f6 f7 is ^0xddf2.
	if got := inetChecksum(0, []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != ^uint16(0xddf2) {
		t.Fatalf("RFC 1071 example: %#04x", got)
	}
	if got := inetChecksum(0, []byte{0x01}); got != ^uint16(0x0100) {
		t.Fatalf("odd length: %#04x", got)
	}
}

// drBed is a LAN with a director and a direct-routing real server, as the data plane sees
// them: both hold the VIP (the director on eth0, the real server on lo with ARP hidden).
type drBed struct {
	dir, rs *netns.Node
	vip     netip.Addr
	srv     *netns.WhoAmI
}

func newDRBed(t *testing.T, dirCIDR, rsCIDR, vip string) *drBed {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("the DR path check needs root for network namespaces and AF_PACKET (%v)", os.ErrPermission)
	}
	lan := netns.NewLAN(t)
	b := &drBed{dir: lan.AddNode("dir", dirCIDR), rs: lan.AddNode("rs", rsCIDR), vip: netip.MustParseAddr(vip)}
	if err := b.rs.SetupRealServer(b.vip); err != nil {
		t.Fatal(err)
	}
	if err := b.dir.AddAddr(netns.NodeLink, netip.PrefixFrom(b.vip, b.vip.BitLen())); err != nil {
		t.Fatal(err)
	}
	// Every address of the real server, its own and the VIP on lo.
	b.srv = b.rs.ServeWhoAmI(t, net.JoinHostPort("::", "3306"), "rs")
	return b
}

// probeIn runs p in the director's network namespace.
func (b *drBed) probeIn(t *testing.T, p Prober) Result {
	t.Helper()
	var r Result
	err := b.dir.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r = p.Probe(ctx)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (b *drBed) drProber() Prober {
	return NewDRPath(netns.NodeLink, 0, b.dir.Addr(), b.rs.MAC, netip.AddrPortFrom(b.vip, 3306))
}

func TestDRPath(t *testing.T) {
	b := newDRBed(t, "10.97.0.1/24", "10.97.0.2/24", "10.97.0.100")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := b.drProber()
	defer p.Close()

	if r := b.probeIn(t, p); !r.Healthy || r.Err != nil {
		t.Fatalf("real server with the VIP on lo and a listener: expected healthy, seen %+v", r)
	}
	// Our RST removed the embryonic connection on the real server.
	if out, err := b.rs.Exec(ctx, "ss", "-Htn", "state", "syn-recv"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("half-open connections left on the real server: %q (err %v)", out, err)
	}
	for range 3 {
		if r := b.probeIn(t, p); !r.Healthy {
			t.Fatalf("repeated probe: expected healthy, seen %+v", r)
		}
	}

	// Without the VIP on lo the real server drops the SYN: the director's own check of the
	// real server's address still passes, which is why that check alone is not enough.
	if _, err := b.rs.Exec(ctx, "ip", "addr", "del", b.vip.String()+"/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	r := b.probeIn(t, p)
	if r.Healthy || r.Err == nil || !strings.Contains(r.Err.Error(), "no SYN-ACK") {
		t.Fatalf("VIP removed from the real server's lo: expected unhealthy with no SYN-ACK, seen %+v", r)
	}
	t.Logf("without the VIP: %v", r.Err)
	if r := b.probeIn(t, NewTCP(netip.AddrPortFrom(b.rs.Addr(), 3306))); !r.Healthy {
		t.Fatalf("plain tcp check of the real server's own address: expected healthy, seen %+v", r)
	}

	if err := b.rs.AddAddr("lo", netip.PrefixFrom(b.vip, 32)); err != nil {
		t.Fatal(err)
	}
	if r := b.probeIn(t, p); !r.Healthy {
		t.Fatalf("VIP back on lo: expected healthy, seen %+v", r)
	}

	b.srv.Close()
	r = b.probeIn(t, p)
	if r.Healthy || r.Err == nil || !strings.Contains(r.Err.Error(), "RST") {
		t.Fatalf("listener stopped: expected unhealthy with a RST, seen %+v", r)
	}
	t.Logf("listener stopped: %v", r.Err)

	// A wrong MAC (no such host on the LAN): no answer.
	wrong := NewDRPath(netns.NodeLink, 0, b.dir.Addr(), net.HardwareAddr{2, 0xde, 0xad, 0, 0, 1}, netip.AddrPortFrom(b.vip, 3306))
	if r := b.probeIn(t, wrong); r.Healthy {
		t.Fatalf("SYN to a MAC nobody has: expected unhealthy, seen %+v", r)
	}
}

// TestNewProberDRPath checks the factory's Both(check, DR path) end to end: the MAC comes from
// env.MAC, and the error names the part that failed.
func TestNewProberDRPath(t *testing.T) {
	b := newDRBed(t, "10.96.0.1/24", "10.96.0.2/24", "10.96.0.100")
	svc := config.Service{
		Key:   control.ServiceKey{VIP: b.vip, Port: 3306, Proto: control.TCP},
		Check: config.Check{Type: config.CheckTCP},
	}
	rs := config.RealServer{Addr: b.rs.Addr()}
	known := true
	env := ProberEnv{
		Iface: netns.NodeLink, SrcIP: b.dir.Addr(),
		MAC: func(a netip.Addr) (net.HardwareAddr, bool) {
			if a != b.rs.Addr() || !known {
				return nil, false
			}
			return b.rs.MAC, true
		},
	}
	p, err := NewProber(svc, rs, env)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, ok := p.(*bothProber); !ok {
		t.Fatalf("tcp check with dr_path on by default: expected Both, seen %T", p)
	}
	if r := b.probeIn(t, p); !r.Healthy {
		t.Fatalf("expected healthy, seen %+v", r)
	}
	known = false
	r := b.probeIn(t, p)
	if r.Healthy || !errors.Is(r.Err, ErrNoMAC) || !strings.Contains(r.Err.Error(), "dr path: ") ||
		strings.Contains(r.Err.Error(), "check: ") {
		t.Fatalf("MAC unknown: expected only the dr path part to fail with ErrNoMAC, seen %+v", r)
	}
	known = true
	b.srv.Close()
	r = b.probeIn(t, p)
	if r.Healthy || !strings.Contains(r.Err.Error(), "check: tcp check") || !strings.Contains(r.Err.Error(), "connection refused") {
		t.Fatalf("listener stopped: expected the check part to fail, seen %+v", r)
	}
}
