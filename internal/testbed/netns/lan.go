//go:build linux

package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/testbed/baseline"
)

// BridgeName is the bridge inside a LAN's namespace.
const BridgeName = "br0"

// NodeLink is the name of every node's interface on the LAN.
const NodeLink = "eth0"

// LAN is a namespace holding a bridge; nodes plug into it with a veth each, like hosts on one
// switch.
type LAN struct {
	*NS        // the switch: holds the bridge and the node-side veths' peers
	ID  string // random part shared by the names of all its namespaces
	tb  TB     // for the wrappers (AddNode, AttachPassXDP); nil from OpenLAN

	prefix string
	mu     sync.Mutex
	nodes  []*NS // node namespaces, removed by Close
}

// Node is a namespace with one interface, eth0, plugged into a LAN.
type Node struct {
	*NS
	Role     string           // short name given to AddNode ("client", "rs1")
	Prefix   netip.Prefix     // address of eth0 with its LAN prefix
	MAC      net.HardwareAddr // of eth0
	PeerLink string           // the bridge port (in the LAN namespace) that eth0 is wired to
	LAN      *LAN
}

// Addr is the node's address on the LAN.
func (n *Node) Addr() netip.Addr { return n.Prefix.Addr() }

// NewLAN creates a namespace "xdplb-t-<id>-lan" with an up bridge and no IPv6 on its ports. It
// and every node added to it are removed in tb.Cleanup.
func NewLAN(tb TB) *LAN {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skipf("creating network namespaces needs root (%v)", os.ErrPermission)
	}
	l, err := OpenLAN(Prefix)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	l.tb = tb
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("remove LAN %s: %v", l.Name, err)
		}
	})
	return l
}

// OpenLAN creates a namespace "<prefix><id>-lan" with an up bridge and no IPv6 on its ports.
// Close removes it and its nodes.
func OpenLAN(prefix string) (*LAN, error) {
	id := RandomID()
	ns, err := Open(prefix + id + "-lan")
	if err != nil {
		return nil, err
	}
	l := &LAN{NS: ns, ID: id, prefix: prefix}
	err = l.Do(func() error {
		if err := noIPv6ByDefault(); err != nil {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s: %w", BridgeName, err)
		}
		return setLinkUp(BridgeName)
	})
	if err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("LAN %s: %w", l.Name, err)
	}
	return l, nil
}

// ForTest makes AddNode and AttachPassXDP of a LAN from OpenLAN report to tb, as those of a LAN
// from NewLAN do (for a LAN a test owns through another helper: the cluster). The LAN's Close
// stays its owner's.
func (l *LAN) ForTest(tb TB) { l.tb = tb }

// Close removes the nodes' namespaces, last first, then the LAN's (their interfaces go with them
// once no process is left inside).
func (l *LAN) Close() error {
	l.mu.Lock()
	nodes := l.nodes
	l.nodes = nil
	l.mu.Unlock()
	var errs []error
	for i := len(nodes) - 1; i >= 0; i-- {
		if err := nodes[i].Close(); err != nil {
			errs = append(errs, fmt.Errorf("remove network namespace %s: %w", nodes[i].Name, err))
		}
	}
	if err := l.NS.Close(); err != nil {
		errs = append(errs, fmt.Errorf("remove network namespace %s: %w", l.Name, err))
	}
	return errors.Join(errs...)
}

// AddNode is [LAN.Add] for a test: a failure is fatal.
func (l *LAN) AddNode(role, addrCIDR string) *Node {
	if l.tb == nil {
		panic("netns: AddNode on a LAN without a test (OpenLAN): use Add, or ForTest")
	}
	l.tb.Helper()
	n, err := l.Add(role, addrCIDR)
	if err != nil {
		l.tb.Fatalf("AddNode(%q, %q): %v", role, addrCIDR, err)
	}
	return n
}

