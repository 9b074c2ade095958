//go:build linux

package testbed

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCleanupsLastFirst(t *testing.T) {
	var c Cleanups
	var order []int
	c.Cleanup(func() { order = append(order, 1) })
	c.Cleanup(func() { panic("boom") })
	c.Cleanup(func() {
		order = append(order, 3)
		c.Cleanup(func() { order = append(order, 4) }) // queued while running: runs too
	})
	err := c.Run()
	if want := []int{3, 4, 1}; !slices.Equal(order, want) {
		t.Errorf("expected cleanups in order %v, seen %v", want, order)
	}
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("expected the panic as an error, seen %v", err)
	}
	if err := c.Run(); err != nil || len(order) != 3 {
		t.Errorf("expected a second Run to do nothing, seen %v and order %v", err, order)
	}
}

func TestProcStopAndKill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skipf("nsenter needs root (%v)", os.ErrPermission)
	}
	dir := t.TempDir()
	self := "/proc/self/ns/net"
	// A parent and a child in one group: Stop must end both.
	p, err := StartProc(self, "sh", filepath.Join(dir, "log"), "sh", "-c", "sleep 60 & echo started; wait")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Running() || !GroupAlive(p.Pid()) {
		t.Fatalf("expected the group to run")
	}
	p.Stop(5 * time.Second)
	if p.Running() || GroupAlive(p.Pid()) {
		t.Errorf("expected no live process of the group after Stop")
	}
	if !strings.Contains(p.Log(), "=== ") {
		t.Errorf("expected the command line in the log, seen %q", p.Log())
	}
	k, err := StartProc(self, "sleep", filepath.Join(dir, "log2"), "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	k.Kill()
	select {
	case <-k.Done():
	default:
		t.Errorf("expected Done closed after Kill")
	}
	if k.WaitErr() == nil {
		t.Errorf("expected a wait error after SIGKILL")
	}
}
