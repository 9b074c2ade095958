package config

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/loader"
)

// roundTrip parses src, marshals it, parses the output and checks: the two Configs are
// deep-equal (unexported password fields included), and marshalling the second Config gives
// the same bytes (stable output). It returns the first config and the marshalled bytes.
func roundTrip(t *testing.T, o MarshalOptions, src []byte) (*Config, []byte) {
	t.Helper()
	c1, warns, err := Parse(src, "in.yaml")
	if err != nil || len(warns) != 0 {
		t.Fatalf("Parse(input): warnings %q, error %v", warns, err)
	}
	out1, err := o.Marshal(c1)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	c2, warns, err := Parse(out1, "out.yaml")
	if err != nil || len(warns) != 0 {
		t.Fatalf("Parse(Marshal output): warnings %q, error %v\n%s", warns, err, out1)
	}
	if !reflect.DeepEqual(c1, c2) {
		t.Errorf("round trip differs at %s\ninput:\n%s\noutput:\n%s", diff("", reflect.ValueOf(c1).Elem(), reflect.ValueOf(c2).Elem()), src, out1)
	}
	out2, err := o.Marshal(c2)
	if err != nil {
		t.Fatalf("second Marshal: %v", err)
	}
	if !bytes.Equal(out1, out2) {
		t.Errorf("output is not stable:\nfirst:\n%s\nsecond:\n%s", out1, out2)
	}
	if out3, _ := o.Marshal(c1); !bytes.Equal(out1, out3) {
		t.Errorf("Marshal of the same Config twice differs:\n%s\n%s", out1, out3)
	}
	return c1, out1
}

// hasKey reports whether key is written in out: "key:" at the start of a (list item) line.
func hasKey(out []byte, key string) bool {
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimLeft(line, " ")
		line = strings.TrimPrefix(line, "- ")
		if strings.HasPrefix(line, key+":") {
			return true
		}
	}
	return false
}

func TestMarshalExampleRoundTrip(t *testing.T) {
	src, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, out := roundTrip(t, MarshalOptions{}, src)
	if len(c.Services) != 2 {
		t.Fatalf("services: %d", len(c.Services))
	}
	// Defaults are left out (example.yaml writes every map size at its default), explicit
	// non-defaults kept.
	for _, k := range []string{"hash_seed", "peers", "password_file", "password_env", "writable", "max_replication_lag", "dr_path", "sorry_server", "persistence", "local", "mac"} {
		if !hasKey(out, k) {
			t.Errorf("output lacks %s:\n%s", k, out)
		}
	}
	for _, k := range []string{"metrics", "scheduler", "proto", "interval", "timeout", "rise", "fall", "drain", "password", "allow_remote_metrics", "maps"} {
		if hasKey(out, k) {
			t.Errorf("output has the default %s:\n%s", k, out)
		}
	}
	// dr_path: true is the default but was written, so it is kept (DRPath is a pointer).
	if !strings.Contains(string(out), "dr_path: true") || !strings.Contains(string(out), "persistence: 120s") {
		t.Errorf("output:\n%s", out)
	}
}

