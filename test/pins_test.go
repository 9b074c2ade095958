//go:build linux

package test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// TestTwoDirectorsOnOneHost: two directors in two network namespaces of one host share one
// bpffs, and both interfaces are eth0 (the seeds' case). With the same pin root the second must
// refuse the first one's pins (attach, run, list, detach), name --pin-root, change nothing, and
// leave the first director's program in place; with its own pin root it works.
func TestTwoDirectorsOnOneHost(t *testing.T) {
	requireRoot(t)
	requireCLI(t)
	lan := netns.NewLAN(t)
	one := lan.AddNode("one", "10.98.0.1/24")
	two := lan.AddNode("two", "10.98.0.2/24")
	shared := newPinRoot(t)

	if out, err := runCLI(one.NS, shared, "attach", netns.NodeLink, "--mode", "generic"); err != nil {
		t.Fatalf("attach in the first namespace: %v %s", err, out)
	}
	_, idOne, err := one.XDPAttachMode(netns.NodeLink)
	if err != nil || idOne == 0 {
		t.Fatalf("first director: expected a program on eth0, seen id %d (%v)", idOne, err)
	}
	if out, err := runCLI(one.NS, shared, "service", "add", "10.98.0.100:3306"); err != nil {
		t.Fatalf("service add in the first namespace: %v %s", err, out)
	}

	refused := func(what string, args ...string) {
		t.Helper()
		out, err := runCLI(two.NS, shared, args...)
		if err == nil {
			t.Errorf("%s in the second namespace with the first one's pin root: expected a refusal, seen success: %s", what, out)
			return
		}
		for _, want := range []string{"another network namespace", "--pin-root", "nothing was changed"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: expected the refusal to say %q, seen: %s", what, want, out)
			}
		}
		if strings.Contains(out, "xdplb detach") {
			t.Errorf("%s: the refusal must not suggest detaching another director's data path: %s", what, out)
		}
	}
	refused("attach", "attach", netns.NodeLink, "--mode", "generic")
	refused("list", "list")
	refused("service add", "service", "add", "10.98.0.101:3306")
	refused("detach", "detach", netns.NodeLink)

	cfg := filepath.Join(t.TempDir(), "xdplb.yaml")
	if err := os.WriteFile(cfg, []byte("interfaces: [eth0]\nmetrics: 127.0.0.1:9447\nservices:\n  - vip: 10.98.0.100\n    port: 3306\n    check: {type: none}\n    real_servers: [{address: 10.98.0.1}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "two.sock")
	refused("run", "run", "--config", cfg, "--status-socket", sock, "--mode", "generic")
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("a refused run left its status socket %s", sock)
	}

	// Nothing of the first director changed: its program, its service, its own list.
	if _, id, err := one.XDPAttachMode(netns.NodeLink); err != nil || id != idOne {
		t.Errorf("first director after the refusals: expected program id %d on eth0, seen %d (%v)", idOne, id, err)
	}
	if mode, id, _ := two.XDPAttachMode(netns.NodeLink); id != 0 {
		t.Errorf("second namespace after the refusals: expected no program on eth0, seen %s id %d", mode, id)
	}
	if out, err := runCLI(one.NS, shared, "list"); err != nil || !strings.Contains(out, "10.98.0.100:3306") || strings.Contains(out, "10.98.0.101") {
		t.Errorf("first director's list: expected its one service, seen %v %s", err, out)
	}

	// Its own pin root: the second director works beside the first.
	own := newPinRoot(t)
	if out, err := runCLI(two.NS, own, "attach", netns.NodeLink, "--mode", "generic"); err != nil {
		t.Fatalf("attach in the second namespace with its own pin root: %v %s", err, out)
	}
	if _, id, err := one.XDPAttachMode(netns.NodeLink); err != nil || id != idOne {
		t.Errorf("first director after the second attached elsewhere: expected program id %d, seen %d (%v)", idOne, id, err)
	}
	for _, n := range []*netns.Node{one, two} {
		root := shared
		if n == two {
			root = own
		}
		if out, err := runCLI(n.NS, root, "detach", netns.NodeLink); err != nil {
			t.Errorf("detach %s: %v %s", n.Role, err, out)
		}
	}
}

// TestPinRootOfAnotherTool: a pin directory that is not a complete set of xdplb pins is
// reported as such (what is missing), nothing is changed, and detach is not suggested.
func TestPinRootOfAnotherTool(t *testing.T) {
	requireRoot(t)
	requireCLI(t)
	ns := netns.New(t)
	root := newPinRoot(t)
	dir := filepath.Join(root, "lo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "other", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(dir, "other")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"list"}, {"attach", "lo", "--mode", "generic"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := ns.Exec(ctx, xdplbBin, append([]string{"--pin-root", root}, args...)...)
		cancel()
		if err == nil {
			t.Errorf("%v on another tool's pin directory: expected an error, seen success: %s", args, out)
			continue
		}
		for _, want := range []string{"not a complete set of xdplb pins", "no map", "Nothing was changed", "--pin-root"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: expected the error to say %q, seen: %s", args, want, out)
			}
		}
		if strings.Contains(out, "xdplb detach") {
			t.Errorf("%v: the error must not suggest `xdplb detach` on a directory it does not own: %s", args, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "other")); err != nil {
		t.Errorf("the other tool's pin: expected it untouched, seen %v", err)
	}
	if mode, id, _ := ns.XDPAttachMode("lo"); id != 0 {
		t.Errorf("lo: expected no program after the refused attach, seen %s id %d", mode, id)
	}
}
