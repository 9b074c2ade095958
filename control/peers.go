package control

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/loader"
)

// AddPeer adds the MAC of a peer director: frames from it were balanced already and pass to the
// local stack. Adding a known peer is a no-op.
func (m *Maps) AddPeer(mac net.HardwareAddr) error {
	if err := CheckMAC(mac); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	key := loader.PeerKey{Mac: [6]uint8(mac)}
	var v loader.Peer
	err := m.o.Peers.Lookup(key, &v)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("look up peer %s: %w", mac, err)
	}
	peers, err := m.peers()
	if err != nil {
		return err
	}
	if size := m.o.Peers.MaxEntries(); uint32(len(peers)) >= size {
		return fmt.Errorf("cannot add peer %s: the peer table is full (%d peers); its size is set by `xdplb attach --peers N` (a new size needs detach and attach)", mac, size)
	}
	if err := m.o.Peers.Update(key, loader.Peer{}, ebpf.UpdateNoExist); err != nil {
		return fmt.Errorf("add peer %s: %w", mac, err)
	}
	return nil
}

// DeletePeer removes a peer director's MAC.
func (m *Maps) DeletePeer(mac net.HardwareAddr) error {
	if err := CheckMAC(mac); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	err := m.o.Peers.Delete(loader.PeerKey{Mac: [6]uint8(mac)})
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("peer %s: %w", mac, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("delete peer %s: %w", mac, err)
	}
	return nil
}

// Peers lists the peer MACs, sorted.
func (m *Maps) Peers() ([]net.HardwareAddr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peers()
}

func (m *Maps) peers() ([]net.HardwareAddr, error) {
	var (
		out []net.HardwareAddr
		k   loader.PeerKey
		v   loader.Peer
	)
	it := m.o.Peers.Iterate()
	for it.Next(&k, &v) {
		out = append(out, net.HardwareAddr(bytes.Clone(k.Mac[:])))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read peers: %w", err)
	}
	slices.SortFunc(out, func(a, b net.HardwareAddr) int { return bytes.Compare(a, b) })
	return out, nil
}
