package health

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
)

func TestNewProber(t *testing.T) {
	vip := netip.MustParseAddr("10.0.0.100")
	svc := func(typ string, port uint16, proto control.Proto, drPath *bool) config.Service {
		s := config.Service{
			Key:   control.ServiceKey{VIP: vip, Port: port, Proto: proto},
			Check: config.Check{Type: typ, DRPath: drPath},
		}
		if typ == config.CheckExec {
			s.Check.Exec = &config.ExecCheck{Command: []string{"true"}}
		}
		return s
	}
	f := false
	rs := config.RealServer{Addr: netip.MustParseAddr("10.0.0.2")}
	local := rs
	local.Local = true
	var mysqlGot []string
	env := ProberEnv{
		Iface: "eth0", SrcIP: netip.MustParseAddr("10.0.0.1"),
		MAC: func(netip.Addr) (net.HardwareAddr, bool) { return nil, false },
		MySQL: func(s config.Service, r config.RealServer) (Prober, error) {
			mysqlGot = append(mysqlGot, r.Addr.String())
			return newFakeProber(true), nil
		},
	}
	tests := []struct {
		desc string
		svc  config.Service
		rs   config.RealServer
		env  ProberEnv
		want string // type of the prober, "both:<primary type>", or "error:<text>"
	}{
		{desc: "none", svc: svc(config.CheckNone, 3306, control.TCP, nil), rs: rs, env: env, want: "health.noneProber"},
		{desc: "tcp with DR path by default", svc: svc(config.CheckTCP, 3306, control.TCP, nil), rs: rs, env: env, want: "both:health.tcpProber"},
		{desc: "tcp, DR path off", svc: svc(config.CheckTCP, 3306, control.TCP, &f), rs: rs, env: env, want: "health.tcpProber"},
		{desc: "tcp, port 0 service", svc: svc(config.CheckTCP, 0, control.TCP, nil), rs: config.RealServer{Addr: rs.Addr, Port: 3306}, env: env, want: "health.tcpProber"},
		{desc: "tcp, port 0 everywhere", svc: svc(config.CheckTCP, 0, control.TCP, nil), rs: rs, env: env, want: "error:needs a port"},
		{desc: "tcp, local real server", svc: svc(config.CheckTCP, 3306, control.TCP, nil), rs: local, env: env, want: "health.tcpProber"},
		{desc: "tcp, UDP service", svc: svc(config.CheckTCP, 53, control.UDP, nil), rs: rs, env: env, want: "health.tcpProber"},
		{desc: "mysql", svc: svc(config.CheckMySQL, 3306, control.TCP, &f), rs: rs, env: env, want: "*health.fakeProber"},
		{desc: "mysql with DR path", svc: svc(config.CheckMySQL, 3306, control.TCP, nil), rs: rs, env: env, want: "both:*health.fakeProber"},
		{desc: "mysql, none injected", svc: svc(config.CheckMySQL, 3306, control.TCP, nil), rs: rs, env: ProberEnv{}, want: "error:no MySQL prober"},
		{desc: "exec", svc: svc(config.CheckExec, 3306, control.TCP, &f), rs: rs, env: env, want: "*health.execProber"},
		{desc: "DR path without a director address", svc: svc(config.CheckTCP, 3306, control.TCP, nil), rs: rs, env: ProberEnv{Iface: "eth0"}, want: "error:no director address"},
		{desc: "unknown type", svc: svc("http", 80, control.TCP, nil), rs: rs, env: env, want: "error:unknown check type"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			p, err := NewProber(tt.svc, tt.rs, tt.env)
			var got string
			switch b, ok := p.(*bothProber); {
			case err != nil:
				got = "error:" + err.Error()
			case ok:
				got = "both:" + typeName(b.a)
				if _, ok := b.b.(*drProber); !ok {
					t.Fatalf("second part of Both: expected the DR path prober, seen %T", b.b)
				}
			default:
				got = typeName(p)
			}
			if got != tt.want && !(strings.HasPrefix(tt.want, "error:") && strings.Contains(got, strings.TrimPrefix(tt.want, "error:"))) {
				t.Fatalf("expected %s, seen %s", tt.want, got)
			}
			if p != nil {
				p.Close()
			}
		})
	}
	if len(mysqlGot) != 2 || mysqlGot[0] != "10.0.0.2" {
		t.Fatalf("env.MySQL calls: %v", mysqlGot)
	}
	if r := (noneProber{}).Probe(context.Background()); !r.Healthy {
		t.Fatal("check none: expected healthy")
	}
}

