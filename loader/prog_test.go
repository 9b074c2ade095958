package loader_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testbed/packet"
	"github.com/xdplb/xdplb/loader"
)

// progCase is one BPF_PROG_TEST_RUN of the program on a fresh copy of the test world.
type progCase struct {
	desc  string
	setup func(e *progEnv) // after configure; may run packets (their counters are not checked)
	in    []byte
	// wantAction is the verdict; wantOut the frame after it (nil: must equal in), or, when the
	// choice is Maglev's, wantOneOf lists the frames allowed.
	wantAction uint32
	wantOut    []byte
	wantOneOf  [][]byte
	// wantCounters holds the exact deltas of the counters for in; every field left zero must not
	// change.
	wantCounters loader.Counters
	check        func(t *testing.T, e *progEnv) // more assertions on the maps afterwards
}

func TestXDPProg(t *testing.T) {
	mysqlSYN := syn(vip4, 40000, portMySQL)
	mysqlKey := flowKey(client4, vip4, 40000, portMySQL, loader.ProtoTCP)
	dns := to4(vip4).UDP(5353, 53).Payload([]byte("query")).Build()
	tagged := eth().VLAN(42).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build()
	padded := to4(vip4).TCP(40000, portMySQL, packet.SYN).PadTo(60).Build()
	persistSYN := syn(vip4, 2000, portPersist)
	var recent uint64 // last_seen written by a setup, read by its check

	tx := loader.Counters{Packets: 1, Tx: 1, NewFlow: 1}
	ctHit := loader.Counters{Packets: 1, Tx: 1, CtHit: 1}
	noService := loader.Counters{Packets: 1, PassNoService: 1}
	noBackend := loader.Counters{Packets: 1, NewFlow: 1, DropNoBackend: 1}

	tests := []progCase{
		// Traffic that is not ours.
		{
			desc:         "ARP passes as not IP",
			in:           packet.Eth(macRouter, packet.Broadcast).ARP(packet.ARPRequest, macRouter, client4, packet.MAC{}, vip4).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassNotIp: 1},
		}, {
			desc:         "LLDP passes as not IP",
			in:           packet.Eth(macRouter, packet.MustMAC("01:80:c2:00:00:0e")).EtherType(packet.EtherTypeLLDP).Payload(make([]byte, 46)).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassNotIp: 1},
		}, {
			desc:         "double-tagged frame passes as not IP",
			in:           eth().Tag(packet.EtherTypeQinQ, 10).VLAN(42).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassNotIp: 1},
		}, {
			desc: "VRRPv2 advert passes",
			in: packet.Eth(macPeer, packet.MustMAC("01:00:5e:00:00:12")).
				IPv4(netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("224.0.0.18")).VRRP(51, 100, vip4).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassVrrp: 1},
		}, {
			desc: "VRRPv3 advert over IPv6 passes",
			in: packet.Eth(macPeer, packet.MustMAC("33:33:00:00:00:12")).
				IPv6(netip.MustParseAddr("fe80::2"), netip.MustParseAddr("ff02::12")).VRRP(51, 100, vip6).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassVrrp: 1},
		}, {
			desc:         "VRRP unicast to a VIP passes",
			in:           to4(vip4).VRRP(51, 100, vip4).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassVrrp: 1},
		}, {
			desc:         "TCP to an address that is no VIP passes",
			in:           syn(other4, 40000, portMySQL),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "IPv6 TCP to an address that is no VIP passes",
			in:           syn(other6, 40000, 443),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "VIP port without a service passes",
			in:           syn(vip4, 40000, 22),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "UDP to a TCP-only VIP port passes",
			in:           to4(vip4).UDP(40000, portMySQL).Build(),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "UDP to a VIP whose wildcard service is TCP passes",
			in:           to4(vip4b).UDP(40000, 80).Build(),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "ICMP echo to a VIP passes",
			in:           to4(vip4).Echo().Payload([]byte("ping")).Build(),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "ICMPv6 echo to a VIP passes",
			in:           to6(vip6).Echo().Payload([]byte("ping")).Build(),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc: "service with an out-of-range id passes",
			setup: func(e *progEnv) {
				e.addService(vip4, 7777, loader.ProtoTCP, loader.Service{Id: 0x7fffffff})
			},
			in:           syn(vip4, 40000, 7777),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "IPv6 to a v4-mapped VIP address passes",
			in:           eth().IPv6(client6, netip.AddrFrom16(vip4.As16())).TCP(40000, portMySQL, packet.SYN).Build(),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "peer director's frame passes",
			in:           packet.Eth(macPeer, macDirector).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassPeer: 1},
		}, {
			desc:         "broadcast destination to a VIP passes",
			in:           packet.Eth(macRouter, packet.Broadcast).IPv4(client4, vip4).TCP(40000, portMySQL, packet.SYN).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassNotUnicast: 1},
		}, {
			desc:         "IPv4 multicast destination to a VIP passes",
			in:           packet.Eth(macRouter, packet.MustMAC("01:00:5e:00:00:64")).IPv4(client4, vip4).UDP(5353, 53).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassNotUnicast: 1},
		}, {
			desc:         "IPv6 multicast destination to a VIP passes",
			in:           packet.Eth(macRouter, packet.MustMAC("33:33:00:00:01:00")).IPv6(client6, vip6).TCP(40000, 443, packet.SYN).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassNotUnicast: 1},
		},

		// Fragments, extension headers, truncation.
		{
			desc:         "first IPv4 fragment to a VIP is dropped",
			in:           to4(vip4).Frag(0, true).TCP(40000, portMySQL, packet.ACK).Payload(make([]byte, 64)).Build(),
			wantAction:   xdpDrop,
			wantCounters: loader.Counters{Packets: 1, DropFragment: 1},
		}, {
			desc:         "later IPv4 fragment to a VIP is dropped",
			in:           to4(vip4).Frag(1480, false).Proto(packet.ProtoTCP).Payload(make([]byte, 64)).Build(),
			wantAction:   xdpDrop,
			wantCounters: loader.Counters{Packets: 1, DropFragment: 1},
		}, {
			desc:         "IPv4 fragment to another address passes",
			in:           to4(other4).Frag(1480, true).Proto(packet.ProtoUDP).Payload(make([]byte, 64)).Build(),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "IPv6 hop-by-hop header to a VIP passes",
			in:           to6(vip6).ExtHeader(packet.ProtoHopByHop, []byte{5, 2, 0, 0, 1, 0}).TCP(40000, 443, packet.SYN).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassIpv6Ext: 1},
		}, {
			desc:         "IPv6 fragment header to a VIP passes",
			in:           to6(vip6).ExtHeader(packet.ProtoFragment, []byte{0, 1, 0, 0, 0, 1}).UDP(5353, 53).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassIpv6Ext: 1},
		}, {
			desc:         "IPv6 extension header to another address passes",
			in:           to6(other6).ExtHeader(packet.ProtoDstOpts, nil).TCP(40000, 443, packet.SYN).Build(),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "TCP header cut by the IP total length to a VIP is dropped",
			in:           to4(vip4).TCP(40000, portMySQL, packet.SYN).TotalLength(20 + 10).Truncate(14 + 20 + 10).Build(),
			wantAction:   xdpDrop,
			wantCounters: loader.Counters{Packets: 1, DropMalformed: 1},
		}, {
			desc:         "TCP header beyond the IP total length (frame longer) to a VIP is dropped",
			in:           to4(vip4).TCP(40000, portMySQL, packet.SYN).TotalLength(20 + 19).Build(),
			wantAction:   xdpDrop,
			wantCounters: loader.Counters{Packets: 1, DropMalformed: 1},
		}, {
			desc:         "UDP header cut short to a VIP is dropped",
			in:           to4(vip4).UDP(5353, 53).TotalLength(20 + 7).Truncate(14 + 27).Build(),
			wantAction:   xdpDrop,
			wantCounters: loader.Counters{Packets: 1, DropMalformed: 1},
		}, {
			desc:         "IPv6 TCP header cut short to a VIP is dropped",
			in:           to6(vip6).TCP(40000, 443, packet.SYN).PayloadLength(19).Truncate(14 + 40 + 19).Build(),
			wantAction:   xdpDrop,
			wantCounters: loader.Counters{Packets: 1, DropMalformed: 1},
		}, {
			desc:         "TCP header cut short to another address passes",
			in:           to4(other4).TCP(40000, portMySQL, packet.SYN).TotalLength(30).Truncate(44).Build(),
			wantAction:   xdpPass,
			wantCounters: noService,
		}, {
			desc:         "truncated frame whose total length lies passes as malformed",
			in:           to4(vip4).TCP(40000, portMySQL, packet.SYN).Truncate(14 + 20 + 10).Build(),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassMalformed: 1},
		},

		// Forwarding to a new flow's backend.
		{
			desc:         "TCP SYN to a service is forwarded",
			in:           mysqlSYN,
			wantAction:   xdpTX,
			wantOut:      forwarded(mysqlSYN, beMAC(1)),
			wantCounters: tx,
			check: func(t *testing.T, e *progEnv) {
				wantTraffic(t, e, e.o.SvcStats, svcMySQL, loader.Traffic{Packets: 1, Bytes: uint64(len(mysqlSYN)), NewFlows: 1})
				wantTraffic(t, e, e.o.BackendStats, 1, loader.Traffic{Packets: 1, Bytes: uint64(len(mysqlSYN)), NewFlows: 1})
				wantTraffic(t, e, e.o.BackendStats, 2, loader.Traffic{})
				wantFlow(t, e, mysqlKey, 1)
			},
		}, {
			desc:         "UDP service",
			in:           dns,
			wantAction:   xdpTX,
			wantOut:      forwarded(dns, beMAC(3)),
			wantCounters: tx,
			check: func(t *testing.T, e *progEnv) {
				wantFlow(t, e, flowKey(client4, vip4, 5353, 53, loader.ProtoUDP), 3)
				wantTraffic(t, e, e.o.SvcStats, svcDNS, loader.Traffic{Packets: 1, Bytes: uint64(len(dns)), NewFlows: 1})
			},
		}, {
			desc:         "IPv6 TCP service",
			in:           syn(vip6, 40000, 443),
			wantAction:   xdpTX,
			wantOut:      forwarded(syn(vip6, 40000, 443), beMAC(4)),
			wantCounters: tx,
			check: func(t *testing.T, e *progEnv) {
				wantFlow(t, e, flowKey(client6, vip6, 40000, 443, loader.ProtoTCP), 4)
			},
		}, {
			desc:         "IPv6 UDP service",
			in:           to6(vip6).UDP(5353, 53).Payload([]byte("q")).Build(),
			wantAction:   xdpTX,
			wantOut:      forwarded(to6(vip6).UDP(5353, 53).Payload([]byte("q")).Build(), beMAC(11)),
			wantCounters: tx,
		}, {
			desc:         "port-0 service matches any port",
			in:           syn(vip4b, 40000, 12345),
			wantAction:   xdpTX,
			wantOut:      forwarded(syn(vip4b, 40000, 12345), beMAC(5)),
			wantCounters: tx,
		}, {
			desc:         "exact port beats the port-0 service",
			in:           syn(vip4b, 40000, 80),
			wantAction:   xdpTX,
			wantOut:      forwarded(syn(vip4b, 40000, 80), beMAC(6)),
			wantCounters: tx,
		}, {
			desc:         "802.1Q-tagged frame is forwarded with its tag",
			in:           tagged,
			wantAction:   xdpTX,
			wantOut:      forwarded(tagged, beMAC(1)),
			wantCounters: tx,
		}, {
			desc:         "Ethernet padding is kept and counted",
			in:           padded,
			wantAction:   xdpTX,
			wantOut:      forwarded(padded, beMAC(1)),
			wantCounters: tx,
			check: func(t *testing.T, e *progEnv) {
				wantTraffic(t, e, e.o.SvcStats, svcMySQL, loader.Traffic{Packets: 1, Bytes: 60, NewFlows: 1})
			},
		}, {
			desc:         "IPv4 options are skipped",
			in:           to4(vip4).Options(0x94, 4, 0, 0, 1, 1, 1, 0).TCP(40000, portMySQL, packet.SYN).Build(),
			wantAction:   xdpTX,
			wantOut:      forwarded(to4(vip4).Options(0x94, 4, 0, 0, 1, 1, 1, 0).TCP(40000, portMySQL, packet.SYN).Build(), beMAC(1)),
			wantCounters: tx,
			check: func(t *testing.T, e *progEnv) {
				wantFlow(t, e, mysqlKey, 1)
			},
		}, {
			desc:         "don't-fragment is not a fragment",
			in:           to4(vip4).DontFragment().TCP(40000, portMySQL, packet.SYN).Build(),
			wantAction:   xdpTX,
			wantOut:      forwarded(to4(vip4).DontFragment().TCP(40000, portMySQL, packet.SYN).Build(), beMAC(1)),
			wantCounters: tx,
		}, {
			desc: "ring in the active slot is used",
			setup: func(e *progEnv) {
				e.setRing(svcMySQL, 1, 2)
				e.updateService(vip4, portMySQL, loader.ProtoTCP, func(s *loader.Service) { s.ActiveSlot = 1 })
			},
			in:           mysqlSYN,
			wantAction:   xdpTX,
			wantOut:      forwarded(mysqlSYN, beMAC(2)),
			wantCounters: tx,
		}, {
			desc: "two-backend ring picks one of them",
			setup: func(e *progEnv) {
				e.setRing(svcMySQL, 0, 1, 2)
			},
			in:           mysqlSYN,
			wantAction:   xdpTX,
			wantOneOf:    [][]byte{forwarded(mysqlSYN, beMAC(1)), forwarded(mysqlSYN, beMAC(2))},
			wantCounters: tx,
			check: func(t *testing.T, e *progEnv) {
				var f loader.Flow
				if err := e.o.Conntrack.Lookup(mysqlKey, &f); err != nil {
					t.Fatalf("conntrack lookup: %v", err)
				}
				if f.Backend != 1 && f.Backend != 2 {
					t.Fatalf("conntrack backend %d, want 1 or 2", f.Backend)
				}
				// Without conntrack the same flow hashes to the same slot again.
				if err := e.o.Conntrack.Delete(mysqlKey); err != nil {
					t.Fatal(err)
				}
				for range 3 {
					action, out := e.mustRun(mysqlSYN)
					if action != xdpTX || !bytes.Equal(out, forwarded(mysqlSYN, beMAC(f.Backend))) {
						t.Fatalf("rerun: %s to %x, want XDP_TX to backend %d", actionName(action), out[:6], f.Backend)
					}
				}
			},
		},

		// Conntrack.
		{
			desc: "conntrack keeps a flow on its backend after the ring changed",
			setup: func(e *progEnv) {
				runWant(e, mysqlSYN, xdpTX)
				e.setRing(svcMySQL, 0, 2)
			},
			in:           ack(vip4, 40000, portMySQL),
			wantAction:   xdpTX,
			wantOut:      forwarded(ack(vip4, 40000, portMySQL), beMAC(1)),
			wantCounters: ctHit,
			check: func(t *testing.T, e *progEnv) {
				n := uint64(len(mysqlSYN) + len(ack(vip4, 40000, portMySQL)))
				wantTraffic(t, e, e.o.SvcStats, svcMySQL, loader.Traffic{Packets: 2, Bytes: n, NewFlows: 1})
				wantTraffic(t, e, e.o.BackendStats, 1, loader.Traffic{Packets: 2, Bytes: n, NewFlows: 1})
				// A new connection follows the new ring.
				if action, out := e.mustRun(syn(vip4, 40001, portMySQL)); action != xdpTX || !sentTo(out, beMAC(2)) {
					t.Errorf("new flow: %s to %x, want XDP_TX to backend 2", actionName(action), out[:6])
				}
			},
		}, {
			desc: "conntrack keeps a flow on a draining backend",
			setup: func(e *progEnv) {
				runWant(e, mysqlSYN, xdpTX)
				be := e.backend(1)
				be.Flags |= loader.BackendDraining
				e.putBackend(1, be)
				e.setRing(svcMySQL, 0, 2)
			},
			in:           ack(vip4, 40000, portMySQL),
			wantAction:   xdpTX,
			wantOut:      forwarded(ack(vip4, 40000, portMySQL), beMAC(1)),
			wantCounters: ctHit,
		}, {
			desc: "IPv6 conntrack hit",
			setup: func(e *progEnv) {
				runWant(e, syn(vip6, 40000, 443), xdpTX)
				e.setRing(svcHTTPS6, 0)
			},
			in:           ack(vip6, 40000, 443),
			wantAction:   xdpTX,
			wantOut:      forwarded(ack(vip6, 40000, 443), beMAC(4)),
			wantCounters: ctHit,
		}, {
			desc: "conntrack entry of a removed backend is rescheduled",
			setup: func(e *progEnv) {
				runWant(e, mysqlSYN, xdpTX)
				e.putBackend(1, loader.Backend{})
				e.setRing(svcMySQL, 0, 2)
			},
			in:           ack(vip4, 40000, portMySQL),
			wantAction:   xdpTX,
			wantOut:      forwarded(ack(vip4, 40000, portMySQL), beMAC(2)),
			wantCounters: loader.Counters{Packets: 1, Tx: 1, CtStale: 1, NewFlow: 1},
			check: func(t *testing.T, e *progEnv) {
				wantFlow(t, e, mysqlKey, 2)
				wantTraffic(t, e, e.o.BackendStats, 2, loader.Traffic{Packets: 1, Bytes: uint64(len(ack(vip4, 40000, portMySQL))), NewFlows: 1})
			},
		}, {
			desc: "conntrack entry of another service's backend is rescheduled",
			setup: func(e *progEnv) {
				putFlow(e, mysqlKey, loader.Flow{Backend: 3, LastSeen: monoNow(e.tb)})
			},
			in:           mysqlSYN,
			wantAction:   xdpTX,
			wantOut:      forwarded(mysqlSYN, beMAC(1)),
			wantCounters: loader.Counters{Packets: 1, Tx: 1, CtStale: 1, NewFlow: 1},
			check: func(t *testing.T, e *progEnv) {
				wantFlow(t, e, mysqlKey, 1)
			},
		}, {
			desc: "conntrack entry with backend id 0 is rescheduled",
			setup: func(e *progEnv) {
				putFlow(e, mysqlKey, loader.Flow{Backend: 0, LastSeen: monoNow(e.tb)})
			},
			in:           mysqlSYN,
			wantAction:   xdpTX,
			wantOut:      forwarded(mysqlSYN, beMAC(1)),
			wantCounters: loader.Counters{Packets: 1, Tx: 1, CtStale: 1, NewFlow: 1},
		}, {
			desc: "old conntrack entry gets a fresh last_seen",
			setup: func(e *progEnv) {
				putFlow(e, mysqlKey, loader.Flow{Backend: 2, LastSeen: ago(e.tb, 5*time.Second)})
			},
			in:           ack(vip4, 40000, portMySQL),
			wantAction:   xdpTX,
			wantOut:      forwarded(ack(vip4, 40000, portMySQL), beMAC(2)),
			wantCounters: ctHit,
			check: func(t *testing.T, e *progEnv) {
				f := wantFlow(t, e, mysqlKey, 2)
				if age := time.Duration(monoNow(t) - f.LastSeen); age > 2*time.Second {
					t.Errorf("last_seen is %v old after a hit", age)
				}
			},
		}, {
			desc: "recent conntrack entry is not rewritten",
			setup: func(e *progEnv) {
				recent = ago(e.tb, 100*time.Millisecond)
				putFlow(e, mysqlKey, loader.Flow{Backend: 2, LastSeen: recent})
			},
			in:           ack(vip4, 40000, portMySQL),
			wantAction:   xdpTX,
			wantOut:      forwarded(ack(vip4, 40000, portMySQL), beMAC(2)),
			wantCounters: ctHit,
			check: func(t *testing.T, e *progEnv) {
				if f := wantFlow(t, e, mysqlKey, 2); f.LastSeen != recent {
					t.Errorf("last_seen rewritten within a second: %d -> %d", recent, f.LastSeen)
				}
			},
		},

		// Persistence.
		{
			desc: "persistence: another port of the same client keeps its backend after the ring changed",
			setup: func(e *progEnv) {
				runWant(e, syn(vip4, 1000, portPersist), xdpTX)
				e.setRing(svcPersist, 0, 8)
			},
			in:           persistSYN,
			wantAction:   xdpTX,
			wantOut:      forwarded(persistSYN, beMAC(7)),
			wantCounters: loader.Counters{Packets: 1, Tx: 1, NewFlow: 1, PersistHit: 1},
			check: func(t *testing.T, e *progEnv) {
				wantPersist(t, e, svcPersist, client4, 7)
				wantFlow(t, e, flowKey(client4, vip4, 2000, portPersist, loader.ProtoTCP), 7)
				// Another client follows the new ring.
				other := eth().IPv4(netip.MustParseAddr("192.0.2.11"), vip4).TCP(1000, portPersist, packet.SYN).Build()
				if action, out := e.mustRun(other); action != xdpTX || !sentTo(out, beMAC(8)) {
					t.Errorf("other client: %s to %x, want XDP_TX to backend 8", actionName(action), out[:6])
				}
			},
		}, {
			desc:         "persistence entry is written for a new client",
			in:           persistSYN,
			wantAction:   xdpTX,
			wantOut:      forwarded(persistSYN, beMAC(7)),
			wantCounters: tx,
			check: func(t *testing.T, e *progEnv) {
				p := wantPersist(t, e, svcPersist, client4, 7)
				if age := time.Duration(monoNow(t) - p.LastSeen); age > 2*time.Second {
					t.Errorf("persist last_seen is %v old", age)
				}
			},
		}, {
			desc: "expired persistence falls back to Maglev",
			setup: func(e *progEnv) {
				putPersist(e, svcPersist, client4, loader.PersistEntry{Backend: 7, LastSeen: ago(e.tb, (persistSecs+5)*time.Second)})
				e.setRing(svcPersist, 0, 8)
			},
			in:           persistSYN,
			wantAction:   xdpTX,
			wantOut:      forwarded(persistSYN, beMAC(8)),
			wantCounters: tx,
			check: func(t *testing.T, e *progEnv) {
				wantPersist(t, e, svcPersist, client4, 8)
			},
		}, {
			desc: "draining backend is not reused by persistence",
			setup: func(e *progEnv) {
				putPersist(e, svcPersist, client4, loader.PersistEntry{Backend: 7, LastSeen: monoNow(e.tb)})
				be := e.backend(7)
				be.Flags |= loader.BackendDraining
				e.putBackend(7, be)
				e.setRing(svcPersist, 0, 8)
			},
			in:           persistSYN,
			wantAction:   xdpTX,
			wantOut:      forwarded(persistSYN, beMAC(8)),
			wantCounters: tx,
			check: func(t *testing.T, e *progEnv) {
				wantPersist(t, e, svcPersist, client4, 8)
			},
		}, {
			desc: "removed backend is not reused by persistence",
			setup: func(e *progEnv) {
				putPersist(e, svcPersist, client4, loader.PersistEntry{Backend: 7, LastSeen: monoNow(e.tb)})
				e.putBackend(7, loader.Backend{})
				e.setRing(svcPersist, 0, 8)
			},
			in:           persistSYN,
			wantAction:   xdpTX,
			wantOut:      forwarded(persistSYN, beMAC(8)),
			wantCounters: tx,
		}, {
			desc: "sorry server is not reused by persistence",
			setup: func(e *progEnv) {
				e.putBackend(14, loader.Backend{Mac: beMAC(14), Flags: loader.BackendUsed, Service: svcSorryPers})
				e.setRing(svcSorryPers, 0, 14)
				putPersist(e, svcSorryPers, client4, loader.PersistEntry{Backend: 12, LastSeen: monoNow(e.tb)})
			},
			in:           syn(vip4, 1000, portSorryPers),
			wantAction:   xdpTX,
			wantOut:      forwarded(syn(vip4, 1000, portSorryPers), beMAC(14)),
			wantCounters: tx,
			check: func(t *testing.T, e *progEnv) {
				wantPersist(t, e, svcSorryPers, client4, 14)
			},
		}, {
			desc: "conntrack hit refreshes the client's persistence",
			setup: func(e *progEnv) {
				key := flowKey(client4, vip4, 2000, portPersist, loader.ProtoTCP)
				putFlow(e, key, loader.Flow{Backend: 8, LastSeen: ago(e.tb, 5*time.Second)})
			},
			in:           ack(vip4, 2000, portPersist),
			wantAction:   xdpTX,
			wantOut:      forwarded(ack(vip4, 2000, portPersist), beMAC(8)),
			wantCounters: ctHit,
			check: func(t *testing.T, e *progEnv) {
				wantPersist(t, e, svcPersist, client4, 8)
			},
		}, {
			desc: "conntrack refresh of a sorry-server flow keeps the client's persistence",
			setup: func(e *progEnv) {
				// The client has a flow left on the sorry server from when the ring was empty, and
				// is persistent to backend 13; the ring now holds 14 only.
				for _, id := range []uint32{13, 14} {
					e.putBackend(id, loader.Backend{Mac: beMAC(id), Flags: loader.BackendUsed, Service: svcSorryPers})
				}
				e.setRing(svcSorryPers, 0, 14)
				putFlow(e, flowKey(client4, vip4, 1000, portSorryPers, loader.ProtoTCP), loader.Flow{Backend: 12, LastSeen: ago(e.tb, 5*time.Second)})
				putPersist(e, svcSorryPers, client4, loader.PersistEntry{Backend: 13, LastSeen: monoNow(e.tb)})
			},
			in:           ack(vip4, 1000, portSorryPers),
			wantAction:   xdpTX,
			wantOut:      forwarded(ack(vip4, 1000, portSorryPers), beMAC(12)),
			wantCounters: ctHit,
			check: func(t *testing.T, e *progEnv) {
				wantPersist(t, e, svcSorryPers, client4, 13)
				if action, out := e.mustRun(syn(vip4, 1001, portSorryPers)); action != xdpTX || !sentTo(out, beMAC(13)) {
					t.Errorf("new connection: %s to %x, want XDP_TX to backend 13", actionName(action), out[:6])
				}
			},
		}, {
			desc:         "sorry server is not made persistent",
			in:           syn(vip4, 1000, portSorryPers),
			wantAction:   xdpTX,
			wantOut:      forwarded(syn(vip4, 1000, portSorryPers), beMAC(12)),
			wantCounters: loader.Counters{Packets: 1, Tx: 1, NewFlow: 1, Sorry: 1},
			check: func(t *testing.T, e *progEnv) {
				var p loader.PersistEntry
				err := e.o.Persist.Lookup(loader.PersistKey{Service: svcSorryPers, Client: loader.Addr16(client4)}, &p)
				if !errors.Is(err, ebpf.ErrKeyNotExist) {
					t.Errorf("persist entry for a sorry flow: %+v, %v", p, err)
				}
			},
		},

		// No usable backend.
		{
			desc:         "local backend passes to this node",
			in:           syn(vip4, 40000, portLocal),
			wantAction:   xdpPass,
			wantCounters: loader.Counters{Packets: 1, PassLocal: 1, NewFlow: 1},
			check: func(t *testing.T, e *progEnv) {
				wantFlow(t, e, flowKey(client4, vip4, 40000, portLocal, loader.ProtoTCP), 10)
				wantTraffic(t, e, e.o.BackendStats, 10, loader.Traffic{Packets: 1, Bytes: uint64(len(syn(vip4, 40000, portLocal))), NewFlows: 1})
			},
		}, {
			desc:         "empty ring sends to the sorry server",
			in:           syn(vip4, 40000, portSorry),
			wantAction:   xdpTX,
			wantOut:      forwarded(syn(vip4, 40000, portSorry), beMAC(9)),
			wantCounters: loader.Counters{Packets: 1, Tx: 1, NewFlow: 1, Sorry: 1},
			check: func(t *testing.T, e *progEnv) {
				wantFlow(t, e, flowKey(client4, vip4, 40000, portSorry, loader.ProtoTCP), 9)
				wantTraffic(t, e, e.o.SvcStats, svcSorry, loader.Traffic{Packets: 1, Bytes: uint64(len(syn(vip4, 40000, portSorry))), NewFlows: 1})
			},
		}, {
			desc:         "missing ring sends to the sorry server",
			setup:        func(e *progEnv) { e.deleteRing(svcSorry, 0) },
			in:           syn(vip4, 40000, portSorry),
			wantAction:   xdpTX,
			wantOut:      forwarded(syn(vip4, 40000, portSorry), beMAC(9)),
			wantCounters: loader.Counters{Packets: 1, Tx: 1, NewFlow: 1, Sorry: 1},
		}, {
			desc:         "no ring and no sorry server drops",
			in:           syn(vip4, 40000, portNoBackend),
			wantAction:   xdpDrop,
			wantCounters: noBackend,
			check: func(t *testing.T, e *progEnv) {
				var f loader.Flow
				if err := e.o.Conntrack.Lookup(flowKey(client4, vip4, 40000, portNoBackend, loader.ProtoTCP), &f); !errors.Is(err, ebpf.ErrKeyNotExist) {
					t.Errorf("conntrack entry for a dropped flow: %+v, %v", f, err)
				}
				wantTraffic(t, e, e.o.SvcStats, svcNoBackend, loader.Traffic{})
			},
		}, {
			desc:         "empty ring without sorry server drops",
			setup:        func(e *progEnv) { e.setRing(svcNoBackend, 0) },
			in:           syn(vip4, 40000, portNoBackend),
			wantAction:   xdpDrop,
			wantCounters: noBackend,
		}, {
			desc:         "ring of an unused backend slot drops",
			setup:        func(e *progEnv) { e.setRing(svcNoBackend, 0, 40) },
			in:           syn(vip4, 40000, portNoBackend),
			wantAction:   xdpDrop,
			wantCounters: noBackend,
		}, {
			desc:         "ring of another service's backend drops",
			setup:        func(e *progEnv) { e.setRing(svcNoBackend, 0, 1) },
			in:           syn(vip4, 40000, portNoBackend),
			wantAction:   xdpDrop,
			wantCounters: noBackend,
		}, {
			desc: "sorry server of another service drops",
			setup: func(e *progEnv) {
				e.updateService(vip4, portNoBackend, loader.ProtoTCP, func(s *loader.Service) {
					s.SorryBackend = 9 // belongs to svcSorry
				})
			},
			in:           syn(vip4, 40000, portNoBackend),
			wantAction:   xdpDrop,
			wantCounters: noBackend,
		},
	}

	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			e := newProgEnv(t)
			configure(e)
			if tt.setup != nil {
				tt.setup(e)
			}
			before := e.counters()
			in := append([]byte{}, tt.in...)
			action, out := e.mustRun(in)
			after := e.counters()

			if action != tt.wantAction {
				t.Errorf("verdict %s, want %s", actionName(action), actionName(tt.wantAction))
			}
			wantOut := tt.wantOneOf
			if wantOut == nil && tt.wantOut != nil {
				wantOut = [][]byte{tt.wantOut}
			}
			if wantOut == nil {
				wantOut = [][]byte{tt.in}
			}
			if !slices.ContainsFunc(wantOut, func(w []byte) bool { return bytes.Equal(out, w) }) {
				t.Errorf("output differs\ngot:\n%swant:\n%s", hex.Dump(out), hex.Dump(wantOut[0]))
			}
			if !bytes.Equal(in, tt.in) {
				t.Errorf("input buffer modified")
			}
			if d := counterMismatch(before, after, tt.wantCounters); d != "" {
				t.Errorf("counter deltas: %s", d)
			}
			checkInvariant(t, after)
			if tt.check != nil && !t.Failed() {
				tt.check(t, e)
			}
		})
	}
}

