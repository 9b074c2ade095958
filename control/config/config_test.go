package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/loader"
)

func TestExampleParses(t *testing.T) {
	cfg, warns, err := Load("example.yaml")
	if err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	// The repository may check the file out group-readable; it has no inline password, and its
	// password_file does not exist here, so ignore only that warning.
	for _, w := range warns {
		if !strings.Contains(w, "password_file") {
			t.Errorf("unexpected warning: %s", w)
		}
	}
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg2, warns, err := Parse(data, "example.yaml")
	if err != nil || len(warns) != 0 {
		t.Fatalf("Parse(example.yaml): warnings %q, error %v", warns, err)
	}
	if !reflect.DeepEqual(cfg, cfg2) {
		t.Errorf("Load and Parse disagree")
	}
	if len(cfg.Services) != 2 {
		t.Fatalf("services: %d, want 2", len(cfg.Services))
	}
	w, r := cfg.Services[0], cfg.Services[1]
	vip := netip.MustParseAddr("10.0.0.100")
	if w.Key != (control.ServiceKey{VIP: vip, Port: 3306, Proto: control.TCP}) || r.Key != (control.ServiceKey{VIP: vip, Port: 3307, Proto: control.TCP}) {
		t.Errorf("keys: %v, %v", w.Key, r.Key)
	}
	if w.Persistence != 120*time.Second || w.Sorry == nil || w.Check.MySQL == nil || !w.Check.MySQL.Writable {
		t.Errorf("writer: %+v", w)
	}
	if r.Check.MySQL == nil || r.Check.MySQL.MaxReplicationLag != 10*time.Second || r.Quorum != 2 || r.Hysteresis != 1 {
		t.Errorf("reader: %+v", r)
	}
	var local int
	for _, rs := range r.RealServers {
		if rs.Local {
			local++
		}
	}
	if local != 1 || r.RealServers[0].Weight != 2 {
		t.Errorf("reader real servers: %+v", r.RealServers)
	}
	if err := w.Spec().Validate(); err != nil {
		t.Errorf("writer spec: %v", err)
	}
	if len(cfg.VRRP) != 1 {
		t.Fatalf("vrrp: %d instances, want 1", len(cfg.VRRP))
	}
	if v := cfg.VRRP[0]; v.Name != "VI_1" || v.VRID != 51 || v.Priority != 100 || v.AdvertInterval != time.Second || v.Preempt ||
		v.HasAuth() || len(v.VIPs) != 1 || v.VIPs[0] != vip {
		t.Errorf("vrrp: %+v", v)
	}
}

