// Package config parses and validates the daemon's single YAML file.
//
// It applies nothing: Parse and Load return a Config, or a *ValidationError that lists every
// problem at once, each with its line and field path. Secrets (the MySQL check password) never
// appear in errors or in fmt output.
package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/loader"
)

// DefaultMetrics is the metrics listen address when the file sets none.
const DefaultMetrics = "127.0.0.1:9447"

// Config is the whole file.
type Config struct {
	Interfaces []string           // interfaces the XDP program attaches to
	Sizes      loader.Sizes       // yaml "maps"; defaults loader.DefaultSizes()
	HashSeed   uint32             // yaml "hash_seed"
	Metrics    string             // listen address of the Prometheus endpoint
	Peers      []net.HardwareAddr // static peer director MACs
	// DirectorLease is the file's director_lease (0: not set); Lease() resolves the default.
	DirectorLease time.Duration
	Services      []Service
	VRRP          []VRRPInstance // yaml "vrrp"; the virtual routers that hold the VIPs
}

// Service is a virtual service and its real servers.
type Service struct {
	Name        string             // optional label, unique in the file
	Key         control.ServiceKey // yaml "vip", "port", "proto"
	Scheduler   string             // "maglev"
	Persistence time.Duration      // 0 = off; whole seconds
	Sorry       *RealServer        // yaml "sorry_server"; nil = none
	Quorum      int                // default 1
	Hysteresis  int                // default 0, < Quorum
	Check       Check
	RealServers []RealServer // yaml "real_servers"
}

// Spec is what control.Maps.AddService takes.
func (s Service) Spec() control.ServiceSpec {
	return control.ServiceSpec{Key: s.Key, Persistence: s.Persistence}
}

// RealServer is a backend of a service.
type RealServer struct {
	Addr   netip.Addr
	Port   uint16 // 0 = the service port
	Weight uint32 // 1..65535, default 1
	Local  bool   // the real server is this director
	MAC    net.HardwareAddr
	Drain  bool // out of the ring, established flows go on
}

// Check types.
const (
	CheckTCP   = "tcp"
	CheckMySQL = "mysql"
	CheckExec  = "exec"
	CheckNone  = "none"
)

// Check is the health check of a service's real servers.
type Check struct {
	Type     string
	Interval time.Duration // default 2s
	Timeout  time.Duration // default 1s, < Interval
	Rise     int           // default 2
	Fall     int           // default 3
	DRPath   *bool         // check through the VIP (DR path); default true
	Drain    bool          // a failed server is drained (weight 0) instead of removed
	MySQL    *MySQLCheck   // only with Type mysql
	Exec     *ExecCheck    // only with Type exec
}

// CheckDRPath reports DRPath with its default.
func (c Check) CheckDRPath() bool { return c.DRPath == nil || *c.DRPath }

// MySQLCheck is the mysql check's options. The password is kept unexported and redacted
// from every fmt verb; read it with Password.
type MySQLCheck struct {
	User              string
	Database          string
	Writable          bool          // require @@read_only = 0
	MaxReplicationLag time.Duration // 0 = not checked
	PasswordFile      string        // read by Password, not by Parse
	PasswordEnv       string        // read by Password, not by Parse
	password          string
	hasPassword       bool
}

// Password returns the password: inline, or read now from PasswordFile (trailing newline
// dropped) or the PasswordEnv variable. No password configured gives "".
func (m *MySQLCheck) Password() (string, error) {
	switch {
	case m == nil:
		return "", nil
	case m.hasPassword:
		return m.password, nil
	case m.PasswordFile != "":
		b, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("mysql check password: %w", fileError(m.PasswordFile, err))
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case m.PasswordEnv != "":
		v, ok := os.LookupEnv(m.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("mysql check password: environment variable %s is not set", m.PasswordEnv)
		}
		return v, nil
	}
	return "", nil
}

// InlinePassword reports whether the password is written in the config file itself.
func (m *MySQLCheck) InlinePassword() bool { return m != nil && m.hasPassword }

