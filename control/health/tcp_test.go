package health

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fullListener returns the address of a loopback listener whose accept queue is full, so that
// a connect to it hangs (the kernel drops the SYNs).
func fullListener(t *testing.T) (netip.AddrPort, int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the queue (backlog 0 holds one connection) with connections nobody accepts.
	for range 2 {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(c) })
		_ = unix.Connect(c, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()})
	}
	time.Sleep(10 * time.Millisecond)
	return addr, fd
}

func TestTCPTimeout(t *testing.T) {
	addr, _ := fullListener(t)
	start := time.Now()
	r := probeWithin(t, NewTCP(addr), 200*time.Millisecond)
	took := time.Since(start)
	if r.Healthy || r.Err == nil || !errors.Is(r.Err, os.ErrDeadlineExceeded) || !strings.Contains(r.Err.Error(), "i/o timeout") {
		t.Fatalf("tcp check of a listener dropping SYNs: expected an i/o timeout, seen %+v", r)
	}
	if took < 150*time.Millisecond || took > time.Second {
		t.Fatalf("tcp check with a 200ms deadline took %v", took)
	}

	// Cancelled (no deadline): returns at once with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	r = NewTCP(addr).Probe(ctx)
	if took := time.Since(start); r.Healthy || !errors.Is(r.Err, context.Canceled) || took > time.Second {
		t.Fatalf("cancelled tcp check: expected context.Canceled soon, seen %+v after %v", r, took)
	}
}

// TestTCPSlow is a connect that does not complete within connect(2): it waits in the runtime's
// poller, here for the kernel to resend a SYN dropped while the accept queue was full.
func TestTCPSlow(t *testing.T) {
	addr, ln := fullListener(t)
	time.AfterFunc(100*time.Millisecond, func() {
		for range 2 { // make room
			if c, _, err := unix.Accept(ln); err == nil {
				unix.Close(c)
			}
		}
	})
	r := probeWithin(t, NewTCP(addr), 5*time.Second)
	if !r.Healthy || r.Err != nil || r.Latency < 100*time.Millisecond {
		t.Fatalf("tcp check whose SYN is dropped once: expected healthy after a wait, seen %+v", r)
	}
}
