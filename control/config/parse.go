package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/loader"
)

// parser decodes the yaml.Node tree into the yaml* types (schema.go), then checks what the
// values mean, collecting every error with its line and field path.
type parser struct {
	file  string
	errs  []FieldError
	warns []string
	vals  map[string]*yaml.Node // value node by field path ("services[0].vip")
	keys  map[string]*yaml.Node // key node by field path
}

func newParser(file string) *parser {
	return &parser{file: file, vals: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}}
}

func (p *parser) errorf(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, FieldError{Line: line, Field: field, Msg: fmt.Sprintf(format, args...), file: p.file})
}

// bad reports a problem with the value at path.
func (p *parser) bad(path, format string, args ...any) {
	p.errorf(p.vals[path], path, format, args...)
}

// has reports whether the key at path is in the file (with a value that is not null).
func (p *parser) has(path string) bool { return p.vals[path] != nil }

// given reports whether the key at path is in the file and its value decoded: its meaning is
// checked only then (decode has reported the rest).
func (p *parser) given(path string) bool { return p.has(path) && !p.failed(path) }

// failed reports whether the value at path (or one under it) did not decode. A repeated key is
// an error of the repetition, not of the first value, which is the one used.
func (p *parser) failed(path string) bool {
	for _, e := range p.errs {
		if e.Field == path && e.repeated {
			continue
		}
		if e.Field == path || strings.HasPrefix(e.Field, path+"[") || strings.HasPrefix(e.Field, path+".") {
			return true
		}
	}
	return false
}

// keyOr is the key node at path, or def when the key is not in the file.
func (p *parser) keyOr(path string, def *yaml.Node) *yaml.Node {
	if kn := p.keys[path]; kn != nil {
		return kn
	}
	return def
}

// isMapping reports whether the value at path is a mapping (decode reported it if not).
func (p *parser) isMapping(path string) bool {
	n := p.vals[path]
	return n != nil && n.Kind == yaml.MappingNode
}

