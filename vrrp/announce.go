//go:build linux

package vrrp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Announcer tells the LAN that the VIPs are here: one round is one gratuitous ARP per IPv4 VIP
// and one unsolicited neighbour advertisement per IPv6 VIP. The runner repeats rounds
// (GARPRepeat at once, GARPRepeat more after GARPDelay).
type Announcer interface {
	Announce(vips []netip.Addr) error
	Close() error
}

// LinkAnnouncer is the real [Announcer] of one interface. NewLinkAnnouncer opens its sockets in
// the current network namespace; it may be used from any goroutine after.
type LinkAnnouncer struct {
	ifi *net.Interface
	arp int              // AF_PACKET SOCK_DGRAM socket for ETH_P_ARP, -1 if none
	ndp *ipv6.PacketConn // ICMPv6 socket for unsolicited NAs
}

var _ Announcer = (*LinkAnnouncer)(nil)

// NewLinkAnnouncer opens what announcing the given families needs on iface: an ARP client
// (AF_PACKET) for IPv4, an ICMPv6 socket from the link-local address for IPv6.
func NewLinkAnnouncer(iface string, v4, v6 bool) (*LinkAnnouncer, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("vrrp: interface %q: %w", iface, err)
	}
	a := &LinkAnnouncer{ifi: ifi, arp: -1}
	if v4 {
		// github.com/mdlayher/arp would do, but the version in go.sum does not build against
		// mdlayher/socket v0.5.1 (mdlayher/packet v1.0.0): 28 bytes are written by hand.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("vrrp: ARP socket on %s: %w", iface, err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("vrrp: bind ARP socket to %s: %w", iface, err)
		}
		a.arp = fd
	}
	if v6 {
		// Not ndp.Conn: its WriteTo names the zone by interface name, looked up at each send in
		// the sending thread's network namespace. Our own socket sends with the index.
		pc, err := net.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("vrrp: ICMPv6 socket on %s: %w", iface, err)
		}
		p := ipv6.NewPacketConn(pc)
		a.ndp = p
		var block ipv6.ICMPFilter
		block.SetAll(true)
		for _, step := range []func() error{
			func() error { return p.SetICMPFilter(&block) },
			func() error { return p.SetMulticastInterface(ifi) },
			func() error { return p.SetMulticastHopLimit(255) },
			func() error { return p.SetHopLimit(255) },
			func() error { return p.SetMulticastLoopback(false) },
		} {
			if err := step(); err != nil {
				a.Close()
				return nil, fmt.Errorf("vrrp: ICMPv6 socket on %s: %w", iface, err)
			}
		}
	}
	return a, nil
}

// allNodes is where unsolicited neighbour advertisements go.
var allNodes = netip.MustParseAddr("ff02::1")

// Announce sends one gratuitous ARP (a request with sender and target IP the VIP, to the
// broadcast address, as keepalived does) per IPv4 VIP and one unsolicited neighbour advertisement
// (override flag, target link-layer address option) to ff02::1 per IPv6 VIP.
func (a *LinkAnnouncer) Announce(vips []netip.Addr) error {
	var errs []error
	for _, v := range vips {
		v = v.Unmap()
		switch {
		case v.Is4() && a.arp >= 0:
			if err := a.garp(v); err != nil {
				errs = append(errs, fmt.Errorf("vrrp: gratuitous ARP for %s on %s: %w", v, a.ifi.Name, err))
			}
		case v.Is6() && a.ndp != nil:
			na := &ndp.NeighborAdvertisement{
				Override:      true,
				TargetAddress: v,
				Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: a.ifi.HardwareAddr}},
			}
			b, err := ndp.MarshalMessage(na) // the kernel fills in the ICMPv6 checksum
			if err == nil {
				_, err = a.ndp.WriteTo(b, nil, &net.IPAddr{IP: allNodes.AsSlice(), Zone: strconv.Itoa(a.ifi.Index)})
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("vrrp: unsolicited NA for %s on %s: %w", v, a.ifi.Name, err))
			}
		default:
			errs = append(errs, fmt.Errorf("vrrp: no socket to announce %s on %s", v, a.ifi.Name))
		}
	}
	return errors.Join(errs...)
}

// Close closes the sockets.
func (a *LinkAnnouncer) Close() error {
	var errs []error
	if a.arp >= 0 {
		errs = append(errs, unix.Close(a.arp))
		a.arp = -1
	}
	if a.ndp != nil {
		errs = append(errs, a.ndp.Close())
	}
	return errors.Join(errs...)
}

// garp sends one gratuitous ARP request for vip: sender and target IP vip, target hardware
// address broadcast, to the broadcast address.
func (a *LinkAnnouncer) garp(vip netip.Addr) error {
	mac := a.ifi.HardwareAddr
	if len(mac) != 6 {
		return fmt.Errorf("interface has no Ethernet address")
	}
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)             // hardware type Ethernet
	binary.BigEndian.PutUint16(b[2:], unix.ETH_P_IP) // protocol type
	b[4], b[5] = 6, 4                                // address lengths
	binary.BigEndian.PutUint16(b[6:], 1)             // request
	copy(b[8:14], mac)
	ip := vip.As4()
	copy(b[14:18], ip[:])
	copy(b[18:24], broadcastMAC)
	copy(b[24:28], ip[:])
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: a.ifi.Index, Halen: 6}
	copy(to.Addr[:], broadcastMAC)
	return unix.Sendto(a.arp, b, 0, to)
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
