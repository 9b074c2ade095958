package control

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/xdplb/xdplb/loader"
)

// ErrNotFound is wrapped by every error about a service, backend or peer that does not exist.
var ErrNotFound = errors.New("not found")

// Proto is the IP protocol of a service: TCP or UDP.
type Proto uint8

// The protocols a service can balance.
const (
	TCP Proto = loader.ProtoTCP
	UDP Proto = loader.ProtoUDP
)

// ParseProto accepts "tcp" and "udp" (any case).
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q: want tcp or udp", s)
}

// String is the ipvsadm spelling: TCP or UDP.
func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// MarshalText writes "tcp" or "udp".
func (p Proto) MarshalText() ([]byte, error) {
	if p != TCP && p != UDP {
		return nil, fmt.Errorf("protocol %d: want tcp or udp", uint8(p))
	}
	return []byte(strings.ToLower(p.String())), nil
}

// UnmarshalText is the inverse of MarshalText.
func (p *Proto) UnmarshalText(b []byte) error {
	v, err := ParseProto(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// ServiceKey names a virtual service, as the data path matches it.
type ServiceKey struct {
	VIP   netip.Addr
	Port  uint16 // 0 = every port of the VIP
	Proto Proto
}

// String is "TCP 10.0.0.100:3306" or "TCP [fd00::1]:3306" (port 0 for every port, as ipvsadm).
func (k ServiceKey) String() string {
	return k.Proto.String() + " " + netip.AddrPortFrom(k.VIP, k.Port).String()
}

// Validate reports why the data path could not match this key.
func (k ServiceKey) Validate() error {
	if err := checkUnicast("VIP", k.VIP); err != nil {
		return err
	}
	if k.Proto != TCP && k.Proto != UDP {
		return fmt.Errorf("service %s: protocol %d: want tcp or udp", netip.AddrPortFrom(k.VIP, k.Port), uint8(k.Proto))
	}
	return nil
}

// normal returns the key with IPv4-mapped IPv6 VIPs written as IPv4: the map stores them alike.
func (k ServiceKey) normal() ServiceKey {
	k.VIP = k.VIP.Unmap()
	return k
}

func (k ServiceKey) mapKey() loader.ServiceKey {
	return loader.ServiceKey{Addr: loader.Addr16(k.VIP), Port: k.Port, Proto: uint8(k.Proto)}
}

func keyFromMap(mk loader.ServiceKey) ServiceKey {
	return ServiceKey{VIP: loader.AddrFrom16(mk.Addr), Port: mk.Port, Proto: Proto(mk.Proto)}
}

// MaxPersistence is the longest persistence timeout the services map can hold.
const MaxPersistence = time.Duration(1<<32-1) * time.Second

// ServiceSpec is what AddService writes.
type ServiceSpec struct {
	Key ServiceKey
	// Persistence sends a client's new connections to the same real server for this long after
	// its last packet (IPVS "persistent"); whole seconds, 0 = off. A persistent service hashes
	// the client address only.
	Persistence time.Duration
}

// Validate checks the key and the persistence timeout.
func (s ServiceSpec) Validate() error {
	if err := s.Key.Validate(); err != nil {
		return err
	}
	switch {
	case s.Persistence < 0 || s.Persistence > MaxPersistence:
		return fmt.Errorf("service %s: persistence %v: want 0 to %d seconds", s.Key, s.Persistence, uint32(1<<32-1))
	case s.Persistence%time.Second != 0:
		return fmt.Errorf("service %s: persistence %v: want whole seconds", s.Key, s.Persistence)
	}
	return nil
}

// MaxWeight is the largest backend weight.
const MaxWeight = 65535

// BackendSpec is a real server of a service, as SetBackend writes it.
type BackendSpec struct {
	Addr netip.Addr // the real server's address; unique within a service
	// MAC is the destination MAC of forwarded frames: 6 bytes, unicast. Optional with Local.
	MAC net.HardwareAddr
	// Weight is the Maglev weight, 1..65535; 0 means the default 1, except with Draining
	// where it stays 0 (a draining server gets no new flows whatever its weight).
	Weight uint32
	// Local: the real server is this director; its packets go up the local stack (XDP_PASS).
	Local bool
	// Draining: out of the ring (no new flows), established flows and persistence go on.
	Draining bool
	// Sorry: the service's sorry server, used only when no other backend is usable. Never in
	// the ring; one per service (setting another replaces it).
	Sorry bool
}

// weight is the weight written to the map, after the default.
func (b BackendSpec) weight() uint32 {
	if b.Weight == 0 && !b.Draining {
		return 1
	}
	return b.Weight
}

// Validate checks the backend on its own; SetBackend also checks it against its service.
func (b BackendSpec) Validate() error {
	if err := checkUnicast("backend address", b.Addr); err != nil {
		return err
	}
	if b.Weight > MaxWeight {
		return fmt.Errorf("backend %s: weight %d: want 1 to %d (0 only when draining)", b.Addr, b.Weight, MaxWeight)
	}
	if len(b.MAC) == 0 && b.Local {
		return nil
	}
	if len(b.MAC) == 0 {
		return fmt.Errorf("backend %s: no MAC address: a remote real server needs one (or mark it local)", b.Addr)
	}
	if err := CheckMAC(b.MAC); err != nil {
		return fmt.Errorf("backend %s: %w", b.Addr, err)
	}
	return nil
}

// CheckMAC accepts a 6-byte unicast MAC that is not all zeros.
func CheckMAC(mac net.HardwareAddr) error {
	switch {
	case len(mac) != 6:
		return fmt.Errorf("MAC %q: want 6 bytes (EUI-48, like 02:00:00:00:00:0b)", mac.String())
	case mac[0]&1 != 0:
		return fmt.Errorf("MAC %s is multicast or broadcast: want a unicast MAC", mac)
	case [6]byte(mac) == [6]byte{}:
		return fmt.Errorf("MAC %s is all zeros: want a real unicast MAC", mac)
	}
	return nil
}

func checkUnicast(what string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%s missing: want an IPv4 or IPv6 address", what)
	case a.Zone() != "":
		return fmt.Errorf("%s %s: zoned addresses are not supported", what, a)
	case a.IsUnspecified():
		return fmt.Errorf("%s %s is unspecified: want a unicast address", what, a)
	case a.IsMulticast():
		return fmt.Errorf("%s %s is multicast: want a unicast address", what, a)
	case a.IsLoopback():
		return fmt.Errorf("%s %s is a loopback address: want one reachable on the network", what, a)
	case a.Unmap() == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s %s is the broadcast address: want a unicast address", what, a)
	}
	return nil
}
