package loader

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// On a veth, frames a native XDP program sends back with XDP_TX are handed to the peer device
// through its XDP receive path: when the peer has no XDP program of its own they are dropped,
// silently, while the sender counts them as sent (docs/testbed.md). Generic mode has no such
// need. Auto mode therefore picks generic on a veth whose peer has no XDP program.

// VethPeer describes the peer of a veth interface.
type VethPeer struct {
	Name    string
	Ifindex int
	NetNsID int  // -1: the same network namespace
	XDP     bool // an XDP program is attached to the peer
}

// vethPeer reports the peer of the veth with index ifindex; ok is false when the interface is
// not a veth. The peer may be in another network namespace (the usual case: the bridge port).
func vethPeer(ifindex int) (p VethPeer, ok bool, err error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return p, false, err
	}
	if l.Type() != "veth" {
		return p, false, nil
	}
	a := l.Attrs()
	p.Ifindex, p.NetNsID = a.ParentIndex, a.NetNsID
	if p.Ifindex == 0 {
		return p, true, fmt.Errorf("veth %s: peer unknown", a.Name)
	}
	peer, err := linkByIndexIn(p.Ifindex, p.NetNsID)
	if err != nil {
		return p, true, fmt.Errorf("veth %s: read its peer (ifindex %d, netnsid %d): %w", a.Name, p.Ifindex, p.NetNsID, err)
	}
	p.Name = peer.Attrs().Name
	p.XDP = peer.Attrs().Xdp != nil && peer.Attrs().Xdp.Attached
	return p, true, nil
}

// linkByIndexIn reads a link of the network namespace with id nsid as this namespace knows it
// (-1: this namespace), with IFLA_TARGET_NETNSID.
func linkByIndexIn(ifindex, nsid int) (netlink.Link, error) {
	if nsid < 0 {
		return netlink.LinkByIndex(ifindex)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(ifindex)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(nsid))))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("%d links for ifindex %d", len(msgs), ifindex)
	}
	return netlink.LinkDeserialize(nil, msgs[0])
}

// ModeNote says what the attach mode means on iface when that needs saying: on a veth, native
// mode drops the frames it forwards unless the peer has an XDP program, and generic mode is
// what auto chooses then. "" when there is nothing to say (not a veth, or native with an XDP
// program on the peer).
func ModeNote(ifindex int, m Mode) string {
	p, ok, err := vethPeer(ifindex)
	switch {
	case !ok:
		return ""
	case err != nil:
		return fmt.Sprintf("veth whose peer could not be read: %v", err)
	case m == ModeNative && !p.XDP:
		return fmt.Sprintf("WARNING: veth peer %s has no XDP program, so the frames this program forwards (XDP_TX) are dropped; "+
			"attach one there (a plain XDP_PASS) or use generic mode", p.Name)
	case m == ModeGeneric && !p.XDP:
		return fmt.Sprintf("veth peer %s has no XDP program: native mode would drop the forwarded frames", p.Name)
	}
	return ""
}