// runWant runs in during setup and insists on its verdict.
func runWant(e *progEnv, in []byte, want uint32) {
	e.tb.Helper()
	if action, _ := e.mustRun(in); action != want {
		e.tb.Fatalf("setup packet: %s, want %s", actionName(action), actionName(want))
	}
}

func putFlow(e *progEnv, key loader.FlowKey, f loader.Flow) {
	e.tb.Helper()
	if err := e.o.Conntrack.Put(key, f); err != nil {
		e.tb.Fatalf("put flow: %v", err)
	}
}

func putPersist(e *progEnv, svc uint32, client netip.Addr, p loader.PersistEntry) {
	e.tb.Helper()
	if err := e.o.Persist.Put(loader.PersistKey{Service: svc, Client: loader.Addr16(client)}, p); err != nil {
		e.tb.Fatalf("put persist: %v", err)
	}
}

func wantFlow(t *testing.T, e *progEnv, key loader.FlowKey, backend uint32) loader.Flow {
	t.Helper()
	var f loader.Flow
	if err := e.o.Conntrack.Lookup(key, &f); err != nil {
		t.Fatalf("conntrack lookup %+v: %v", key, err)
	}
	if f.Backend != backend {
		t.Errorf("conntrack backend %d, want %d", f.Backend, backend)
	}
	return f
}

