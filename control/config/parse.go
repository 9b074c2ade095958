package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/loader"
)

// parser walks the yaml.Node tree, collecting every error with its line and field path.
type parser struct {
	file  string
	errs  []FieldError
	warns []string
}

func (p *parser) errorf(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, FieldError{Line: line, Field: field, Msg: fmt.Sprintf(format, args...), file: p.file})
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "unexpected YAML"
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// fields is a mapping's values by key, and the key nodes for line numbers.
type fields struct {
	vals map[string]*yaml.Node
	keys map[string]*yaml.Node
}

func (f fields) get(k string) *yaml.Node {
	n := resolve(f.vals[k])
	if isNull(n) {
		return nil
	}
	return n
}

func (f fields) has(k string) bool { return f.get(k) != nil }

// mapping checks n is a mapping with only the known keys (unknown and repeated keys are errors).
func (p *parser) mapping(n *yaml.Node, path string, known ...string) (fields, bool) {
	f := fields{vals: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}}
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "want a mapping of keys, got %s", kindName(n))
		return f, false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), n.Content[i+1]
		k := kn.Value
		switch {
		case kn.Kind != yaml.ScalarNode:
			p.errorf(kn, path, "keys must be plain words")
			continue
		case !contains(known, k):
			p.errorf(kn, join(path, k), "unknown key (known keys: %s)", strings.Join(known, ", "))
			continue
		case f.vals[k] != nil:
			p.errorf(kn, join(path, k), "repeated key (first on line %d)", f.keys[k].Line)
			continue
		}
		f.vals[k], f.keys[k] = vn, kn
	}
	return f, true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (p *parser) sequence(n *yaml.Node, path string) []*yaml.Node {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, path, "want a list, got %s", kindName(n))
		return nil
	}
	return n.Content
}

func (p *parser) scalar(n *yaml.Node, path string) (*yaml.Node, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, path, "want a single value, got %s", kindName(n))
		return n, false
	}
	return n, true
}

func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	n, ok := p.scalar(n, path)
	if !ok {
		return "", false
	}
	return n.Value, true
}

func (p *parser) boolean(n *yaml.Node, path string) (bool, bool) {
	n, ok := p.scalar(n, path)
	if !ok {
		return false, false
	}
	var b bool
	if n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		p.errorf(n, path, "%q: want true or false", n.Value)
		return false, false
	}
	return b, true
}

// integer decodes an integer in lo..hi.
func (p *parser) integer(n *yaml.Node, path string, lo, hi int64) (int64, bool) {
	n, ok := p.scalar(n, path)
	if !ok {
		return 0, false
	}
	var v int64
	if n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		p.errorf(n, path, "%q: want an integer", n.Value)
		return 0, false
	}
	if v < lo || v > hi {
		p.errorf(n, path, "%d is out of range %d..%d", v, lo, hi)
		return 0, false
	}
	return v, true
}

// duration accepts a Go duration ("120s", "1m30s") or an integer number of seconds.
func (p *parser) duration(n *yaml.Node, path string) (time.Duration, bool) {
	n, ok := p.scalar(n, path)
	if !ok {
		return 0, false
	}
	var d time.Duration
	if n.ShortTag() == "!!int" {
		var secs int64
		if n.Decode(&secs) != nil || secs < 0 || secs > math.MaxInt64/int64(time.Second) {
			p.errorf(n, path, "%q: want a duration like 120s or a number of seconds", n.Value)
			return 0, false
		}
		d = time.Duration(secs) * time.Second
	} else {
		var err error
		d, err = time.ParseDuration(n.Value)
		if err != nil {
			p.errorf(n, path, "%q: want a duration like 120s, 2s, 500ms or a number of seconds", n.Value)
			return 0, false
		}
	}
	if d < 0 {
		p.errorf(n, path, "%v: must not be negative", d)
		return 0, false
	}
	return d, true
}

