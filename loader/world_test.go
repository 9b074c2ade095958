package loader_test

import (
	"net/netip"

	"github.com/xdplb/xdplb/internal/testbed/packet"
	"github.com/xdplb/xdplb/loader"
)

// The test world: a client behind a router, one director, a peer director, real servers.
var (
	macRouter   = packet.MustMAC("02:00:00:00:00:aa") // source of client traffic
	macDirector = packet.MustMAC("02:00:00:00:00:01") // the interface the program runs on
	macPeer     = packet.MustMAC("02:00:00:00:00:02") // another director

	client4 = netip.MustParseAddr("192.0.2.10")
	client6 = netip.MustParseAddr("2001:db8::10")
	other4  = netip.MustParseAddr("10.0.0.200") // the director's own address: no VIP
	other6  = netip.MustParseAddr("fd00::200")
	vip4    = netip.MustParseAddr("10.0.0.100")
	vip4b   = netip.MustParseAddr("10.0.0.101")
	vip6    = netip.MustParseAddr("fd00::100")
)

// beMAC is the MAC of real server id.
func beMAC(id uint32) packet.MAC { return packet.MAC{0x02, 0, 0, 0, 0x01, byte(id)} }

// Services of the test world (testWorld), by id, and their ports.
const (
	svcMySQL      = 1  // vip4:3306/tcp -> 1 (ring), 2 (spare)
	svcDNS        = 2  // vip4:53/udp -> 3
	svcHTTPS6     = 3  // vip6:443/tcp -> 4
	svcAnyPort    = 4  // vip4b:*/tcp -> 5
	svcHTTP       = 5  // vip4b:80/tcp -> 6 (exact port beats the wildcard)
	svcPersist    = 6  // vip4:8080/tcp, persistence 300 s -> 7 (ring), 8 (spare)
	svcSorry      = 7  // vip4:9000/tcp, empty ring, sorry server 9
	svcNoBackend  = 8  // vip4:9001/tcp, no ring, no sorry server
	svcLocal      = 9  // vip4:9002/tcp -> 10, this node
	svcDNS6       = 10 // vip6:53/udp -> 11
	svcSorryPers  = 11 // vip4:9004/tcp, persistence 300 s, empty ring, sorry server 12
	persistSecs   = 300
	portMySQL     = 3306
	portPersist   = 8080
	portSorry     = 9000
	portNoBackend = 9001
	portLocal     = 9002
	portSorryPers = 9004
)

// worldService is one service of the test world, with its backends and what the program must do
// with a new, valid, unicast packet for it.
type worldService struct {
	vip   netip.Addr
	port  uint16 // 0: every port
	proto uint8
	svc   loader.Service
	ring  []uint32 // backend ids repeated over the ring in slot 0; empty: empty ring; nil: none
	// backends of the service: id -> flags beyond BackendUsed.
	backends map[uint32]uint16
	verdict  uint32 // XDP_TX to one of the backends, XDP_PASS (local) or XDP_DROP (none usable)
}

func persistent(id, sorry uint32) loader.Service {
	return loader.Service{Id: id, Flags: loader.SvcFlagHashSrcOnly, PersistTimeout: persistSecs, SorryBackend: sorry}
}

var testWorld = []worldService{
	{vip4, portMySQL, loader.ProtoTCP, loader.Service{Id: svcMySQL}, []uint32{1}, map[uint32]uint16{1: 0, 2: 0}, xdpTX},
	{vip4, 53, loader.ProtoUDP, loader.Service{Id: svcDNS}, []uint32{3}, map[uint32]uint16{3: 0}, xdpTX},
	{vip6, 443, loader.ProtoTCP, loader.Service{Id: svcHTTPS6}, []uint32{4}, map[uint32]uint16{4: 0}, xdpTX},
	{vip4b, 0, loader.ProtoTCP, loader.Service{Id: svcAnyPort}, []uint32{5}, map[uint32]uint16{5: 0}, xdpTX},
	{vip4b, 80, loader.ProtoTCP, loader.Service{Id: svcHTTP}, []uint32{6}, map[uint32]uint16{6: 0}, xdpTX},
	{vip4, portPersist, loader.ProtoTCP, persistent(svcPersist, 0), []uint32{7}, map[uint32]uint16{7: 0, 8: 0}, xdpTX},
	{vip4, portSorry, loader.ProtoTCP, loader.Service{Id: svcSorry, SorryBackend: 9}, []uint32{},
		map[uint32]uint16{9: loader.BackendSorry}, xdpTX},
	{vip4, portNoBackend, loader.ProtoTCP, loader.Service{Id: svcNoBackend}, nil, map[uint32]uint16{}, xdpDrop},
	{vip4, portLocal, loader.ProtoTCP, loader.Service{Id: svcLocal}, []uint32{10}, map[uint32]uint16{10: loader.BackendLocal}, xdpPass},
	{vip6, 53, loader.ProtoUDP, loader.Service{Id: svcDNS6}, []uint32{11}, map[uint32]uint16{11: 0}, xdpTX},
	{vip4, portSorryPers, loader.ProtoTCP, persistent(svcSorryPers, 12), []uint32{},
		map[uint32]uint16{12: loader.BackendSorry}, xdpTX},
}

// configure installs the test world into e's maps.
func configure(e *progEnv) {
	for _, s := range testWorld {
		e.addService(s.vip, s.port, s.proto, s.svc)
		if s.ring != nil {
			e.setRing(s.svc.Id, 0, s.ring...)
		}
		for id, flags := range s.backends {
			e.putBackend(id, loader.Backend{
				Addr:    loader.Addr16(netip.AddrFrom4([4]byte{10, 1, 0, byte(id)})),
				Mac:     beMAC(id),
				Flags:   loader.BackendUsed | flags,
				Service: s.svc.Id,
				Weight:  1,
			})
		}
	}
	if err := e.o.Peers.Put(loader.PeerKey{Mac: macPeer}, loader.Peer{}); err != nil {
		e.tb.Fatalf("put peer: %v", err)
	}
}

// lookupService finds the test world's service for a destination as the data path should:
// exact port first, then port 0. An IPv6 address never matches an IPv4 VIP, v4-mapped or not.
func lookupService(dst netip.Addr, port uint16, proto uint8) *worldService {
	for _, p := range []uint16{port, 0} {
		for i, s := range testWorld {
			if s.vip == dst && s.port == p && s.proto == proto {
				return &testWorld[i]
			}
		}
	}
	return nil
}

// Frame starts, from the router to the director.
func eth() packet.Builder               { return packet.Eth(macRouter, macDirector) }
func to4(dst netip.Addr) packet.Builder { return eth().IPv4(client4, dst) }
func to6(dst netip.Addr) packet.Builder { return eth().IPv6(client6, dst) }

// syn is the first packet of the client's TCP connection from sport to dst:dport.
func syn(dst netip.Addr, sport, dport uint16) []byte {
	if dst.Is6() {
		return to6(dst).TCP(sport, dport, packet.SYN).Build()
	}
	return to4(dst).TCP(sport, dport, packet.SYN).Build()
}

// ack is a later packet of the same connection.
func ack(dst netip.Addr, sport, dport uint16) []byte {
	if dst.Is6() {
		return to6(dst).TCP(sport, dport, packet.ACK).Seq(2, 2).Payload([]byte("SELECT 1")).Build()
	}
	return to4(dst).TCP(sport, dport, packet.ACK).Seq(2, 2).Payload([]byte("SELECT 1")).Build()
}
