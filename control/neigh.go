package control

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/loader"
)

// usableNUD are the neighbour states whose MAC can be trusted to forward to.
const usableNUD = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT

// resolvePoll is how often ResolveMAC rereads the neighbour table while the kernel resolves.
const resolvePoll = 50 * time.Millisecond

// ResolveMAC returns the MAC of addr on the interface from the kernel's neighbour table. When the
// table has no usable entry it makes the kernel resolve one (ARP or neighbour discovery) by
// sending a single UDP datagram to addr's discard port (9) out of that interface only (the socket
// is bound to it, so nothing leaves through another interface), then rereads
// the table every 50 ms until ctx ends.
func ResolveMAC(ctx context.Context, ifaceName string, addr netip.Addr) (net.HardwareAddr, error) {
	addr = addr.Unmap()
	if err := checkUnicast("address", addr.WithZone("")); err != nil {
		return nil, err
	}
	link, err := netlink.LinkByName(ifaceName)
	if err != nil {
		return nil, fmt.Errorf("%w %q (see `ip link`)", loader.ErrNoInterface, ifaceName)
	}
	if mac, err := lookupNeigh(link.Attrs().Index, addr); err != nil || mac != nil {
		return mac, err
	}
	probe(ifaceName, addr)

	t := time.NewTicker(resolvePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no MAC for %s on %s: is it on the same L2 segment? pass --mac", addr.WithZone(""), ifaceName)
		case <-t.C:
			if mac, err := lookupNeigh(link.Attrs().Index, addr); err != nil || mac != nil {
				return mac, err
			}
		}
	}
}

// lookupNeigh returns the MAC of a usable neighbour entry, or nil.
func lookupNeigh(ifindex int, addr netip.Addr) (net.HardwareAddr, error) {
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := netlink.NeighList(ifindex, family)
	if err != nil {
		return nil, fmt.Errorf("read neighbour table: %w", err)
	}
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a.Unmap() != addr.WithZone("") || n.State&usableNUD == 0 {
			continue
		}
		if CheckMAC(n.HardwareAddr) == nil {
			return n.HardwareAddr, nil
		}
	}
	return nil, nil
}

// probe sends one datagram to addr:9 out of the interface, so the kernel resolves addr's MAC.
// Errors are ignored: the neighbour table tells whether it worked.
func probe(ifaceName string, addr netip.Addr) {
	if addr.Is6() && addr.IsLinkLocalUnicast() && addr.Zone() == "" {
		addr = addr.WithZone(ifaceName)
	}
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifaceName)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	// Bound to the device, the datagram leaves through it or not at all: resolving addr
	// through another interface's route would not fill this interface's table.
	conn, err := d.Dial("udp", netip.AddrPortFrom(addr, 9).String())
	if err != nil {
		return
	}
	defer conn.Close()
	conn.Write([]byte{0})
}
