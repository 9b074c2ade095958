package health

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// drDefaultTimeout bounds a DR-path probe whose context has no deadline.
const drDefaultTimeout = time.Second

// ErrNoMAC is the error of a DR-path probe when the real server's MAC is not known.
var ErrNoMAC = errors.New("real server MAC not known")

// NewDRPath returns a prober that checks the path the data plane uses: it sends a TCP SYN for
// vip, from srcIP and a random high port, in an Ethernet frame addressed to the real server's
// MAC out of iface (ifindex; 0 = look iface up), through an AF_PACKET socket; it is healthy only
// if a SYN-ACK comes back from vip to srcIP:port. A RST (nothing listens on the VIP) or no
// answer by the deadline is unhealthy. After a SYN-ACK it sends a RST to the real server, so no
// half-open connection is left: the director's kernel would not do it when it holds the VIP
// (it sees a packet from one of its own addresses, or answers to itself).
//
// The answer is read from the same AF_PACKET socket, before the director's IP stack sees it,
// so this works when the director holds the VIP. srcIP and vip must be of one family (IPv4 or
// IPv6); the frame's source MAC is iface's. Each probe opens its own socket in the network
// namespace of the calling thread. Needs CAP_NET_RAW.
func NewDRPath(iface string, ifindex int, srcIP netip.Addr, rsMAC net.HardwareAddr, vip netip.AddrPort) Prober {
	mac := append(net.HardwareAddr(nil), rsMAC...)
	return &drProber{
		iface: iface, ifindex: ifindex, src: srcIP.Unmap(), vip: netip.AddrPortFrom(vip.Addr().Unmap(), vip.Port()),
		mac: func() (net.HardwareAddr, bool) { return mac, len(mac) == 6 },
	}
}

type drProber struct {
	iface   string
	ifindex int
	src     netip.Addr
	vip     netip.AddrPort
	mac     func() (net.HardwareAddr, bool) // the real server's, looked up per probe
}

func (*drProber) Close() error { return nil }

func (p *drProber) Probe(ctx context.Context) Result {
	start := time.Now()
	res := p.probe(ctx)
	if res.Latency == 0 {
		res.Latency = time.Since(start)
	}
	if res.Err != nil {
		res.Err = fmt.Errorf("SYN to %s via %s: %w", p.vip, p.iface, res.Err)
	}
	return res
}

func (p *drProber) probe(ctx context.Context) Result {
	rsMAC, ok := p.mac()
	if !ok || len(rsMAC) != 6 {
		return Result{Err: ErrNoMAC}
	}
	if !p.src.IsValid() || !p.vip.Addr().IsValid() || p.src.Is4() != p.vip.Addr().Is4() {
		return Result{Err: fmt.Errorf("source address %s and VIP must be both IPv4 or both IPv6", p.src)}
	}
	ifindex := p.ifindex
	if ifindex == 0 {
		ifc, err := net.InterfaceByName(p.iface)
		if err != nil {
			return Result{Err: err}
		}
		ifindex = ifc.Index
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(drDefaultTimeout)
	}

	sport := uint16(32768 + rand.IntN(28232)) // Linux's default ephemeral range
	iss := rand.Uint32()
	ethType := uint16(unix.ETH_P_IP)
	if p.vip.Addr().Is6() {
		ethType = unix.ETH_P_IPV6
	}

	// Protocol 0 receives nothing until bind, so no frame slips in before the filter.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Result{Err: fmt.Errorf("AF_PACKET socket: %w", err)}
	}
	f := os.NewFile(uintptr(fd), "packet:"+p.iface)
	defer f.Close()
	prog := drFilter(p.vip, p.src, sport)
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return Result{Err: fmt.Errorf("attach socket filter: %w", err)}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: drHtons(ethType), Ifindex: ifindex}); err != nil {
		return Result{Err: fmt.Errorf("bind AF_PACKET socket to %s: %w", p.iface, err)}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return Result{Err: fmt.Errorf("getsockname: %w", err)}
	}
	ll, ok := sa.(*unix.SockaddrLinklayer)
	if !ok || ll.Halen != 6 {
		return Result{Err: fmt.Errorf("interface %s has no Ethernet address", p.iface)}
	}
	ourMAC := net.HardwareAddr(ll.Addr[:6])
	rc, err := f.SyscallConn()
	if err != nil {
		return Result{Err: err}
	}
	to := &unix.SockaddrLinklayer{Protocol: drHtons(ethType), Ifindex: ifindex, Halen: 6}
	copy(to.Addr[:], rsMAC)
	send := func(frame []byte) error {
		var serr error
		err := rc.Write(func(fd uintptr) bool {
			serr = unix.Sendto(int(fd), frame, 0, to)
			return !errors.Is(serr, unix.EAGAIN)
		})
		return errors.Join(err, serr)
	}

	syn := tcpFrame{
		srcMAC: ourMAC, dstMAC: rsMAC, src: netip.AddrPortFrom(p.src, sport), dst: p.vip,
		seq: iss, flags: tcpSYN, window: 64240, mss: 1460,
	}
	if err := f.SetReadDeadline(deadline); err != nil {
		return Result{Err: err}
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	sent := time.Now()
	if err := send(syn.marshal()); err != nil {
		return Result{Err: fmt.Errorf("send SYN: %w", err)}
	}

	buf := make([]byte, 256)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return Result{Err: ctx.Err()}
			}
			return Result{Err: fmt.Errorf("no SYN-ACK within %v through real server MAC %s (is the VIP on the real server's lo and the service listening on it?)",
				deadline.Sub(sent).Round(time.Millisecond), rsMAC)}
		}
		if rerr != nil {
			return Result{Err: fmt.Errorf("receive: %w", rerr)}
		}
		in, ok := parseTCPFrame(buf[:n])
		if !ok || in.src != p.vip || in.dst != syn.src {
			continue
		}
		lat := time.Since(sent)
		switch {
		case in.flags&tcpRST != 0:
			return Result{Err: fmt.Errorf("connection refused (RST) through real server MAC %s", rsMAC), Latency: lat}
		case in.flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK && in.ack == iss+1:
			rst := tcpFrame{
				srcMAC: ourMAC, dstMAC: rsMAC, src: syn.src, dst: p.vip, seq: iss + 1, flags: tcpRST,
			}
			_ = send(rst.marshal()) // best effort: the real server drops the embryonic connection anyway
			return Result{Healthy: true, Latency: lat}
		}
	}
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// tcpFrame is an Ethernet + IPv4/IPv6 + TCP packet without payload.
type tcpFrame struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.AddrPort
	seq, ack       uint32
	flags          uint8
	window         uint16
	mss            uint16 // 0 = no MSS option
}