// everyKey uses every key Parse accepts except scheduler (only "maglev", the default, which
// Marshal leaves out) and the inline password (TestMarshalInlinePassword).
const everyKey = `interfaces: [ens33, "1234", eth1]
maps:
  services: 16
  backends: 64
  peers: 4
  conntrack: 2048
  persist: 1024
  ring_size: 251
hash_seed: 4294967295
metrics: 0.0.0.0:9100
allow_remote_metrics: true
peers:
  - 02:00:00:00:00:02
  - 02:00:00:00:00:03
director_lease: 30s
services:
  - name: writer
    vip: 10.0.0.100
    port: 3306
    proto: tcp
    scheduler: maglev
    persistence: 3600
    quorum: 3
    hysteresis: 2
    sorry_server:
      address: 10.0.0.99
      port: 3306
      local: false
      mac: 02:00:00:00:00:99
    check:
      type: mysql
      interval: 1500ms
      timeout: 500ms
      rise: 1
      fall: 10
      dr_path: true
      drain: true
      mysql:
        user: monitor
        password_file: /etc/xdplb/monitor.pw
        writable: true
        max_replication_lag: 1m
        database: "true"
    real_servers:
      - {address: 10.0.0.11, weight: 2, mac: 02:00:00:00:00:11}
      - {address: 10.0.0.12, port: 3306, weight: 65535, drain: true}
      - {address: 10.0.0.1, local: true}
  - name: reader
    vip: 10.0.0.100
    port: 3307
    check:
      type: mysql
      mysql:
        user: "yes"
        password_env: XDPLB_PW
    real_servers: [{address: 10.0.0.13}]
  - name: "0x10"
    vip: fd00::100
    port: 0
    proto: udp
    persistence: 0s
    sorry_server: {address: "fd00::99", local: true}
    check:
      type: exec
      interval: 10s
      timeout: 9s
      exec:
        command: [/usr/local/bin/check, --port, "3306", "yes", "", "a b", "#x"]
        dynamic: true
    real_servers:
      - address: fd00::11
        weight: 7
        mac: 02:00:00:00:00:21
      - {address: "::ffff:10.0.0.21"}
  - vip: 10.0.0.200
    port: 80
    check:
      dr_path: false
    real_servers: [{address: 10.0.0.31}, {address: 10.0.0.32, weight: 3}]
  - vip: 10.0.0.201
    port: 0
    check: {type: none}
    real_servers: [{address: 10.0.0.41}]
  - vip: 10.0.0.202
    port: 0
    real_servers: [{address: 10.0.0.51, port: 8080}]
vrrp:
  - name: VI_1
    interface: ens33
    version: 2
    vrid: 51
    priority: 254
    advert_interval: 3
    preempt: false
    preempt_delay: 30s
    auth_pass_file: /etc/xdplb/vrrp.pw
    unicast_peers: [10.0.0.2, 10.0.0.3]
    vips: [10.0.0.100, 10.0.0.101]
    notify: [/usr/local/bin/notify, "a b", "yes", ""]
    garp_repeat: 0
    garp_delay: 0s
    peer_timeout: 1500ms
    track_services: [writer, "0x10"]
  - name: VI_6
    interface: eth1
    vrid: 51
    advert_interval: 100ms
    vips: ["fd00::100"]
  - name: "123"
    interface: ens33
    version: 3
    vrid: 52
    priority: 100
    preempt: true
    checksum_pseudo_header: false
    vips: ["::ffff:10.0.0.102"]
`

