package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const shortSecret = "pAs5w0rd" // 8 bytes: the longest VRRPv2 password

// vrrpConfig is a valid file with one VRRP instance; extra lines (indented 4) are added to it.
// The instance starts on line 4.
func vrrpConfig(extra string) string {
	s := `interfaces: [eth0, eth1]
services: [{vip: 10.0.0.100, port: 3306, real_servers: [{address: 10.0.0.11}]}]
vrrp:
  - name: VI_1
    interface: eth0
    vrid: 51
    vips: [10.0.0.100]
`
	if extra != "" {
		s += extra + "\n"
	}
	return s
}

// vrrpReplace is vrrpConfig("") with old replaced by new once.
func vrrpReplace(old, new string) string {
	return strings.Replace(vrrpConfig(""), old, new, 1)
}

func TestVRRPDefaults(t *testing.T) {
	c, warns, err := Parse([]byte(vrrpConfig("")), "xdplb.yaml")
	if err != nil || len(warns) != 0 {
		t.Fatalf("Parse: %v %q", err, warns)
	}
	v := c.VRRP[0]
	if v.Name != "VI_1" || v.Interface != "eth0" || v.Version != 3 || v.VRID != 51 || v.Priority != 100 ||
		v.AdvertInterval != time.Second || !v.Preempt || v.PreemptDelay != 0 || v.HasAuth() || !v.PseudoHeader ||
		len(v.UnicastPeers) != 0 || len(v.VIPs) != 1 || v.Notify != nil || v.GARPRepeat != 5 || v.GARPDelay != 5*time.Second || v.PeerTimeout != 0 {
		t.Errorf("defaults: %+v", v)
	}
	// v2 with a password, unicast, an IPv4-mapped VIP (unmapped) and every timing key.
	c, _, err = Parse([]byte(vrrpConfig(`    version: 2
    priority: 90
    advert_interval: 2
    preempt: false
    preempt_delay: 1m
    auth_pass: `+shortSecret+`
    unicast_peers: [10.0.0.2]
    garp_repeat: 0
    garp_delay: 0
    peer_timeout: 250ms
  - {name: VI_2, interface: eth0, vrid: 51, vips: ["fd00::100"], advert_interval: 40950ms}
  - {name: VI_3, interface: eth1, vrid: 51, vips: ["::ffff:10.0.0.200"], advert_interval: 10ms, checksum_pseudo_header: false}`)), "xdplb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v = c.VRRP[0]
	if pw, err := v.AuthPass(); err != nil || pw != shortSecret || v.Version != 2 || v.Priority != 90 || v.AdvertInterval != 2*time.Second ||
		v.Preempt || v.PreemptDelay != time.Minute || v.UnicastPeers[0] != netip.MustParseAddr("10.0.0.2") || v.GARPRepeat != 0 || v.GARPDelay != 0 ||
		v.PeerTimeout != 250*time.Millisecond {
		t.Errorf("v2: %+v", v)
	}
	if c.VRRP[1].AdvertInterval != 40950*time.Millisecond || c.VRRP[2].PseudoHeader || c.VRRP[2].VIPs[0] != netip.MustParseAddr("10.0.0.200") {
		t.Errorf("v3: %+v", c.VRRP[1:])
	}
}

func TestVRRPErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string // the whole file
		want []wantErr
	}{
		{"repeated vrid", vrrpConfig("    vrid: 52"), []wantErr{{8, "vrrp[0].vrid", "repeated key (first on line 6)"}}},
		{"bad vrid", vrrpReplace("vrid: 51", "vrid: 256"), []wantErr{{6, "vrrp[0].vrid", "256 is out of range 1..255"}}},
		{"vrid zero", vrrpReplace("vrid: 51", "vrid: 0"), []wantErr{{6, "vrrp[0].vrid", "0 is out of range 1..255"}}},
		{"v2 with IPv6 VIP", vrrpConfig("    version: 2\n  - {name: VI_2, interface: eth0, version: 2, vrid: 52, vips: [\"fd00::100\"]}"),
			[]wantErr{{9, "vrrp[1].vips", "VRRPv2 is IPv4 only"}}},
		{"auth_pass on v3", vrrpConfig("    auth_pass: " + shortSecret), []wantErr{{8, "vrrp[0].auth_pass", "version is 3"}}},
		{"auth_pass_file on v3", vrrpConfig("    auth_pass_file: /etc/xdplb/vrrp.pw"), []wantErr{{8, "vrrp[0].auth_pass_file", "version is 3"}}},
		{"password over 8 bytes", vrrpConfig("    version: 2\n    auth_pass: " + shortSecret + "x"), []wantErr{{9, "vrrp[0].auth_pass", "9 bytes"}}},
		{"password two ways", vrrpConfig("    version: 2\n    auth_pass: x\n    auth_pass_file: /p"), []wantErr{{10, "vrrp[0].auth_pass_file", "2 ways"}}},
		{"relative password file", vrrpConfig("    version: 2\n    auth_pass_file: vrrp.pw"), []wantErr{{9, "vrrp[0].auth_pass_file", "absolute"}}},
		{"interval not a multiple of 10ms", vrrpConfig("    advert_interval: 105ms"), []wantErr{{8, "vrrp[0].advert_interval", "steps of 10ms"}}},
		{"v3 interval too long", vrrpConfig("    advert_interval: 41s"), []wantErr{{8, "vrrp[0].advert_interval", "10ms..40.95s"}}},
		{"v2 interval fraction", vrrpConfig("    version: 2\n    advert_interval: 1500ms"), []wantErr{{9, "vrrp[0].advert_interval", "whole seconds"}}},
		{"v2 interval too long", vrrpConfig("    version: 2\n    advert_interval: 256"), []wantErr{{9, "vrrp[0].advert_interval", "1s..255s"}}},
		{"duplicate vrid on one interface", vrrpConfig("  - {name: VI_2, interface: eth0, vrid: 51, vips: [10.0.0.101]}"),
			[]wantErr{{8, "vrrp[1].vrid", "already the vrid of vrrp[0] on eth0"}}},
		{"duplicate name", vrrpConfig("  - {name: VI_1, interface: eth1, vrid: 51, vips: [10.0.0.101]}"),
			[]wantErr{{8, "vrrp[1].name", "already the name of vrrp[0]"}}},
		{"unknown interface", vrrpConfig("  - {name: VI_2, interface: eth9, vrid: 52, vips: [10.0.0.101]}"),
			[]wantErr{{8, "vrrp[1].interface", "not one of interfaces [eth0 eth1]"}}},
		{"bad version", vrrpConfig("    version: 4"), []wantErr{{8, "vrrp[0].version", "out of range 2..3"}}},
		{"priority zero", vrrpConfig("    priority: 0"), []wantErr{{8, "vrrp[0].priority", "out of range 1..255"}}},
		{"mixed families", vrrpConfig("  - {name: VI_2, interface: eth0, vrid: 52, vips: [10.0.0.101, \"fd00::1\"]}"),
			[]wantErr{{8, "vrrp[1].vips[1]", "one address family per instance"}}},
		{"no vips", vrrpConfig("  - {name: VI_2, interface: eth0, vrid: 52, vips: []}"), []wantErr{{8, "vrrp[1].vips", "at least one"}}},
		{"missing vips", vrrpConfig("  - {name: VI_2, interface: eth0, vrid: 52}"), []wantErr{{8, "vrrp[1].vips", "missing"}}},
		{"multicast vip", vrrpConfig("  - {name: VI_2, interface: eth0, vrid: 52, vips: [224.0.0.18]}"), []wantErr{{8, "vrrp[1].vips[0]", "unicast"}}},
		{"unicast peer of another family", vrrpConfig("    unicast_peers: [\"fd00::2\"]"), []wantErr{{8, "vrrp[0].unicast_peers[0]", "family"}}},
		{"pseudo header on v2", vrrpConfig("    version: 2\n    checksum_pseudo_header: false"), []wantErr{{9, "vrrp[0].checksum_pseudo_header", "version is 2"}}},
		{"notify as shell string", vrrpConfig("    notify: /bin/notify MASTER"), []wantErr{{8, "vrrp[0].notify", "want a list"}}},
		{"notify relative", vrrpConfig("    notify: [notify.sh]"), []wantErr{{8, "vrrp[0].notify[0]", "absolute"}}},
		{"garp_repeat negative", vrrpConfig("    garp_repeat: -1"), []wantErr{{8, "vrrp[0].garp_repeat", "out of range 0..100"}}},
		{"unknown key", vrrpConfig("    nopreempt: true"), []wantErr{{8, "vrrp[0].nopreempt", "unknown key"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErrors(t, tt.src, tt.want)
		})
	}
}