// Add creates the namespace "<prefix><id>-<role>" with eth0 addressed addrCIDR (IPv4 or IPv6,
// with prefix length), wired to a new port of the LAN's bridge named "p-<role>". Both ends and
// the node's loopback are up when it returns. IPv6 is off on IPv4-only nodes (no router
// solicitations or DAD in captures); IPv6 addresses are added without DAD. The LAN's Close
// removes the node.
func (l *LAN) Add(role, addrCIDR string) (*Node, error) {
	prefix, err := netip.ParsePrefix(addrCIDR)
	if err != nil {
		return nil, fmt.Errorf("want an address with prefix length: %w", err)
	}
	peer := "p-" + role
	if len(peer) > unix.IFNAMSIZ-1 {
		return nil, fmt.Errorf("role too long for an interface name (%q is %d bytes, max %d)",
			peer, len(peer), unix.IFNAMSIZ-1)
	}
	ns, err := Open(l.prefix + l.ID + "-" + role)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.nodes = append(l.nodes, ns)
	l.mu.Unlock()
	n := &Node{NS: ns, Role: role, Prefix: prefix, PeerLink: peer, LAN: l}

	err = n.Do(func() error {
		if prefix.Addr().Is4() {
			if err := noIPv6ByDefault(); err != nil {
				return err
			}
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: NodeLink},
			PeerName:      peer,
			PeerNamespace: netlink.NsFd(int(l.handle)),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s (peer %s in %s): %w", NodeLink, peer, l.Name, err)
		}
		eth, err := netlink.LinkByName(NodeLink)
		if err != nil {
			return err
		}
		n.MAC = eth.Attrs().HardwareAddr
		addr := &netlink.Addr{IPNet: prefixToIPNet(prefix)}
		if prefix.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(eth, addr); err != nil {
			return fmt.Errorf("add %s to %s: %w", prefix, NodeLink, err)
		}
		return netlink.LinkSetUp(eth)
	})
	if err != nil {
		return nil, err
	}
	err = l.Do(func() error {
		p, err := netlink.LinkByName(peer)
		if err != nil {
			return err
		}
		br, err := netlink.LinkByName(BridgeName)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(p, br); err != nil {
			return fmt.Errorf("attach %s to %s: %w", peer, BridgeName, err)
		}
		return netlink.LinkSetUp(p)
	})
	if err != nil {
		return nil, fmt.Errorf("bridge side: %w", err)
	}
	return n, nil
}

// AttachPassXDP is [LAN.AttachPass] for a test, detached in cleanup.
func (l *LAN) AttachPassXDP(n *Node) {
	if l.tb == nil {
		panic("netns: AttachPassXDP on a LAN without a test (OpenLAN): use AttachPass, or ForTest")
	}
	l.tb.Helper()
	a, err := l.AttachPass(n)
	if err != nil {
		l.tb.Fatalf("%v", err)
	}
	l.tb.Cleanup(func() { a.Close() })
}