func (p *parser) hasErrorUnder(prefix string) bool {
	for _, e := range p.errs {
		if e.Field == prefix || strings.HasPrefix(e.Field, prefix+"[") || strings.HasPrefix(e.Field, prefix+".") {
			return true
		}
	}
	return false
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

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// duration reads the duration at path: a Go duration ("120s", "1m30s") or an integer number
// of seconds. False when the key is not given or does not hold a duration (reported).
func (p *parser) duration(path string) (time.Duration, bool) {
	if !p.given(path) {
		return 0, false
	}
	n := p.vals[path]
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

func (p *parser) mac(s, path string) (net.HardwareAddr, bool) {
	m, err := net.ParseMAC(s)
	if err != nil {
		p.bad(path, "%q: want a MAC, six hex bytes like 02:00:00:00:00:0b", s)
		return nil, false
	}
	if err := control.CheckMAC(m); err != nil {
		p.bad(path, "%q: %v", s, err)
		return nil, false
	}
	return m, true
}

func (p *parser) config(doc *yaml.Node) *Config {
	cfg := defaultConfig()
	if doc.Kind == 0 || len(doc.Content) == 0 {
		p.errorf(nil, "", "the file is empty")
		return &cfg
	}
	root := resolve(doc.Content[0])
	var y yamlConfig
	p.decode(root, "", reflect.ValueOf(&y).Elem(), "")
	if root.Kind == yaml.MappingNode {
		p.checkConfig(&y, &cfg, root)
	}
	// File order; the errors of one line in the order found (decode's first).
	sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
	return &cfg
}

// checkConfig checks the decoded file and fills cfg.
func (p *parser) checkConfig(y *yamlConfig, cfg *Config, root *yaml.Node) {
	seen := map[string]bool{}
	for i, s := range y.Interfaces {
		path := fmt.Sprintf("interfaces[%d]", i)
		switch {
		case p.hasErrorUnder(path):
		case s == "" || len(s) > 15 || strings.ContainsAny(s, "/ \t:"):
			p.bad(path, "%q is not an interface name", s)
		case seen[s]:
			p.bad(path, "%s is listed twice", s)
		default:
			seen[s] = true
			cfg.Interfaces = append(cfg.Interfaces, s)
		}
	}
	if len(cfg.Interfaces) == 0 && !p.hasErrorUnder("interfaces") {
		p.errorf(p.keyOr("interfaces", root), "interfaces", "missing: list at least one interface to attach to (like [ens33])")
	}

	if y.Maps != nil {
		p.sizes(y.Maps, &cfg.Sizes)
	}
	cfg.HashSeed = y.HashSeed

	if p.given("metrics") {
		if msg := checkMetrics(y.Metrics, y.AllowRemoteMetrics); msg != "" {
			p.bad("metrics", "%s", msg)
		} else {
			cfg.Metrics = y.Metrics
		}
	}

	if p.has("peers") {
		seen := map[string]int{}
		for i, s := range y.Peers {
			path := fmt.Sprintf("peers[%d]", i)
			if p.hasErrorUnder(path) {
				continue
			}
			m, ok := p.mac(s, path)
			if !ok {
				continue
			}
			if j, dup := seen[m.String()]; dup {
				p.bad(path, "%s is the same MAC as peers[%d]", m, j)
				continue
			}
			seen[m.String()] = i
			cfg.Peers = append(cfg.Peers, m)
		}
		if len(cfg.Peers) > int(cfg.Sizes.Peers) {
			p.bad("peers", "%d peers do not fit in maps.peers = %d", len(cfg.Peers), cfg.Sizes.Peers)
		}
	}

	if p.has("services") {
		p.services(y.Services, cfg)
	}
	if p.has("vrrp") {
		p.vrrpInstances(y.VRRP, cfg)
	}
	if p.has("director_lease") {
		p.directorLease(cfg)
	}
}

// directorLease reads director_lease: with VRRP it must outlast every instance's
// Master_Down_Interval, or an orphaned Master's data path would stop directing before the Backup
// took over (clients still sent to it would be reset by its local stack).
func (p *parser) directorLease(cfg *Config) {
	d, ok := p.duration("director_lease")
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
		p.bad("director_lease", "%v: want more than the longest VRRP Master_Down_Interval, %v (the data path would stop directing before the Backup takes over); leave it out for the default %v", d, md, def)
		return
	}
	cfg.DirectorLease = d
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

// sizes checks each size on its own (against the defaults) so that every bad one is reported.
// yamlSizes and loader.Sizes have the same field names.
func (p *parser) sizes(y *yamlSizes, s *loader.Sizes) {
	yv := reflect.ValueOf(y).Elem()
	for _, f := range fieldsOf(yv.Type()) {
		v := yv.Field(f.index)
		if v.IsNil() {
			continue
		}
		name := yv.Type().Field(f.index).Name
		one := loader.DefaultSizes()
		reflect.ValueOf(&one).Elem().FieldByName(name).SetUint(v.Elem().Uint())
		if err := one.Validate(); err != nil {
			p.bad("maps."+f.key, "%v", err)
			continue
		}
		reflect.ValueOf(s).Elem().FieldByName(name).SetUint(v.Elem().Uint())
	}
}

// ipvsSchedulers are the IPVS schedulers keepalived users may write.
var ipvsSchedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}

func (p *parser) services(ys []yamlService, cfg *Config) {
	names := map[string]int{}
	keys := map[control.ServiceKey]int{}
	var backends int
	for i := range ys {
		path := fmt.Sprintf("services[%d]", i)
		svc, ok := p.service(&ys[i], path)
		if !ok {
			continue
		}
		if svc.Name != "" {
			if j, dup := names[svc.Name]; dup {
				p.errorf(p.vals[path], path+".name", "%q is already the name of services[%d]", svc.Name, j)
			} else {
				names[svc.Name] = i
			}
		}
		if svc.Key.VIP.IsValid() {
			k := svc.Key
			k.VIP = k.VIP.Unmap()
			if j, dup := keys[k]; dup {
				p.bad(path, "%s is the same service as services[%d]", svc.Key, j)
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
		p.bad("services", "%d services do not fit in maps.services = %d", len(cfg.Services), cfg.Sizes.Services)
	}
	if backends >= int(cfg.Sizes.Backends) {
		p.bad("services", "%d real servers do not fit in maps.backends = %d (one id is reserved)", backends, cfg.Sizes.Backends)
	}
}

func (p *parser) service(y *yamlService, path string) (Service, bool) {
	svc := defaultService()
	if !p.isMapping(path) {
		return svc, false
	}
	n := p.vals[path]

	svc.Name = y.Name
	if p.has(path + ".vip") {
		if p.given(path + ".vip") {
			if a, err := netip.ParseAddr(y.VIP); err != nil {
				p.bad(path+".vip", "%q: want an IP address, like 10.0.0.100 or fd00::100", y.VIP)
			} else if err := (control.ServiceKey{VIP: a, Proto: control.TCP}).Validate(); err != nil {
				p.bad(path+".vip", "%q: %v", y.VIP, err)
			} else {
				svc.Key.VIP = a
			}
		}
	} else {
		p.errorf(n, path+".vip", "missing: the virtual IP address clients connect to")
	}
	svc.Key.Port = y.Port
	if p.given(path + ".proto") {
		if pr, err := control.ParseProto(y.Proto); err != nil {
			p.bad(path+".proto", "%v", err)
		} else {
			svc.Key.Proto = pr
		}
	}
	if p.given(path + ".scheduler") {
		switch s := y.Scheduler; {
		case s == "maglev":
		case contains(ipvsSchedulers, strings.ToLower(s)):
			p.bad(path+".scheduler", "%q is an IPVS scheduler xdplb does not have: xdplb schedules with maglev only (weighted consistent hashing; use weights for wrr); write maglev or leave the key out", s)
		default:
			p.bad(path+".scheduler", "unknown scheduler %q: the only scheduler is maglev", s)
		}
	}
	if d, ok := p.duration(path + ".persistence"); ok {
		switch {
		case d > control.MaxPersistence:
			p.bad(path+".persistence", "%v is over the maximum of %d seconds", d, uint32(math.MaxUint32))
		case d%time.Second != 0:
			p.bad(path+".persistence", "%v: want whole seconds", d)
		default:
			svc.Persistence = d
		}
	}
	quorumOK, hystOK := !p.failed(path+".quorum"), !p.failed(path+".hysteresis")
	if y.Quorum != nil {
		svc.Quorum = *y.Quorum
	}
	svc.Hysteresis = y.Hysteresis
	if quorumOK && hystOK && svc.Hysteresis >= svc.Quorum {
		p.errorf(p.keyOr(path+".hysteresis", n), path+".hysteresis", "%d: must be less than quorum (%d)", svc.Hysteresis, svc.Quorum)
	}

	if y.Check != nil {
		p.check(y.Check, path+".check", &svc.Check)
	}

	addrs := map[netip.Addr]int{}
	for j := range y.RealServers {
		rpath := fmt.Sprintf("%s.real_servers[%d]", path, j)
		rs, ok := p.realServer(y.RealServers[j], rpath, svc.Key.Port)
		if !ok {
			continue
		}
		if k, dup := addrs[rs.Addr.Unmap()]; dup {
			p.errorf(p.vals[rpath], rpath+".address", "%s is already real_servers[%d]", rs.Addr, k)
			continue
		}
		addrs[rs.Addr.Unmap()] = j
		svc.RealServers = append(svc.RealServers, rs)
	}
	if len(svc.RealServers) == 0 && !p.hasErrorUnder(path+".real_servers") {
		p.errorf(p.keyOr(path+".real_servers", n), path+".real_servers", "missing: list at least one real server")
	}
	if y.Sorry != nil {
		sp := path + ".sorry_server"
		ys := yamlRealServer{Address: y.Sorry.Address, Port: y.Sorry.Port, Local: y.Sorry.Local, MAC: y.Sorry.MAC}
		if rs, ok := p.realServer(ys, sp, svc.Key.Port); ok {
			if k, dup := addrs[rs.Addr.Unmap()]; dup {
				p.errorf(p.vals[sp], sp+".address", "%s is already real_servers[%d]: a sorry server must be another machine", rs.Addr, k)
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
			p.errorf(p.keyOr(path+".quorum", n), path+".quorum", "%d is more than the total weight of the real servers (%d): the service could never be up", svc.Quorum, total)
		}
	}
	if svc.Key.Port == 0 && !p.hasErrorUnder(path) {
		for j, rs := range svc.RealServers {
			if rs.Port == 0 && svc.Check.Type != CheckNone && svc.Check.Type != CheckExec {
				p.errorf(n, fmt.Sprintf("%s.real_servers[%d].port", path, j), "missing: the service is on every port, so the health check needs the real server's port")
			}
		}
	}
	return svc, !p.hasErrorUnder(path)
}

// realServer checks a real server or (with the keys of yamlSorry) the sorry server.
func (p *parser) realServer(y yamlRealServer, path string, svcPort uint16) (RealServer, bool) {
	rs := defaultRealServer
	if !p.isMapping(path) {
		return rs, false
	}
	if p.has(path + ".address") {
		if p.given(path + ".address") {
			if a, err := netip.ParseAddr(y.Address); err != nil {
				p.bad(path+".address", "%q: want an IP address, like 10.0.0.11 or fd00::11", y.Address)
			} else if err := (control.BackendSpec{Addr: a, Local: true}).Validate(); err != nil {
				p.bad(path+".address", "%q: %v", y.Address, err)
			} else {
				rs.Addr = a
			}
		}
	} else {
		p.errorf(p.vals[path], path+".address", "missing: the real server's IP address")
	}
	if p.given(path + ".port") {
		if v := y.Port; svcPort != 0 && v != 0 && v != svcPort {
			p.bad(path+".port", "%d differs from the service port %d: direct routing does not change ports (leave port out)", v, svcPort)
		} else {
			rs.Port = v
		}
	}
	if y.Weight != nil {
		rs.Weight = *y.Weight
	}
	rs.Local, rs.Drain = y.Local, y.Drain
	if p.given(path + ".mac") {
		rs.MAC, _ = p.mac(y.MAC, path+".mac")
	}
	return rs, !p.hasErrorUnder(path)
}

func (p *parser) check(y *yamlCheck, path string, c *Check) {
	if p.given(path + ".type") {
		switch s := *y.Type; s {
		case CheckTCP, CheckMySQL, CheckExec, CheckNone:
			c.Type = s
		default:
			p.bad(path+".type", "unknown check type %q: want tcp, mysql, exec or none", s)
			c.Type = ""
		}
	}
	intervalOK, timeoutOK := true, true
	if p.has(path + ".interval") {
		switch d, ok := p.duration(path + ".interval"); {
		case !ok:
			intervalOK = false
		case d < 10*time.Millisecond:
			p.bad(path+".interval", "%v: want at least 10ms", d)
			intervalOK = false
		default:
			c.Interval = d
		}
	}
	if p.has(path + ".timeout") {
		switch d, ok := p.duration(path + ".timeout"); {
		case !ok:
			timeoutOK = false
		case d <= 0:
			p.bad(path+".timeout", "%v: want more than 0", d)
			timeoutOK = false
		default:
			c.Timeout = d
		}
	}
	if intervalOK && timeoutOK && c.Timeout >= c.Interval {
		p.errorf(p.keyOr(path+".timeout", p.keyOr(path+".interval", p.vals[path])), path+".timeout", "%v: must be less than the interval (%v)", c.Timeout, c.Interval)
	}
	if y.Rise != nil {
		c.Rise = *y.Rise
	}
	if y.Fall != nil {
		c.Fall = *y.Fall
	}
	if y.DRPath != nil {
		b := *y.DRPath
		c.DRPath = &b
	}
	c.Drain = y.Drain

	if p.has(path + ".mysql") {
		if c.Type != CheckMySQL && c.Type != "" {
			p.errorf(p.keys[path+".mysql"], path+".mysql", "set, but the check type is %s: mysql options are for type: mysql", c.Type)
		} else {
			c.MySQL = p.mysql(y.MySQL, path+".mysql")
		}
	} else if c.Type == CheckMySQL {
		p.errorf(p.keyOr(path+".type", p.vals[path]), path+".mysql", "missing: a mysql check needs at least mysql.user")
	}
	if p.has(path + ".exec") {
		if c.Type != CheckExec && c.Type != "" {
			p.errorf(p.keys[path+".exec"], path+".exec", "set, but the check type is %s: exec options are for type: exec", c.Type)
		} else {
			c.Exec = p.exec(y.Exec, path+".exec")
		}
	} else if c.Type == CheckExec {
		p.errorf(p.keyOr(path+".type", p.vals[path]), path+".exec.command", "missing: an exec check needs a command (a list: program and arguments)")
	}
	if c.Type == CheckNone && c.DRPath != nil {
		p.errorf(p.keys[path+".dr_path"], path+".dr_path", "set, but the check type is none")
	}
}

func (p *parser) mysql(y *yamlMySQL, path string) *MySQLCheck {
	if y == nil {
		return nil
	}
	m := &MySQLCheck{User: y.User, Database: y.Database, Writable: y.Writable}
	if m.User == "" && !p.hasErrorUnder(path+".user") {
		p.errorf(p.keyOr(path+".user", p.vals[path]), path+".user", "missing: the MySQL user the check logs in as")
	}
	var given []string
	for _, k := range []string{"password", "password_file", "password_env"} {
		if p.has(path + "." + k) {
			given = append(given, k)
		}
	}
	// Never echo the password: decode's error names the key only.
	if y.Password != nil {
		m.password, m.hasPassword = *y.Password, true
	}
	if p.given(path + ".password_file") {
		if s := y.PasswordFile; !filepath.IsAbs(s) {
			p.bad(path+".password_file", "%q: want an absolute path", s)
		} else {
			m.PasswordFile = s
		}
	}
	if p.given(path + ".password_env") {
		if s := y.PasswordEnv; s == "" || strings.ContainsAny(s, "= \t$") {
			p.bad(path+".password_env", "%q is not an environment variable name", s)
		} else {
			m.PasswordEnv = s
		}
	}
	if len(given) > 1 {
		p.errorf(p.keys[path+"."+given[1]], path+"."+given[1], "the password is given %d ways (%s): keep one", len(given), strings.Join(given, ", "))
	}
	if d, ok := p.duration(path + ".max_replication_lag"); ok {
		if d%time.Second != 0 || d == 0 {
			p.bad(path+".max_replication_lag", "%v: want whole seconds, at least 1s (Seconds_Behind_Source counts seconds)", d)
		} else {
			m.MaxReplicationLag = d
		}
	}
	return m
}

func (p *parser) exec(y *yamlExec, path string) *ExecCheck {
	if y == nil {
		return nil
	}
	e := &ExecCheck{Dynamic: y.Dynamic}
	cp := path + ".command"
	e.Command = p.argv(y.Command, cp)
	if len(e.Command) == 0 && !p.hasErrorUnder(cp) {
		p.errorf(p.keyOr(cp, p.vals[path]), cp, "missing: an exec check needs a command (a list: program and arguments)")
	}
	return e
}

// argv is the strings of a command list that decoded; the program must be an absolute path.
func (p *parser) argv(list []string, path string) []string {
	var out []string
	for i, s := range list {
		if !p.hasErrorUnder(fmt.Sprintf("%s[%d]", path, i)) {
			out = append(out, s)
		}
	}
	if len(out) > 0 && !filepath.IsAbs(out[0]) {
		p.errorf(p.vals[path], path+"[0]", "%q: want the program's absolute path", out[0])
	}
	return out
}
