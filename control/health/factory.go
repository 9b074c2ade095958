package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
)

// ProberEnv is what NewProber needs from the daemon.
type ProberEnv struct {
	Iface   string     // interface the data plane sends real-server frames out of
	Ifindex int        // its index; 0 = look Iface up at each DR-path probe
	SrcIP   netip.Addr // the director's own address on Iface (IPv4; an IPv6 one for IPv6 VIPs)
	// SrcIP6 is the director's IPv6 address on Iface, used for IPv6 VIPs when SrcIP is IPv4.
	SrcIP6 netip.Addr
	// MAC returns a real server's MAC (the neighbour table's, or the configured one); looked
	// up at each DR-path probe when the real server has no configured MAC.
	MAC func(netip.Addr) (net.HardwareAddr, bool)
	// MySQL makes the prober of check type mysql (written elsewhere, injected).
	MySQL func(svc config.Service, rs config.RealServer) (Prober, error)
	// VIPHolder reports whether addr is the VRRP Master of the VIPs right now (nil: never); for
	// it only the primary check counts. An xdplb peer director passes our probes to its local
	// stack in every state (it knows our MAC from our hellos), but a Master that is a keepalived
	// + IPVS director would balance a SYN sent to its MAC, so its DR path is not probed.
	VIPHolder func(netip.Addr) bool
}

// RealServerPort is the port a real server is checked on: its own, else the service's.
func RealServerPort(svc config.Service, rs config.RealServer) uint16 {
	if rs.Port != 0 {
		return rs.Port
	}
	return svc.Key.Port
}

// NewProber returns the prober of rs in svc: tcp, mysql (env.MySQL), exec or none (always
// healthy). Unless the check is none, and when the check's dr_path is on, the service is TCP
// with a port and rs is not the director itself, the prober is Both(check, DR path): rs must
// also answer a SYN for the VIP sent to its MAC.
func NewProber(svc config.Service, rs config.RealServer, env ProberEnv) (Prober, error) {
	port := RealServerPort(svc, rs)
	c := svc.Check
	var primary Prober
	switch c.Type {
	case config.CheckNone, "":
		return noneProber{}, nil
	case config.CheckTCP:
		if port == 0 {
			return nil, fmt.Errorf("real server %s of %s: a tcp check needs a port", rs.Addr, svc.Key)
		}
		primary = NewTCP(netip.AddrPortFrom(rs.Addr, port))
	case config.CheckMySQL:
		if env.MySQL == nil {
			return nil, errors.New("mysql check: no MySQL prober available")
		}
		p, err := env.MySQL(svc, rs)
		if err != nil {
			return nil, err
		}
		primary = p
	case config.CheckExec:
		if c.Exec == nil || len(c.Exec.Command) == 0 {
			return nil, fmt.Errorf("real server %s of %s: exec check without a command", rs.Addr, svc.Key)
		}
		primary = NewExec(c.Exec.Command, ExecEnv(svc, rs), c.Exec.Dynamic)
	default:
		return nil, fmt.Errorf("unknown check type %q", c.Type)
	}
	if !c.CheckDRPath() || svc.Key.Port == 0 || svc.Key.Proto != control.TCP || rs.Local {
		return primary, nil
	}
	src := env.SrcIP
	if svc.Key.VIP.Unmap().Is6() != src.Unmap().Is6() || !src.IsValid() {
		src = env.SrcIP6
	}
	if !src.IsValid() || src.Unmap().Is6() != svc.Key.VIP.Unmap().Is6() {
		_ = primary.Close()
		return nil, fmt.Errorf("real server %s of %s: dr path check: no director address of the VIP's family on %s",
			rs.Addr, svc.Key, env.Iface)
	}
	vip := netip.AddrPortFrom(svc.Key.VIP, svc.Key.Port)
	dr := NewDRPath(env.Iface, env.Ifindex, src, rs.MAC, vip).(*drProber)
	if len(rs.MAC) == 0 {
		addr, lookup := rs.Addr, env.MAC
		dr.mac = func() (net.HardwareAddr, bool) {
			if lookup == nil {
				return nil, false
			}
			return lookup(addr)
		}
	}
	both := Both(primary, dr).(*bothProber)
	if env.VIPHolder != nil {
		addr, holder := rs.Addr, env.VIPHolder
		both.skipB = func() bool { return holder(addr) }
	}
	return both, nil
}

// ExecEnv is the environment an exec check of rs gets: XDPLB_RS_ADDR, XDPLB_RS_PORT,
// XDPLB_VIP and XDPLB_VPORT.
func ExecEnv(svc config.Service, rs config.RealServer) []string {
	return []string{
		EnvRSAddr + "=" + rs.Addr.String(),
		EnvRSPort + "=" + strconv.Itoa(int(RealServerPort(svc, rs))),
		EnvVIP + "=" + svc.Key.VIP.String(),
		EnvVPort + "=" + strconv.Itoa(int(svc.Key.Port)),
	}
}

// Both returns a prober that is healthy only if primary and then drpath are. drpath runs only
// when primary is healthy, with what is left of the deadline. The weight is primary's; the error
// says which part failed ("check: ..." or "dr path: ..."). Both probes run on the calling
// goroutine, so both sockets are opened in its network namespace. Close closes both.
func Both(primary, drpath Prober) Prober { return &bothProber{a: primary, b: drpath} }

type bothProber struct {
	a, b  Prober
	skipB func() bool // when true, b is not run (see ProberEnv.VIPHolder)
}

func (p *bothProber) Probe(ctx context.Context) Result {
	start := time.Now()
	ra := p.a.Probe(ctx)
	if !ra.Healthy {
		return Result{Err: fmt.Errorf("check: %w", orUnhealthy(ra.Err)), Latency: time.Since(start)}
	}
	if p.skipB != nil && p.skipB() {
		return Result{Healthy: true, Weight: ra.Weight, Latency: time.Since(start)}
	}
	rb := p.b.Probe(ctx)
	if !rb.Healthy {
		return Result{Err: fmt.Errorf("dr path: %w", orUnhealthy(rb.Err)), Latency: time.Since(start)}
	}
	return Result{Healthy: true, Weight: ra.Weight, Latency: time.Since(start)}
}

func (p *bothProber) Close() error { return errors.Join(p.a.Close(), p.b.Close()) }

var errUnhealthy = errors.New("unhealthy")

func orUnhealthy(err error) error {
	if err == nil {
		return errUnhealthy
	}
	return err
}
