package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/loader"
)

// watchNUD are the neighbour states WatchNeighbours reports: entries whose MAC was confirmed,
// is kept from an earlier confirmation, or was set by hand.
const watchNUD = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_PERMANENT

// WatchNeighbours calls fn with the MAC of every neighbour of the interface (IPv4 and IPv6) whose
// entry is reachable, stale or permanent: once for each existing entry, then whenever an entry's
// MAC changes (not on every state change, nor on deletion). It watches the network namespace of
// the calling thread, calls fn from its own goroutine (one call at a time), and returns nil when
// ctx is done, or an error when the interface is missing or the netlink subscription fails
// (also when the kernel dropped updates for a full socket buffer, ENOBUFS): the caller calls it
// again, which relists every entry.
func WatchNeighbours(ctx context.Context, iface string, fn func(addr netip.Addr, mac net.HardwareAddr)) error {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("%w %q (see `ip link`)", loader.ErrNoInterface, iface)
	}
	index := link.Attrs().Index

	updates := make(chan netlink.NeighUpdate, 256)
	done := make(chan struct{})
	var (
		mu      sync.Mutex
		lastErr error
	)
	err = netlink.NeighSubscribeWithOptions(updates, done, netlink.NeighSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			mu.Lock()
			lastErr = err
			mu.Unlock()
		},
	})
	if err != nil {
		close(done)
		return fmt.Errorf("watch neighbours of %s: %w", iface, err)
	}
	defer func() {
		close(done) // closes the socket
		// The receiving goroutine may be blocked sending: drain until it closes the channel.
		go func() {
			for range updates {
			}
		}()
	}()

	last := map[netip.Addr]net.HardwareAddr{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				mu.Lock()
				err := lastErr
				mu.Unlock()
				if err == nil {
					err = errors.New("netlink subscription closed")
				}
				// ENOBUFS (the kernel dropped updates) ends here too: call again to relist.
				return fmt.Errorf("watch neighbours of %s: %w", iface, err)
			}
			n := u.Neigh
			if u.Type != unix.RTM_NEWNEIGH || n.LinkIndex != index || n.State&watchNUD == 0 || CheckMAC(n.HardwareAddr) != nil {
				continue
			}
			addr, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			addr = addr.Unmap()
			if old, seen := last[addr]; seen && bytes.Equal(old, n.HardwareAddr) {
				continue
			}
			mac := append(net.HardwareAddr(nil), n.HardwareAddr...)
			last[addr] = mac
			fn(addr, mac)
		}
	}
}
