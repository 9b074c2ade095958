package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// NewRing creates a Maglev ring map (an inner map of `maglev`, the same flags as its template)
// holding table, slot -> backend id.
func NewRing(table []uint32) (*ebpf.Map, error) {
	ring, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "xdplb_ring",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: uint32(len(table)),
		Flags:      unix.BPF_F_MMAPABLE,
	})
	if err != nil {
		return nil, fmt.Errorf("create ring map: %w", err)
	}
	if err := FillRing(ring, table); err != nil {
		ring.Close()
		return nil, fmt.Errorf("fill ring map: %w", err)
	}
	return ring, nil
}

// FillRing overwrites every slot of ring with table. Rings are mmapable, so this is one copy into
// a shared mapping, unmapped before returning (a mapping would keep a replaced ring's memory
// alive); a ring without the flag is written with a batch update. The caller makes sure no
// packet reads the ring meanwhile (it is in the idle slot, or not installed yet).
func FillRing(ring *ebpf.Map, table []uint32) error {
	if ring.MaxEntries() != uint32(len(table)) {
		return fmt.Errorf("ring has %d slots, table %d", ring.MaxEntries(), len(table))
	}
	if ring.Flags()&unix.BPF_F_MMAPABLE == 0 {
		return batchFillRing(ring, table)
	}
	// An array map lays its values out 8-byte aligned: a 4-byte slot takes 8.
	const stride = 8
	page := os.Getpagesize()
	size := (len(table)*stride + page - 1) / page * page
	b, err := unix.Mmap(ring.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map ring memory: %w", err)
	}
	for i, id := range table {
		binary.NativeEndian.PutUint32(b[i*stride:], id)
	}
	if err := unix.Munmap(b); err != nil {
		return fmt.Errorf("unmap ring memory: %w", err)
	}
	return nil
}

func batchFillRing(ring *ebpf.Map, table []uint32) error {
	keys := make([]uint32, len(table))
	for i := range keys {
		keys[i] = uint32(i)
	}
	_, err := ring.BatchUpdate(keys, table, nil)
	if errors.Is(err, ebpf.ErrNotSupported) {
		err = nil
		for i, id := range table {
			if err = ring.Put(uint32(i), id); err != nil {
				break
			}
		}
	}
	return err
}