func (p *parser) mac(n *yaml.Node, path string) (net.HardwareAddr, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return nil, false
	}
	m, err := net.ParseMAC(s)
	if err != nil {
		p.errorf(resolve(n), path, "%q: want a MAC, six hex bytes like 02:00:00:00:00:0b", s)
		return nil, false
	}
	if err := control.CheckMAC(m); err != nil {
		p.errorf(resolve(n), path, "%q: %v", s, err)
		return nil, false
	}
	return m, true
}

var topKeys = []string{"interfaces", "maps", "hash_seed", "metrics", "allow_remote_metrics", "peers", "director_lease", "services", "vrrp"}

func (p *parser) config(doc *yaml.Node) *Config {
	cfg := &Config{Sizes: loader.DefaultSizes(), Metrics: DefaultMetrics}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		p.errorf(nil, "", "the file is empty")
		return cfg
	}
	root := doc.Content[0]
	f, ok := p.mapping(root, "", topKeys...)
	if !ok {
		return cfg
	}

	if n := f.get("interfaces"); n != nil {
		seen := map[string]bool{}
		for i, in := range p.sequence(n, "interfaces") {
			path := fmt.Sprintf("interfaces[%d]", i)
			s, ok := p.str(in, path)
			switch {
			case !ok:
			case s == "" || len(s) > 15 || strings.ContainsAny(s, "/ \t:"):
				p.errorf(in, path, "%q is not an interface name", s)
			case seen[s]:
				p.errorf(in, path, "%s is listed twice", s)
			default:
				seen[s] = true
				cfg.Interfaces = append(cfg.Interfaces, s)
			}
		}
	}
	if len(cfg.Interfaces) == 0 && !p.hasErrorUnder("interfaces") {
		p.errorf(keyOr(f, "interfaces", root), "interfaces", "missing: list at least one interface to attach to (like [ens33])")
	}

	if n := f.get("maps"); n != nil {
		p.sizes(n, &cfg.Sizes)
	}
	if n := f.get("hash_seed"); n != nil {
		if v, ok := p.integer(n, "hash_seed", 0, math.MaxUint32); ok {
			cfg.HashSeed = uint32(v)
		}
	}

	allowRemote := false
	if n := f.get("allow_remote_metrics"); n != nil {
		allowRemote, _ = p.boolean(n, "allow_remote_metrics")
	}
	if n := f.get("metrics"); n != nil {
		if s, ok := p.str(n, "metrics"); ok {
			if msg := checkMetrics(s, allowRemote); msg != "" {
				p.errorf(resolve(n), "metrics", "%s", msg)
			} else {
				cfg.Metrics = s
			}
		}
	}

	if n := f.get("peers"); n != nil {
		seen := map[string]int{}
		for i, pn := range p.sequence(n, "peers") {
			path := fmt.Sprintf("peers[%d]", i)
			m, ok := p.mac(pn, path)
			if !ok {
				continue
			}
			if j, dup := seen[m.String()]; dup {
				p.errorf(resolve(pn), path, "%s is the same MAC as peers[%d]", m, j)
				continue
			}
			seen[m.String()] = i
			cfg.Peers = append(cfg.Peers, m)
		}
		if len(cfg.Peers) > int(cfg.Sizes.Peers) {
			p.errorf(resolve(n), "peers", "%d peers do not fit in maps.peers = %d", len(cfg.Peers), cfg.Sizes.Peers)
		}
	}

	if n := f.get("services"); n != nil {
		p.services(n, cfg)
	}
	if n := f.get("vrrp"); n != nil {
		p.vrrpInstances(n, cfg)
	}
	if n := f.get("director_lease"); n != nil {
		p.directorLease(n, cfg)
	}
	sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
	return cfg
}