func typeName(p Prober) string {
	switch p.(type) {
	case noneProber:
		return "health.noneProber"
	case tcpProber:
		return "health.tcpProber"
	case *execProber:
		return "*health.execProber"
	case *fakeProber:
		return "*health.fakeProber"
	case *bothProber:
		return "*health.bothProber"
	}
	return "other"
}

func TestBoth(t *testing.T) {
	w := uint32(4)
	ok := func() *fakeProber { return newFakeProber(true) }
	bad := func() *fakeProber { return newFakeProber(false) }
	tests := []struct {
		desc    string
		a, b    *fakeProber
		healthy bool
		err     string
		bProbes int
	}{
		{desc: "both healthy", a: ok(), b: ok(), healthy: true, bProbes: 1},
		{desc: "check fails", a: bad(), b: ok(), err: "check: fake: refused", bProbes: 0},
		{desc: "dr path fails", a: ok(), b: bad(), err: "dr path: fake: refused", bProbes: 1},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			tt.a.set(tt.a.healthy, &w)
			p := Both(tt.a, tt.b)
			r := p.Probe(context.Background())
			if r.Healthy != tt.healthy || (tt.err == "") != (r.Err == nil) || r.Err != nil && r.Err.Error() != tt.err {
				t.Fatalf("expected healthy=%t err %q, seen %+v", tt.healthy, tt.err, r)
			}
			if tt.healthy && (r.Weight == nil || *r.Weight != 4) {
				t.Fatalf("expected the primary's weight 4, seen %v", r.Weight)
			}
			if n, _ := tt.b.counts(); n != tt.bProbes {
				t.Fatalf("dr path part probed %d times, expected %d", n, tt.bProbes)
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			_, ca := tt.a.counts()
			_, cb := tt.b.counts()
			if ca != 1 || cb != 1 {
				t.Fatalf("Close: expected both parts closed once, seen %d and %d", ca, cb)
			}
		})
	}
	var unhealthyNoErr errProber
	if r := Both(unhealthyNoErr, newFakeProber(true)).Probe(context.Background()); r.Healthy || !errors.Is(r.Err, errUnhealthy) {
		t.Fatalf("unhealthy without an error: expected errUnhealthy, seen %+v", r)
	}
}

type errProber struct{}

func (errProber) Probe(context.Context) Result { return Result{} }
func (errProber) Close() error                 { return nil }

// TestBothSkipsDRPathOfVIPHolder: the DR path of the real server that holds the VIP (the VRRP
// Master, whose XDP program balances the probe) is not run; the primary check decides alone.
func TestBothSkipsDRPathOfVIPHolder(t *testing.T) {
	for _, holder := range []bool{true, false} {
		a, b := newFakeProber(true), newFakeProber(false)
		p := Both(a, b).(*bothProber)
		p.skipB = func() bool { return holder }
		r := p.Probe(context.Background())
		n, _ := b.counts()
		if holder && (!r.Healthy || n != 0) {
			t.Errorf("VIP holder: healthy=%t, dr path probed %d times; want healthy, not probed", r.Healthy, n)
		}
		if !holder && (r.Healthy || n != 1) {
			t.Errorf("not the VIP holder: healthy=%t, dr path probed %d times; want the dr path failure", r.Healthy, n)
		}
	}
}
