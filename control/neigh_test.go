package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/xdplb/xdplb/loader"
)

// inNetNS runs f on a thread in a new network namespace. The thread is never returned to the
// scheduler: it exits with the goroutine.
func inNetNS(t *testing.T, f func() error) {
	t.Helper()
	requireRoot(t)
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.New()
		if err != nil {
			done <- fmt.Errorf("new network namespace: %w", err)
			return
		}
		defer ns.Close()
		done <- f()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestResolveMAC(t *testing.T) {
	inNetNS(t, func() error {
		// A veth pair whose far end lives in a second namespace, where 198.51.100.3 answers ARP.
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

		// An entry already in the table.
		known := netip.MustParseAddr("198.51.100.2")
		if err := netlink.NeighAdd(&netlink.Neigh{
			LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: known.AsSlice(), HardwareAddr: mac1,
		}); err != nil {
			return fmt.Errorf("add neighbour: %w", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		mac, err := ResolveMAC(ctx, iface, known)
		if err != nil || !bytes.Equal(mac, mac1) {
			return fmt.Errorf("known neighbour: %v, %v; want %v", mac, err, mac1)
		}

		// An entry the kernel resolves when asked.
		mac, err = ResolveMAC(ctx, iface, netip.MustParseAddr("198.51.100.3"))
		if err != nil || !bytes.Equal(mac, peer.Attrs().HardwareAddr) {
			return fmt.Errorf("resolved neighbour: %v, %v; want %v", mac, err, peer.Attrs().HardwareAddr)
		}

		// Nobody answers: the error says what to do.
		ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err = ResolveMAC(ctx, iface, netip.MustParseAddr("198.51.100.4"))
		if err == nil || !strings.Contains(err.Error(), "no MAC for 198.51.100.4 on xdplbt0") || !strings.Contains(err.Error(), "--mac") {
			return fmt.Errorf("unknown neighbour: %v, want a hint to pass --mac", err)
		}

		if _, err := ResolveMAC(context.Background(), "xdplb-none", known); !errors.Is(err, loader.ErrNoInterface) {
			return fmt.Errorf("missing interface: %v, want ErrNoInterface", err)
		}
		return nil
	})
}
