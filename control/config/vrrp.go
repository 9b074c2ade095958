package config

import (
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The vrrp section: a list of instances. Keys, with keepalived's names:
//
//	name                    vrrp_instance NAME
//	interface               interface
//	version                 vrrp_version (2 or 3)
//	vrid                    virtual_router_id
//	priority                priority
//	advert_interval         advert_int
//	preempt                 false = nopreempt
//	preempt_delay           preempt_delay
//	auth_pass               authentication { auth_type PASS; auth_pass } (v2 only)
//	auth_pass_file          the same, read from a file
//	checksum_pseudo_header  (keepalived's default; v3 IPv4 only)
//	unicast_peers           unicast_peer
//	vips                    virtual_ipaddress
//	notify                  notify (argv, never through a shell)
//	garp_repeat             garp_master_repeat
//	garp_delay              garp_master_delay
//	peer_timeout            (xdplb: how long a silent peer's MAC stays in the peers map)
//	track_services          track_script, without weights: names of services; Fault while any
//	                        of them has lost its quorum
var vrrpKeys = []string{"name", "interface", "version", "vrid", "priority", "advert_interval", "preempt",
	"preempt_delay", "auth_pass", "auth_pass_file", "checksum_pseudo_header", "unicast_peers", "vips", "notify",
	"garp_repeat", "garp_delay", "peer_timeout", "track_services"}

// Limits of the advertisement interval.
const (
	maxV2Interval = 255 * time.Second
	maxV3Interval = 4095 * 10 * time.Millisecond
)

func (p *parser) vrrpInstances(n *yaml.Node, cfg *Config) {
	names := map[string]int{}
	type vridKey struct {
		iface string
		is6   bool
		vrid  uint8
	}
	vrids := map[vridKey]int{}
	for i, vn := range p.sequence(n, "vrrp") {
		path := fmt.Sprintf("vrrp[%d]", i)
		v, f, ok := p.vrrpInstance(vn, path, cfg)
		if !ok {
			continue
		}
		if j, dup := names[v.Name]; dup {
			p.errorf(keyOr(f, "name", resolve(vn)), path+".name", "%q is already the name of vrrp[%d]", v.Name, j)
			continue
		}
		names[v.Name] = i
		k := vridKey{v.Interface, v.VIPs[0].Is6(), v.VRID}
		if j, dup := vrids[k]; dup {
			p.errorf(keyOr(f, "vrid", resolve(vn)), path+".vrid", "%d is already the vrid of vrrp[%d] on %s (one virtual router per vrid, interface and address family)", v.VRID, j, v.Interface)
			continue
		}
		vrids[k] = i
		cfg.VRRP = append(cfg.VRRP, v)
	}
}

// vrrpAddr parses an address usable as a VIP or a unicast peer.
func (p *parser) vrrpAddr(n *yaml.Node, path string) (netip.Addr, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		p.errorf(resolve(n), path, "%q: want an IP address", s)
	case a.Zone() != "":
		p.errorf(resolve(n), path, "%q: no zone (the instance's interface is used)", s)
	case !a.Unmap().IsGlobalUnicast():
		p.errorf(resolve(n), path, "%q: want a unicast address (not loopback, link-local, multicast or unspecified)", s)
	default:
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

func (p *parser) vrrpAddrs(n *yaml.Node, path string) ([]netip.Addr, bool) {
	var out []netip.Addr
	ok := true
	seen := map[netip.Addr]int{}
	for i, an := range p.sequence(n, path) {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		a, aok := p.vrrpAddr(an, ipath)
		if !aok {
			ok = false
			continue
		}
		if j, dup := seen[a]; dup {
			p.errorf(resolve(an), ipath, "%s is already %s[%d]", a, path, j)
			ok = false
			continue
		}
		seen[a] = i
		out = append(out, a)
	}
	return out, ok && !p.hasErrorUnder(path)
}

func (p *parser) vrrpInstance(n *yaml.Node, path string, cfg *Config) (VRRPInstance, fields, bool) {
	v := VRRPInstance{
		Version: DefaultVRRPVersion, Priority: DefaultVRRPPriority, AdvertInterval: DefaultAdvertInterval,
		Preempt: true, PseudoHeader: true, GARPRepeat: DefaultGARPRepeat, GARPDelay: DefaultGARPDelay,
	}
	nerr := len(p.errs)
	f, ok := p.mapping(n, path, vrrpKeys...)
	if !ok {
		return v, f, false
	}
	n = resolve(n)

	if vn := f.get("name"); vn != nil {
		if s, ok := p.str(vn, path+".name"); ok {
			if s == "" || strings.ContainsAny(s, " \t\n\"\\") {
				p.errorf(resolve(vn), path+".name", "%q: want a word (no spaces or quotes)", s)
			} else {
				v.Name = s
			}
		}
	} else {
		p.errorf(n, path+".name", "missing: a name for the instance (like VI_1)")
	}
	if vn := f.get("interface"); vn != nil {
		if s, ok := p.str(vn, path+".interface"); ok {
			if !contains(cfg.Interfaces, s) {
				p.errorf(resolve(vn), path+".interface", "%q is not one of interfaces %v: VRRP runs on an interface the data path is attached to", s, cfg.Interfaces)
			} else {
				v.Interface = s
			}
		}
	} else {
		p.errorf(n, path+".interface", "missing: the interface the instance advertises on")
	}
	versionOK := true
	if vn := f.get("version"); vn != nil {
		if x, ok := p.integer(vn, path+".version", 2, 3); ok {
			v.Version = int(x)
		} else {
			versionOK = false
		}
	}
	if vn := f.get("vrid"); vn != nil {
		if x, ok := p.integer(vn, path+".vrid", 1, 255); ok {
			v.VRID = uint8(x)
		}
	} else {
		p.errorf(n, path+".vrid", "missing: the virtual router id, 1..255 (keepalived virtual_router_id)")
	}
	if vn := f.get("priority"); vn != nil {
		if x, ok := p.integer(vn, path+".priority", 1, 255); ok {
			v.Priority = uint8(x)
		}
	}
	if vn := f.get("advert_interval"); vn != nil && versionOK {
		if d, ok := p.duration(vn, path+".advert_interval"); ok {
			switch {
			case v.Version == 2 && (d < time.Second || d > maxV2Interval || d%time.Second != 0):
				p.errorf(resolve(vn), path+".advert_interval", "%v: VRRPv2 wants whole seconds, 1s..255s", d)
			case v.Version == 3 && (d < 10*time.Millisecond || d > maxV3Interval || d%(10*time.Millisecond) != 0):
				p.errorf(resolve(vn), path+".advert_interval", "%v: VRRPv3 wants 10ms..40.95s in steps of 10ms", d)
			default:
				v.AdvertInterval = d
			}
		}
	}
	if vn := f.get("preempt"); vn != nil {
		if b, ok := p.boolean(vn, path+".preempt"); ok {
			v.Preempt = b
		}
	}
	if vn := f.get("preempt_delay"); vn != nil {
		if d, ok := p.duration(vn, path+".preempt_delay"); ok {
			if d > time.Hour {
				p.errorf(resolve(vn), path+".preempt_delay", "%v: at most 1h", d)
			} else {
				v.PreemptDelay = d
			}
		}
	}

	if vn := f.get("auth_pass"); vn != nil {
		// Never echo the value: the errors name the key only.
		switch vn := resolve(vn); {
		case vn.Kind != yaml.ScalarNode:
			p.errorf(vn, path+".auth_pass", "want a single value")
		case len(vn.Value) > MaxAuthPass:
			p.errorf(vn, path+".auth_pass", "%d bytes: a VRRPv2 password is at most %d bytes", len(vn.Value), MaxAuthPass)
		case vn.Value == "":
			p.errorf(vn, path+".auth_pass", "empty: leave the key out for no authentication")
		default:
			v.authPass, v.hasAuthPass = vn.Value, true
		}
	}
	if vn := f.get("auth_pass_file"); vn != nil {
		if s, ok := p.str(vn, path+".auth_pass_file"); ok {
			if !filepath.IsAbs(s) {
				p.errorf(resolve(vn), path+".auth_pass_file", "%q: want an absolute path", s)
			} else {
				v.AuthPassFile = s
			}
		}
	}
	if f.has("auth_pass") && f.has("auth_pass_file") {
		p.errorf(f.keys["auth_pass_file"], path+".auth_pass_file", "the password is given 2 ways (auth_pass, auth_pass_file): keep one")
	}
	if versionOK && v.Version == 3 {
		for _, k := range []string{"auth_pass", "auth_pass_file"} {
			if f.has(k) {
				p.errorf(f.keys[k], path+"."+k, "set, but the version is 3: VRRPv3 has no authentication (RFC 5798); use version: 2 or leave it out")
			}
		}
	}
	if vn := f.get("checksum_pseudo_header"); vn != nil {
		if b, ok := p.boolean(vn, path+".checksum_pseudo_header"); ok {
			v.PseudoHeader = b
		}
	}

	vipsOK := false
	if vn := f.get("vips"); vn != nil {
		v.VIPs, vipsOK = p.vrrpAddrs(vn, path+".vips")
		if vipsOK && len(v.VIPs) == 0 {
			p.errorf(resolve(vn), path+".vips", "empty: list at least one virtual IP address")
			vipsOK = false
		}
		if vipsOK && len(v.VIPs) > 255 {
			p.errorf(resolve(vn), path+".vips", "%d addresses: at most 255", len(v.VIPs))
			vipsOK = false
		}
	} else {
		p.errorf(n, path+".vips", "missing: the virtual IP addresses the Master holds (keepalived virtual_ipaddress)")
	}
	if vipsOK {
		is6 := v.VIPs[0].Is6()
		for i, a := range v.VIPs[1:] {
			if a.Is6() != is6 {
				p.errorf(resolve(f.get("vips")), fmt.Sprintf("%s.vips[%d]", path, i+1), "%s is not of the family of vips[0] (%s): one address family per instance (use two instances)", a, v.VIPs[0])
				vipsOK = false
			}
		}
		if vipsOK && is6 && versionOK && v.Version == 2 {
			p.errorf(keyOr(f, "version", resolve(f.get("vips"))), path+".vips", "%s is IPv6: VRRPv2 is IPv4 only (use version: 3)", v.VIPs[0])
			vipsOK = false
		}
		if vipsOK && is6 && f.has("checksum_pseudo_header") {
			p.errorf(f.keys["checksum_pseudo_header"], path+".checksum_pseudo_header", "set, but the VIPs are IPv6: the IPv6 checksum always covers the pseudo-header")
		}
	}
	if versionOK && v.Version == 2 && f.has("checksum_pseudo_header") {
		p.errorf(f.keys["checksum_pseudo_header"], path+".checksum_pseudo_header", "set, but the version is 2: it is a VRRPv3 option")
	}
	if vn := f.get("unicast_peers"); vn != nil {
		peers, ok := p.vrrpAddrs(vn, path+".unicast_peers")
		if ok && vipsOK {
			for i, a := range peers {
				if a.Is6() != v.VIPs[0].Is6() {
					p.errorf(resolve(vn), fmt.Sprintf("%s.unicast_peers[%d]", path, i), "%s is not of the VIPs' family", a)
				}
			}
		}
		v.UnicastPeers = peers
	}
	if vn := f.get("notify"); vn != nil {
		vn = resolve(vn)
		if vn.Kind == yaml.ScalarNode {
			p.errorf(vn, path+".notify", "want a list (program and arguments, like [/usr/local/bin/vrrp_notify.sh]); it is not run through a shell")
		} else {
			for i, an := range p.sequence(vn, path+".notify") {
				if s, ok := p.str(an, fmt.Sprintf("%s.notify[%d]", path, i)); ok {
					v.Notify = append(v.Notify, s)
				}
			}
			if len(v.Notify) > 0 && !filepath.IsAbs(v.Notify[0]) {
				p.errorf(vn, path+".notify[0]", "%q: want the program's absolute path", v.Notify[0])
			}
		}
	}
	if vn := f.get("garp_repeat"); vn != nil {
		if x, ok := p.integer(vn, path+".garp_repeat", 0, 100); ok {
			v.GARPRepeat = int(x)
		}
	}
	if vn := f.get("garp_delay"); vn != nil {
		if d, ok := p.duration(vn, path+".garp_delay"); ok {
			if d > time.Hour {
				p.errorf(resolve(vn), path+".garp_delay", "%v: at most 1h", d)
			} else {
				v.GARPDelay = d
			}
		}
	}
	if vn := f.get("peer_timeout"); vn != nil {
		if d, ok := p.duration(vn, path+".peer_timeout"); ok {
			if d > 0 && d < 10*time.Millisecond || d > math.MaxInt32*time.Millisecond {
				p.errorf(resolve(vn), path+".peer_timeout", "%v: want 0 (3 × Master_Down_Interval) or 10ms..", d)
			} else {
				v.PeerTimeout = d
			}
		}
	}
	if vn := f.get("track_services"); vn != nil {
		v.TrackServices = p.trackServices(vn, path+".track_services", cfg)
	}
	return v, f, len(p.errs) == nerr
}

// trackServices parses a list of names of services of cfg (parsed before the vrrp section).
func (p *parser) trackServices(n *yaml.Node, path string, cfg *Config) []string {
	var names []string
	for _, s := range cfg.Services {
		if s.Name != "" {
			names = append(names, s.Name)
		}
	}
	var out []string
	seen := map[string]int{}
	for i, sn := range p.sequence(n, path) {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s, ok := p.str(sn, ipath)
		if !ok {
			continue
		}
		if j, dup := seen[s]; dup {
			p.errorf(resolve(sn), ipath, "%q is already %s[%d]", s, path, j)
			continue
		}
		if !contains(names, s) {
			if len(names) == 0 {
				p.errorf(resolve(sn), ipath, "%q is not the name of a service: no service has a name (give the tracked services a name)", s)
			} else {
				p.errorf(resolve(sn), ipath, "%q is not the name of a service; the named services are %v", s, names)
			}
			continue
		}
		seen[s] = i
		out = append(out, s)
	}
	return out
}