// marshal builds the frame with correct IP and TCP checksums.
func (t tcpFrame) marshal() []byte {
	tcpLen := 20
	if t.mss != 0 {
		tcpLen += 4
	}
	ipLen := 20
	ethType := uint16(unix.ETH_P_IP)
	if t.src.Addr().Is6() {
		ipLen = 40
		ethType = unix.ETH_P_IPV6
	}
	b := make([]byte, 14+ipLen+tcpLen)
	copy(b[0:6], t.dstMAC)
	copy(b[6:12], t.srcMAC)
	binary.BigEndian.PutUint16(b[12:14], ethType)
	ip := b[14 : 14+ipLen]
	seg := b[14+ipLen:]
	src, dst := t.src.Addr().AsSlice(), t.dst.Addr().AsSlice()

	binary.BigEndian.PutUint16(seg[0:2], t.src.Port())
	binary.BigEndian.PutUint16(seg[2:4], t.dst.Port())
	binary.BigEndian.PutUint32(seg[4:8], t.seq)
	binary.BigEndian.PutUint32(seg[8:12], t.ack)
	seg[12] = byte(tcpLen/4) << 4
	seg[13] = t.flags
	binary.BigEndian.PutUint16(seg[14:16], t.window)
	if t.mss != 0 {
		seg[20], seg[21] = 2, 4 // kind MSS, length 4
		binary.BigEndian.PutUint16(seg[22:24], t.mss)
	}

	var pseudo []byte
	if ipLen == 20 {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen+tcpLen))
		binary.BigEndian.PutUint16(ip[4:6], uint16(rand.Uint32()))
		ip[6] = 0x40 // don't fragment
		ip[8] = 64   // TTL
		ip[9] = unix.IPPROTO_TCP
		copy(ip[12:16], src)
		copy(ip[16:20], dst)
		binary.BigEndian.PutUint16(ip[10:12], inetChecksum(0, ip))
		pseudo = make([]byte, 12)
		copy(pseudo[0:4], src)
		copy(pseudo[4:8], dst)
		pseudo[9] = unix.IPPROTO_TCP
		binary.BigEndian.PutUint16(pseudo[10:12], uint16(tcpLen))
	} else {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:6], uint16(tcpLen))
		ip[6] = unix.IPPROTO_TCP
		ip[7] = 64 // hop limit
		copy(ip[8:24], src)
		copy(ip[24:40], dst)
		pseudo = make([]byte, 40)
		copy(pseudo[0:16], src)
		copy(pseudo[16:32], dst)
		binary.BigEndian.PutUint32(pseudo[32:36], uint32(tcpLen))
		pseudo[39] = unix.IPPROTO_TCP
	}
	binary.BigEndian.PutUint16(seg[16:18], inetChecksum(inetSum(0, pseudo), seg))
	return b
}

