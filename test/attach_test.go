//go:build linux

package test

import (
	"strings"
	"testing"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// TestAttachFailedModeChange: asking for a mode the driver lacks must leave the running data
// path alone. lo has no native XDP, so `attach lo --mode native` fails after a generic attach.
// The loader restores the old mode when the new one fails.
func TestAttachFailedModeChange(t *testing.T) {
	requireRoot(t)
	requireCLI(t)
	ns := netns.New(t)
	pinRoot := newPinRoot(t)

	if out, err := runCLI(ns, pinRoot, "attach", "lo", "--mode", "generic"); err != nil {
		t.Fatalf("expected `xdplb attach lo --mode generic` to succeed, seen: %v", err)
	} else if !strings.Contains(out, "generic") {
		t.Errorf("`xdplb attach lo --mode generic`: expected the output to name the mode, seen %q", out)
	}
	mode, id, err := ns.XDPAttachMode("lo")
	if err != nil || mode != "generic" {
		t.Fatalf("after attach: expected a generic XDP program on lo, seen mode %q (prog id %d, err %v)", mode, id, err)
	}

	out, err := runCLI(ns, pinRoot, "attach", "lo", "--mode", "native")
	if err == nil {
		t.Fatalf("`xdplb attach lo --mode native`: expected an error (lo has no native XDP), seen success: %s", out)
	}
	// attach loads a fresh program each time, so the id may change; the mode must not.
	if got, gotID, err := ns.XDPAttachMode("lo"); err != nil || got != "generic" || gotID == 0 {
		t.Errorf("after a failed switch to native mode: expected a generic program still on lo (was id %d), seen mode %q (prog id %d, err %v)",
			id, got, gotID, err)
	}
	if list, err := runCLI(ns, pinRoot, "list"); err != nil || !strings.Contains(list, "generic mode") {
		t.Errorf("`xdplb list` after a failed switch to native mode: expected lo in generic mode, seen %q (err %v)", list, err)
	}
}