func wantPersist(t *testing.T, e *progEnv, svc uint32, client netip.Addr, backend uint32) loader.PersistEntry {
	t.Helper()
	var p loader.PersistEntry
	if err := e.o.Persist.Lookup(loader.PersistKey{Service: svc, Client: loader.Addr16(client)}, &p); err != nil {
		t.Fatalf("persist lookup service %d client %v: %v", svc, client, err)
	}
	if p.Backend != backend {
		t.Errorf("persist backend %d, want %d", p.Backend, backend)
	}
	return p
}

func wantTraffic(t *testing.T, e *progEnv, m *ebpf.Map, id uint32, want loader.Traffic) {
	t.Helper()
	name := "backend_stats"
	if m == e.o.SvcStats {
		name = "svc_stats"
	}
	if got := e.traffic(m, id); got != want {
		t.Errorf("%s[%d] = %+v, want %+v", name, id, got, want)
	}
}

// TestXDPConntrackBypass checks the benchmark knob: every packet takes the new-flow path.
func TestXDPConntrackBypass(t *testing.T) {
	e := newProgEnv(t, loader.WithConntrackBypass())
	configure(e)
	key := flowKey(client4, vip4, 40000, portMySQL, loader.ProtoTCP)
	putFlow(e, key, loader.Flow{Backend: 2, LastSeen: monoNow(t)})
	in := ack(vip4, 40000, portMySQL)
	for range 2 {
		before := e.counters()
		action, out := e.mustRun(in)
		if action != xdpTX || !bytes.Equal(out, forwarded(in, beMAC(1))) {
			t.Errorf("%s to %x, want XDP_TX to backend 1 (the ring's), ignoring conntrack", actionName(action), out[:6])
		}
		if d := counterMismatch(before, e.counters(), loader.Counters{Packets: 1, Tx: 1, NewFlow: 1}); d != "" {
			t.Errorf("counter deltas: %s", d)
		}
	}
	wantFlow(t, e, key, 1) // still written: only the lookup is bypassed
}

// TestXDPProfSkip checks the profiling knob: a step left out really is (the traffic counters stay
// zero), the packet is still forwarded, and without the knob the step runs.
func TestXDPProfSkip(t *testing.T) {
	for _, skip := range []bool{false, true} {
		var opts []loader.LoadOption
		if skip {
			opts = append(opts, loader.WithProfSkip(loader.ProfSkipTraffic))
		}
		e := newProgEnv(t, opts...)
		configure(e)
		in := ack(vip4, 40000, portMySQL)
		action, out := e.mustRun(in)
		if mac := beMAC(1); action != xdpTX || !bytes.Equal(out[:6], mac[:]) {
			t.Fatalf("skip=%v: %s to %x, want XDP_TX to backend 1", skip, actionName(action), out[:6])
		}
		want := loader.Traffic{Packets: 1, Bytes: uint64(len(in)), NewFlows: 1}
		if skip {
			want = loader.Traffic{}
		}
		wantTraffic(t, e, e.o.SvcStats, svcMySQL, want)
		wantTraffic(t, e, e.o.BackendStats, 1, want)
	}
}
