package loader_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/loader"
)

// TestRingFill: a ring written through its shared mapping holds every slot of the table, a
// rewrite replaces all of them, a ring without the mmapable flag is still written (batch), and a
// table of the wrong size is refused with the ring left as it was.
func TestRingFill(t *testing.T) {
	const n = 65537
	table := make([]uint32, n)
	for i := range table {
		table[i] = uint32(i%7 + 1)
	}
	ring, err := loader.NewRing(table)
	if err != nil {
		t.Fatalf("NewRing: %v", err)
	}
	defer ring.Close()
	check := func(m *ebpf.Map, want func(i int) uint32) {
		t.Helper()
		for _, i := range []int{0, 1, 4095, 4096, 1 << 15, n - 2, n - 1} {
			var got uint32
			if err := m.Lookup(uint32(i), &got); err != nil || got != want(i) {
				t.Fatalf("slot %d = %d (%v), want %d", i, got, err, want(i))
			}
		}
	}
	check(ring, func(i int) uint32 { return uint32(i%7 + 1) })
	for i := range table {
		table[i] = uint32(n - i)
	}
	if err := loader.FillRing(ring, table); err != nil {
		t.Fatalf("FillRing: %v", err)
	}
	check(ring, func(i int) uint32 { return uint32(n - i) })
	if err := loader.FillRing(ring, table[:n-1]); err == nil {
		t.Fatal("FillRing with a short table: no error")
	}
	check(ring, func(i int) uint32 { return uint32(n - i) })

	plain, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: n})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := loader.FillRing(plain, table); err != nil {
		t.Fatalf("FillRing without BPF_F_MMAPABLE: %v", err)
	}
	check(plain, func(i int) uint32 { return uint32(n - i) })
}
