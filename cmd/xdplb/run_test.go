package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdplb/xdplb/internal/wait"
	"github.com/xdplb/xdplb/loader"
)

func TestRunUsage(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "xdplb.sock")
	if r := runCLI("run", "--status-socket", sock); r.code != 2 || !strings.Contains(r.stderr, "missing --config") {
		t.Errorf("run without --config: %v", r)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("interfaces: [eth0]\nservices:\n  - vip: 10.0.0.100\n    port: 70000\n    real_servers: [{address: 10.0.0.11, weight: 0}]\n"), 0o600)
	r := runCLI("run", "--config", bad, "--status-socket", sock)
	if r.code != 1 || !strings.Contains(r.stderr, "invalid configuration, nothing attached") ||
		!strings.Contains(r.stderr, "bad.yaml:4: services[0].port") || !strings.Contains(r.stderr, "services[0].real_servers[0].weight") {
		t.Errorf("run with an invalid config: expected exit 1 and every error, seen %v", r)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("status socket created for an invalid config")
	}
	r = runCLI("reload", "--status-socket", sock)
	if r.code != 1 || !strings.Contains(r.stderr, "no xdplb daemon is running") {
		t.Errorf("reload without a daemon: %v", r)
	}
}

// lockedBuffer is a bytes.Buffer written by the daemon while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRunCLI runs `xdplb run` on a veth pair, with the real server a listener
// on the pair's other end, and drives it with `xdplb list`, `xdplb reload`, SIGHUP and SIGTERM.
func TestRunCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (BPF, XDP): run `sudo go test ./cmd/xdplb/`")
	}
	rnd := make([]byte, 3)
	rand.Read(rnd)
	id := hex.EncodeToString(rnd)
	iface, peer := "xrt"+id, "xrt"+id+"p"
	root := "/sys/fs/bpf/xdplb-test-" + id
	dir := t.TempDir()
	sock := filepath.Join(dir, "xdplb.sock")
	cfg := filepath.Join(dir, "xdplb.yaml")
	net3 := 10 + int(rnd[0])%200
	rsAddr := fmt.Sprintf("198.18.%d.2", net3)

	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: iface}, PeerName: peer}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(iface); err == nil {
			netlink.LinkDel(l)
		}
		if _, err := os.Stat(loader.PinDir(root, iface)); err == nil {
			if err := loader.Detach(root, iface); err != nil {
				t.Errorf("cleanup: detach: %v", err)
			}
		}
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	for name, addr := range map[string]string{iface: fmt.Sprintf("198.18.%d.1/24", net3), peer: rsAddr + "/24"} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netlink.ParseAddr(addr)
		if err := netlink.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", rsAddr+":3306")
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
	metrics, _ := net.Listen("tcp", "127.0.0.1:0")
	metricsAddr := metrics.Addr().String()
	metrics.Close()
	writeConfig := func(weight int) {
		y := fmt.Sprintf(`interfaces: [%s]
maps: {services: 8, backends: 64, peers: 4, conntrack: 1024, persist: 1024, ring_size: 251}
metrics: %s
services:
  - name: writer
    vip: 198.18.%d.100
    port: 3306
    check: {type: tcp, interval: 200ms, timeout: 100ms, rise: 1, fall: 2, dr_path: false}
    real_servers:
      - {address: %s, mac: "02:00:00:00:00:0b", weight: %d}
  - name: never-up
    vip: 198.18.%d.100
    port: 3308
    check: {type: tcp, interval: 200ms, timeout: 100ms, rise: 1, fall: 2, dr_path: false}
    real_servers:
      - {address: %s, mac: "02:00:00:00:00:0b"}
`, iface, metricsAddr, net3, rsAddr, weight, net3, rsAddr)
		if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(1)

	// The daemon runs as a process of its own (signals go to it; urfave/cli apps cannot run
	// concurrently in one process); the other commands run in this one.
	bin := filepath.Join(dir, "xdplb")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var stderr lockedBuffer
	daemon := exec.Command(bin, "--pin-root", root, "run", "--config", cfg, "--mode", "generic", "--status-socket", sock)
	daemon.Stdout, daemon.Stderr = &stderr, &stderr
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		daemon.Wait()
		done <- daemon.ProcessState.ExitCode()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			daemon.Process.Signal(syscall.SIGTERM)
			<-done
		}
	})
	cli := func(args ...string) result { return runCLI(append([]string{"--pin-root", root}, args...)...) }
	waitList := func(what string, ok func(string) bool) string {
		t.Helper()
		var out string
		wait.For(t, 5*time.Second, what, func() error {
			r := cli("list", "--status-socket", sock)
			if r.code == 0 && ok(r.stdout) {
				out = r.stdout
				return nil
			}
			select {
			case code := <-done:
				stopped = true
				t.Fatalf("xdplb run exited with %d:\n%s", code, stderr.String())
			default:
			}
			return fmt.Errorf("last list: %v\ndaemon log:\n%s", r, stderr.String())
		})
		return out
	}
	line := func(weight int, health string) string {
		return "  -> " + col(rsAddr, 28) + col(fmt.Sprint(weight), 8) + "02:00:00:00:00:0b  " + health
	}
	out := waitList("backend up in the list", func(s string) bool { return strings.Contains(s, line(1, "up")) })
	t.Logf("xdplb list:\n%s", out)
	if !strings.Contains(out, "Health         Flags") {
		t.Errorf("list: no Health column:\n%s", out)
	}
	// A real server whose checks never passed is listed all the same, with its state, for how
	// long, and the error (it used to be missing: the maps do not hold it).
	neverUp := "  -> " + col(rsAddr, 28) + col("-", 8) + col("-", 19) + "down "
	out = waitList("the never-up real server listed down with its error", func(s string) bool {
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, neverUp) && strings.Contains(l, "not in maps") && strings.Contains(l, ":3308") &&
				strings.Contains(l, "connection refused") {
				return true
			}
		}
		return false
	})
	t.Logf("xdplb list with the never-up server:\n%s", out)
	if r := cli("list", "--stats", "--status-socket", sock); !strings.Contains(r.stdout, "InBytes  Health") ||
		!strings.Contains(r.stdout, "  up") {
		t.Errorf("list --stats: want a Health column with the backend up next to the counters:\n%s", r.stdout)
	}
	if r := cli("list", "--json", "--status-socket", sock); !strings.Contains(r.stdout, `"daemon": {`) ||
		!strings.Contains(r.stdout, `"up": true`) {
		t.Errorf("list --json: want the daemon's status with the backend up:\n%s", r.stdout)
	}

	// reload with an invalid file: exit 1, the errors, the state kept.
	os.WriteFile(cfg, []byte("interfaces: [x]\nservices: 3\n"), 0o600)
	r := cli("reload", "--status-socket", sock)
	t.Logf("xdplb reload (invalid): %v", r)
	if r.code != 1 || !strings.Contains(r.stderr, "xdplb.yaml:2: services") || !strings.Contains(r.stderr, "configuration rejected") {
		t.Errorf("reload of an invalid file: %v", r)
	}
	// reload with a valid file: applied.
	writeConfig(2)
	if r := cli("reload", "--status-socket", sock); r.code != 0 || r.stdout != "configuration reloaded\n" {
		t.Errorf("reload: %v", r)
	}
	waitList("weight 2 after reload", func(s string) bool { return strings.Contains(s, line(2, "up")) })
	// SIGHUP does the same.
	writeConfig(3)
	daemon.Process.Signal(syscall.SIGHUP)
	waitList("weight 3 after SIGHUP", func(s string) bool { return strings.Contains(s, line(3, "up")) })

	// SIGTERM: exit 0, the data path stays attached; list shows no Health column.
	daemon.Process.Signal(syscall.SIGTERM)
	select {
	case code := <-done:
		stopped = true
		if code != 0 {
			t.Fatalf("xdplb run exited with %d:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("xdplb run did not stop on SIGTERM")
	}
	t.Logf("xdplb run log:\n%s", stderr.String())
	if n := strings.Count(stderr.String(), `msg="real server down from the start" service=never-up`); n != 1 {
		t.Errorf("expected the never-up server's first error logged once, seen %d times", n)
	}
	if _, err := loader.Status(root, iface); err != nil {
		t.Errorf("after SIGTERM: expected the data path attached, seen %v", err)
	}
	r = cli("list", "--status-socket", sock)
	if r.code != 0 || strings.Contains(r.stdout, "Health") || !strings.Contains(r.stdout, rsAddr) {
		t.Errorf("list without the daemon: %v", r)
	}
	t.Logf("xdplb list (no daemon):\n%s", r.stdout)
}