// AttachPass attaches a program that returns XDP_PASS (bpf/baseline.c) to the bridge port of n,
// in native (driver) mode. Native XDP_TX out of a veth needs an XDP program on its peer, or the
// frames vanish (TESTBED.md). Close detaches it.
func (l *LAN) AttachPass(n *Node) (*baseline.Attached, error) {
	var a *baseline.Attached
	err := l.Do(func() error {
		var err error
		a, err = baseline.AttachPass(n.PeerLink)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bridge port %s in %s: %w", n.PeerLink, l.Name, err)
	}
	return a, nil
}

// SetLink sets the node's eth0 up or down.
func (n *Node) SetLink(up bool) error {
	return n.Do(func() error {
		l, err := netlink.LinkByName(NodeLink)
		if err != nil {
			return err
		}
		if up {
			return netlink.LinkSetUp(l)
		}
		return netlink.LinkSetDown(l)
	})
}

// HasAddr reports whether a is on the node's eth0 (a VRRP router's VIP, for example).
func (n *Node) HasAddr(a netip.Addr) (bool, error) {
	var has bool
	err := n.Do(func() error {
		l, err := netlink.LinkByName(NodeLink)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
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

// DelAddr removes a (as /32 or /128) from the node's eth0 if it is there (what a reboot does to
// a VIP that a killed VRRP router left).
func (n *Node) DelAddr(a netip.Addr) error {
	return n.Do(func() error {
		l, err := netlink.LinkByName(NodeLink)
		if err != nil {
			return err
		}
		err = netlink.AddrDel(l, &netlink.Addr{IPNet: prefixToIPNet(netip.PrefixFrom(a, a.BitLen()))})
		if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove %s from %s in %s: %w", a, NodeLink, n.Name, err)
		}
		return nil
	})
}

// SetupRealServer makes n a direct-routing real server for vip, as `lvs_real` does: vip/32 (or
// /128) on lo, and arp_ignore=1, arp_announce=2 on all and eth0 so that n never answers ARP for
// the VIP nor uses it as an ARP source.
func (n *Node) SetupRealServer(vip netip.Addr) error {
	for _, dev := range []string{"all", NodeLink} {
		if err := n.Sysctl("net/ipv4/conf/"+dev+"/arp_ignore", "1"); err != nil {
			return err
		}
		if err := n.Sysctl("net/ipv4/conf/"+dev+"/arp_announce", "2"); err != nil {
			return err
		}
	}
	return n.AddAddr("lo", netip.PrefixFrom(vip, vip.BitLen()))
}

// AddAddr adds an address to one of the node's interfaces.
func (n *Node) AddAddr(dev string, p netip.Prefix) error {
	return n.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		a := &netlink.Addr{IPNet: prefixToIPNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(l, a); err != nil {
			return fmt.Errorf("add %s to %s in %s: %w", p, dev, n.Name, err)
		}
		return nil
	})
}

// TxChecksumOff turns TX checksum offload off on eth0 (`ethtool -K eth0 tx off`). Native XDP_TX
// on veth loses the partial-checksum state, so a real server would see bad TCP checksums from any
// sender whose frames go through XDP_TX (TESTBED.md).
func (n *Node) TxChecksumOff(ctx context.Context) error {
	_, err := n.Exec(ctx, "ethtool", "-K", NodeLink, "tx", "off")
	return err
}

// XDPAttachMode reports how an XDP program is attached to dev in the namespace:
// "" (none), "native", "generic", "offload" or "multi".
func (ns *NS) XDPAttachMode(dev string) (mode string, progID uint32, err error) {
	err = ns.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		x := l.Attrs().Xdp
		if x == nil || !x.Attached {
			return nil
		}
		progID = x.ProgId
		switch x.AttachMode {
		case 1: // XDP_ATTACHED_DRV
			mode = "native"
		case 2: // XDP_ATTACHED_SKB
			mode = "generic"
		case 3: // XDP_ATTACHED_HW
			mode = "offload"
		default:
			mode = "multi"
		}
		return nil
	})
	return mode, progID, err
}

// Neighbour returns the MAC of ip in dev's neighbour table in the namespace (nil when there is no
// usable entry) and the entry's state as text.
func (ns *NS) Neighbour(dev string, ip netip.Addr) (mac net.HardwareAddr, state string, err error) {
	err = ns.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		neighs, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, nb := range neighs {
			a, ok := netip.AddrFromSlice(nb.IP)
			if !ok || a.Unmap() != ip {
				continue
			}
			state = neighState(nb.State)
			if nb.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT) != 0 {
				mac = nb.HardwareAddr
			}
		}
		return nil
	})
	return mac, state, err
}

func neighState(s int) string {
	names := []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_REACHABLE, "REACHABLE"},
		{netlink.NUD_STALE, "STALE"}, {netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"},
		{netlink.NUD_FAILED, "FAILED"}, {netlink.NUD_NOARP, "NOARP"}, {netlink.NUD_PERMANENT, "PERMANENT"},
	}
	var out []string
	for _, n := range names {
		if s&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	if len(out) == 0 {
		return "NONE"
	}
	return fmt.Sprint(out)
}

// noIPv6ByDefault turns IPv6 off for interfaces created later in the current namespace.
func noIPv6ByDefault() error {
	for _, k := range []string{"/proc/sys/net/ipv6/conf/default/disable_ipv6", "/proc/sys/net/ipv6/conf/all/disable_ipv6"} {
		if err := writeFile(k, "1"); err != nil {
			return err
		}
	}
	return nil
}

func setLinkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// lockedBuffer collects a process's output from two pipes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func writeFile(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Veth creates a veth pair, a in ns and b in peer, with IPv6 off in both namespaces, and sets
// both ends up (a direct link without a bridge, for throughput tests).
func (ns *NS) Veth(peer *NS, a, b string) error {
	err := ns.Do(func() error {
		if err := noIPv6ByDefault(); err != nil {
			return err
		}
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b, PeerNamespace: netlink.NsFd(int(peer.handle))}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth %s/%s: %w", a, b, err)
		}
		return setLinkUp(a)
	})
	if err != nil {
		return err
	}
	return peer.Do(func() error {
		if err := noIPv6ByDefault(); err != nil {
			return err
		}
		return setLinkUp(b)
	})
}
