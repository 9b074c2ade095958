package bench

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// foAdverts records the receive time of every VRRP advertisement (IPv4 protocol 112) seen on the
// client's eth0, by source address: the bridge floods 224.0.0.18 to every port, so the client
// sees what B hears. It tells the phase of the kill: B's Master_Down_Timer runs from A's last
// advert, not from the link going down.
type foAdverts struct {
	fd   int
	mu   sync.Mutex
	last map[netip.Addr][]time.Time
	done chan struct{}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func watchAdverts(ns *netns.NS) (*foAdverts, error) {
	w := &foAdverts{fd: -1, last: map[netip.Addr][]time.Time{}, done: make(chan struct{})}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(netns.NodeLink)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		w.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("advert watcher in %s: %w", ns.Name, err)
	}
	go w.loop()
	return w, nil
}

func (w *foAdverts) loop() {
	defer close(w.done)
	buf := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(w.fd, buf, 0)
		now := time.Now()
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			return // closed
		}
		if n < 20 || buf[0]>>4 != 4 || buf[9] != 112 {
			continue
		}
		src := netip.AddrFrom4([4]byte(buf[12:16]))
		w.mu.Lock()
		l := append(w.last[src], now)
		if len(l) > 64 {
			l = l[len(l)-64:]
		}
		w.last[src] = l
		w.mu.Unlock()
	}
}

// lastBefore is the receive time of the last advert from src at or before t (zero if none).
func (w *foAdverts) lastBefore(src netip.Addr, t time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out time.Time
	for _, x := range w.last[src] {
		if !x.After(t) {
			out = x
		}
	}
	return out
}

func (w *foAdverts) close() {
	if w.fd >= 0 {
		_ = unix.Shutdown(w.fd, unix.SHUT_RDWR)
		_ = unix.Close(w.fd)
		<-w.done
	}
}