// String never shows the password.
func (m MySQLCheck) String() string {
	var pw string
	switch {
	case m.hasPassword:
		pw = "password:<redacted>"
	case m.PasswordFile != "":
		pw = "password_file:" + m.PasswordFile
	case m.PasswordEnv != "":
		pw = "password_env:" + m.PasswordEnv
	default:
		pw = "password:none"
	}
	return fmt.Sprintf("{user:%s %s database:%s writable:%t max_replication_lag:%v}",
		m.User, pw, m.Database, m.Writable, m.MaxReplicationLag)
}

// GoString never shows the password.
func (m MySQLCheck) GoString() string { return "config.MySQLCheck" + m.String() }

// Format makes every verb (%v, %+v, %#v, %s, %q) print the redacted form.
func (m MySQLCheck) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, m.GoString())
		return
	}
	_, _ = io.WriteString(f, m.String())
}

// ExecCheck runs a program; exit status 0 = healthy.
type ExecCheck struct {
	Command []string // argv, never run through a shell
	// Dynamic: the exit status minus 2 is the new weight (keepalived MISC_CHECK misc_dynamic).
	Dynamic bool
}

// FieldError is one problem in the file.
type FieldError struct {
	Line  int
	Field string
	Msg   string
	file  string

	repeated bool // a repeated key: the first value is used
}

func (e FieldError) Error() string {
	var b strings.Builder
	if e.file != "" {
		b.WriteString(e.file)
		b.WriteString(":")
	}
	if e.Line > 0 {
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(":")
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ValidationError lists every problem found in a file, in file order.
type ValidationError struct {
	File   string
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads and parses the file at path. Besides Parse's warnings it warns about a password
// written in a file that group or others can read, and about a password_file they can read.
func Load(path string) (*Config, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fileError(path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fileError(path, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, fileError(path, err)
	}
	cfg, warns, err := Parse(data, path)
	if err != nil {
		return nil, warns, err
	}
	for i, v := range cfg.VRRP {
		field := fmt.Sprintf("vrrp[%d]", i)
		if v.InlineAuthPass() && st.Mode().Perm()&0o044 != 0 {
			warns = append(warns, fmt.Sprintf("%s: %s.auth_pass: the file is readable by group or others (mode %04o); chmod 600 it or use auth_pass_file", path, field, st.Mode().Perm()))
		}
		if v.AuthPassFile != "" {
			pst, err := os.Stat(v.AuthPassFile)
			switch {
			case err != nil:
				warns = append(warns, fmt.Sprintf("%s: %s.auth_pass_file: %v", path, field, fileError(v.AuthPassFile, err)))
			case pst.Mode().Perm()&0o044 != 0:
				warns = append(warns, fmt.Sprintf("%s: %s.auth_pass_file: %s is readable by group or others (mode %04o); chmod 600 it", path, field, v.AuthPassFile, pst.Mode().Perm()))
			}
		}
	}
	for i, s := range cfg.Services {
		m := s.Check.MySQL
		if m == nil {
			continue
		}
		field := fmt.Sprintf("services[%d].check.mysql", i)
		if m.InlinePassword() && st.Mode().Perm()&0o044 != 0 {
			warns = append(warns, fmt.Sprintf("%s: %s.password: the file is readable by group or others (mode %04o); chmod 600 it or use password_file", path, field, st.Mode().Perm()))
		}
		if m.PasswordFile != "" {
			pst, err := os.Stat(m.PasswordFile)
			switch {
			case err != nil:
				warns = append(warns, fmt.Sprintf("%s: %s.password_file: %v", path, field, fileError(m.PasswordFile, err)))
			case pst.Mode().Perm()&0o044 != 0:
				warns = append(warns, fmt.Sprintf("%s: %s.password_file: %s is readable by group or others (mode %04o); chmod 600 it", path, field, m.PasswordFile, pst.Mode().Perm()))
			}
		}
	}
	return cfg, warns, nil
}

// fileError says "PATH: no such file or directory" where os says "open PATH: ..." or
// "stat PATH: ...": the system call is no business of the reader. It wraps the cause, so
// errors.Is(err, fs.ErrNotExist) still holds.
func fileError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", path, pe.Err)
	}
	return err
}

// yamlLine is the line yaml.v3 puts in a syntax error: "yaml: line 3: ...".
var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// yamlProblems says libyaml's complaints in the reader's words, with the likely mistake.
var yamlProblems = map[string]string{
	"did not find expected ',' or ']'":               "a [ list is not closed: want ] after its last item",
	"did not find expected ',' or '}'":               "a { mapping is not closed: want } after its last key",
	"found character that cannot start any token":    "a character that cannot start a value (YAML indents with spaces, not tabs; quote a value that starts with @ or `)",
	"mapping values are not allowed in this context": `"key: value" where a value was wanted (quote a value that holds ": ", or put the key on its own line)`,
	"did not find expected key":                      "a line is not indented like the keys around it, or a ] or } closes nothing",
	"did not find expected '-' indicator":            "a list item is not indented like the items around it (each starts with \"- \")",
	"found unexpected end of stream":                 "the file ends inside a quoted value: close the quote",
	"control characters are not allowed":             "a control character: want plain UTF-8 text",
}

// syntaxError turns yaml.v3's error for a file that is not YAML into
// "NAME: line N: not valid YAML: what is wrong".
func syntaxError(name string, err error) error {
	msg := err.Error()
	where := ""
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		msg = msg[len(m[0]):]
		if m[1] != "" {
			where = "line " + m[1] + ": "
		}
	}
	if s, ok := yamlProblems[msg]; ok {
		msg = s
	}
	return fmt.Errorf("%s: %snot valid YAML: %s", name, where, msg)
}

// Parse parses and validates data; name is the file name used in messages.
func Parse(data []byte, name string) (*Config, []string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, syntaxError(name, err)
	}
	p := newParser(name)
	cfg := p.config(&doc)
	if len(p.errs) > 0 {
		return nil, p.warns, &ValidationError{File: name, Errors: p.errs}
	}
	return cfg, p.warns, nil
}

