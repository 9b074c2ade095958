package config

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/loader"
)

// The file's schema, said once: the yaml* types below are what Parse decodes the file into and
// what Marshal encodes. A key is a field's yaml tag name; the tags also say
//
//	range:"lo..hi"   the integers the key accepts (default: those of the field's type)
//	secret:"true"    the value is never echoed in an error
//	scalar:"..."     the error for a single value where a list is wanted
//
// Field order is key order in Marshal's output; omitempty leaves out what Marshal finds at its
// default. Parse decodes with decode (kinds, known keys, ranges), then checks what the values
// mean (parse.go, vrrp.go), with the line numbers of the nodes decode recorded.

type yamlConfig struct {
	Interfaces         []string      `yaml:"interfaces,flow,omitempty"`
	Maps               *yamlSizes    `yaml:"maps,omitempty"`
	HashSeed           uint32        `yaml:"hash_seed,omitempty"`
	Metrics            string        `yaml:"metrics,omitempty"`
	AllowRemoteMetrics bool          `yaml:"allow_remote_metrics,omitempty"`
	Peers              []string      `yaml:"peers,omitempty"`
	DirectorLease      string        `yaml:"director_lease,omitempty"`
	Services           []yamlService `yaml:"services,omitempty"`
	VRRP               []yamlVRRP    `yaml:"vrrp,omitempty"`
}

// yamlSizes has the field names of loader.Sizes.
type yamlSizes struct {
	Services  *uint32 `yaml:"services,omitempty"`
	Backends  *uint32 `yaml:"backends,omitempty"`
	Peers     *uint32 `yaml:"peers,omitempty"`
	Conntrack *uint32 `yaml:"conntrack,omitempty"`
	Persist   *uint32 `yaml:"persist,omitempty"`
	RingSize  *uint32 `yaml:"ring_size,omitempty"`
}

type yamlService struct {
	Name        string           `yaml:"name,omitempty"`
	VIP         string           `yaml:"vip"`
	Port        uint16           `yaml:"port,omitempty"`
	Proto       string           `yaml:"proto,omitempty"`
	Scheduler   string           `yaml:"scheduler,omitempty"`
	Persistence string           `yaml:"persistence,omitempty"`
	Quorum      *int             `yaml:"quorum,omitempty" range:"1..2147483647"`
	Hysteresis  int              `yaml:"hysteresis,omitempty" range:"0..2147483647"`
	Sorry       *yamlSorry       `yaml:"sorry_server,omitempty"`
	Check       *yamlCheck       `yaml:"check,omitempty"`
	RealServers []yamlRealServer `yaml:"real_servers,omitempty"`
}

type yamlRealServer struct {
	Address string  `yaml:"address"`
	Port    uint16  `yaml:"port,omitempty"`
	Weight  *uint32 `yaml:"weight,omitempty" range:"1..65535"` // control.MaxWeight
	Local   bool    `yaml:"local,omitempty"`
	MAC     string  `yaml:"mac,omitempty"`
	Drain   bool    `yaml:"drain,omitempty"`
}

// yamlSorry is a real server without weight and drain.
type yamlSorry struct {
	Address string `yaml:"address"`
	Port    uint16 `yaml:"port,omitempty"`
	Local   bool   `yaml:"local,omitempty"`
	MAC     string `yaml:"mac,omitempty"`
}

type yamlCheck struct {
	Type     *string    `yaml:"type,omitempty"`
	Interval string     `yaml:"interval,omitempty"`
	Timeout  string     `yaml:"timeout,omitempty"`
	Rise     *int       `yaml:"rise,omitempty" range:"1..1000"`
	Fall     *int       `yaml:"fall,omitempty" range:"1..1000"`
	DRPath   *bool      `yaml:"dr_path,omitempty"`
	Drain    bool       `yaml:"drain,omitempty"`
	MySQL    *yamlMySQL `yaml:"mysql,omitempty"`
	Exec     *yamlExec  `yaml:"exec,omitempty"`
}

type yamlMySQL struct {
	User              string  `yaml:"user,omitempty"`
	Password          *string `yaml:"password,omitempty" secret:"true"`
	PasswordFile      string  `yaml:"password_file,omitempty"`
	PasswordEnv       string  `yaml:"password_env,omitempty"`
	Writable          bool    `yaml:"writable,omitempty"`
	MaxReplicationLag string  `yaml:"max_replication_lag,omitempty"`
	Database          string  `yaml:"database,omitempty"`
}

