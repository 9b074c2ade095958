//go:build linux

package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

var (
	xdplbBin   string   // the CLI, built once by TestMain
	buildError error    // why it could not be built
	pinRoots   struct { // bpffs directories the tests created (one per test, via --pin-root)
		sync.Mutex
		paths []string
	}
)

// newPinRoot returns a fresh pin root under /sys/fs/bpf, removed in t.Cleanup.
func newPinRoot(t *testing.T) string {
	t.Helper()
	p := "/sys/fs/bpf/xdplb-e2e-" + netns.RandomID()
	pinRoots.Lock()
	pinRoots.paths = append(pinRoots.paths, p)
	pinRoots.Unlock()
	t.Cleanup(func() {
		if err := os.RemoveAll(p); err != nil {
			t.Errorf("remove pin root %s: %v", p, err)
		}
	})
	return p
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "xdplb-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "TestMain:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		xdplbBin, buildError = buildCLI(dir)
	}
	code := m.Run()

	// Everything a test creates must be gone, failed or not.
	left, err := netns.Leftovers()
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain: list namespaces:", err)
		code = 1
	}
	var pins []string
	for _, p := range pinRoots.paths {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			pins = append(pins, p)
		}
	}
	if len(left) > 0 || len(pins) > 0 {
		fmt.Fprintf(os.Stderr, "TestMain: leftovers after the tests: expected none, seen namespaces %v, pin directories %v\n", left, pins)
		code = 1
	}
	return code
}

// buildCLI builds ./cmd/xdplb of this module into dir.
func buildCLI(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(dir, "xdplb")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/xdplb")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("`go build -o %s ./cmd/xdplb` in %s: %w\n%s", bin, root, err, out.String())
	}
	fmt.Fprintf(os.Stderr, "TestMain: built %s in %v\n", bin, time.Since(start).Round(time.Millisecond))
	return bin, nil
}

// requireRoot skips tests that need root (namespaces, BPF) when run without it.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("end-to-end tests need root for network namespaces and BPF (%v): run as root, as CI does", os.ErrPermission)
	}
}

// requireCLI fails the test when the CLI could not be built.
func requireCLI(t *testing.T) {
	t.Helper()
	if buildError != nil {
		t.Fatalf("expected the xdplb CLI to build, seen: %v", buildError)
	}
}

// requireTools fails the test when a tool it runs is missing.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("expected %s in PATH (apt-get install bpftool ethtool util-linux), seen: %v", tool, err)
		}
	}
}

// waitFor polls cond every 20 ms until it holds or timeout passes; then it fails the test with
// what was expected and what cond last saw.
func waitFor(t *testing.T, timeout time.Duration, expected string, cond func() (ok bool, seen string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("expected %s within %v, seen %s", expected, timeout, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
