package bench

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The failover topology, built without a testing.TB: named network namespaces
// "xdplb-b-<id>-<role>" (registered under /run/netns so that nsenter --net can join them), a
// bridge "br0" in the LAN namespace and one veth "eth0" per node, wired to a bridge port
// "p-<role>".

const (
	nsPrefix  = "xdplb-b-"
	nsRunDir  = "/run/netns"
	foBridge  = "br0"
	foNodeDev = "eth0"
)

type foNS struct {
	name   string
	path   string
	handle netns.NsHandle
}

type foNode struct {
	*foNS
	role string
	addr netip.Prefix
	mac  net.HardwareAddr
}

type foTopo struct {
	id    string
	lan   *foNS
	nodes []*foNode
	all   []*foNS // every namespace created, for close
}

func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newNS creates a named namespace on a throw-away locked thread (unshare moves the thread) and
// brings its loopback up.
func newNS(name string) (*foNS, error) {
	type res struct {
		ns  *foNS
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread changed namespace
		if err := os.MkdirAll(nsRunDir, 0o755); err != nil {
			ch <- res{err: err}
			return
		}
		h, err := netns.NewNamed(name)
		if err != nil {
			ch <- res{err: fmt.Errorf("create network namespace %s: %w", name, err)}
			return
		}
		ch <- res{ns: &foNS{name: name, path: filepath.Join(nsRunDir, name), handle: h}}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	if err := r.ns.do(func() error {
		l, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}); err != nil {
		_ = r.ns.remove()
		return nil, err
	}
	return r.ns, nil
}

// do runs f on a fresh locked OS thread inside the namespace (the thread is discarded after).
// Sockets f creates stay in the namespace.
func (ns *foNS) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked
		if err := netns.Set(ns.handle); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", ns.name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func (ns *foNS) remove() error {
	var errs []error
	if err := ns.handle.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := netns.DeleteNamed(ns.name); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("delete network namespace %s: %w", ns.name, err))
	}
	return errors.Join(errs...)
}

func writeProc(path, v string) error {
	return os.WriteFile(path, []byte(v), 0o644)
}

func noIPv6() error {
	for _, k := range []string{"/proc/sys/net/ipv6/conf/default/disable_ipv6", "/proc/sys/net/ipv6/conf/all/disable_ipv6"} {
		if err := writeProc(k, "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// newTopo creates the LAN namespace with its bridge. close removes everything it made.
func newTopo() (*foTopo, error) {
	t := &foTopo{id: randomID()}
	lan, err := newNS(nsPrefix + t.id + "-lan")
	if err != nil {
		return nil, err
	}
	t.lan = lan
	t.all = append(t.all, lan)
	err = lan.do(func() error {
		if err := noIPv6(); err != nil {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: foBridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge: %w", err)
		}
		return netlink.LinkSetUp(br)
	})
	if err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

// addNode creates a node namespace with eth0 (addr with prefix length) plugged into the bridge.
func (t *foTopo) addNode(role, addr string) (*foNode, error) {
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		return nil, err
	}
	ns, err := newNS(nsPrefix + t.id + "-" + role)
	if err != nil {
		return nil, err
	}
	t.all = append(t.all, ns)
	n := &foNode{foNS: ns, role: role, addr: p}
	peer := "p-" + role
	err = ns.do(func() error {
		if err := noIPv6(); err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: foNodeDev}, PeerName: peer,
			PeerNamespace: netlink.NsFd(int(t.lan.handle))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s/%s: %w", foNodeDev, peer, err)
		}
		l, err := netlink.LinkByName(foNodeDev)
		if err != nil {
			return err
		}
		n.mac = l.Attrs().HardwareAddr
		ipn := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("add %s: %w", p, err)
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", role, err)
	}
	err = t.lan.do(func() error {
		pl, err := netlink.LinkByName(peer)
		if err != nil {
			return err
		}
		br, err := netlink.LinkByName(foBridge)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(pl, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(pl)
	})
	if err != nil {
		return nil, fmt.Errorf("node %s: bridge port: %w", role, err)
	}
	t.nodes = append(t.nodes, n)
	return n, nil
}

// close removes every namespace (their interfaces go with them once no process is left inside).
func (t *foTopo) close() error {
	var errs []error
	for i := len(t.all) - 1; i >= 0; i-- {
		if err := t.all[i].remove(); err != nil {
			errs = append(errs, err)
		}
	}
	t.all = nil
	return errors.Join(errs...)
}

// setLink sets the node's eth0 up or down.
func (n *foNode) setLink(up bool) error {
	return n.do(func() error {
		l, err := netlink.LinkByName(foNodeDev)
		if err != nil {
			return err
		}
		if up {
			return netlink.LinkSetUp(l)
		}
		return netlink.LinkSetDown(l)
	})
}

// hasAddr reports whether a is on the node's eth0.
func (n *foNode) hasAddr(a netip.Addr) (bool, error) {
	var has bool
	err := n.do(func() error {
		l, err := netlink.LinkByName(foNodeDev)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, x := range addrs {
			if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
				has = true
			}
		}
		return nil
	})
	return has, err
}

// delAddr removes a/32 from the node's eth0 if it is there (what a reboot does to a VIP that a
// killed VRRP router left).
func (n *foNode) delAddr(a netip.Addr) error {
	return n.do(func() error {
		l, err := netlink.LinkByName(foNodeDev)
		if err != nil {
			return err
		}
		err = netlink.AddrDel(l, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}})
		if err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
			return err
		}
		return nil
	})
}

// neighMAC is the node's neighbour entry for a on eth0 ("" when none).
func (n *foNode) neighMAC(a netip.Addr) (string, string, error) {
	var mac, state string
	err := n.do(func() error {
		l, err := netlink.LinkByName(foNodeDev)
		if err != nil {
			return err
		}
		ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, x := range ns {
			if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
				mac, state = x.HardwareAddr.String(), neighState(x.State)
			}
		}
		return nil
	})
	return mac, state, err
}

func neighState(s int) string {
	switch s {
	case netlink.NUD_REACHABLE:
		return "REACHABLE"
	case netlink.NUD_STALE:
		return "STALE"
	case netlink.NUD_DELAY:
		return "DELAY"
	case netlink.NUD_PROBE:
		return "PROBE"
	case netlink.NUD_FAILED:
		return "FAILED"
	case netlink.NUD_INCOMPLETE:
		return "INCOMPLETE"
	case netlink.NUD_PERMANENT:
		return "PERMANENT"
	case netlink.NUD_NOARP:
		return "NOARP"
	}
	return fmt.Sprintf("0x%x", s)
}