type yamlExec struct {
	Command []string `yaml:"command,flow,omitempty" scalar:"want a list (program and arguments, like [/usr/local/bin/check_slave.pl, --port, \"3306\"]); it is not run through a shell"`
	Dynamic bool     `yaml:"dynamic,omitempty"`
}

// yamlVRRP is a vrrp instance; the comments give keepalived's names.
type yamlVRRP struct {
	Name           string   `yaml:"name"`                              // vrrp_instance NAME
	Interface      string   `yaml:"interface"`                         // interface
	Version        int      `yaml:"version,omitempty" range:"2..3"`    // vrrp_version
	VRID           uint8    `yaml:"vrid" range:"1..255"`               // virtual_router_id
	Priority       uint8    `yaml:"priority,omitempty" range:"1..255"` // priority
	AdvertInterval string   `yaml:"advert_interval,omitempty"`         // advert_int
	Preempt        *bool    `yaml:"preempt,omitempty"`                 // false = nopreempt
	PreemptDelay   string   `yaml:"preempt_delay,omitempty"`           // preempt_delay
	AuthPass       *string  `yaml:"auth_pass,omitempty" secret:"true"` // authentication { auth_type PASS; auth_pass } (v2 only)
	AuthPassFile   string   `yaml:"auth_pass_file,omitempty"`          // the same, read from a file
	PseudoHeader   *bool    `yaml:"checksum_pseudo_header,omitempty"`  // keepalived's default; v3 IPv4 only
	UnicastPeers   []string `yaml:"unicast_peers,flow,omitempty"`      // unicast_peer
	VIPs           []string `yaml:"vips,flow"`                         // virtual_ipaddress

	// notify (argv, never through a shell)
	Notify []string `yaml:"notify,flow,omitempty" scalar:"want a list (program and arguments, like [/usr/local/bin/vrrp_notify.sh]); it is not run through a shell"`

	GARPRepeat  *int   `yaml:"garp_repeat,omitempty" range:"0..100"` // garp_master_repeat
	GARPDelay   string `yaml:"garp_delay,omitempty"`                 // garp_master_delay
	PeerTimeout string `yaml:"peer_timeout,omitempty"`               // xdplb: how long a silent peer stays in the peers map
	// track_script without weights: names of services; Fault while any of them has lost its quorum.
	TrackServices []string `yaml:"track_services,flow,omitempty"`
}

// The key names, from the tags.
var (
	topKeys        = keysOf[yamlConfig]()
	sizeKeys       = keysOf[yamlSizes]()
	serviceKeys    = keysOf[yamlService]()
	realServerKeys = keysOf[yamlRealServer]()
	sorryKeys      = keysOf[yamlSorry]()
	checkKeys      = keysOf[yamlCheck]()
	mysqlKeys      = keysOf[yamlMySQL]()
	execKeys       = keysOf[yamlExec]()
	vrrpKeys       = keysOf[yamlVRRP]()
)

// The defaults: what Parse gives a key that is left out, and what Marshal leaves out.

func defaultConfig() Config {
	return Config{Sizes: loader.DefaultSizes(), Metrics: DefaultMetrics}
}

func defaultService() Service {
	return Service{Scheduler: "maglev", Quorum: 1, Key: control.ServiceKey{Proto: control.TCP}, Check: defaultCheck}
}

// defaultCheck is the check of a service that has no check key.
var defaultCheck = Check{Type: CheckTCP, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}

var defaultRealServer = RealServer{Weight: 1}

func defaultVRRP() VRRPInstance {
	return VRRPInstance{
		Version: DefaultVRRPVersion, Priority: DefaultVRRPPriority, AdvertInterval: DefaultAdvertInterval,
		Preempt: true, PseudoHeader: true, GARPRepeat: DefaultGARPRepeat, GARPDelay: DefaultGARPDelay,
	}
}

// schemaField is a key of a yaml* type.
type schemaField struct {
	key   string
	index int
	tag   reflect.StructTag
}

func fieldsOf(t reflect.Type) []schemaField {
	var out []schemaField
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		out = append(out, schemaField{name, i, f.Tag})
	}
	return out
}

func keysOf[T any]() []string {
	var keys []string
	for _, f := range fieldsOf(reflect.TypeFor[T]()) {
		keys = append(keys, f.key)
	}
	return keys
}