func TestMarshalEveryKey(t *testing.T) {
	c, out := roundTrip(t, MarshalOptions{}, []byte(everyKey))

	// Spot checks that the input says what the test means it to say.
	def := loader.DefaultSizes()
	if c.Sizes == def || c.HashSeed != 4294967295 || c.Metrics != "0.0.0.0:9100" || len(c.Peers) != 2 || len(c.Interfaces) != 3 || c.DirectorLease != 30*time.Second {
		t.Errorf("top: %+v", c)
	}
	w, r, x, tcp, none, p0 := c.Services[0], c.Services[1], c.Services[2], c.Services[3], c.Services[4], c.Services[5]
	if w.Persistence != time.Hour || w.Quorum != 3 || w.Hysteresis != 2 || w.Sorry == nil || w.Sorry.MAC == nil || !w.Check.Drain || w.Check.MySQL.Database != "true" {
		t.Errorf("writer: %+v", w)
	}
	if r.Check.MySQL.PasswordEnv != "XDPLB_PW" || r.Check.MySQL.User != "yes" {
		t.Errorf("reader: %+v", r)
	}
	if x.Key != (control.ServiceKey{VIP: netip.MustParseAddr("fd00::100"), Port: 0, Proto: control.UDP}) || x.Name != "0x10" ||
		!x.Check.Exec.Dynamic || len(x.Check.Exec.Command) != 7 || !x.Sorry.Local || !x.RealServers[1].Addr.Is4In6() {
		t.Errorf("exec service: %+v", x)
	}
	if tcp.Check.Type != CheckTCP || tcp.Check.CheckDRPath() || tcp.Check.DRPath == nil {
		t.Errorf("tcp check: %+v", tcp.Check)
	}
	if none.Check.Type != CheckNone || p0.RealServers[0].Port != 8080 {
		t.Errorf("none: %+v, port 0: %+v", none, p0)
	}

	v1, v6, v3 := c.VRRP[0], c.VRRP[1], c.VRRP[2]
	if v1.Version != 2 || v1.VRID != 51 || v1.Priority != 254 || v1.AdvertInterval != 3*time.Second || v1.Preempt ||
		v1.PreemptDelay != 30*time.Second || v1.AuthPassFile == "" || !v1.HasAuth() || len(v1.UnicastPeers) != 2 ||
		len(v1.VIPs) != 2 || len(v1.Notify) != 4 || v1.GARPRepeat != 0 || v1.GARPDelay != 0 || v1.PeerTimeout != 1500*time.Millisecond ||
		!slices.Equal(v1.TrackServices, []string{"writer", "0x10"}) {
		t.Errorf("vrrp[0]: %+v", v1)
	}
	if v6.Version != 3 || v6.Priority != 100 || v6.AdvertInterval != 100*time.Millisecond || !v6.Preempt || !v6.PseudoHeader ||
		v6.GARPRepeat != DefaultGARPRepeat || v6.GARPDelay != DefaultGARPDelay || !v6.VIPs[0].Is6() || v6.TrackServices != nil {
		t.Errorf("vrrp[1]: %+v", v6)
	}
	if v3.Name != "123" || v3.PseudoHeader || v3.VIPs[0] != netip.MustParseAddr("10.0.0.102") {
		t.Errorf("vrrp[2]: %+v", v3)
	}

	// Every key name the parser knows is written (Marshal uses the parser's names).
	known := [][]string{topKeys, sizeKeys, serviceKeys, realServerKeys, sorryKeys, checkKeys, mysqlKeys, execKeys, vrrpKeys}
	for _, keys := range known {
		for _, k := range keys {
			if k == "scheduler" || k == "password" || k == "auth_pass" {
				continue
			}
			if !hasKey(out, k) && !strings.Contains(string(out), k+": ") {
				t.Errorf("output lacks key %s:\n%s", k, out)
			}
		}
	}
	if hasKey(out, "scheduler") {
		t.Errorf("scheduler: maglev is the default and should be left out:\n%s", out)
	}
	if !strings.Contains(string(out), "dr_path: false") || !strings.Contains(string(out), "allow_remote_metrics: true") {
		t.Errorf("output:\n%s", out)
	}
}

func TestMarshalMinimal(t *testing.T) {
	_, out := roundTrip(t, MarshalOptions{}, []byte("interfaces: [ens33]\nservices: [{vip: 10.0.0.100, port: 80, real_servers: [{address: 10.0.0.11}]}]\n"))
	want := "interfaces: [ens33]\nservices:\n  - vip: 10.0.0.100\n    port: 80\n    real_servers:\n      - address: 10.0.0.11\n"
	if string(out) != want {
		t.Errorf("minimal output:\n%s\nwant:\n%s", out, want)
	}
}

