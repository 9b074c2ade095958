package loader

import (
	"net"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// TestAutoModeVeth (issue 11 point 4): auto mode must not pick native XDP on a veth whose peer
// has no XDP program (the frames it forwards are dropped there, silently); it picks generic and
// says why. With an XDP program on the peer it picks native.
func TestAutoModeVeth(t *testing.T) {
	needRoot(t)
	root := testPinRoot(t)
	iface, peer := testVeth(t)
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		t.Fatal(err)
	}

	a, err := Attach(iface, Options{PinRoot: root})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { Detach(root, iface) })
	a.Close()
	if a.Mode != ModeGeneric || !strings.Contains(a.ModeReason, "veth peer "+peer+" has no XDP program") {
		t.Fatalf("auto on a veth whose peer has no XDP program: expected generic with the reason, seen %s (%q)", a.Mode, a.ModeReason)
	}
	if n := ModeNote(ifc.Index, ModeGeneric); !strings.Contains(n, "veth peer "+peer+" has no XDP program") {
		t.Errorf("ModeNote(generic): %q", n)
	}
	if n := ModeNote(ifc.Index, ModeNative); !strings.Contains(n, "WARNING") || !strings.Contains(n, peer) {
		t.Errorf("ModeNote(native) without a peer program: expected a warning naming %s, seen %q", peer, n)
	}
	if err := Detach(root, iface); err != nil {
		t.Fatal(err)
	}

	// An XDP_PASS program on the peer: native is safe, and auto picks it.
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "xdp_pass", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	pifc, err := net.InterfaceByName(peer)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: pifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	b, err := Attach(iface, Options{PinRoot: root})
	if err != nil {
		t.Fatalf("attach with a program on the peer: %v", err)
	}
	b.Close()
	if b.Mode != ModeNative || b.ModeReason != "" || ModeNote(ifc.Index, ModeNative) != "" {
		t.Fatalf("auto with an XDP program on the peer: expected native with nothing to say, seen %s (%q, note %q)",
			b.Mode, b.ModeReason, ModeNote(ifc.Index, ModeNative))
	}
	// Not a veth: nothing to say.
	if n := ModeNote(1, ModeNative); n != "" {
		t.Errorf("ModeNote(lo): %q", n)
	}
}