func TestValidDefaults(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want func(*Config) string // "" when fine
	}{
		{
			name: "minimal",
			yaml: `
interfaces: [ens33]
services:
  - vip: 10.0.0.100
    port: 3306
    real_servers:
      - address: 10.0.0.11
`,
			want: func(c *Config) string {
				if !reflect.DeepEqual(c.Interfaces, []string{"ens33"}) || c.Sizes != loader.DefaultSizes() ||
					c.Metrics != DefaultMetrics || c.HashSeed != 0 || len(c.Peers) != 0 {
					return fmt.Sprintf("top level: %+v", c)
				}
				s := c.Services[0]
				if s.Scheduler != "maglev" || s.Quorum != 1 || s.Hysteresis != 0 || s.Persistence != 0 || s.Sorry != nil || s.Key.Proto != control.TCP {
					return fmt.Sprintf("service: %+v", s)
				}
				ck := s.Check
				if ck.Type != CheckTCP || ck.Interval != 2*time.Second || ck.Timeout != time.Second || ck.Rise != 2 || ck.Fall != 3 ||
					ck.DRPath != nil || !ck.CheckDRPath() || ck.Drain || ck.MySQL != nil || ck.Exec != nil {
					return fmt.Sprintf("check: %+v", ck)
				}
				rs := s.RealServers[0]
				if rs.Weight != 1 || rs.Port != 0 || rs.Local || rs.Drain || rs.MAC != nil {
					return fmt.Sprintf("real server: %+v", rs)
				}
				return ""
			},
		},
		{
			name: "everything set",
			yaml: `
interfaces: [ens33, ens34]
maps: {services: 16, backends: 64, peers: 4, conntrack: 2048, persist: 1024, ring_size: 251}
hash_seed: 4294967295
metrics: "0.0.0.0:9447"
allow_remote_metrics: true
peers: ["02:00:00:00:00:02", "02-00-00-00-00-03"]
services:
  - name: all
    vip: fd00::100
    proto: UDP
    persistence: 300
    quorum: 3
    hysteresis: 2
    check:
      type: exec
      interval: 5s
      timeout: 4500ms
      rise: 1
      fall: 1
      dr_path: false
      drain: true
      exec: {command: [/usr/local/bin/check_slave.pl, --port, "3306"], dynamic: true}
    sorry_server: {address: "fd00::9", mac: "02:00:00:00:00:09"}
    real_servers:
      - {address: "fd00::1", weight: 65535, mac: "02:00:00:00:00:01", drain: true}
      - {address: "fd00::2", port: 3306, local: true}
`,
			want: func(c *Config) string {
				want := loader.Sizes{Services: 16, Backends: 64, Peers: 4, Conntrack: 2048, Persist: 1024, RingSize: 251}
				if c.Sizes != want || c.HashSeed != 1<<32-1 || c.Metrics != "0.0.0.0:9447" || len(c.Peers) != 2 || c.Peers[1].String() != "02:00:00:00:00:03" {
					return fmt.Sprintf("top level: %+v", c)
				}
				s := c.Services[0]
				if s.Name != "all" || s.Key.Proto != control.UDP || s.Key.Port != 0 || s.Persistence != 300*time.Second || s.Quorum != 3 || s.Hysteresis != 2 {
					return fmt.Sprintf("service: %+v", s)
				}
				ck := s.Check
				if ck.Type != CheckExec || ck.Interval != 5*time.Second || ck.Timeout != 4500*time.Millisecond || ck.CheckDRPath() || !ck.Drain ||
					ck.Exec == nil || !ck.Exec.Dynamic || len(ck.Exec.Command) != 3 || ck.Exec.Command[2] != "3306" {
					return fmt.Sprintf("check: %+v", ck)
				}
				if s.Sorry == nil || s.Sorry.Addr != netip.MustParseAddr("fd00::9") || s.Sorry.MAC.String() != "02:00:00:00:00:09" {
					return fmt.Sprintf("sorry: %+v", s.Sorry)
				}
				if r := s.RealServers; r[0].Weight != 65535 || !r[0].Drain || r[1].Port != 3306 || !r[1].Local {
					return fmt.Sprintf("real servers: %+v", r)
				}
				return ""
			},
		},
		{
			name: "localhost metrics and ipv6 loopback",
			yaml: `
interfaces: [eth0]
metrics: "[::1]:9000"
services:
  - {vip: 10.0.0.100, port: 3306, check: {type: none}, real_servers: [{address: 10.0.0.11}]}
  - {vip: 10.0.0.100, port: 3306, proto: udp, real_servers: [{address: 10.0.0.11}]}
`,
			want: func(c *Config) string {
				if c.Metrics != "[::1]:9000" || c.Services[0].Check.Type != CheckNone || len(c.Services) != 2 {
					return fmt.Sprintf("%+v", c)
				}
				return ""
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, warns, err := Parse([]byte(tt.yaml), "xdplb.yaml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(warns) != 0 {
				t.Errorf("warnings: %q", warns)
			}
			if msg := tt.want(cfg); msg != "" {
				t.Error(msg)
			}
		})
	}
}

