package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// NewTCP returns a prober that opens a TCP connection to addr and closes it at once, sending no
// data (keepalived TCP_CHECK).
func NewTCP(addr netip.AddrPort) Prober { return tcpProber{addr: addr} }

type tcpProber struct{ addr netip.AddrPort }

func (p tcpProber) Probe(ctx context.Context) Result {
	start := time.Now()
	err := p.connect(ctx)
	lat := time.Since(start)
	if err != nil {
		return Result{Err: fmt.Errorf("tcp check %s: %w", p.addr, err), Latency: lat}
	}
	return Result{Healthy: true, Latency: lat}
}

// connect opens a TCP connection to p.addr and resets it at once. Its errors read like net.Dial's
// ("dial tcp 10.0.0.2:3306: connect: connection refused").
//
// It is a bare non-blocking connect(2) rather than net.Dialer: a check needs no connection
// object, and the dialer's extras cost more than the handshake itself at thousands of checks a
// second (address parsing, epoll registration before the connect has had a chance to finish,
// getsockname/getpeername, TCP_NODELAY and four keep-alive setsockopts, the context hook).
// On a loopback or LAN path the handshake often completes within connect(2) itself: a poll(2)
// with no timeout sees that without parking the goroutine; only a slower peer makes the socket
// go through the runtime's poller, bounded by ctx.
func (p tcpProber) connect(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return p.opError(mapCtxErr(err))
	}
	addr := p.addr.Addr().Unmap()
	if addr.Zone() != "" {
		// A link-local IPv6 address with a zone needs the interface's index: leave it to net.
		return p.dialNet(ctx)
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if addr.Is4() {
		sa = &unix.SockaddrInet4{Port: int(p.addr.Port()), Addr: addr.As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(p.addr.Port()), Addr: addr.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return p.opError(os.NewSyscallError("socket", err))
	}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	switch err {
	case nil, unix.EISCONN:
		resetClose(fd)
		return nil
	case unix.EINPROGRESS, unix.EALREADY:
	default:
		unix.Close(fd)
		return p.opError(os.NewSyscallError("connect", err))
	}
	if done, err := connected(fd); done {
		if err != nil {
			unix.Close(fd)
			return p.opError(err)
		}
		resetClose(fd)
		return nil
	}
	return p.wait(ctx, fd)
}

// wait waits in the runtime's poller for fd's connect to complete, ctx to end, or its deadline.
// It consumes fd.
func (p tcpProber) wait(ctx context.Context, fd int) error {
	f := os.NewFile(uintptr(fd), "") // non-blocking: registered with the poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return p.opError(err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = f.SetWriteDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		var done bool
		done, cerr = connected(int(fd))
		return done
	})
	stop()
	switch {
	case werr != nil:
		cerr = werr
		if errors.Is(werr, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			cerr = mapCtxErr(ctx.Err())
		}
	case cerr == nil:
		_ = rc.Control(func(fd uintptr) { setLingerZero(int(fd)) })
	}
	f.Close()
	if cerr != nil {
		return p.opError(cerr)
	}
	return nil
}

// connected reports whether the non-blocking connect of fd has ended, and its error if it failed.
func connected(fd int) (bool, error) {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(pfd[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return true, os.NewSyscallError("poll", err)
		}
		if n == 0 {
			return false, nil
		}
		break
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return true, os.NewSyscallError("getsockopt", err)
	}
	if soerr != 0 {
		return true, os.NewSyscallError("connect", unix.Errno(soerr))
	}
	return true, nil
}

// resetClose closes an established connection with a RST rather than a FIN exchange. A check
// has nothing to say to the server, and an orderly close would leave this side in TIME_WAIT
// (or FIN_WAIT2, against a server that never closes) for a minute per check: thousands of
// sockets and, to one real server, a drain on the ephemeral ports. HAProxy's checks close the
// same way. The server sees a reset of a connection it had at most just accepted.
func resetClose(fd int) {
	setLingerZero(fd)
	unix.Close(fd)
}

func setLingerZero(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}

// dialNet is the net.Dialer path, for addresses a bare sockaddr cannot express.
func (p tcpProber) dialNet(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.addr.String())
	if err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // see resetClose
	}
	return c.Close()
}

func (p tcpProber) opError(err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(p.addr), Err: err}
}

// mapCtxErr words a context's end as net.Dial does: a deadline is an i/o timeout.
func mapCtxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return os.ErrDeadlineExceeded
	}
	return err
}

func (tcpProber) Close() error { return nil }

// noneProber is the prober of check type none: always healthy.
type noneProber struct{}

func (noneProber) Probe(context.Context) Result { return Result{Healthy: true} }
func (noneProber) Close() error                 { return nil }
