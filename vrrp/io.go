//go:build linux

package vrrp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Packet is one received VRRP packet, with what the IP and Ethernet headers said about it.
type Packet struct {
	SrcMAC  net.HardwareAddr
	Src     netip.Addr
	Dst     netip.Addr
	TTL     int    // IPv4 TTL or IPv6 hop limit
	Payload []byte // the VRRP message (IP payload)
}

// PacketConn sends and receives VRRP messages for one interface and address family. [Conn] is
// the real one; tests of the runner use a fake.
type PacketConn interface {
	// Send sends one VRRP payload (already marshalled for dst: the checksum covers dst) to dst,
	// the multicast group or a unicast peer.
	Send(payload []byte, dst netip.Addr) error
	// Recv blocks until a VRRP packet from someone else arrives, ctx ends or the conn is closed.
	Recv(ctx context.Context) (Packet, error)
	Close() error
}

// ConnConfig says where a [Conn] sends and receives.
type ConnConfig struct {
	Iface  string
	Source netip.Addr // our address on Iface: the family and the source of our adverts
}

// Conn is the [PacketConn] of one interface and family: a raw IP socket (protocol 112) to send,
// with TTL/hop limit 255 and TOS/traffic class 0xc0, member of the VRRP group on the interface;
// and an AF_PACKET socket with a classic BPF filter to receive, which gives the source MAC.
// Make it in the network namespace of the interface; it may be used from any goroutine after.
type Conn struct {
	ifi *net.Interface
	src netip.Addr
	own []netip.Addr // the interface's addresses when opened, and src

	p4 *ipv4.PacketConn
	p6 *ipv6.PacketConn

	rx     *os.File // AF_PACKET
	rxRaw  syscall.RawConn
	rmu    sync.Mutex // one Recv at a time (buffer)
	buf    []byte
	closed sync.Once
}

var _ PacketConn = (*Conn)(nil)

// OpenConn opens the sockets of a [Conn] on c.Iface in the current network namespace.
func OpenConn(c ConnConfig) (*Conn, error) {
	ifi, err := net.InterfaceByName(c.Iface)
	if err != nil {
		return nil, fmt.Errorf("vrrp: interface %q: %w", c.Iface, err)
	}
	if !c.Source.IsValid() {
		return nil, fmt.Errorf("vrrp: conn on %s: no source address", c.Iface)
	}
	src := c.Source.Unmap()
	cn := &Conn{ifi: ifi, src: src, own: []netip.Addr{src}, buf: make([]byte, 65536)}
	if addrs, err := ifi.Addrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					cn.own = append(cn.own, ip.Unmap())
				}
			}
		}
	}
	if err := cn.openTx(); err != nil {
		cn.Close()
		return nil, err
	}
	if err := cn.openRx(); err != nil {
		cn.Close()
		return nil, err
	}
	return cn, nil
}

// Interface is the interface the conn is on.
func (c *Conn) Interface() *net.Interface { return c.ifi }

// Source is the source address of our adverts.
func (c *Conn) Source() netip.Addr { return c.src }

// dropAll is a socket filter that accepts nothing: the send socket must not queue the VRRP
// packets it would otherwise receive (the AF_PACKET socket receives them).
var dropAll = mustAssemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})

func mustAssemble(p []bpf.Instruction) []bpf.RawInstruction {
	r, err := bpf.Assemble(p)
	if err != nil {
		panic(err)
	}
	return r
}

