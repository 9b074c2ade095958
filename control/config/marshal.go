package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/loader"
)

// ErrInlinePassword is wrapped by the error Marshal returns for a MySQL check whose password is
// written inline in the config (mysql.password). Marshal never writes a secret unless asked to
// with MarshalOptions.InlinePassword; password_file and password_env are written as they are.
// The same holds for an inline VRRPv2 password (vrrp auth_pass; use auth_pass_file).
var ErrInlinePassword = errors.New("the password is inline: not written (use password_file, password_env or auth_pass_file, or MarshalOptions.InlinePassword)")

// ErrNotRepresentable is wrapped by the error Marshal returns for a Config that the file
// cannot express: one that Parse would never produce (a zero Check, a sorry server with a
// weight, an invalid address, ...). The error names the field, never its value.
var ErrNotRepresentable = errors.New("cannot be written as YAML that parses back to the same value")

// MarshalOptions tunes Marshal.
type MarshalOptions struct {
	// InlinePassword writes an inline mysql check password (mysql.password) and an inline VRRP
	// password (auth_pass) into the output.
	// Off by default: the output may end up in logs, diffs or group-readable files.
	InlinePassword bool
}

// Marshal writes c as YAML with the key names Parse reads; it is MarshalOptions{}.Marshal.
func Marshal(c *Config) ([]byte, error) { return MarshalOptions{}.Marshal(c) }

// Marshal writes c as YAML with the key names Parse reads, such that Parse of the output gives
// a Config deep-equal to c (nil and empty lists count as equal). A key is left out when its
// value is the default Parse would give it; a value that is set explicitly but cannot be told
// apart from a default (dr_path) is kept. The output is stable: the same Config always gives
// the same bytes, and marshalling the parsed output again gives them too.
//
// Marshal checks its own output by parsing it back: a Config Parse would reject, or that does
// not come back equal, gives an error wrapping ErrNotRepresentable (or the *ValidationError).
// An inline mysql password gives an error wrapping ErrInlinePassword unless o.InlinePassword.
// Errors never contain a password.
func (o MarshalOptions) Marshal(c *Config) ([]byte, error) {
	if c == nil {
		return nil, errors.New("config: Marshal of a nil *Config")
	}
	doc, err := o.document(c)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("config: Marshal: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: Marshal: %w", err)
	}
	out := buf.Bytes()

	back, _, err := Parse(out, "marshalled config")
	if err != nil {
		return nil, fmt.Errorf("config: Marshal: %w: the output does not parse:\n%w", ErrNotRepresentable, err)
	}
	if path := diff("", reflect.ValueOf(c).Elem(), reflect.ValueOf(back).Elem()); path != "" {
		return nil, fmt.Errorf("config: Marshal: %s: %w", path, ErrNotRepresentable)
	}
	return out, nil
}

func (o MarshalOptions) document(c *Config) (*yamlConfig, error) {
	y := &yamlConfig{Interfaces: c.Interfaces, HashSeed: c.HashSeed}
	y.Maps = sizesDoc(c.Sizes)
	if c.Metrics != defaultConfig().Metrics {
		y.Metrics = c.Metrics
		// Parse accepts a non-loopback address only with allow_remote_metrics.
		y.AllowRemoteMetrics = checkMetrics(c.Metrics, false) != ""
	}
	for _, m := range c.Peers {
		y.Peers = append(y.Peers, m.String())
	}
	if c.DirectorLease != 0 {
		y.DirectorLease = durationString(c.DirectorLease)
	}
	for i, s := range c.Services {
		ys, err := o.serviceDoc(s, fmt.Sprintf("services[%d]", i))
		if err != nil {
			return nil, err
		}
		y.Services = append(y.Services, ys)
	}
	for i, v := range c.VRRP {
		yv, err := o.vrrpDoc(v, fmt.Sprintf("vrrp[%d]", i))
		if err != nil {
			return nil, err
		}
		y.VRRP = append(y.VRRP, yv)
	}
	return y, nil
}

func (o MarshalOptions) vrrpDoc(v VRRPInstance, path string) (yamlVRRP, error) {
	y := yamlVRRP{Name: v.Name, Interface: v.Interface, VRID: v.VRID, AuthPassFile: v.AuthPassFile, Notify: v.Notify,
		TrackServices: v.TrackServices}
	def := defaultVRRP()
	if v.Version != def.Version {
		y.Version = v.Version
	}
	if v.Priority != def.Priority {
		y.Priority = v.Priority
	}
	if v.AdvertInterval != def.AdvertInterval {
		y.AdvertInterval = durationString(v.AdvertInterval)
	}
	if v.Preempt != def.Preempt {
		y.Preempt = new(v.Preempt)
	}
	if v.PreemptDelay != 0 {
		y.PreemptDelay = durationString(v.PreemptDelay)
	}
	if v.hasAuthPass {
		if !o.InlinePassword {
			return y, fmt.Errorf("config: Marshal: %s.auth_pass: %w", path, ErrInlinePassword)
		}
		y.AuthPass = new(v.authPass)
	}
	if v.PseudoHeader != def.PseudoHeader {
		y.PseudoHeader = new(v.PseudoHeader)
	}
	for _, a := range v.UnicastPeers {
		y.UnicastPeers = append(y.UnicastPeers, addrString(a))
	}
	for _, a := range v.VIPs {
		y.VIPs = append(y.VIPs, addrString(a))
	}
	if v.GARPRepeat != def.GARPRepeat {
		y.GARPRepeat = new(v.GARPRepeat)
	}
	if v.GARPDelay != def.GARPDelay {
		// "0s" is not the empty string: a zero delay is written.
		y.GARPDelay = durationString(v.GARPDelay)
	}
	if v.PeerTimeout != 0 {
		y.PeerTimeout = durationString(v.PeerTimeout)
	}
	return y, nil
}