func TestMarshalInlinePassword(t *testing.T) {
	c, _, err := Parse([]byte(mysqlConfig("        password: "+secret)), "xdplb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(c)
	if !errors.Is(err, ErrInlinePassword) || out != nil {
		t.Fatalf("Marshal = %q, %v; want nil, ErrInlinePassword", out, err)
	}
	if !strings.Contains(err.Error(), "services[0].check.mysql.password") || strings.Contains(err.Error(), secret) {
		t.Errorf("error: %v", err)
	}

	// Allowed explicitly, it is written and read back.
	c2, out := roundTrip(t, MarshalOptions{InlinePassword: true}, []byte(mysqlConfig("        password: "+secret)))
	if !strings.Contains(string(out), "password: "+secret) {
		t.Errorf("output:\n%s", out)
	}
	if pw, err := c2.Services[0].Check.MySQL.Password(); err != nil || pw != secret {
		t.Errorf("Password() = %q, %v", pw, err)
	}
	// A password that YAML would read as another type is quoted, and an empty one kept.
	for _, pw := range []string{`"123"`, `"true"`, `""`, `"a: b"`, `"#x"`} {
		roundTrip(t, MarshalOptions{InlinePassword: true}, []byte(mysqlConfig("        password: "+pw)))
	}
	// The same for the VRRPv2 password.
	vc, _, err := Parse([]byte(vrrpConfig("    version: 2\n    auth_pass: "+shortSecret)), "xdplb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := Marshal(vc); !errors.Is(err, ErrInlinePassword) || out != nil || strings.Contains(err.Error(), shortSecret) ||
		!strings.Contains(err.Error(), "vrrp[0].auth_pass") {
		t.Errorf("Marshal with auth_pass = %q, %v; want nil, ErrInlinePassword naming vrrp[0].auth_pass", out, err)
	}
	vc2, out := roundTrip(t, MarshalOptions{InlinePassword: true}, []byte(vrrpConfig("    version: 2\n    auth_pass: "+shortSecret)))
	if pw, err := vc2.VRRP[0].AuthPass(); err != nil || pw != shortSecret || !strings.Contains(string(out), "auth_pass: "+shortSecret) {
		t.Errorf("AuthPass() = %q, %v\n%s", pw, err, out)
	}
	// password_file and password_env are not secrets: written as they are by default.
	for _, extra := range []string{"        password_file: /etc/xdplb/pw", "        password_env: PW"} {
		roundTrip(t, MarshalOptions{}, []byte(mysqlConfig(extra)))
	}
}

func TestMarshalNotRepresentable(t *testing.T) {
	base := func() *Config {
		c, _, err := Parse([]byte(everyKey), "in.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := []struct {
		name  string
		edit  func(c *Config)
		field string
	}{
		{"sorry weight", func(c *Config) { c.Services[0].Sorry.Weight = 5 }, "Services[0].Sorry.Weight"},
		{"sorry drain", func(c *Config) { c.Services[0].Sorry.Drain = true }, "Services[0].Sorry.Drain"},
		{"empty metrics", func(c *Config) { c.Metrics = "" }, "Metrics"},
		{"empty scheduler", func(c *Config) { c.Services[1].Scheduler = "" }, "scheduler"},
		{"zero check", func(c *Config) { c.Services[1].Check = Check{} }, "check"},
		{"zero weight", func(c *Config) { c.Services[1].RealServers[0].Weight = 0 }, "weight"},
		{"no VIP", func(c *Config) { c.Services[1].Key.VIP = netip.Addr{} }, "vip"},
		{"bad proto", func(c *Config) { c.Services[1].Key.Proto = 1 }, "proto"},
		{"no interfaces", func(c *Config) { c.Interfaces = nil }, "interfaces"},
		{"bad MAC", func(c *Config) { c.Peers[0] = net.HardwareAddr{1, 2, 3} }, "peers[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(c)
			out, err := Marshal(c)
			if err == nil || out != nil {
				t.Fatalf("Marshal = %q, %v; want an error", out, err)
			}
			if !errors.Is(err, ErrNotRepresentable) {
				t.Errorf("error does not wrap ErrNotRepresentable: %v", err)
			}
			if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.field)) {
				t.Errorf("error does not name %s: %v", tc.field, err)
			}
		})
	}
	if _, err := Marshal(nil); err == nil {
		t.Error("Marshal(nil): no error")
	}

	// Nil and empty lists are the same Config: not an error.
	c := base()
	c.Services[3].RealServers[0].MAC = net.HardwareAddr{}
	c.Services[2].Check.Exec.Command = append([]string{}, c.Services[2].Check.Exec.Command...)
	if _, err := Marshal(c); err != nil {
		t.Errorf("empty MAC: %v", err)
	}
}

// A Config built in Go (not parsed) marshals as long as it holds Parse's defaults.
func TestMarshalBuiltConfig(t *testing.T) {
	c := &Config{
		Interfaces: []string{"ens33"},
		Sizes:      loader.DefaultSizes(),
		Metrics:    DefaultMetrics,
		Services: []Service{{
			Key:         control.ServiceKey{VIP: netip.MustParseAddr("10.0.0.100"), Port: 443, Proto: control.TCP},
			Scheduler:   "maglev",
			Quorum:      1,
			Check:       defaultCheck,
			RealServers: []RealServer{{Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1}},
		}},
	}
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := Parse(out, "out.yaml")
	if err != nil || !reflect.DeepEqual(back, c) {
		t.Errorf("Parse(Marshal(c)) = %+v, %v\n%s", back, err, out)
	}
}