func (c *Conn) openTx() error {
	bindToDevice := func(pc net.PacketConn) error {
		sc, err := pc.(syscallConner).SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := sc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, c.ifi.Name)
		}); err != nil {
			return err
		}
		return serr
	}
	if c.src.Is4() {
		pc, err := net.ListenPacket(fmt.Sprintf("ip4:%d", Proto), c.src.String())
		if err != nil {
			return fmt.Errorf("vrrp: raw IPv4 socket from %s: %w", c.src, err)
		}
		p := ipv4.NewPacketConn(pc)
		c.p4 = p
		for _, step := range []struct {
			what string
			err  func() error
		}{
			{"SO_BINDTODEVICE", func() error { return bindToDevice(pc) }},
			{"filter", func() error { return p.SetBPF(dropAll) }},
			{"TTL", func() error { return p.SetTTL(255) }},
			{"multicast TTL", func() error { return p.SetMulticastTTL(255) }},
			{"TOS", func() error { return p.SetTOS(0xc0) }},
			{"multicast interface", func() error { return p.SetMulticastInterface(c.ifi) }},
			{"multicast loop", func() error { return p.SetMulticastLoopback(false) }},
			{"join " + GroupV4.String(), func() error { return p.JoinGroup(c.ifi, &net.IPAddr{IP: GroupV4.AsSlice()}) }},
		} {
			if err := step.err(); err != nil {
				return fmt.Errorf("vrrp: raw IPv4 socket on %s: %s: %w", c.ifi.Name, step.what, err)
			}
		}
		return nil
	}
	laddr := c.src.String()
	if c.src.IsLinkLocalUnicast() {
		laddr = c.src.WithZone(c.ifi.Name).String()
	}
	pc, err := net.ListenPacket(fmt.Sprintf("ip6:%d", Proto), laddr)
	if err != nil {
		return fmt.Errorf("vrrp: raw IPv6 socket from %s: %w", laddr, err)
	}
	p := ipv6.NewPacketConn(pc)
	c.p6 = p
	for _, step := range []struct {
		what string
		err  func() error
	}{
		{"SO_BINDTODEVICE", func() error { return bindToDevice(pc) }},
		{"filter", func() error { return p.SetBPF(dropAll) }},
		{"hop limit", func() error { return p.SetHopLimit(255) }},
		{"multicast hop limit", func() error { return p.SetMulticastHopLimit(255) }},
		{"traffic class", func() error { return p.SetTrafficClass(0xc0) }},
		{"multicast interface", func() error { return p.SetMulticastInterface(c.ifi) }},
		{"multicast loop", func() error { return p.SetMulticastLoopback(false) }},
		{"join " + GroupV6.String(), func() error { return p.JoinGroup(c.ifi, &net.IPAddr{IP: GroupV6.AsSlice()}) }},
	} {
		if err := step.err(); err != nil {
			return fmt.Errorf("vrrp: raw IPv6 socket on %s: %s: %w", c.ifi.Name, step.what, err)
		}
	}
	return nil
}

type syscallConner interface {
	SyscallConn() (syscall.RawConn, error)
}

// rxFilter returns the classic BPF program of the AF_PACKET socket: Ethernet frames of the family
// whose IP protocol (IPv4) or next header (IPv6, no extension headers) is VRRP.
func rxFilter(is4 bool) []bpf.RawInstruction {
	if is4 {
		return mustAssemble([]bpf.Instruction{
			bpf.LoadAbsolute{Off: 12, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IP, SkipTrue: 3},
			bpf.LoadAbsolute{Off: 14 + 9, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: Proto, SkipTrue: 1},
			bpf.RetConstant{Val: 0xffff},
			bpf.RetConstant{Val: 0},
		})
	}
	return mustAssemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IPV6, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 14 + 6, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: Proto, SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
}

func (c *Conn) openRx() error {
	ethType := uint16(unix.ETH_P_IP)
	if c.src.Is6() {
		ethType = unix.ETH_P_IPV6
	}
	// Protocol 0 until the filter is attached: no frame is queued before it.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("vrrp: AF_PACKET socket: %w", err)
	}
	raw := rxFilter(c.src.Is4())
	prog := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		prog[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("vrrp: attach filter to AF_PACKET socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(ethType), Ifindex: c.ifi.Index}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("vrrp: bind AF_PACKET socket to %s: %w", c.ifi.Name, err)
	}
	c.rx = os.NewFile(uintptr(fd), "vrrp-packet:"+c.ifi.Name)
	rc, err := c.rx.SyscallConn()
	if err != nil {
		return err
	}
	c.rxRaw = rc
	return nil
}

