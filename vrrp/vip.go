//go:build linux

package vrrp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VIPManager puts the virtual addresses on the interface and takes them off. Add and Remove are
// idempotent. Remove takes off only what Add put on.
type VIPManager interface {
	Add() error
	Remove() error
	Close() error
}

// NetlinkVIPs is the [VIPManager] of one interface, through a netlink handle opened in the
// network namespace current when it is made. It records the addresses it added and removes only
// those. A configured VIP already on the interface when it is made belongs to this virtual
// router (typically left by a daemon that was killed): it is adopted, so the instance removes it
// unless it becomes Master, as keepalived does ("removing VIPs" at start). Otherwise a restarted
// Backup would keep answering ARP for the VIP beside the real Master.
type NetlinkVIPs struct {
	log    *slog.Logger
	h      *netlink.Handle
	ifname string
	vips   []netip.Prefix

	mu     sync.Mutex
	added  map[netip.Addr]bool
	warned map[netip.Addr]bool
}

var _ VIPManager = (*NetlinkVIPs)(nil)

// NewNetlinkVIPs returns the manager of vips on iface, each with the prefix length prefixLen
// (0: a host route, /32 or /128). VIPs already on the interface are logged now.
func NewNetlinkVIPs(log *slog.Logger, iface string, vips []netip.Addr, prefixLen int) (*NetlinkVIPs, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("vrrp: netlink handle: %w", err)
	}
	m := &NetlinkVIPs{log: log, h: h, ifname: iface, added: map[netip.Addr]bool{}, warned: map[netip.Addr]bool{}}
	for _, v := range vips {
		bits := prefixLen
		if bits <= 0 || bits > v.BitLen() {
			bits = v.BitLen()
		}
		m.vips = append(m.vips, netip.PrefixFrom(v.Unmap(), bits))
	}
	present, err := m.present()
	if err != nil {
		h.Close()
		return nil, err
	}
	for _, p := range m.vips {
		if present[p.Addr()] {
			m.added[p.Addr()] = true
			log.Info("VIP already on the interface (left by an earlier run?): adopted, removed unless Master",
				"vip", p.Addr(), "iface", iface)
		}
	}
	return m, nil
}

func (m *NetlinkVIPs) link() (netlink.Link, error) {
	l, err := m.h.LinkByName(m.ifname)
	if err != nil {
		return nil, fmt.Errorf("vrrp: interface %q: %w", m.ifname, err)
	}
	return l, nil
}

// present returns the addresses on the interface.
func (m *NetlinkVIPs) present() (map[netip.Addr]bool, error) {
	l, err := m.link()
	if err != nil {
		return nil, err
	}
	addrs, err := m.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("vrrp: list addresses of %s: %w", m.ifname, err)
	}
	out := map[netip.Addr]bool{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out[ip.Unmap()] = true
		}
	}
	return out, nil
}

// Add puts every VIP on the interface that is not there yet.
func (m *NetlinkVIPs) Add() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := m.link()
	if err != nil {
		return err
	}
	present, err := m.present()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range m.vips {
		ip := p.Addr()
		if present[ip] {
			if !m.added[ip] && !m.warned[ip] {
				m.warned[ip] = true
				m.log.Warn("VIP already on the interface and not added by us: leaving it alone",
					"vip", ip, "iface", m.ifname)
			}
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(p.Bits(), ip.BitLen())}}
		if ip.Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := m.h.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("vrrp: add VIP %s to %s: %w", p, m.ifname, err))
			continue
		}
		m.added[ip] = true
		m.log.Debug("VIP added", "vip", p, "iface", m.ifname)
	}
	return errors.Join(errs...)
}

// Remove takes off the VIPs that Add put on.
func (m *NetlinkVIPs) Remove() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.added) == 0 {
		return nil
	}
	l, err := m.link()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range m.vips {
		ip := p.Addr()
		if !m.added[ip] {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(p.Bits(), ip.BitLen())}}
		err := m.h.AddrDel(l, a)
		if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("vrrp: remove VIP %s from %s: %w", p, m.ifname, err))
			continue
		}
		delete(m.added, ip)
		m.log.Debug("VIP removed", "vip", p, "iface", m.ifname)
	}
	return errors.Join(errs...)
}

// Added returns the VIPs we put on the interface and have not taken off.
func (m *NetlinkVIPs) Added() []netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []netip.Addr
	for _, p := range m.vips {
		if m.added[p.Addr()] {
			out = append(out, p.Addr())
		}
	}
	return out
}

// Close closes the netlink handle (it does not remove anything).
func (m *NetlinkVIPs) Close() error {
	m.h.Close()
	return nil
}
