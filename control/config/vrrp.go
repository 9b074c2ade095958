package config

import (
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

// The vrrp section is a list of instances (yamlVRRP in schema.go gives the keys with
// keepalived's names).

// Limits of the advertisement interval.
const (
	maxV2Interval = 255 * time.Second
	maxV3Interval = 4095 * 10 * time.Millisecond
)

func (p *parser) vrrpInstances(ys []yamlVRRP, cfg *Config) {
	names := map[string]int{}
	type vridKey struct {
		iface string
		is6   bool
		vrid  uint8
	}
	vrids := map[vridKey]int{}
	for i := range ys {
		path := fmt.Sprintf("vrrp[%d]", i)
		v, ok := p.vrrpInstance(&ys[i], path, cfg)
		if !ok {
			continue
		}
		if j, dup := names[v.Name]; dup {
			p.errorf(p.keyOr(path+".name", p.vals[path]), path+".name", "%q is already the name of vrrp[%d]", v.Name, j)
			continue
		}
		names[v.Name] = i
		k := vridKey{v.Interface, v.VIPs[0].Is6(), v.VRID}
		if j, dup := vrids[k]; dup {
			p.errorf(p.keyOr(path+".vrid", p.vals[path]), path+".vrid", "%d is already the vrid of vrrp[%d] on %s (one virtual router per vrid, interface and address family)", v.VRID, j, v.Interface)
			continue
		}
		vrids[k] = i
		cfg.VRRP = append(cfg.VRRP, v)
	}
}

// vrrpAddr parses an address usable as a VIP or a unicast peer.
func (p *parser) vrrpAddr(s, path string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		p.bad(path, "%q: want an IP address", s)
	case a.Zone() != "":
		p.bad(path, "%q: no zone (the instance's interface is used)", s)
	case !a.Unmap().IsGlobalUnicast():
		p.bad(path, "%q: want a unicast address (not loopback, link-local, multicast or unspecified)", s)
	default:
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

func (p *parser) vrrpAddrs(list []string, path string) ([]netip.Addr, bool) {
	var out []netip.Addr
	ok := true
	seen := map[netip.Addr]int{}
	for i, s := range list {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		if p.hasErrorUnder(ipath) {
			ok = false
			continue
		}
		a, aok := p.vrrpAddr(s, ipath)
		if !aok {
			ok = false
			continue
		}
		if j, dup := seen[a]; dup {
			p.bad(ipath, "%s is already %s[%d]", a, path, j)
			ok = false
			continue
		}
		seen[a] = i
		out = append(out, a)
	}
	return out, ok && !p.hasErrorUnder(path)
}

func (p *parser) vrrpInstance(y *yamlVRRP, path string, cfg *Config) (VRRPInstance, bool) {
	v := defaultVRRP()
	if !p.isMapping(path) {
		return v, false
	}
	n := p.vals[path]
	key := func(k string) string { return path + "." + k }

	if p.has(key("name")) {
		if p.given(key("name")) {
			if s := y.Name; s == "" || strings.ContainsAny(s, " \t\n\"\\") {
				p.bad(key("name"), "%q: want a word (no spaces or quotes)", s)
			} else {
				v.Name = s
			}
		}
	} else {
		p.errorf(n, key("name"), "missing: a name for the instance (like VI_1)")
	}
	if p.has(key("interface")) {
		if p.given(key("interface")) {
			if s := y.Interface; !contains(cfg.Interfaces, s) {
				p.bad(key("interface"), "%q is not one of interfaces %v: VRRP runs on an interface the data path is attached to", s, cfg.Interfaces)
			} else {
				v.Interface = s
			}
		}
	} else {
		p.errorf(n, key("interface"), "missing: the interface the instance advertises on")
	}
	versionOK := !p.failed(key("version"))
	if p.given(key("version")) {
		v.Version = y.Version
	}
	if p.has(key("vrid")) {
		v.VRID = y.VRID
	} else {
		p.errorf(n, key("vrid"), "missing: the virtual router id, 1..255 (keepalived virtual_router_id)")
	}
	if p.given(key("priority")) {
		v.Priority = y.Priority
	}
	if versionOK {
		if d, ok := p.duration(key("advert_interval")); ok {
			switch {
			case v.Version == 2 && (d < time.Second || d > maxV2Interval || d%time.Second != 0):
				p.bad(key("advert_interval"), "%v: VRRPv2 wants whole seconds, 1s..255s", d)
			case v.Version == 3 && (d < 10*time.Millisecond || d > maxV3Interval || d%(10*time.Millisecond) != 0):
				p.bad(key("advert_interval"), "%v: VRRPv3 wants 10ms..40.95s in steps of 10ms", d)
			default:
				v.AdvertInterval = d
			}
		}
	}
	if y.Preempt != nil {
		v.Preempt = *y.Preempt
	}
	if d, ok := p.duration(key("preempt_delay")); ok {
		if d > time.Hour {
			p.bad(key("preempt_delay"), "%v: at most 1h", d)
		} else {
			v.PreemptDelay = d
		}
	}

	// Never echo the password: the errors name the key only.
	if y.AuthPass != nil {
		switch pw := *y.AuthPass; {
		case len(pw) > MaxAuthPass:
			p.bad(key("auth_pass"), "%d bytes: a VRRPv2 password is at most %d bytes", len(pw), MaxAuthPass)
		case pw == "":
			p.bad(key("auth_pass"), "empty: leave the key out for no authentication")
		default:
			v.authPass, v.hasAuthPass = pw, true
		}
	}
	if p.given(key("auth_pass_file")) {
		if s := y.AuthPassFile; !filepath.IsAbs(s) {
			p.bad(key("auth_pass_file"), "%q: want an absolute path", s)
		} else {
			v.AuthPassFile = s
		}
	}
	if p.has(key("auth_pass")) && p.has(key("auth_pass_file")) {
		p.errorf(p.keys[key("auth_pass_file")], key("auth_pass_file"), "the password is given 2 ways (auth_pass, auth_pass_file): keep one")
	}
	if versionOK && v.Version == 3 {
		for _, k := range []string{"auth_pass", "auth_pass_file"} {
			if p.has(key(k)) {
				p.errorf(p.keys[key(k)], key(k), "set, but the version is 3: VRRPv3 has no authentication (RFC 5798); use version: 2 or leave it out")
			}
		}
	}
	if y.PseudoHeader != nil {
		v.PseudoHeader = *y.PseudoHeader
	}

	vipsOK := false
	if p.has(key("vips")) {
		v.VIPs, vipsOK = p.vrrpAddrs(y.VIPs, key("vips"))
		if vipsOK && len(v.VIPs) == 0 {
			p.bad(key("vips"), "empty: list at least one virtual IP address")
			vipsOK = false
		}
		if vipsOK && len(v.VIPs) > 255 {
			p.bad(key("vips"), "%d addresses: at most 255", len(v.VIPs))
			vipsOK = false
		}
	} else {
		p.errorf(n, key("vips"), "missing: the virtual IP addresses the Master holds (keepalived virtual_ipaddress)")
	}
	if vipsOK {
		is6 := v.VIPs[0].Is6()
		for i, a := range v.VIPs[1:] {
			if a.Is6() != is6 {
				p.errorf(p.vals[key("vips")], fmt.Sprintf("%s.vips[%d]", path, i+1), "%s is not of the family of vips[0] (%s): one address family per instance (use two instances)", a, v.VIPs[0])
				vipsOK = false
			}
		}
		if vipsOK && is6 && versionOK && v.Version == 2 {
			p.errorf(p.keyOr(key("version"), p.vals[key("vips")]), key("vips"), "%s is IPv6: VRRPv2 is IPv4 only (use version: 3)", v.VIPs[0])
			vipsOK = false
		}
		if vipsOK && is6 && p.has(key("checksum_pseudo_header")) {
			p.errorf(p.keys[key("checksum_pseudo_header")], key("checksum_pseudo_header"), "set, but the VIPs are IPv6: the IPv6 checksum always covers the pseudo-header")
		}
	}
	if versionOK && v.Version == 2 && p.has(key("checksum_pseudo_header")) {
		p.errorf(p.keys[key("checksum_pseudo_header")], key("checksum_pseudo_header"), "set, but the version is 2: it is a VRRPv3 option")
	}
	if p.has(key("unicast_peers")) {
		peers, ok := p.vrrpAddrs(y.UnicastPeers, key("unicast_peers"))
		if ok && vipsOK {
			for i, a := range peers {
				if a.Is6() != v.VIPs[0].Is6() {
					p.errorf(p.vals[key("unicast_peers")], fmt.Sprintf("%s.unicast_peers[%d]", path, i), "%s is not of the VIPs' family", a)
				}
			}
		}
		v.UnicastPeers = peers
	}
	if p.has(key("notify")) {
		v.Notify = p.argv(y.Notify, key("notify"))
	}
	if y.GARPRepeat != nil {
		v.GARPRepeat = *y.GARPRepeat
	}
	if d, ok := p.duration(key("garp_delay")); ok {
		if d > time.Hour {
			p.bad(key("garp_delay"), "%v: at most 1h", d)
		} else {
			v.GARPDelay = d
		}
	}
	if d, ok := p.duration(key("peer_timeout")); ok {
		if d > 0 && d < 10*time.Millisecond || d > math.MaxInt32*time.Millisecond {
			p.bad(key("peer_timeout"), "%v: want 0 (3 × Master_Down_Interval) or 10ms..", d)
		} else {
			v.PeerTimeout = d
		}
	}
	if p.has(key("track_services")) {
		v.TrackServices = p.trackServices(y.TrackServices, key("track_services"), cfg)
	}
	return v, !p.hasErrorUnder(path)
}

// trackServices checks a list of names of services of cfg (checked before the vrrp section).
func (p *parser) trackServices(list []string, path string, cfg *Config) []string {
	var names []string
	for _, s := range cfg.Services {
		if s.Name != "" {
			names = append(names, s.Name)
		}
	}
	var out []string
	seen := map[string]int{}
	for i, s := range list {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		if p.hasErrorUnder(ipath) {
			continue
		}
		if j, dup := seen[s]; dup {
			p.bad(ipath, "%q is already %s[%d]", s, path, j)
			continue
		}
		if !contains(names, s) {
			if len(names) == 0 {
				p.bad(ipath, "%q is not the name of a service: no service has a name (give the tracked services a name)", s)
			} else {
				p.bad(ipath, "%q is not the name of a service; the named services are %v", s, names)
			}
			continue
		}
		seen[s] = i
		out = append(out, s)
	}
	return out
}