// Errors returns the field errors of err if it is a *ValidationError.
func Errors(err error) []FieldError {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve.Errors
	}
	return nil
}

// VRRP instance defaults (keepalived's where it has one).
const (
	DefaultVRRPVersion    = 3
	DefaultVRRPPriority   = 100
	DefaultAdvertInterval = time.Second
	DefaultGARPRepeat     = 5
	DefaultGARPDelay      = 5 * time.Second
)

// VRRPInstance is one virtual router (keepalived's vrrp_instance) that holds VIPs on one of the
// interfaces. The v2 password is kept unexported and redacted from every fmt verb; read it with
// AuthPass.
type VRRPInstance struct {
	Name      string // unique in the file; keepalived's vrrp_instance NAME
	Interface string // one of Config.Interfaces; keepalived interface
	Version   int    // 2 or 3 (default 3); keepalived version / vrrp_version
	VRID      uint8  // 1..255; keepalived virtual_router_id
	Priority  uint8  // 1..255 (default 100); keepalived priority
	// AdvertInterval: v2 whole seconds 1s..255s; v3 10ms..40.95s in 10 ms steps (default 1s);
	// keepalived advert_int.
	AdvertInterval time.Duration
	Preempt        bool          // default true; false is keepalived's nopreempt
	PreemptDelay   time.Duration // keepalived preempt_delay
	AuthPassFile   string        // v2 only: the PASS password read from this file by AuthPass
	// PseudoHeader: whether a v3 IPv4 checksum covers the pseudo-header (default true);
	// yaml checksum_pseudo_header.
	PseudoHeader bool
	UnicastPeers []netip.Addr  // keepalived unicast_peer; empty = multicast
	VIPs         []netip.Addr  // keepalived virtual_ipaddress: one family, IPv4 only in v2
	Notify       []string      // argv run on every state change (keepalived notify), never via a shell
	GARPRepeat   int           // gratuitous ARPs / NAs per VIP on becoming Master (default 5, 0 = none); garp_master_repeat
	GARPDelay    time.Duration // second burst this long after (default 5s, 0 = none); garp_master_delay
	PeerTimeout  time.Duration // a silent peer leaves the status after it (0 = 3 × Master_Down_Interval)
	// TrackServices are names of services of the same file: while any of them has lost its
	// quorum the instance is in Fault (keepalived track_script, without weights).
	TrackServices []string

	authPass    string
	hasAuthPass bool
}