// directorLease reads director_lease: with VRRP it must outlast every instance's
// Master_Down_Interval, or an orphaned Master's data path would stop directing before the Backup
// took over (clients still sent to it would be reset by its local stack).
func (p *parser) directorLease(n *yaml.Node, cfg *Config) {
	d, ok := p.duration(n, "director_lease")
	if !ok {
		return
	}
	if len(cfg.VRRP) == 0 {
		cfg.DirectorLease = d
		return
	}
	md := cfg.maxMasterDown()
	if d <= md {
		def := max(MinDirectorLease, 3*md)
		p.errorf(resolve(n), "director_lease", "%v: want more than the longest VRRP Master_Down_Interval, %v (the data path would stop directing before the Backup takes over); leave it out for the default %v", d, md, def)
		return
	}
	cfg.DirectorLease = d
}

func keyOr(f fields, k string, def *yaml.Node) *yaml.Node {
	if kn := f.keys[k]; kn != nil {
		return kn
	}
	return def
}

func (p *parser) hasErrorUnder(prefix string) bool {
	for _, e := range p.errs {
		if e.Field == prefix || strings.HasPrefix(e.Field, prefix+"[") || strings.HasPrefix(e.Field, prefix+".") {
			return true
		}
	}
	return false
}

func checkMetrics(s string, allowRemote bool) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q: want host:port, like %s", s, DefaultMetrics)
	}
	var pn int
	if _, err := fmt.Sscanf(port, "%d", &pn); err != nil || fmt.Sprint(pn) != port || pn < 1 || pn > 65535 {
		return fmt.Sprintf("%q: port %q: want 1..65535", s, port)
	}
	if allowRemote {
		return ""
	}
	if host == "localhost" {
		return ""
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.IsLoopback() {
		return fmt.Sprintf("%q: the metrics endpoint has no authentication; listen on a loopback address (like %s) or set allow_remote_metrics: true", s, DefaultMetrics)
	}
	return ""
}

var sizeKeys = []string{"services", "backends", "peers", "conntrack", "persist", "ring_size"}

func sizeField(s *loader.Sizes, k string) *uint32 {
	switch k {
	case "services":
		return &s.Services
	case "backends":
		return &s.Backends
	case "peers":
		return &s.Peers
	case "conntrack":
		return &s.Conntrack
	case "persist":
		return &s.Persist
	case "ring_size":
		return &s.RingSize
	}
	return nil
}

// sizes checks each size on its own (against the defaults) so that every bad one is reported.
func (p *parser) sizes(n *yaml.Node, s *loader.Sizes) {
	f, ok := p.mapping(n, "maps", sizeKeys...)
	if !ok {
		return
	}
	for _, k := range sizeKeys {
		vn := f.get(k)
		if vn == nil {
			continue
		}
		path := "maps." + k
		v, ok := p.integer(vn, path, 0, math.MaxUint32)
		if !ok {
			continue
		}
		one := loader.DefaultSizes()
		*sizeField(&one, k) = uint32(v)
		if err := one.Validate(); err != nil {
			p.errorf(resolve(vn), path, "%v", err)
			continue
		}
		*sizeField(s, k) = uint32(v)
	}
}

var serviceKeys = []string{"name", "vip", "port", "proto", "scheduler", "persistence", "sorry_server", "quorum", "hysteresis", "check", "real_servers"}

// ipvsSchedulers are the IPVS schedulers keepalived users may write.
var ipvsSchedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}

func (p *parser) services(n *yaml.Node, cfg *Config) {
	names := map[string]int{}
	keys := map[control.ServiceKey]int{}
	var backends int
	for i, sn := range p.sequence(n, "services") {
		path := fmt.Sprintf("services[%d]", i)
		svc, ok := p.service(sn, path)
		if !ok {
			continue
		}
		if svc.Name != "" {
			if j, dup := names[svc.Name]; dup {
				p.errorf(resolve(sn), path+".name", "%q is already the name of services[%d]", svc.Name, j)
			} else {
				names[svc.Name] = i
			}
		}
		if svc.Key.VIP.IsValid() {
			k := svc.Key
			k.VIP = k.VIP.Unmap()
			if j, dup := keys[k]; dup {
				p.errorf(resolve(sn), path, "%s is the same service as services[%d]", svc.Key, j)
				continue
			}
			keys[k] = i
		}
		backends += len(svc.RealServers)
		if svc.Sorry != nil {
			backends++
		}
		cfg.Services = append(cfg.Services, svc)
	}
	if len(cfg.Services) > int(cfg.Sizes.Services) {
		p.errorf(resolve(n), "services", "%d services do not fit in maps.services = %d", len(cfg.Services), cfg.Sizes.Services)
	}
	if backends >= int(cfg.Sizes.Backends) {
		p.errorf(resolve(n), "services", "%d real servers do not fit in maps.backends = %d (one id is reserved)", backends, cfg.Sizes.Backends)
	}
}