// base is a valid file; the error cases below replace one of its lines.
const base = `interfaces: [ens33]
services:
  - name: writer
    vip: 10.0.0.100
    port: 3306
    persistence: 120s
    check:
      type: tcp
      interval: 2s
    real_servers:
      - address: 10.0.0.11
        weight: 1
      - address: 10.0.0.12
`

// withLine replaces line n (1-based) of base, keeping its indentation.
func withLine(n int, text string) string {
	lines := strings.Split(base, "\n")
	old := lines[n-1]
	indent := old[:len(old)-len(strings.TrimLeft(old, " "))]
	lines[n-1] = indent + text
	return strings.Join(lines, "\n")
}

type wantErr struct {
	line  int
	field string
	msg   string // substring of Msg
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []wantErr
	}{
		{"weight out of range", withLine(12, "weight: 70000"), []wantErr{{12, "services[0].real_servers[0].weight", "70000 is out of range 1..65535"}}},
		{"weight zero", withLine(12, "weight: 0"), []wantErr{{12, "services[0].real_servers[0].weight", "out of range"}}},
		{"weight not a number", withLine(12, "weight: heavy"), []wantErr{{12, "services[0].real_servers[0].weight", "want an integer"}}},
		{"unknown top key", withLine(1, "interface: [ens33]"), []wantErr{
			{1, "interface", "unknown key"}, {1, "interfaces", "missing"}}},
		{"unknown service key", withLine(5, "prot: 3306"), []wantErr{{5, "services[0].prot", "unknown key"}}},
		{"unknown check key", withLine(9, "delay_loop: 20"), []wantErr{{9, "services[0].check.delay_loop", "unknown key"}}},
		{"repeated key", withLine(6, "port: 3307"), []wantErr{{6, "services[0].port", "repeated key (first on line 5)"}}},
		{"bad vip", withLine(4, "vip: 10.0.0.300"), []wantErr{{4, "services[0].vip", `"10.0.0.300"`}}},
		{"multicast vip", withLine(4, "vip: 224.0.0.18"), []wantErr{{4, "services[0].vip", "multicast"}}},
		{"loopback real server", withLine(11, "- address: 127.0.0.1"), []wantErr{{11, "services[0].real_servers[0].address", "loopback"}}},
		{"duplicate real server", withLine(13, "- address: 10.0.0.11"), []wantErr{{13, "services[0].real_servers[1].address", "already real_servers[0]"}}},
		{"bad port", withLine(5, "port: 65536"), []wantErr{{5, "services[0].port", "out of range 0..65535"}}},
		{"bad proto", withLine(5, "proto: sctp"), []wantErr{{5, "services[0].proto", "want tcp or udp"}}},
		{"bad persistence", withLine(6, "persistence: 2 minutes"), []wantErr{{6, "services[0].persistence", "want a duration"}}},
		{"persistence over max", withLine(6, "persistence: 4294967296s"), []wantErr{{6, "services[0].persistence", "over the maximum"}}},
		{"persistence fraction", withLine(6, "persistence: 1500ms"), []wantErr{{6, "services[0].persistence", "whole seconds"}}},
		{"negative persistence", withLine(6, "persistence: -5s"), []wantErr{{6, "services[0].persistence", "negative"}}},
		{"ipvs scheduler", withLine(6, "scheduler: wrr"), []wantErr{{6, "services[0].scheduler", "maglev only"}}},
		{"unknown scheduler", withLine(6, "scheduler: fancy"), []wantErr{{6, "services[0].scheduler", "only scheduler is maglev"}}},
		{"bad interval", withLine(9, "interval: soon"), []wantErr{{9, "services[0].check.interval", "want a duration"}}},
		{"timeout not under interval", withLine(9, "timeout: 3s"), []wantErr{{9, "services[0].check.timeout", "less than the interval (2s)"}}},
		{"unknown check type", withLine(8, "type: http"), []wantErr{{8, "services[0].check.type", "unknown check type"}}},
		{"mysql without user", withLine(8, "type: mysql\n      mysql: {writable: true}"), []wantErr{{9, "services[0].check.mysql.user", "missing"}}},
		{"mysql block missing", withLine(8, "type: mysql"), []wantErr{{8, "services[0].check.mysql", "missing"}}},
		{"mysql options on tcp check", withLine(9, "mysql: {user: mon}"), []wantErr{{9, "services[0].check.mysql", "type is tcp"}}},
		{"exec options on mysql check", withLine(8, "type: mysql\n      mysql: {user: mon}\n      exec: {command: [/bin/true]}"), []wantErr{{10, "services[0].check.exec", "type is mysql"}}},
		{"exec without command", withLine(8, "type: exec\n      exec: {dynamic: true}"), []wantErr{{9, "services[0].check.exec.command", "missing"}}},
		{"exec command as shell string", withLine(8, "type: exec\n      exec: {command: /bin/check --x}"), []wantErr{{9, "services[0].check.exec.command", "want a list"}}},
		{"exec relative program", withLine(8, "type: exec\n      exec: {command: [check]}"), []wantErr{{9, "services[0].check.exec.command[0]", "absolute"}}},
		{"password two ways", withLine(8, "type: mysql\n      mysql:\n        user: mon\n        password: s3cret\n        password_env: PW"),
			[]wantErr{{12, "services[0].check.mysql.password_env", "given 2 ways"}}},
		{"bad mac", withLine(12, "mac: 01:00:5e:00:00:01"), []wantErr{{12, "services[0].real_servers[0].mac", "multicast"}}},
		{"unparsable mac", withLine(12, "mac: nope"), []wantErr{{12, "services[0].real_servers[0].mac", `"nope"`}}},
		{"bad peer", withLine(1, "interfaces: [ens33]\npeers: [\"00:00:00:00:00:00\"]"), []wantErr{{2, "peers[0]", "all zeros"}}},
		{"size out of range", withLine(1, "interfaces: [ens33]\nmaps:\n  conntrack: 10\n  ring_size: 65536"), []wantErr{
			{3, "maps.conntrack", "conntrack size 10"}, {4, "maps.ring_size", "prime"}}},
		{"remote metrics", withLine(1, "interfaces: [ens33]\nmetrics: 0.0.0.0:9447"), []wantErr{{2, "metrics", "loopback"}}},
		{"hysteresis not under quorum", withLine(6, "quorum: 2\n    hysteresis: 2"), []wantErr{{7, "services[0].hysteresis", "less than quorum (2)"}}},
		{"quorum over total weight", withLine(6, "quorum: 3"), []wantErr{{6, "services[0].quorum", "total weight"}}},
		{"real server port differs", withLine(12, "port: 3307"), []wantErr{{12, "services[0].real_servers[0].port", "direct routing"}}},
		{"sorry server is a real server", withLine(6, "sorry_server: {address: 10.0.0.12}"), []wantErr{{6, "services[0].sorry_server.address", "another machine"}}},
		{"sorry server weight", withLine(6, "sorry_server: {address: 10.0.0.9, weight: 2}"), []wantErr{{6, "services[0].sorry_server.weight", "unknown key"}}},
		{"no real servers", strings.SplitAfter(base, "      interval: 2s\n")[0], []wantErr{{3, "services[0].real_servers", "missing"}}},
		{"duplicate service", base + "  - vip: 10.0.0.100\n    port: 3306\n    real_servers: [{address: 10.0.0.13}]\n",
			[]wantErr{{14, "services[1]", "same service as services[0]"}}},
		{"duplicate name", base + "  - name: writer\n    vip: 10.0.0.100\n    port: 3307\n    real_servers: [{address: 10.0.0.13}]\n",
			[]wantErr{{14, "services[1].name", "already the name of services[0]"}}},
		{"not a mapping", withLine(13, "- 10.0.0.12"), []wantErr{{13, "services[0].real_servers[1]", "want a mapping"}}},
		{"port-0 service needs real server ports", withLine(5, "proto: tcp"), []wantErr{
			{3, "services[0].real_servers[0].port", "every port"}, {3, "services[0].real_servers[1].port", "every port"}}},
		{"empty file", "", []wantErr{{0, "", "empty"}}},
		// Go's parsers' texts (netip.ParseAddr, net.ParseMAC) are not shown: the message says what is wanted.
		{"vip with a field over 255", withLine(4, "vip: 10.99.0.1000"), []wantErr{{4, "services[0].vip", `"10.99.0.1000": want an IP address, like 10.0.0.100 or fd00::100`}}},
		{"vip a name", withLine(4, "vip: db.example.com"), []wantErr{{4, "services[0].vip", `"db.example.com": want an IP address, like 10.0.0.100 or fd00::100`}}},
		{"real server address not an address", withLine(11, "- address: 10.0.0.1111"), []wantErr{{11, "services[0].real_servers[0].address", `"10.0.0.1111": want an IP address, like 10.0.0.11 or fd00::11`}}},
		{"real server mac not a mac", withLine(12, "mac: 02:00:00:00:00"), []wantErr{{12, "services[0].real_servers[0].mac", `"02:00:00:00:00": want a MAC, six hex bytes like 02:00:00:00:00:0b`}}},
		{"peer not a mac", withLine(1, "interfaces: [ens33]\npeers: [zz]"), []wantErr{{2, "peers[0]", `"zz": want a MAC, six hex bytes like 02:00:00:00:00:0b`}}},
		{"sorry server not an address", withLine(6, "sorry_server: {address: 10.0.0.x}"), []wantErr{{6, "services[0].sorry_server.address", `"10.0.0.x": want an IP address`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := Parse([]byte(tt.yaml), "xdplb.yaml")
			if err == nil {
				t.Fatalf("no error; config %+v\n%s", cfg, tt.yaml)
			}
			if cfg != nil {
				t.Errorf("config returned with an error")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T %v, want *ValidationError", err, err)
			}
			if len(ve.Errors) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(ve.Errors), len(tt.want), err)
			}
			for i, w := range tt.want {
				g := ve.Errors[i]
				if g.Line != w.line || g.Field != w.field || !strings.Contains(g.Msg, w.msg) {
					t.Errorf("error %d: got %d %s %q, want %d %s ~%q", i, g.Line, g.Field, g.Msg, w.line, w.field, w.msg)
				}
				if w.line > 0 && !strings.Contains(err.Error(), fmt.Sprintf("xdplb.yaml:%d: %s: ", w.line, w.field)) {
					t.Errorf("Error() lacks file:line: field prefix:\n%v", err)
				}
				if leak := goErrorText(g.Msg); leak != "" {
					t.Errorf("error %d shows Go's text %q: %s", i, leak, g.Msg)
				}
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	_, _, err := Parse([]byte(withLine(12, "weight: 70000")), "xdplb.yaml")
	want := "xdplb.yaml:12: services[0].real_servers[0].weight: 70000 is out of range 1..65535"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestManyErrorsAtOnce(t *testing.T) {
	data := `interfaces: [ens33]
metrics: ":9447"
services:
  - vip: 10.0.0.300
    port: 3306
    bogus: 1
    persistence: forever
    check: {type: mysql, mysql: {password: hunter2, password_file: /x}}
    real_servers:
      - address: 10.0.0.11
        weight: 70000
      - address: 10.0.0.11
  - vip: 10.0.0.100
    port: 3306
    real_servers: [{address: 10.0.0.21, mac: "ff:ff:ff:ff:ff:ff"}]
`
	_, _, err := Parse([]byte(data), "xdplb.yaml")
	got := Errors(err)
	want := []wantErr{
		{2, "metrics", "loopback"},
		{4, "services[0].vip", "10.0.0.300"},
		{6, "services[0].bogus", "unknown key"},
		{7, "services[0].persistence", "want a duration"},
		{8, "services[0].check.mysql.user", "missing"},
		{8, "services[0].check.mysql.password_file", "given 2 ways"},
		{11, "services[0].real_servers[0].weight", "70000"},
		{15, "services[1].real_servers[0].mac", "broadcast"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		g := got[i]
		if g.Line != w.line || g.Field != w.field || !strings.Contains(g.Msg, w.msg) {
			t.Errorf("error %d: got %d %s %q, want %d %s ~%q", i, g.Line, g.Field, g.Msg, w.line, w.field, w.msg)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(want) {
		t.Errorf("Error() has %d lines, want %d:\n%v", n, len(want), err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("password in error:\n%v", err)
	}
}

const secret = "Sup3r-S3cret-pw"

func mysqlConfig(extra string) string {
	return `interfaces: [ens33]
services:
  - vip: 10.0.0.100
    port: 3306
    check:
      type: mysql
      mysql:
        user: monitor
` + extra + `
    real_servers: [{address: 10.0.0.11}]
`
}

func TestPasswordNeverPrinted(t *testing.T) {
	cfg, _, err := Parse([]byte(mysqlConfig("        password: "+secret)), "xdplb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Services[0].Check.MySQL
	if pw, err := m.Password(); err != nil || pw != secret {
		t.Fatalf("Password() = %q, %v", pw, err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		for _, v := range []any{cfg, *cfg, cfg.Services, cfg.Services[0], cfg.Services[0].Check, m, *m} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, secret) {
				t.Errorf("%s of %T shows the password: %s", verb, v, out)
			}
		}
	}
	if !strings.Contains(fmt.Sprint(*m), "<redacted>") {
		t.Errorf("String() = %s, want a redaction mark", m)
	}

	// Errors around the password never show it either.
	bad := []string{
		"        password: " + secret + "\n        password_env: PW",
		"        password: " + secret + "\n        pasword: " + secret,
		"        password: [" + secret + "]",
	}
	for _, b := range bad {
		_, _, err := Parse([]byte(mysqlConfig(b)), "xdplb.yaml")
		if err == nil {
			t.Errorf("no error for %q", b)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v", err), secret) {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestPasswordEnvIsLazy(t *testing.T) {
	const env = "XDPLB_TEST_MONITOR_PW"
	os.Unsetenv(env)
	cfg, _, err := Parse([]byte(mysqlConfig("        password_env: "+env)), "xdplb.yaml")
	if err != nil {
		t.Fatalf("an unset variable must not fail Parse: %v", err)
	}
	m := cfg.Services[0].Check.MySQL
	if _, err := m.Password(); err == nil || !strings.Contains(err.Error(), env) {
		t.Errorf("Password() with the variable unset: %v", err)
	}
	t.Setenv(env, secret)
	if pw, err := m.Password(); err != nil || pw != secret {
		t.Errorf("Password() = %q, %v", pw, err)
	}
	t.Setenv(env, "changed")
	if pw, _ := m.Password(); pw != "changed" {
		t.Errorf("Password() = %q after a change, want it read again", pw)
	}
	if strings.Contains(fmt.Sprintf("%+v", cfg), "changed") {
		t.Errorf("formatted config shows the password")
	}
}

func TestLoadWarnings(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	pwPrivate := write("private.pw", secret+"\n", 0o600)
	pwShared := write("shared.pw", secret+"\n", 0o644)

	tests := []struct {
		name  string
		extra string
		mode  os.FileMode
		warn  string // "" = no warning
	}{
		{"inline password, private file", "        password: " + secret, 0o600, ""},
		{"inline password, group-readable file", "        password: " + secret, 0o640, "readable by group or others"},
		{"inline password, world-readable file", "        password: " + secret, 0o644, "readable by group or others"},
		{"password file private", "        password_file: " + pwPrivate, 0o644, ""},
		{"password file readable by others", "        password_file: " + pwShared, 0o600, "shared.pw is readable by group or others"},
		{"password file missing", "        password_file: " + filepath.Join(dir, "none.pw"), 0o600, "no such file"},
		{"no password", "", 0o644, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := write(fmt.Sprintf("xdplb%d.yaml", i), mysqlConfig(tt.extra), tt.mode)
			cfg, warns, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.warn == "" && len(warns) != 0:
				t.Errorf("warnings %q, want none", warns)
			case tt.warn != "" && (len(warns) != 1 || !strings.Contains(warns[0], tt.warn)):
				t.Errorf("warnings %q, want one containing %q", warns, tt.warn)
			}
			for _, w := range warns {
				if strings.Contains(w, secret) {
					t.Errorf("warning shows the password: %s", w)
				}
			}
			if strings.Contains(tt.extra, "password_file") && tt.warn == "" {
				if pw, err := cfg.Services[0].Check.MySQL.Password(); err != nil || pw != secret {
					t.Errorf("Password() from file = %q, %v", pw, err)
				}
			}
		})
	}
	if _, _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("Load of a missing file: no error")
	}
	// The file is named, the system call (open, stat) is not; the cause is still there.
	missing := filepath.Join(dir, "missing.yaml")
	if _, _, err := Load(missing); err == nil || err.Error() != missing+": no such file or directory" || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v", err)
	}
	p := write("xdplb-missing-pw.yaml", mysqlConfig("        password_file: "+filepath.Join(dir, "none.pw")), 0o600)
	if _, warns, err := Load(p); err != nil || len(warns) != 1 || strings.Contains(warns[0], "stat ") ||
		!strings.HasSuffix(warns[0], ".password_file: "+filepath.Join(dir, "none.pw")+": no such file or directory") {
		t.Errorf("missing password_file: warnings %q, error %v", warns, err)
	}
}

// A password file that cannot be read is named, without the system call (open).
func TestPasswordFileMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.pw")
	cfg, _, err := Parse([]byte(mysqlConfig("        password_file: "+missing)), "xdplb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = cfg.Services[0].Check.MySQL.Password()
	if want := "mysql check password: " + missing + ": no such file or directory"; err == nil || err.Error() != want || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Password() = %v, want %s", err, want)
	}
	cfg, _, err = Parse([]byte(vrrpConfig("    version: 2\n    auth_pass_file: "+missing)), "xdplb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = cfg.VRRP[0].AuthPass()
	if want := "vrrp VI_1 auth_pass_file: " + missing + ": no such file or directory"; err == nil || err.Error() != want || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("AuthPass() = %v, want %s", err, want)
	}
}

func TestPeersAndMACs(t *testing.T) {
	cfg, _, err := Parse([]byte("interfaces: [ens33]\npeers: [\"02:00:00:00:00:0b\"]\n"+
		"services: [{vip: 10.0.0.100, port: 3306, real_servers: [{address: 10.0.0.11, mac: \"02:00:00:00:00:11\"}]}]\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := net.ParseMAC("02:00:00:00:00:0b")
	if len(cfg.Peers) != 1 || cfg.Peers[0].String() != want.String() {
		t.Errorf("peers %v", cfg.Peers)
	}
	if cfg.Services[0].RealServers[0].MAC.String() != "02:00:00:00:00:11" {
		t.Errorf("mac %v", cfg.Services[0].RealServers[0].MAC)
	}
}

// TestDirectorLease: the default follows the VRRP instances (3 × the longest
// Master_Down_Interval, at least 2 s), no VRRP means no lease, and a lease that would lapse before
// a Backup takes over is refused with the figures that make it wrong.
func TestDirectorLease(t *testing.T) {
	base := "interfaces: [ens33]\nservices: [{vip: 10.0.0.100, port: 3306, real_servers: [{address: 10.0.0.11}]}]\n"
	vrrp := func(interval string, prio int) string {
		return fmt.Sprintf("vrrp: [{name: a, interface: ens33, vrid: 51, priority: %d, advert_interval: %s, vips: [10.0.0.100]}]\n", prio, interval)
	}
	tests := []struct {
		name, yaml string
		want       time.Duration
		err        string
	}{
		{"no VRRP: none", base, 0, ""},
		{"no VRRP, set", base + "director_lease: 5s\n", 5 * time.Second, ""},
		// 3 × 1 s + (256-100)/256 s = 3.609375 s; × 3
		{"1 s adverts", base + vrrp("1s", 100), 3 * (3*time.Second + 609375*time.Microsecond), ""},
		// 3 × 100 ms + 156/256 × 100 ms = 360.9375 ms; × 3 = 1.08 s → the floor
		{"100 ms adverts: the floor", base + vrrp("100ms", 100), 2 * time.Second, ""},
		{"set above Master_Down_Interval", base + vrrp("1s", 100) + "director_lease: 4s\n", 4 * time.Second, ""},
		{"set below Master_Down_Interval", base + vrrp("1s", 100) + "director_lease: 3s\n", 0,
			"x.yaml:4: director_lease: 3s: want more than the longest VRRP Master_Down_Interval, 3.609375s (the data path would stop directing before the Backup takes over); leave it out for the default 10.828125s"},
		{"zero with VRRP", base + vrrp("1s", 100) + "director_lease: 0\n", 0, "x.yaml:4: director_lease: 0s: want more than"},
		{"negative", base + "director_lease: -1s\n", 0, "x.yaml:3: director_lease: -1s: must not be negative"},
		{"not a duration", base + "director_lease: soon\n", 0, `x.yaml:3: director_lease: "soon": want a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := Parse([]byte(tt.yaml), "x.yaml")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Lease(); got != tt.want {
				t.Errorf("lease %v, want %v", got, tt.want)
			}
		})
	}
}

func TestYAMLSyntaxError(t *testing.T) {
	_, _, err := Parse([]byte("interfaces: [ens33\n"), "xdplb.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "xdplb.yaml: ") {
		t.Errorf("got %v", err)
	}
	// yaml.v3's "yaml: line N:" prefix and libyaml's wording are not shown.
	for _, tt := range []struct{ yaml, want string }{
		{"interfaces: [ens33\n", "xdplb.yaml: line 1: not valid YAML: a [ list is not closed: want ] after its last item"},
		{"maps: {services: 16\n", "xdplb.yaml: line 1: not valid YAML: a { mapping is not closed: want } after its last key"},
		{"interfaces: [ens33]\nmaps:\n\tservices: 16\n", "xdplb.yaml: line 3: not valid YAML: a character that cannot start a value (YAML indents with spaces, not tabs"},
		{"metrics: host: 9447\n", `xdplb.yaml: not valid YAML: "key: value" where a value was wanted`},
		{"maps:\n  services: 16\n backends: 64\n", "xdplb.yaml: line 2: not valid YAML: a line is not indented like the keys around it"},
		{"metrics: \"127.0.0.1:9447\n", "xdplb.yaml: line 2: not valid YAML: the file ends inside a quoted value: close the quote"},
	} {
		_, _, err := Parse([]byte(tt.yaml), "xdplb.yaml")
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), " yaml: ") {
			t.Errorf("%q: got %v, want %s", tt.yaml, err, tt.want)
		}
	}
}

// goErrorText returns the first piece of a Go library's error text in s (a function name,
// strconv's, time's, net's or yaml.v3's wording), or "".
func goErrorText(s string) string {
	for _, t := range []string{"ParseAddr", "ParseMAC", "ParseUint", "ParseInt", "ParseDuration", "strconv.", "invalid syntax",
		"invalid MAC address", "time: ", "yaml: ", "cannot unmarshal", "!!str", "!!int", "open ", "stat "} {
		if strings.Contains(s, t) {
			return t
		}
	}
	return ""
}