// MaxAuthPass is the length of a VRRPv2 simple-text password (the rest is cut by keepalived).
const MaxAuthPass = 8

// AuthPass returns the v2 PASS password: inline (auth_pass) or read now from AuthPassFile
// (trailing newline dropped). No password gives "" (auth_type none).
func (v *VRRPInstance) AuthPass() (string, error) {
	switch {
	case v == nil:
		return "", nil
	case v.hasAuthPass:
		return v.authPass, nil
	case v.AuthPassFile != "":
		b, err := os.ReadFile(v.AuthPassFile)
		if err != nil {
			return "", fmt.Errorf("vrrp %s auth_pass_file: %w", v.Name, fileError(v.AuthPassFile, err))
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if len(pw) > MaxAuthPass {
			return "", fmt.Errorf("vrrp %s auth_pass_file: the password is %d bytes, at most %d", v.Name, len(pw), MaxAuthPass)
		}
		return pw, nil
	}
	return "", nil
}

// HasAuth reports whether the instance uses PASS authentication (inline or from a file).
func (v *VRRPInstance) HasAuth() bool { return v != nil && (v.hasAuthPass || v.AuthPassFile != "") }

// InlineAuthPass reports whether the password is written in the config file itself.
func (v *VRRPInstance) InlineAuthPass() bool { return v != nil && v.hasAuthPass }

// String never shows the password.
func (v VRRPInstance) String() string {
	var pw string
	switch {
	case v.hasAuthPass:
		pw = "auth_pass:<redacted>"
	case v.AuthPassFile != "":
		pw = "auth_pass_file:" + v.AuthPassFile
	default:
		pw = "auth:none"
	}
	return fmt.Sprintf("{name:%s interface:%s version:%d vrid:%d priority:%d advert_interval:%v preempt:%t preempt_delay:%v %s checksum_pseudo_header:%t unicast_peers:%v vips:%v notify:%q garp_repeat:%d garp_delay:%v peer_timeout:%v track_services:%v}",
		v.Name, v.Interface, v.Version, v.VRID, v.Priority, v.AdvertInterval, v.Preempt, v.PreemptDelay, pw,
		v.PseudoHeader, v.UnicastPeers, v.VIPs, v.Notify, v.GARPRepeat, v.GARPDelay, v.PeerTimeout, v.TrackServices)
}

// GoString never shows the password.
func (v VRRPInstance) GoString() string { return "config.VRRPInstance" + v.String() }

// Format makes every verb (%v, %+v, %#v, %s, %q) print the redacted form.
func (v VRRPInstance) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, v.GoString())
		return
	}
	_, _ = io.WriteString(f, v.String())
}

// MasterDownInterval is RFC 5798's Master_Down_Interval of the instance as a Backup with its
// own priority: 3 × advert interval + Skew_Time (v2: the skew is in whole-second units).
func (v VRRPInstance) MasterDownInterval() time.Duration {
	unit := v.AdvertInterval
	if v.Version == 2 {
		unit = time.Second
	}
	return 3*v.AdvertInterval + time.Duration(256-int64(v.Priority))*unit/256
}

// MinDirectorLease is the floor of the default director lease: a daemon restart (attach,
// config, first renewal) fits in it, so a restart within the lease keeps forwarding.
const MinDirectorLease = 2 * time.Second

// Lease is the director lease the daemon keeps on its data paths (0: none): director_lease if
// set, else with VRRP instances 3 × their longest Master_Down_Interval and at least
// MinDirectorLease, else none (a lone director's data path outlives its daemon).
func (c *Config) Lease() time.Duration {
	if c.DirectorLease > 0 {
		return c.DirectorLease
	}
	if len(c.VRRP) == 0 {
		return 0
	}
	return max(MinDirectorLease, 3*c.maxMasterDown())
}

func (c *Config) maxMasterDown() time.Duration {
	var d time.Duration
	for _, v := range c.VRRP {
		d = max(d, v.MasterDownInterval())
	}
	return d
}
