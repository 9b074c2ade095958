package health

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// NewTCP returns a prober that opens a TCP connection to addr and closes it at once, sending no
// data (keepalived TCP_CHECK).
func NewTCP(addr netip.AddrPort) Prober { return tcpProber{addr: addr} }

type tcpProber struct{ addr netip.AddrPort }

func (p tcpProber) Probe(ctx context.Context) Result {
	start := time.Now()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.addr.String())
	lat := time.Since(start)
	if err != nil {
		return Result{Err: fmt.Errorf("tcp check %s: %w", p.addr, err), Latency: lat}
	}
	_ = c.Close()
	return Result{Healthy: true, Latency: lat}
}

func (tcpProber) Close() error { return nil }

// noneProber is the prober of check type none: always healthy.
type noneProber struct{}

func (noneProber) Probe(context.Context) Result { return Result{Healthy: true} }
func (noneProber) Close() error                 { return nil }