// sizesDoc writes the sizes that are not at their default (yamlSizes has loader.Sizes's field
// names), or nil.
func sizesDoc(s loader.Sizes) *yamlSizes {
	var y yamlSizes
	yv, sv, dv := reflect.ValueOf(&y).Elem(), reflect.ValueOf(s), reflect.ValueOf(defaultConfig().Sizes)
	set := false
	for i := range yv.NumField() {
		name := yv.Type().Field(i).Name
		if v := sv.FieldByName(name); !v.Equal(dv.FieldByName(name)) {
			yv.Field(i).Set(reflect.New(v.Type()))
			yv.Field(i).Elem().Set(v)
			set = true
		}
	}
	if !set {
		return nil
	}
	return &y
}

func (o MarshalOptions) serviceDoc(s Service, path string) (yamlService, error) {
	y := yamlService{
		Name:       s.Name,
		VIP:        addrString(s.Key.VIP),
		Port:       s.Key.Port,
		Hysteresis: s.Hysteresis,
	}
	def := defaultService()
	switch s.Key.Proto {
	case control.TCP: // the default
	case control.UDP:
		y.Proto = "udp"
	default:
		return y, fmt.Errorf("config: Marshal: %s.proto: protocol %d: %w", path, uint8(s.Key.Proto), ErrNotRepresentable)
	}
	if s.Scheduler != def.Scheduler {
		y.Scheduler = s.Scheduler
	}
	if s.Persistence != 0 {
		y.Persistence = durationString(s.Persistence)
	}
	if s.Quorum != def.Quorum {
		q := s.Quorum
		y.Quorum = &q
	}
	if s.Sorry != nil {
		y.Sorry = &yamlSorry{Address: addrString(s.Sorry.Addr), Port: s.Sorry.Port, Local: s.Sorry.Local, MAC: s.Sorry.MAC.String()}
	}
	ck, err := o.checkDoc(s.Check, path+".check")
	if err != nil {
		return y, err
	}
	y.Check = ck
	for _, rs := range s.RealServers {
		yr := yamlRealServer{Address: addrString(rs.Addr), Port: rs.Port, Local: rs.Local, MAC: rs.MAC.String(), Drain: rs.Drain}
		if rs.Weight != defaultRealServer.Weight {
			w := rs.Weight
			yr.Weight = &w
		}
		y.RealServers = append(y.RealServers, yr)
	}
	return y, nil
}

func (o MarshalOptions) checkDoc(c Check, path string) (*yamlCheck, error) {
	var y yamlCheck
	if c.Type != defaultCheck.Type {
		t := c.Type
		y.Type = &t
	}
	if c.Interval != defaultCheck.Interval {
		y.Interval = durationString(c.Interval)
	}
	if c.Timeout != defaultCheck.Timeout {
		y.Timeout = durationString(c.Timeout)
	}
	if c.Rise != defaultCheck.Rise {
		r := c.Rise
		y.Rise = &r
	}
	if c.Fall != defaultCheck.Fall {
		f := c.Fall
		y.Fall = &f
	}
	if c.DRPath != nil {
		b := *c.DRPath
		y.DRPath = &b
	}
	y.Drain = c.Drain
	if m := c.MySQL; m != nil {
		ym := &yamlMySQL{
			User:         m.User,
			PasswordFile: m.PasswordFile,
			PasswordEnv:  m.PasswordEnv,
			Writable:     m.Writable,
			Database:     m.Database,
		}
		if m.MaxReplicationLag != 0 {
			ym.MaxReplicationLag = durationString(m.MaxReplicationLag)
		}
		if m.hasPassword {
			if !o.InlinePassword {
				return nil, fmt.Errorf("config: Marshal: %s.mysql.password: %w", path, ErrInlinePassword)
			}
			pw := m.password
			ym.Password = &pw
		}
		y.MySQL = ym
	}
	if e := c.Exec; e != nil {
		y.Exec = &yamlExec{Command: e.Command, Dynamic: e.Dynamic}
	}
	if y == (yamlCheck{}) {
		return nil, nil
	}
	return &y, nil
}

// durationString writes whole seconds as "120s" (not "2m0s"), anything else as Go does.
func durationString(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// addrString writes an invalid (zero) address as "", which Parse rejects.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

var addrType = reflect.TypeFor[netip.Addr]()

// diff returns the path of the first field where a and b differ, or "". Nil and empty slices
// are equal. It reports paths only, never values (the MySQL password is a field).
func diff(path string, a, b reflect.Value) string {
	switch {
	case a.Type() == addrType:
		if !a.Equal(b) {
			return path
		}
	case a.Kind() == reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				return path
			}
			return ""
		}
		return diff(path, a.Elem(), b.Elem())
	case a.Kind() == reflect.Slice:
		if a.Len() != b.Len() {
			return path
		}
		for i := range a.Len() {
			if p := diff(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i)); p != "" {
				return p
			}
		}
	case a.Kind() == reflect.Struct:
		for i := range a.NumField() {
			name := a.Type().Field(i).Name
			if path != "" {
				name = path + "." + name
			}
			if p := diff(name, a.Field(i), b.Field(i)); p != "" {
				return p
			}
		}
	default:
		if !a.Equal(b) {
			return path
		}
	}
	return ""
}
