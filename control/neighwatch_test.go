package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/xdplb/xdplb/loader"
)

type neighEvent struct {
	addr netip.Addr
	mac  net.HardwareAddr
}

func TestWatchNeighbours(t *testing.T) {
	inNetNS(t, func() error {
		here, err := netns.Get()
		if err != nil {
			return err
		}
		defer here.Close()
		far, err := netns.New()
		if err != nil {
			return err
		}
		defer far.Close()
		if err := netns.Set(here); err != nil {
			return err
		}
		const iface = "xdplbt0"
		if err := netlink.LinkAdd(&netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: iface}, PeerName: "xdplbt1", PeerNamespace: netlink.NsFd(far),
		}); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		link, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("198.51.100.1/24")
		if err := netlink.AddrAdd(link, addr); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		h, err := netlink.NewHandleAt(far)
		if err != nil {
			return err
		}
		defer h.Close()
		peer, err := h.LinkByName("xdplbt1")
		if err != nil {
			return err
		}
		addr, _ = netlink.ParseAddr("198.51.100.3/24")
		if err := h.AddrAdd(peer, addr); err != nil {
			return err
		}
		if err := h.LinkSetUp(peer); err != nil {
			return err
		}
		// Another interface, whose neighbours must not be reported.
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "xdplbt2"}, PeerName: "xdplbt3"}); err != nil {
			return fmt.Errorf("add second veth: %w", err)
		}
		other, err := netlink.LinkByName("xdplbt2")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(other); err != nil {
			return err
		}

		permanent := func(l netlink.Link, ip netip.Addr, mac net.HardwareAddr) error {
			return netlink.NeighSet(&netlink.Neigh{
				LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: ip.AsSlice(), HardwareAddr: mac,
			})
		}
		fixed := netip.MustParseAddr("198.51.100.2")
		elsewhere := netip.MustParseAddr("192.0.2.50")
		if err := permanent(link, fixed, mac1); err != nil { // existing before the watch starts
			return err
		}

		events := make(chan neighEvent, 64)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		watchErr := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			if err := netns.Set(here); err != nil {
				watchErr <- err
				return
			}
			watchErr <- WatchNeighbours(ctx, iface, func(a netip.Addr, mac net.HardwareAddr) {
				events <- neighEvent{a, mac}
			})
		}()
		expect := func(what string, a netip.Addr, mac net.HardwareAddr) error {
			timeout := time.After(time.Second)
			for {
				select {
				case e := <-events:
					if e.addr == elsewhere {
						return fmt.Errorf("%s: reported a neighbour of another interface: %v", what, e)
					}
					if e.addr == a && bytes.Equal(e.mac, mac) {
						return nil
					}
				case err := <-watchErr:
					return fmt.Errorf("%s: watch ended: %v", what, err)
				case <-timeout:
					return fmt.Errorf("%s: no call for %s at %s within 1 s", what, a, mac)
				}
			}
		}

		// The existing entry is listed.
		if err := expect("existing entry", fixed, mac1); err != nil {
			return err
		}
		if err := permanent(other, elsewhere, mac3); err != nil {
			return err
		}
		// A permanent entry changed by hand.
		if err := permanent(link, fixed, mac2); err != nil {
			return err
		}
		if err := expect("permanent entry changed", fixed, mac2); err != nil {
			return err
		}

		// A real neighbour: resolved by ARP, then its MAC changes and it speaks again.
		peerIP := netip.MustParseAddr("198.51.100.3")
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer rcancel()
		if _, err := ResolveMAC(rctx, iface, peerIP); err != nil {
			return err
		}
		if err := expect("resolved neighbour", peerIP, peer.Attrs().HardwareAddr); err != nil {
			return err
		}
		newMAC, _ := net.ParseMAC("02:00:00:00:00:42")
		if err := h.LinkSetHardwareAddr(peer, newMAC); err != nil {
			return fmt.Errorf("change the peer's MAC: %w", err)
		}
		// The peer forgets our MAC and sends us a datagram: its ARP request carries its new MAC.
		if err := inNS(far, func() error {
			neighs, err := netlink.NeighList(peer.Attrs().Index, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, n := range neighs {
				netlink.NeighDel(&n)
			}
			c, err := net.Dial("udp", "198.51.100.1:9")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte{0})
			return err
		}); err != nil {
			return fmt.Errorf("traffic from the peer: %w", err)
		}
		if err := expect("peer with a new MAC", peerIP, newMAC); err != nil {
			return err
		}

		// Nothing more, and the watch ends with ctx.
		select {
		case e := <-events:
			if e.addr == elsewhere || e.addr == fixed {
				return fmt.Errorf("unexpected call %v", e)
			}
		case <-time.After(100 * time.Millisecond):
		}
		cancel()
		select {
		case err := <-watchErr:
			if err != nil {
				return fmt.Errorf("watch ended with %v, want nil", err)
			}
		case <-time.After(time.Second):
			return errors.New("watch did not end with its context")
		}

		if err := WatchNeighbours(context.Background(), "xdplb-none", nil); !errors.Is(err, loader.ErrNoInterface) {
			return fmt.Errorf("missing interface: %v, want ErrNoInterface", err)
		}
		return nil
	})
}

// inNS runs f on a fresh thread in ns.
func inNS(ns netns.NsHandle, f func() error) error {
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}