// parseTCPFrame reads an Ethernet + IPv4/IPv6 + TCP frame (no IPv6 extension headers, no IPv4
// fragments).
func parseTCPFrame(b []byte) (t tcpFrame, ok bool) {
	if len(b) < 14 {
		return t, false
	}
	t.dstMAC, t.srcMAC = net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12])
	var seg []byte
	var src, dst netip.Addr
	switch binary.BigEndian.Uint16(b[12:14]) {
	case unix.ETH_P_IP:
		ip := b[14:]
		if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_TCP ||
			binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
			return t, false
		}
		ihl := int(ip[0]&0x0f) * 4
		if ihl < 20 || len(ip) < ihl {
			return t, false
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		seg = ip[ihl:]
	case unix.ETH_P_IPV6:
		ip := b[14:]
		if len(ip) < 40 || ip[0]>>4 != 6 || ip[6] != unix.IPPROTO_TCP {
			return t, false
		}
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		seg = ip[40:]
	default:
		return t, false
	}
	if len(seg) < 20 {
		return t, false
	}
	t.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(seg[0:2]))
	t.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(seg[2:4]))
	t.seq = binary.BigEndian.Uint32(seg[4:8])
	t.ack = binary.BigEndian.Uint32(seg[8:12])
	t.flags = seg[13]
	t.window = binary.BigEndian.Uint16(seg[14:16])
	return t, true
}

// inetSum adds b to the ones' complement sum s (not folded).
func inetSum(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// inetChecksum is the Internet checksum of b, starting from the partial sum s.
func inetChecksum(s uint32, b []byte) uint16 {
	s = inetSum(s, b)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// drFilter is a classic BPF socket filter that accepts only TCP from vip to src:sport over
// IPv4 (no fragments) or IPv6 (no extension headers), by Ethernet offsets.
func drFilter(vip netip.AddrPort, src netip.Addr, sport uint16) []unix.SockFilter {
	type ins = unix.SockFilter
	ld := func(size uint16, k uint32) ins { return ins{Code: unix.BPF_LD | size | unix.BPF_ABS, K: k} }
	var p []ins
	var drops []int // indexes of jumps whose false branch goes to drop
	jeq := func(k uint32) {
		drops = append(drops, len(p))
		p = append(p, ins{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k})
	}
	p = append(p, ld(unix.BPF_H, 12))
	if vip.Addr().Is4() {
		jeq(unix.ETH_P_IP)
		p = append(p, ld(unix.BPF_B, 23))
		jeq(unix.IPPROTO_TCP)
		a, s := vip.Addr().As4(), src.As4()
		p = append(p, ld(unix.BPF_W, 26))
		jeq(binary.BigEndian.Uint32(a[:]))
		p = append(p, ld(unix.BPF_W, 30))
		jeq(binary.BigEndian.Uint32(s[:]))
		// Fragment offset or MF set: jump to drop (patched below, as the true branch).
		p = append(p, ld(unix.BPF_H, 20))
		fragJump := len(p)
		p = append(p, ins{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: 0x3fff})
		p = append(p, ins{Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: 14})
		p = append(p, ins{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_IND, K: 14})
		jeq(uint32(vip.Port()))
		p = append(p, ins{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_IND, K: 16})
		jeq(uint32(sport))
		p = append(p, ins{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff})
		p = append(p, ins{Code: unix.BPF_RET | unix.BPF_K, K: 0})
		drop := len(p) - 1
		p[fragJump].Jt = uint8(drop - fragJump - 1)
	} else {
		jeq(unix.ETH_P_IPV6)
		p = append(p, ld(unix.BPF_B, 20))
		jeq(unix.IPPROTO_TCP)
		a, s := vip.Addr().As16(), src.As16()
		for i := 0; i < 16; i += 4 {
			p = append(p, ld(unix.BPF_W, uint32(22+i)))
			jeq(binary.BigEndian.Uint32(a[i:]))
		}
		for i := 0; i < 16; i += 4 {
			p = append(p, ld(unix.BPF_W, uint32(38+i)))
			jeq(binary.BigEndian.Uint32(s[i:]))
		}
		p = append(p, ld(unix.BPF_H, 54))
		jeq(uint32(vip.Port()))
		p = append(p, ld(unix.BPF_H, 56))
		jeq(uint32(sport))
		p = append(p, ins{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff})
		p = append(p, ins{Code: unix.BPF_RET | unix.BPF_K, K: 0})
	}
	drop := len(p) - 1
	for _, i := range drops {
		p[i].Jf = uint8(drop - i - 1)
	}
	return p
}

// drHtons converts to network byte order, as AF_PACKET wants the protocol.
func drHtons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
