package loader_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/packet"
	"github.com/xdplb/xdplb/loader"
)

// TestXDPDirectorLease is the data path's side of a director whose daemon is alive, killed or
// hung, table-driven over the lease in meta: none (attached without a daemon), fresh (a daemon
// renews it) and expired (the daemon is gone: another director may have taken over). The
// program knows nothing of VRRP: whether this node is Master or Backup only decides which frames
// reach it, so every kind of frame a Master or a Backup can receive is a row. What must hold:
//   - a frame from a peer director's MAC reaches the local stack in every state (the loop rule
//     never depends on the daemon);
//   - with the lease expired nothing is balanced (served locally, counted pass_orphaned) and
//     ARP requests and neighbour solicitations for a VIP are dropped (the node must not attract
//     clients for VIPs a killed daemon left on its interface);
//   - without a lease or with a fresh one, today's behaviour.
func TestXDPDirectorLease(t *testing.T) {
	peerSYN := packet.Eth(macPeer, macDirector).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build()
	peerSYN6 := packet.Eth(macPeer, macDirector).IPv6(client6, vip6).TCP(40000, 443, packet.SYN).Build()
	clientSYN := syn(vip4, 40000, portMySQL)
	clientSYN6 := to6(vip6).TCP(40000, 443, packet.SYN).Build()
	local := to4(vip4).TCP(40000, portLocal, packet.SYN).Build()
	notVIP := to4(netip.MustParseAddr("10.0.0.7")).TCP(40000, portMySQL, packet.SYN).Build()
	arpVIP := packet.Eth(macRouter, packet.Broadcast).ARP(packet.ARPRequest, macRouter, client4, packet.MAC{}, vip4).Build()
	arpVIPTagged := packet.Eth(macRouter, packet.Broadcast).VLAN(42).ARP(packet.ARPRequest, macRouter, client4, packet.MAC{}, vip4).Build()
	arpOther := packet.Eth(macRouter, packet.Broadcast).ARP(packet.ARPRequest, macRouter, client4, packet.MAC{}, netip.MustParseAddr("10.0.0.7")).Build()
	arpReplyVIP := packet.Eth(macRouter, macDirector).ARP(packet.ARPReply, macRouter, vip4, macDirector, client4).Build()
	arpShort := arpVIP[:14+20] // the target address cut off
	solicited := func(target netip.Addr) netip.Addr {
		b := netip.MustParseAddr("ff02::1:ff00:0").As16()
		t16 := target.As16()
		copy(b[13:], t16[13:])
		return netip.AddrFrom16(b)
	}
	ns := func(dst, target netip.Addr) []byte {
		t16 := target.As16()
		return packet.Eth(macRouter, packet.MustMAC("33:33:ff:00:01:00")).IPv6(client6, dst).ICMP(135, 0).Payload(t16[:]).Build()
	}
	nsVIP := ns(solicited(vip6), vip6)
	nsVIPUnicast := packet.Eth(macRouter, macDirector).IPv6(client6, vip6).ICMP(135, 0).Payload(func() []byte { b := vip6.As16(); return b[:] }()).Build()
	nsOther := ns(solicited(netip.MustParseAddr("fd00::7")), netip.MustParseAddr("fd00::7"))
	nsShort := nsVIP[:len(nsVIP)-4]

	type want struct {
		action   uint32
		counters loader.Counters
	}
	pass := func(c loader.Counters) want { c.Packets = 1; return want{xdpPass, c} }
	drop := func(c loader.Counters) want { c.Packets = 1; return want{xdpDrop, c} }
	tx := want{xdpTX, loader.Counters{Packets: 1, Tx: 1, NewFlow: 1}}
	orphaned := pass(loader.Counters{PassOrphaned: 1})
	ndDrop := drop(loader.Counters{DropOrphanNd: 1})

	type lease struct {
		name  string
		until func(t *testing.T) uint64
	}
	none := lease{"no lease", func(*testing.T) uint64 { return 0 }}
	fresh := lease{"lease fresh", func(t *testing.T) uint64 { return monoNow(t) + uint64(time.Hour) }}
	expired := lease{"lease expired", func(t *testing.T) uint64 { return ago(t, time.Second) }}

	rows := []struct {
		desc string
		in   []byte
		// by lease: none, fresh, expired
		want [3]want
	}{
		{"SYN from a peer director (IPv4)", peerSYN, [3]want{pass(loader.Counters{PassPeer: 1}), pass(loader.Counters{PassPeer: 1}), pass(loader.Counters{PassPeer: 1})}},
		{"SYN from a peer director (IPv6)", peerSYN6, [3]want{pass(loader.Counters{PassPeer: 1}), pass(loader.Counters{PassPeer: 1}), pass(loader.Counters{PassPeer: 1})}},
		{"client SYN to a VIP (IPv4)", clientSYN, [3]want{tx, tx, orphaned}},
		{"client SYN to a VIP (IPv6)", clientSYN6, [3]want{tx, tx, orphaned}},
		{"client SYN to a service served locally", local, [3]want{
			pass(loader.Counters{PassLocal: 1, NewFlow: 1}), pass(loader.Counters{PassLocal: 1, NewFlow: 1}), orphaned}},
		{"SYN to an address that is no VIP", notVIP, [3]want{pass(loader.Counters{PassNoService: 1}), pass(loader.Counters{PassNoService: 1}), pass(loader.Counters{PassNoService: 1})}},
		{"ARP request for a VIP", arpVIP, [3]want{pass(loader.Counters{PassNotIp: 1}), pass(loader.Counters{PassNotIp: 1}), ndDrop}},
		{"ARP request for a VIP, VLAN-tagged", arpVIPTagged, [3]want{pass(loader.Counters{PassNotIp: 1}), pass(loader.Counters{PassNotIp: 1}), ndDrop}},
		{"ARP request for another address", arpOther, [3]want{pass(loader.Counters{PassNotIp: 1}), pass(loader.Counters{PassNotIp: 1}), pass(loader.Counters{PassNotIp: 1})}},
		{"ARP reply from a VIP's address", arpReplyVIP, [3]want{pass(loader.Counters{PassNotIp: 1}), pass(loader.Counters{PassNotIp: 1}), pass(loader.Counters{PassNotIp: 1})}},
		{"ARP request cut short", arpShort, [3]want{pass(loader.Counters{PassNotIp: 1}), pass(loader.Counters{PassNotIp: 1}), pass(loader.Counters{PassNotIp: 1})}},
		{"neighbour solicitation for a VIP", nsVIP, [3]want{pass(loader.Counters{PassNoService: 1}), pass(loader.Counters{PassNoService: 1}), ndDrop}},
		{"neighbour solicitation for a VIP, unicast to it", nsVIPUnicast, [3]want{pass(loader.Counters{PassNoService: 1}), pass(loader.Counters{PassNoService: 1}), ndDrop}},
		{"neighbour solicitation for another address", nsOther, [3]want{pass(loader.Counters{PassNoService: 1}), pass(loader.Counters{PassNoService: 1}), pass(loader.Counters{PassNoService: 1})}},
		{"neighbour solicitation cut short", nsShort, [3]want{pass(loader.Counters{PassMalformed: 1}), pass(loader.Counters{PassMalformed: 1}), pass(loader.Counters{PassMalformed: 1})}},
	}
	for li, l := range []lease{none, fresh, expired} {
		for _, r := range rows {
			t.Run(fmt.Sprintf("%s/%s", l.name, r.desc), func(t *testing.T) {
				e := newProgEnv(t)
				configure(e)
				var lay loader.Layout
				if err := e.o.Meta.Lookup(uint32(0), &lay); err != nil {
					t.Fatal(err)
				}
				copy(lay.Mac[:], macDirector[:])
				lay.LeaseUntil = l.until(t)
				if err := e.o.Meta.Put(uint32(0), lay); err != nil {
					t.Fatal(err)
				}
				w := r.want[li]
				before := e.counters()
				action, out := e.mustRun(r.in)
				after := e.counters()
				if action != w.action {
					t.Errorf("verdict %s, want %s", actionName(action), actionName(w.action))
				}
				if action == xdpPass && string(out[:len(r.in)]) != string(r.in) {
					t.Errorf("a passed frame was changed:\n got %x\nwant %x", out[:len(r.in)], r.in)
				}
				if d := counterMismatch(before, after, w.counters); d != "" {
					t.Errorf("counters: %s", d)
				}
				checkInvariant(t, after)
			})
		}
	}
}