// intRange is the range of an integer field: its range tag, else its type's.
func intRange(t reflect.Type, tag reflect.StructTag) (lo, hi int64) {
	if r := tag.Get("range"); r != "" {
		l, h, _ := strings.Cut(r, "..")
		lo, err1 := strconv.ParseInt(l, 10, 64)
		hi, err2 := strconv.ParseInt(h, 10, 64)
		if err1 != nil || err2 != nil {
			panic(fmt.Sprintf("config: bad range tag %q", r))
		}
		return lo, hi
	}
	switch t.Kind() {
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return 0, int64(1)<<t.Bits() - 1
	case reflect.Uint, reflect.Uint64:
		return 0, math.MaxInt64
	}
	return -1 << (t.Bits() - 1), 1<<(t.Bits()-1) - 1
}

// decode fills v from n: it checks the node's kind (mapping, list, single value), the keys of
// mappings (unknown, repeated), booleans, integers and their ranges, and records every value
// node and key node by field path for the checks that follow. A null value is a key left out.
// It reports whether n and everything under it decoded. A mapping or a list is kept even when
// some of its entries did not decode (they are left zero), so that every entry is checked.
func (p *parser) decode(n *yaml.Node, path string, v reflect.Value, tag reflect.StructTag) bool {
	n = resolve(n)
	p.vals[path] = n
	switch v.Kind() {
	case reflect.Pointer:
		e := reflect.New(v.Type().Elem())
		ok := p.decode(n, path, e.Elem(), tag)
		if ok || (e.Elem().Kind() == reflect.Struct && n.Kind == yaml.MappingNode) {
			v.Set(e)
		}
		return ok
	case reflect.Struct:
		return p.decodeMapping(n, path, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			if msg := tag.Get("scalar"); msg != "" && n.Kind == yaml.ScalarNode {
				p.errorf(n, path, "%s", msg)
			} else {
				p.errorf(n, path, "want a list, got %s", kindName(n))
			}
			return false
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		ok := true
		for i, en := range n.Content {
			ok = p.decode(en, fmt.Sprintf("%s[%d]", path, i), s.Index(i), "") && ok
		}
		v.Set(s)
		return ok
	}
	if n.Kind != yaml.ScalarNode {
		if tag.Get("secret") != "" {
			p.errorf(n, path, "want a single value") // says nothing of the value
		} else {
			p.errorf(n, path, "want a single value, got %s", kindName(n))
		}
		return false
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			p.errorf(n, path, "%q: want true or false", n.Value)
			return false
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var x int64
		if n.ShortTag() != "!!int" || n.Decode(&x) != nil {
			p.errorf(n, path, "%q: want an integer", n.Value)
			return false
		}
		if lo, hi := intRange(v.Type(), tag); x < lo || x > hi {
			p.errorf(n, path, "%d is out of range %d..%d", x, lo, hi)
			return false
		}
		if v.CanInt() {
			v.SetInt(x)
		} else {
			v.SetUint(uint64(x))
		}
	default:
		panic(fmt.Sprintf("config: %s: no decoding for %s", path, v.Type()))
	}
	return true
}

// decodeMapping decodes a mapping into a yaml* struct: only its keys, each once.
func (p *parser) decodeMapping(n *yaml.Node, path string, v reflect.Value) bool {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "want a mapping of keys, got %s", kindName(n))
		return false
	}
	fields := fieldsOf(v.Type())
	known := make([]string, len(fields))
	for i, f := range fields {
		known[i] = f.key
	}
	first := map[string]*yaml.Node{}
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), n.Content[i+1]
		k := kn.Value
		j := -1
		for fi, f := range fields {
			if f.key == k {
				j = fi
			}
		}
		switch {
		case kn.Kind != yaml.ScalarNode:
			p.errorf(kn, path, "keys must be plain words")
			ok = false
			continue
		case j < 0:
			p.errorf(kn, join(path, k), "unknown key (known keys: %s)", strings.Join(known, ", "))
			ok = false
			continue
		case first[k] != nil:
			p.errorf(kn, join(path, k), "repeated key (first on line %d)", first[k].Line)
			p.errs[len(p.errs)-1].repeated = true
			ok = false
			continue
		}
		first[k] = kn
		p.keys[join(path, k)] = kn
		if isNull(resolve(vn)) {
			continue
		}
		ok = p.decode(vn, join(path, k), v.Field(fields[j].index), fields[j].tag) && ok
	}
	return ok
}