func checkErrors(t *testing.T, src string, want []wantErr) {
	t.Helper()
	cfg, _, err := Parse([]byte(src), "xdplb.yaml")
	if err == nil {
		t.Fatalf("no error; config %+v\n%s", cfg, src)
	}
	got := Errors(err)
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v\n%s", len(got), len(want), err, src)
	}
	for i, w := range want {
		g := got[i]
		if g.Line != w.line || g.Field != w.field || !strings.Contains(g.Msg, w.msg) {
			t.Errorf("error %d: got %d %s %q, want %d %s ~%q", i, g.Line, g.Field, g.Msg, w.line, w.field, w.msg)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("xdplb.yaml:%d: %s: ", w.line, w.field)) {
			t.Errorf("Error() lacks file:line: field prefix:\n%v", err)
		}
		if leak := goErrorText(g.Msg); leak != "" {
			t.Errorf("error %d shows Go's text %q: %s", i, leak, g.Msg)
		}
	}
}

func TestVRRPPasswordNeverPrinted(t *testing.T) {
	cfg, _, err := Parse([]byte(vrrpConfig("    version: 2\n    auth_pass: "+shortSecret)), "xdplb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.VRRP[0]
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		for _, x := range []any{cfg, *cfg, cfg.VRRP, v, &v} {
			if out := fmt.Sprintf(verb, x); strings.Contains(out, shortSecret) {
				t.Errorf("%s of %T shows the password: %s", verb, x, out)
			}
		}
	}
	if !strings.Contains(fmt.Sprint(v), "<redacted>") {
		t.Errorf("String() = %s, want a redaction mark", v)
	}
	for _, bad := range []string{
		"    version: 2\n    auth_pass: " + shortSecret + "xyz",
		"    auth_pass: " + shortSecret,
		"    version: 2\n    auth_pass: [" + shortSecret + "]",
	} {
		_, _, err := Parse([]byte(vrrpConfig(bad)), "xdplb.yaml")
		if err == nil || strings.Contains(err.Error(), shortSecret) {
			t.Errorf("error for %q: %v", bad, err)
		}
	}
}