// Send sends payload to dst (the group or a unicast peer).
func (c *Conn) Send(payload []byte, dst netip.Addr) error {
	to := &net.IPAddr{IP: dst.AsSlice()}
	var err error
	if c.p4 != nil {
		_, err = c.p4.WriteTo(payload, nil, to)
	} else {
		if dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast() {
			// The index, not the name: a name is looked up at each send in the network
			// namespace of the sending thread, which need not be the socket's.
			to.Zone = strconv.Itoa(c.ifi.Index)
		}
		_, err = c.p6.WriteTo(payload, nil, to)
	}
	if err != nil {
		return fmt.Errorf("vrrp: send to %s on %s: %w", dst, c.ifi.Name, err)
	}
	return nil
}

// ErrClosed is returned by Recv on a closed conn.
var ErrClosed = errors.New("vrrp: conn closed")

// Recv returns the next VRRP packet that was not sent by us: frames we sent, frames for other
// hosts, frames from our MAC or from one of our addresses are skipped, and so are malformed IP
// headers.
func (c *Conn) Recv(ctx context.Context) (Packet, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if err := ctx.Err(); err != nil {
		return Packet{}, err
	}
	_ = c.rx.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { _ = c.rx.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := c.rxRaw.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), c.buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return Packet{}, cerr
			}
			if errors.Is(err, os.ErrClosed) {
				return Packet{}, ErrClosed
			}
			return Packet{}, fmt.Errorf("vrrp: receive on %s: %w", c.ifi.Name, err)
		}
		if rerr != nil {
			return Packet{}, fmt.Errorf("vrrp: receive on %s: %w", c.ifi.Name, rerr)
		}
		if sll, ok := from.(*unix.SockaddrLinklayer); ok {
			switch sll.Pkttype {
			case unix.PACKET_OUTGOING, unix.PACKET_OTHERHOST, unix.PACKET_LOOPBACK:
				continue
			}
		}
		p, ok := parseFrame(c.buf[:n])
		if !ok || c.ours(p) {
			continue
		}
		return p, nil
	}
}

func (c *Conn) ours(p Packet) bool {
	if len(c.ifi.HardwareAddr) > 0 && string(p.SrcMAC) == string(c.ifi.HardwareAddr) {
		return true
	}
	return slices.Contains(c.own, p.Src)
}

// parseFrame takes an Ethernet frame holding an IPv4 or IPv6 packet apart. The payload is a copy.
func parseFrame(f []byte) (Packet, bool) {
	if len(f) < 14 {
		return Packet{}, false
	}
	p := Packet{SrcMAC: net.HardwareAddr(slices.Clone(f[6:12]))}
	ip := f[14:]
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_IP:
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return Packet{}, false
		}
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if ihl < 20 || total < ihl || total > len(ip) || ip[9] != Proto {
			return Packet{}, false
		}
		if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 { // fragment
			return Packet{}, false
		}
		p.TTL = int(ip[8])
		p.Src = netip.AddrFrom4([4]byte(ip[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(ip[16:20]))
		p.Payload = slices.Clone(ip[ihl:total])
	case unix.ETH_P_IPV6:
		if len(ip) < 40 || ip[0]>>4 != 6 || ip[6] != Proto {
			return Packet{}, false
		}
		plen := int(binary.BigEndian.Uint16(ip[4:6]))
		if 40+plen > len(ip) {
			return Packet{}, false
		}
		p.TTL = int(ip[7])
		p.Src = netip.AddrFrom16([16]byte(ip[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
		p.Payload = slices.Clone(ip[40 : 40+plen])
	default:
		return Packet{}, false
	}
	return p, true
}

// Close closes both sockets; a blocked Recv returns [ErrClosed].
func (c *Conn) Close() error {
	var errs []error
	c.closed.Do(func() {
		if c.rx != nil {
			errs = append(errs, c.rx.Close())
		}
		if c.p4 != nil {
			errs = append(errs, c.p4.Close())
		}
		if c.p6 != nil {
			errs = append(errs, c.p6.Close())
		}
	})
	return errors.Join(errs...)
}

// htons converts to network byte order, as AF_PACKET wants the protocol.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
