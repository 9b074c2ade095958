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

// Who vouches for a peer (PeerEntry.Flags). A peer stays while either does; the daemon never
// forgets a learned peer, since a silent peer may still run a data path.
const (
	PeerStatic  = loader.PeerStatic  // listed under `peers:` in the config
	PeerLearned = loader.PeerLearned // heard: its VRRP adverts or its director hellos
)

// PeerEntry is one peer director in the peers map.
type PeerEntry struct {
	MAC   net.HardwareAddr
	Flags uint32 // PeerStatic | PeerLearned; 0 for an entry made by hand (bpftool)
}

// AddPeer adds the MAC of a peer director, or adds flags to a known one: frames from it were
// balanced already and pass to the local stack.
func (m *Maps) AddPeer(mac net.HardwareAddr, flags uint32) error {
	if err := CheckMAC(mac); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	key := loader.PeerKey{Mac: [6]uint8(mac)}
	var v loader.Peer
	err := m.o.Peers.Lookup(key, &v)
	if err == nil {
		if v.Flags|flags == v.Flags {
			return nil
		}
		if err := m.o.Peers.Update(key, loader.Peer{Flags: v.Flags | flags}, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("update peer %s: %w", mac, err)
		}
		return nil
	}
	if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("look up peer %s: %w", mac, err)
	}
	peers, err := m.peerEntries()
	if err != nil {
		return err
	}
	if size := m.o.Peers.MaxEntries(); uint32(len(peers)) >= size {
		return fmt.Errorf("cannot add peer %s: the peer table is full (%d peers); its size is set by `maps: peers:` in the config or `xdplb attach --peers N` (a new size needs detach and attach)", mac, size)
	}
	if err := m.o.Peers.Update(key, loader.Peer{Flags: flags}, ebpf.UpdateNoExist); err != nil {
		return fmt.Errorf("add peer %s: %w", mac, err)
	}
	return nil
}

// setPeerFlags replaces the flags of a known peer.
func (m *Maps) setPeerFlags(mac net.HardwareAddr, flags uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.o.Peers.Update(loader.PeerKey{Mac: [6]uint8(mac)}, loader.Peer{Flags: flags}, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("update peer %s: %w", mac, err)
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

// PeerEntries lists the peers with who vouches for them, sorted by MAC.
func (m *Maps) PeerEntries() ([]PeerEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peerEntries()
}

func (m *Maps) peers() ([]net.HardwareAddr, error) {
	es, err := m.peerEntries()
	if err != nil {
		return nil, err
	}
	out := make([]net.HardwareAddr, len(es))
	for i, e := range es {
		out[i] = e.MAC
	}
	return out, nil
}

func (m *Maps) peerEntries() ([]PeerEntry, error) {
	var (
		out []PeerEntry
		k   loader.PeerKey
		v   loader.Peer
	)
	it := m.o.Peers.Iterate()
	for it.Next(&k, &v) {
		out = append(out, PeerEntry{MAC: net.HardwareAddr(bytes.Clone(k.Mac[:])), Flags: v.Flags})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read peers: %w", err)
	}
	slices.SortFunc(out, func(a, b PeerEntry) int { return bytes.Compare(a.MAC, b.MAC) })
	return out, nil
}