func TestVRRPAuthPassFile(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "vrrp.pw")
	if err := os.WriteFile(pw, []byte(shortSecret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(pw, 0o644)
	cfgPath := filepath.Join(dir, "xdplb.yaml")
	if err := os.WriteFile(cfgPath, []byte(vrrpConfig("    version: 2\n    auth_pass_file: "+pw)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, warns, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "vrrp[0].auth_pass_file") || !strings.Contains(warns[0], "readable by group or others") {
		t.Errorf("warnings %q", warns)
	}
	if got, err := cfg.VRRP[0].AuthPass(); err != nil || got != shortSecret {
		t.Errorf("AuthPass() = %q, %v", got, err)
	}
	os.WriteFile(pw, []byte("123456789\n"), 0o600)
	if _, err := cfg.VRRP[0].AuthPass(); err == nil || !strings.Contains(err.Error(), "at most 8") || strings.Contains(err.Error(), "123456789") {
		t.Errorf("AuthPass() of a 9-byte password: %v", err)
	}
}

// trackConfig has two named services and an unnamed one; the instance starts on line 7 and
// extra lines (indented 4) are added to it, from line 11.
func trackConfig(extra string) string {
	return `interfaces: [eth0]
services:
  - {name: writer, vip: 10.0.0.100, port: 3306, real_servers: [{address: 10.0.0.11}]}
  - {name: reader, vip: 10.0.0.101, port: 3306, real_servers: [{address: 10.0.0.12}]}
  - {vip: 10.0.0.102, port: 3306, real_servers: [{address: 10.0.0.13}]}
vrrp:
  - name: VI_1
    interface: eth0
    vrid: 51
    vips: [10.0.0.100]
` + extra + "\n"
}

func TestVRRPTrackServices(t *testing.T) {
	c, _, err := Parse([]byte(trackConfig("    track_services: [writer, reader]")), "xdplb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.VRRP[0].TrackServices; len(got) != 2 || got[0] != "writer" || got[1] != "reader" {
		t.Errorf("track_services = %q", got)
	}
	if s := c.VRRP[0].String(); !strings.Contains(s, "track_services:[writer reader]") {
		t.Errorf("String() = %s", s)
	}
	c, _, err = Parse([]byte(trackConfig("")), "xdplb.yaml")
	if err != nil || c.VRRP[0].TrackServices != nil {
		t.Errorf("no track_services: %v %q", err, c.VRRP[0].TrackServices)
	}

	// Round trip, a name that YAML would read as a number included.
	src := strings.Replace(trackConfig("    track_services:\n      - \"0x10\"\n      - writer"), "name: reader", `name: "0x10"`, 1)
	c, out := roundTrip(t, MarshalOptions{}, []byte(src))
	if got := c.VRRP[0].TrackServices; len(got) != 2 || got[0] != "0x10" || got[1] != "writer" {
		t.Errorf("track_services = %q", got)
	}
	if !strings.Contains(string(out), `track_services: ["0x10", writer]`) {
		t.Errorf("Marshal output:\n%s", out)
	}

	for _, tt := range []struct {
		name  string
		extra string
		want  []wantErr
	}{
		{"unknown service", "    track_services: [writer, mysql]",
			[]wantErr{{11, "vrrp[0].track_services[1]", `"mysql" is not the name of a service; the named services are [writer reader]`}}},
		{"unknown on its own line", "    track_services:\n      - reader\n      - writr",
			[]wantErr{{13, "vrrp[0].track_services[1]", `"writr" is not the name of a service`}}},
		{"a service's key is not its name", `    track_services: ["TCP 10.0.0.102:3306"]`,
			[]wantErr{{11, "vrrp[0].track_services[0]", "not the name of a service"}}},
		{"repeated", "    track_services: [writer, writer]", []wantErr{{11, "vrrp[0].track_services[1]", "already vrrp[0].track_services[0]"}}},
		{"not a list", "    track_services: writer", []wantErr{{11, "vrrp[0].track_services", "want a list"}}},
		{"not a name", "    track_services: [[writer]]", []wantErr{{11, "vrrp[0].track_services[0]", "want a single value"}}},
	} {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, trackConfig(tt.extra), tt.want) })
	}
	// No named service at all.
	checkErrors(t, vrrpConfig("    track_services: [writer]"), []wantErr{{8, "vrrp[0].track_services[0]", "no service has a name"}})
}