func (p *parser) service(n *yaml.Node, path string) (Service, bool) {
	svc := Service{Scheduler: "maglev", Quorum: 1, Key: control.ServiceKey{Proto: control.TCP}}
	nerr := len(p.errs)
	f, ok := p.mapping(n, path, serviceKeys...)
	if !ok {
		return svc, false
	}
	n = resolve(n)

	if vn := f.get("name"); vn != nil {
		svc.Name, _ = p.str(vn, path+".name")
	}
	if vn := f.get("vip"); vn != nil {
		if s, ok := p.str(vn, path+".vip"); ok {
			if a, err := netip.ParseAddr(s); err != nil {
				p.errorf(resolve(vn), path+".vip", "%q: want an IP address, like 10.0.0.100 or fd00::100", s)
			} else if err := (control.ServiceKey{VIP: a, Proto: control.TCP}).Validate(); err != nil {
				p.errorf(resolve(vn), path+".vip", "%q: %v", s, err)
			} else {
				svc.Key.VIP = a
			}
		}
	} else {
		p.errorf(n, path+".vip", "missing: the virtual IP address clients connect to")
	}
	if vn := f.get("port"); vn != nil {
		if v, ok := p.integer(vn, path+".port", 0, 65535); ok {
			svc.Key.Port = uint16(v)
		}
	}
	if vn := f.get("proto"); vn != nil {
		if s, ok := p.str(vn, path+".proto"); ok {
			if pr, err := control.ParseProto(s); err != nil {
				p.errorf(resolve(vn), path+".proto", "%v", err)
			} else {
				svc.Key.Proto = pr
			}
		}
	}
	if vn := f.get("scheduler"); vn != nil {
		if s, ok := p.str(vn, path+".scheduler"); ok {
			switch {
			case s == "maglev":
			case contains(ipvsSchedulers, strings.ToLower(s)):
				p.errorf(resolve(vn), path+".scheduler", "%q is an IPVS scheduler xdplb does not have: xdplb schedules with maglev only (weighted consistent hashing; use weights for wrr); write maglev or leave the key out", s)
			default:
				p.errorf(resolve(vn), path+".scheduler", "unknown scheduler %q: the only scheduler is maglev", s)
			}
		}
	}
	if vn := f.get("persistence"); vn != nil {
		if d, ok := p.duration(vn, path+".persistence"); ok {
			switch {
			case d > control.MaxPersistence:
				p.errorf(resolve(vn), path+".persistence", "%v is over the maximum of %d seconds", d, uint32(math.MaxUint32))
			case d%time.Second != 0:
				p.errorf(resolve(vn), path+".persistence", "%v: want whole seconds", d)
			default:
				svc.Persistence = d
			}
		}
	}
	quorumOK, hystOK := true, true
	if vn := f.get("quorum"); vn != nil {
		v, ok := p.integer(vn, path+".quorum", 1, math.MaxInt32)
		quorumOK = ok
		if ok {
			svc.Quorum = int(v)
		}
	}
	if vn := f.get("hysteresis"); vn != nil {
		v, ok := p.integer(vn, path+".hysteresis", 0, math.MaxInt32)
		hystOK = ok
		if ok {
			svc.Hysteresis = int(v)
		}
	}
	if quorumOK && hystOK && svc.Hysteresis >= svc.Quorum {
		p.errorf(keyOr(f, "hysteresis", n), path+".hysteresis", "%d: must be less than quorum (%d)", svc.Hysteresis, svc.Quorum)
	}

	svc.Check = Check{Type: CheckTCP, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
	if vn := f.get("check"); vn != nil {
		p.check(vn, path+".check", &svc.Check)
	}

	addrs := map[netip.Addr]int{}
	if vn := f.get("real_servers"); vn != nil {
		for j, rn := range p.sequence(vn, path+".real_servers") {
			rpath := fmt.Sprintf("%s.real_servers[%d]", path, j)
			rs, ok := p.realServer(rn, rpath, false, svc.Key.Port)
			if !ok {
				continue
			}
			if k, dup := addrs[rs.Addr.Unmap()]; dup {
				p.errorf(resolve(rn), rpath+".address", "%s is already real_servers[%d]", rs.Addr, k)
				continue
			}
			addrs[rs.Addr.Unmap()] = j
			svc.RealServers = append(svc.RealServers, rs)
		}
	}
	if len(svc.RealServers) == 0 && !p.hasErrorUnder(path+".real_servers") {
		p.errorf(keyOr(f, "real_servers", n), path+".real_servers", "missing: list at least one real server")
	}
	if vn := f.get("sorry_server"); vn != nil {
		if rs, ok := p.realServer(vn, path+".sorry_server", true, svc.Key.Port); ok {
			if k, dup := addrs[rs.Addr.Unmap()]; dup {
				p.errorf(resolve(vn), path+".sorry_server.address", "%s is already real_servers[%d]: a sorry server must be another machine", rs.Addr, k)
			} else {
				svc.Sorry = &rs
			}
		}
	}
	if quorumOK && len(svc.RealServers) > 0 && !p.hasErrorUnder(path+".real_servers") {
		var total int
		for _, rs := range svc.RealServers {
			total += int(rs.Weight)
		}
		if svc.Quorum > total {
			p.errorf(keyOr(f, "quorum", n), path+".quorum", "%d is more than the total weight of the real servers (%d): the service could never be up", svc.Quorum, total)
		}
	}
	if svc.Key.Port == 0 && len(p.errs) == nerr {
		for j, rs := range svc.RealServers {
			if rs.Port == 0 && svc.Check.Type != CheckNone && svc.Check.Type != CheckExec {
				p.errorf(n, fmt.Sprintf("%s.real_servers[%d].port", path, j), "missing: the service is on every port, so the health check needs the real server's port")
			}
		}
	}
	return svc, len(p.errs) == nerr
}

var realServerKeys = []string{"address", "port", "weight", "local", "mac", "drain"}
var sorryKeys = []string{"address", "port", "local", "mac"}

func (p *parser) realServer(n *yaml.Node, path string, sorry bool, svcPort uint16) (RealServer, bool) {
	rs := RealServer{Weight: 1}
	keys := realServerKeys
	if sorry {
		keys = sorryKeys
	}
	nerr := len(p.errs)
	f, ok := p.mapping(n, path, keys...)
	if !ok {
		return rs, false
	}
	if vn := f.get("address"); vn != nil {
		if s, ok := p.str(vn, path+".address"); ok {
			if a, err := netip.ParseAddr(s); err != nil {
				p.errorf(resolve(vn), path+".address", "%q: want an IP address, like 10.0.0.11 or fd00::11", s)
			} else if err := (control.BackendSpec{Addr: a, Local: true}).Validate(); err != nil {
				p.errorf(resolve(vn), path+".address", "%q: %v", s, err)
			} else {
				rs.Addr = a
			}
		}
	} else {
		p.errorf(resolve(n), path+".address", "missing: the real server's IP address")
	}
	if vn := f.get("port"); vn != nil {
		if v, ok := p.integer(vn, path+".port", 0, 65535); ok {
			if svcPort != 0 && v != 0 && uint16(v) != svcPort {
				p.errorf(resolve(vn), path+".port", "%d differs from the service port %d: direct routing does not change ports (leave port out)", v, svcPort)
			} else {
				rs.Port = uint16(v)
			}
		}
	}
	if vn := f.get("weight"); vn != nil {
		if v, ok := p.integer(vn, path+".weight", 1, control.MaxWeight); ok {
			rs.Weight = uint32(v)
		}
	}
	if vn := f.get("local"); vn != nil {
		rs.Local, _ = p.boolean(vn, path+".local")
	}
	if vn := f.get("drain"); vn != nil {
		rs.Drain, _ = p.boolean(vn, path+".drain")
	}
	if vn := f.get("mac"); vn != nil {
		rs.MAC, _ = p.mac(vn, path+".mac")
	}
	return rs, len(p.errs) == nerr
}

var checkKeys = []string{"type", "interval", "timeout", "rise", "fall", "dr_path", "drain", "mysql", "exec"}
var mysqlKeys = []string{"user", "password", "password_file", "password_env", "writable", "max_replication_lag", "database"}
var execKeys = []string{"command", "dynamic"}

func (p *parser) check(n *yaml.Node, path string, c *Check) {
	f, ok := p.mapping(n, path, checkKeys...)
	if !ok {
		return
	}
	if vn := f.get("type"); vn != nil {
		if s, ok := p.str(vn, path+".type"); ok {
			switch s {
			case CheckTCP, CheckMySQL, CheckExec, CheckNone:
				c.Type = s
			default:
				p.errorf(resolve(vn), path+".type", "unknown check type %q: want tcp, mysql, exec or none", s)
				c.Type = ""
			}
		}
	}
	intervalOK, timeoutOK := true, true
	if vn := f.get("interval"); vn != nil {
		if d, ok := p.duration(vn, path+".interval"); !ok {
			intervalOK = false
		} else if d < 10*time.Millisecond {
			p.errorf(resolve(vn), path+".interval", "%v: want at least 10ms", d)
			intervalOK = false
		} else {
			c.Interval = d
		}
	}
	if vn := f.get("timeout"); vn != nil {
		if d, ok := p.duration(vn, path+".timeout"); !ok {
			timeoutOK = false
		} else if d <= 0 {
			p.errorf(resolve(vn), path+".timeout", "%v: want more than 0", d)
			timeoutOK = false
		} else {
			c.Timeout = d
		}
	}
	if intervalOK && timeoutOK && c.Timeout >= c.Interval {
		p.errorf(keyOr(f, "timeout", keyOr(f, "interval", resolve(n))), path+".timeout", "%v: must be less than the interval (%v)", c.Timeout, c.Interval)
	}
	if vn := f.get("rise"); vn != nil {
		if v, ok := p.integer(vn, path+".rise", 1, 1000); ok {
			c.Rise = int(v)
		}
	}
	if vn := f.get("fall"); vn != nil {
		if v, ok := p.integer(vn, path+".fall", 1, 1000); ok {
			c.Fall = int(v)
		}
	}
	if vn := f.get("dr_path"); vn != nil {
		if b, ok := p.boolean(vn, path+".dr_path"); ok {
			c.DRPath = &b
		}
	}
	if vn := f.get("drain"); vn != nil {
		c.Drain, _ = p.boolean(vn, path+".drain")
	}

	if vn := f.get("mysql"); vn != nil {
		if c.Type != CheckMySQL && c.Type != "" {
			p.errorf(f.keys["mysql"], path+".mysql", "set, but the check type is %s: mysql options are for type: mysql", c.Type)
		} else {
			c.MySQL = p.mysql(vn, path+".mysql")
		}
	} else if c.Type == CheckMySQL {
		p.errorf(keyOr(f, "type", resolve(n)), path+".mysql", "missing: a mysql check needs at least mysql.user")
	}
	if vn := f.get("exec"); vn != nil {
		if c.Type != CheckExec && c.Type != "" {
			p.errorf(f.keys["exec"], path+".exec", "set, but the check type is %s: exec options are for type: exec", c.Type)
		} else {
			c.Exec = p.exec(vn, path+".exec")
		}
	} else if c.Type == CheckExec {
		p.errorf(keyOr(f, "type", resolve(n)), path+".exec.command", "missing: an exec check needs a command (a list: program and arguments)")
	}
	if c.Type == CheckNone && c.DRPath != nil {
		p.errorf(f.keys["dr_path"], path+".dr_path", "set, but the check type is none")
	}
}

func (p *parser) mysql(n *yaml.Node, path string) *MySQLCheck {
	f, ok := p.mapping(n, path, mysqlKeys...)
	if !ok {
		return nil
	}
	m := &MySQLCheck{}
	if vn := f.get("user"); vn != nil {
		m.User, _ = p.str(vn, path+".user")
	}
	if m.User == "" && !p.hasErrorUnder(path+".user") {
		p.errorf(keyOr(f, "user", resolve(n)), path+".user", "missing: the MySQL user the check logs in as")
	}
	if vn := f.get("database"); vn != nil {
		m.Database, _ = p.str(vn, path+".database")
	}
	var given []string
	if vn := f.get("password"); vn != nil {
		given = append(given, "password")
		// Never echo the value: the errors name the key only.
		if vn := resolve(vn); vn.Kind != yaml.ScalarNode {
			p.errorf(vn, path+".password", "want a single value")
		} else {
			m.password, m.hasPassword = vn.Value, true
		}
	}
	if vn := f.get("password_file"); vn != nil {
		given = append(given, "password_file")
		if s, ok := p.str(vn, path+".password_file"); ok {
			if !filepath.IsAbs(s) {
				p.errorf(resolve(vn), path+".password_file", "%q: want an absolute path", s)
			} else {
				m.PasswordFile = s
			}
		}
	}
	if vn := f.get("password_env"); vn != nil {
		given = append(given, "password_env")
		if s, ok := p.str(vn, path+".password_env"); ok {
			if s == "" || strings.ContainsAny(s, "= \t$") {
				p.errorf(resolve(vn), path+".password_env", "%q is not an environment variable name", s)
			} else {
				m.PasswordEnv = s
			}
		}
	}
	if len(given) > 1 {
		p.errorf(f.keys[given[1]], path+"."+given[1], "the password is given %d ways (%s): keep one", len(given), strings.Join(given, ", "))
	}
	if vn := f.get("writable"); vn != nil {
		m.Writable, _ = p.boolean(vn, path+".writable")
	}
	if vn := f.get("max_replication_lag"); vn != nil {
		if d, ok := p.duration(vn, path+".max_replication_lag"); ok {
			if d%time.Second != 0 || d == 0 {
				p.errorf(resolve(vn), path+".max_replication_lag", "%v: want whole seconds, at least 1s (Seconds_Behind_Source counts seconds)", d)
			} else {
				m.MaxReplicationLag = d
			}
		}
	}
	return m
}

func (p *parser) exec(n *yaml.Node, path string) *ExecCheck {
	f, ok := p.mapping(n, path, execKeys...)
	if !ok {
		return nil
	}
	e := &ExecCheck{}
	if vn := f.get("command"); vn != nil {
		vn = resolve(vn)
		if vn.Kind == yaml.ScalarNode {
			p.errorf(vn, path+".command", "want a list (program and arguments, like [/usr/local/bin/check_slave.pl, --port, \"3306\"]); it is not run through a shell")
		} else {
			for i, an := range p.sequence(vn, path+".command") {
				s, ok := p.str(an, fmt.Sprintf("%s.command[%d]", path, i))
				if ok {
					e.Command = append(e.Command, s)
				}
			}
			if len(e.Command) > 0 && !filepath.IsAbs(e.Command[0]) {
				p.errorf(vn, path+".command[0]", "%q: want the program's absolute path", e.Command[0])
			}
		}
	}
	if len(e.Command) == 0 && !p.hasErrorUnder(path+".command") {
		p.errorf(keyOr(f, "command", resolve(n)), path+".command", "missing: an exec check needs a command (a list: program and arguments)")
	}
	if vn := f.get("dynamic"); vn != nil {
		e.Dynamic, _ = p.boolean(vn, path+".dynamic")
	}
	return e
}
