package loader

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads and attaches XDP programs")
	}
}

// testPinRoot is a private pin root under bpffs, removed after the test.
func testPinRoot(t *testing.T) string {
	t.Helper()
	root := fmt.Sprintf("/sys/fs/bpf/xdplb-test-%08x", rand.Uint32())
	t.Cleanup(func() { os.RemoveAll(root) })
	return root
}

// testVeth creates a veth pair with unique names in this namespace, removed after the test.
func testVeth(t *testing.T) (string, string) {
	t.Helper()
	a := fmt.Sprintf("xlt%06x", rand.Uint32()&0xffffff)
	b := a + "p"
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatalf("create veth: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(v) })
	for _, n := range []string{a, b} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// testBridge creates a bridge (no native XDP, and no dummy driver on our kernel).
func testBridge(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("xlb%06x", rand.Uint32()&0xffffff)
	d := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(d); err != nil {
		t.Fatalf("create bridge: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(d) })
	return name
}

func progID(t *testing.T, a *Attachment) ebpf.ProgramID {
	t.Helper()
	info, err := a.Objects.Program.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

func TestAttachLifecycle(t *testing.T) {
	needRoot(t)
	root := testPinRoot(t)
	iface, _ := testVeth(t)

	a, err := Attach(iface, Options{PinRoot: root, Mode: ModeNative})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { Detach(root, iface) })
	if a.Mode != ModeNative {
		t.Errorf("native mode on veth: got %s", a.Mode)
	}
	if !a.Created {
		t.Error("first attach: Created = false, want true")
	}
	for _, n := range append(mapNames, linkPin) {
		if _, err := os.Stat(filepath.Join(root, iface, n)); err != nil {
			t.Errorf("pin %s missing: %v", n, err)
		}
	}
	firstProg := progID(t, a)

	// A flow in conntrack must survive re-attach.
	key := FlowKey{Sport: 1234, Dport: 3306, Proto: ProtoTCP}
	key.Src[15], key.Dst[15] = 1, 100
	if err := a.Objects.Conntrack.Put(key, Flow{Backend: 7}); err != nil {
		t.Fatal(err)
	}
	a.Close()

	b, err := Attach(iface, Options{PinRoot: root})
	if err != nil {
		t.Fatalf("re-attach: %v", err)
	}
	defer b.Close()
	if b.Created {
		t.Error("re-attach created new maps; want the pinned ones adopted")
	}
	var f Flow
	if err := b.Objects.Conntrack.Lookup(key, &f); err != nil || f.Backend != 7 {
		t.Errorf("conntrack entry after re-attach: %+v, %v; want backend 7", f, err)
	}
	st, err := Status(root, iface)
	if err != nil {
		t.Fatal(err)
	}
	if ebpf.ProgramID(st.ProgramID) == firstProg || ebpf.ProgramID(st.ProgramID) != progID(t, b) {
		t.Errorf("link runs program %d; want the new program %d (old %d)", st.ProgramID, progID(t, b), firstProg)
	}

	// Different sizes are refused and change nothing.
	s := DefaultSizes()
	s.Conntrack *= 2
	if _, err := Attach(iface, Options{PinRoot: root, Sizes: s}); !errors.Is(err, ErrIncompatible) {
		t.Errorf("attach with other conntrack size: %v, want ErrIncompatible", err)
	}
	s = DefaultSizes()
	s.RingSize = 251
	if _, err := Attach(iface, Options{PinRoot: root, Sizes: s}); !errors.Is(err, ErrIncompatible) {
		t.Errorf("attach with other ring size: %v, want ErrIncompatible", err)
	}
	if err := b.Objects.Conntrack.Lookup(key, &f); err != nil {
		t.Errorf("refused attach lost the flow: %v", err)
	}

	// Mode change keeps the maps.
	c, err := Attach(iface, Options{PinRoot: root, Mode: ModeGeneric})
	if err != nil {
		t.Fatalf("attach generic: %v", err)
	}
	defer c.Close()
	if c.Mode != ModeGeneric {
		t.Errorf("mode after switch: %s, want generic", c.Mode)
	}
	if err := c.Objects.Conntrack.Lookup(key, &f); err != nil {
		t.Errorf("mode switch lost the flow: %v", err)
	}

	// bpftool shows field names thanks to BTF.
	if out, err := exec.Command("bpftool", "map", "dump", "pinned", filepath.Join(root, iface, "conntrack")).CombinedOutput(); err != nil {
		t.Errorf("bpftool: %v: %s", err, out)
	} else if !strings.Contains(string(out), `"backend": 7`) || !strings.Contains(string(out), `"dport"`) {
		t.Errorf("bpftool dump lacks field names:\n%s", out)
	}

	if err := Detach(root, iface); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, iface)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir after detach: %v, want gone", err)
	}
	l, _ := netlink.LinkByName(iface)
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Errorf("XDP program %d still attached after detach", x.ProgId)
	}
	if err := Detach(root, iface); !errors.Is(err, ErrNotAttached) {
		t.Errorf("second detach: %v, want ErrNotAttached", err)
	}
}

func TestAttachAutoFallsBackToGeneric(t *testing.T) {
	needRoot(t)
	root := testPinRoot(t)
	iface := testBridge(t)
	a, err := Attach(iface, Options{PinRoot: root})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	defer a.Close()
	defer Detach(root, iface)
	if a.Mode != ModeGeneric {
		t.Errorf("bridge has no native XDP: got %s, want generic", a.Mode)
	}
	if _, err := Attach(iface, Options{PinRoot: root, Mode: ModeNative}); err == nil {
		t.Error("native mode on a bridge succeeded; want an error")
	}
}

func TestAttachErrors(t *testing.T) {
	needRoot(t)
	root := testPinRoot(t)
	if _, err := Attach("no-such-if0", Options{PinRoot: root}); !errors.Is(err, ErrNoInterface) {
		t.Errorf("missing interface: %v, want ErrNoInterface", err)
	}
	if _, err := Attach("lo", Options{PinRoot: "/tmp/not-bpffs"}); !errors.Is(err, ErrNoBPFFS) {
		t.Errorf("pin root outside bpffs: %v, want ErrNoBPFFS", err)
	}
	s := DefaultSizes()
	s.RingSize = 65536
	if _, err := Attach("lo", Options{PinRoot: root, Sizes: s}); err == nil || !strings.Contains(err.Error(), "prime") {
		t.Errorf("non-prime ring size: %v, want an error about primes", err)
	}

	// Someone else's XDP program: refused with its id, and left alone.
	iface, _ := testVeth(t)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	ifc, _ := netlink.LinkByName(iface)
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Attrs().Index})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Attach(iface, Options{PinRoot: root})
	if !errors.Is(err, ErrForeignProgram) || !strings.Contains(err.Error(), "xdp off") {
		t.Errorf("foreign program: %v, want ErrForeignProgram with the fix", err)
	}
	if _, err := os.Stat(filepath.Join(root, iface)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed attach left pins behind: %v", err)
	}
	if _, err := Open(root, iface); !errors.Is(err, ErrNotAttached) {
		t.Errorf("Open on unattached: %v, want ErrNotAttached", err)
	}
}
