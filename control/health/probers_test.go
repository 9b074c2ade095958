package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/internal/wait"
)

func probeWithin(t *testing.T, p Prober, timeout time.Duration) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Probe(ctx)
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	up := netip.MustParseAddrPort(ln.Addr().String())
	p := NewTCP(up)
	defer p.Close()
	if r := probeWithin(t, p, time.Second); !r.Healthy || r.Err != nil || r.Latency <= 0 {
		t.Fatalf("tcp check of a listener at %s: expected healthy, seen %+v", up, r)
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := netip.MustParseAddrPort(closed.Addr().String())
	closed.Close()
	r := probeWithin(t, NewTCP(down), time.Second)
	if r.Healthy || r.Err == nil || !strings.Contains(r.Err.Error(), "connection refused") {
		t.Fatalf("tcp check of closed port %s: expected unhealthy with 'connection refused', seen %+v", down, r)
	}
}

func TestExec(t *testing.T) {
	tests := []struct {
		desc        string
		argv        []string
		dynamic     bool
		wantHealthy bool
		wantWeight  int // -1 = none
		wantErr     string
	}{
		{desc: "exit 0", argv: []string{"sh", "-c", "exit 0"}, wantHealthy: true, wantWeight: -1},
		{desc: "exit 1", argv: []string{"sh", "-c", "echo replica lagging >&2; exit 1"}, wantWeight: -1,
			wantErr: "exit status 1: replica lagging"},
		{desc: "exit 1 dynamic", argv: []string{"sh", "-c", "exit 1"}, dynamic: true, wantWeight: -1, wantErr: "exit status 1"},
		{desc: "exit 7 dynamic", argv: []string{"sh", "-c", "exit 7"}, dynamic: true, wantHealthy: true, wantWeight: 5},
		{desc: "exit 2 dynamic", argv: []string{"sh", "-c", "exit 2"}, dynamic: true, wantHealthy: true, wantWeight: 0},
		{desc: "exit 255 dynamic", argv: []string{"sh", "-c", "exit 255"}, dynamic: true, wantHealthy: true, wantWeight: 253},
		{desc: "exit 0 dynamic", argv: []string{"sh", "-c", "exit 0"}, dynamic: true, wantHealthy: true, wantWeight: -1},
		{desc: "exit 7 static", argv: []string{"sh", "-c", "exit 7"}, wantWeight: -1, wantErr: "exit status 7"},
		{desc: "no such program", argv: []string{"/nonexistent/check"}, wantWeight: -1, wantErr: "no such file"},
		{desc: "stderr capped", argv: []string{"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x >&2; exit 1"},
			wantWeight: -1, wantErr: "[truncated]"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := probeWithin(t, NewExec(tt.argv, nil, tt.dynamic), 5*time.Second)
			if r.Healthy != tt.wantHealthy {
				t.Fatalf("expected healthy=%t, seen %+v", tt.wantHealthy, r)
			}
			switch {
			case tt.wantWeight < 0 && r.Weight != nil:
				t.Fatalf("expected no weight, seen %d", *r.Weight)
			case tt.wantWeight >= 0 && (r.Weight == nil || *r.Weight != uint32(tt.wantWeight)):
				t.Fatalf("expected weight %d, seen %v", tt.wantWeight, r.Weight)
			}
			if tt.wantErr == "" && r.Err != nil || tt.wantErr != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), tt.wantErr)) {
				t.Fatalf("expected error containing %q, seen %v", tt.wantErr, r.Err)
			}
			if r.Err != nil && len(r.Err.Error()) > maxStderr+200 {
				t.Fatalf("error text of %d bytes: stderr not capped", len(r.Err.Error()))
			}
		})
	}
}

func TestExecTimeoutKillsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The shell starts a grandchild and waits: both must die at the deadline.
	p := NewExec([]string{"sh", "-c", `sleep 10 & echo $! > "$1"; wait`, "sh", pidFile}, nil, false)
	start := time.Now()
	r := probeWithin(t, p, 300*time.Millisecond)
	took := time.Since(start)
	if r.Healthy || r.Err == nil || !strings.Contains(r.Err.Error(), "killed after") {
		t.Fatalf("expected unhealthy, killed, seen %+v", r)
	}
	if took > 300*time.Millisecond+execWaitDelay+300*time.Millisecond {
		t.Fatalf("probe with a 300ms timeout took %v", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	wait.Until(t, 2*time.Second, fmt.Sprintf("the script's child `sleep 10` (pid %d) gone after the timeout", pid),
		func() bool { return !alive(pid) })
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestExecEnvAndNoInjection(t *testing.T) {
	dir := t.TempDir()
	out, pwned := filepath.Join(dir, "out"), filepath.Join(dir, "pwned")
	evil := `x"; touch ` + pwned + `; $(touch ` + pwned + `) ` + "`touch " + pwned + "`" + ` | & > < '`
	f := false
	svc := config.Service{
		Name: "db",
		Key:  control.ServiceKey{VIP: netip.MustParseAddr("10.0.0.100"), Port: 3306, Proto: control.TCP},
		Check: config.Check{Type: config.CheckExec, DRPath: &f, Exec: &config.ExecCheck{
			Command: []string{"sh", "-c", `printf '%s|%s|%s|%s|%s' "$XDPLB_RS_ADDR" "$XDPLB_RS_PORT" "$XDPLB_VIP" "$XDPLB_VPORT" "$1" > "$2"`,
				"check", evil, out},
		}},
	}
	rs := config.RealServer{Addr: netip.MustParseAddr("10.0.0.5"), Port: 3307, Weight: 1}
	p, err := NewProber(svc, rs, ProberEnv{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if r := probeWithin(t, p, 5*time.Second); !r.Healthy {
		t.Fatalf("expected healthy, seen %+v", r)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := "10.0.0.5|3307|10.0.0.100|3306|" + evil; string(b) != want {
		t.Fatalf("script saw\n%q\nexpected\n%q", b, want)
	}
	if _, err := os.Stat(pwned); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a shell ran the argument: %s exists", pwned)
	}

	// The port falls back to the service's.
	rs.Port = 0
	if env := strings.Join(ExecEnv(svc, rs), " "); env != "XDPLB_RS_ADDR=10.0.0.5 XDPLB_RS_PORT=3306 XDPLB_VIP=10.0.0.100 XDPLB_VPORT=3306" {
		t.Fatalf("ExecEnv: %s", env)
	}
}
