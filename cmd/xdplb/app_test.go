package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/loader"
)

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func runCLI(args ...string) result {
	var out, errOut bytes.Buffer
	code := run(append([]string{"xdplb"}, args...), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

func TestHelp(t *testing.T) {
	r := runCLI("--help")
	if r.code != 0 {
		t.Fatalf("--help: %v", r)
	}
	for _, cmd := range []string{"attach", "detach", "service", "backend", "peer", "list", "version"} {
		if !regexp.MustCompile(`(?m)^\s+` + cmd + `\s`).MatchString(r.stdout) {
			t.Errorf("help lacks command %q:\n%s", cmd, r.stdout)
		}
	}
	for _, flag := range []string{"--pin-root", "XDPLB_PIN_ROOT", "--log-level"} {
		if !strings.Contains(r.stdout, flag) {
			t.Errorf("help lacks %s:\n%s", flag, r.stdout)
		}
	}
	for _, group := range []string{"service", "backend", "peer"} {
		r := runCLI(group, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "add") || !strings.Contains(r.stdout, "del") {
			t.Errorf("%s --help: %v", group, r)
		}
	}
	// --help after positional arguments shows the command's help too.
	for _, args := range [][]string{
		{"backend", "add", "--help"},
		{"backend", "add", "10.0.0.100:3306", "--help"},
	} {
		r := runCLI(args...)
		if r.code != 0 || !strings.Contains(r.stdout, "--mac") || !strings.Contains(r.stdout, "VIP[:PORT] ADDR") {
			t.Errorf("%s: %v", strings.Join(args, " "), r)
		}
	}
	if r := runCLI("list", "--help"); r.code != 0 || !strings.Contains(r.stdout, `"persistence_seconds"`) {
		t.Errorf("list --help does not document the JSON: %v", r)
	}
}

func TestVersion(t *testing.T) {
	r := runCLI("version")
	if r.code != 0 {
		t.Fatalf("version: %v", r)
	}
	for _, want := range []string{"xdplb dev\n", "go go1.", "cilium/ebpf "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("version output lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestUsageErrors needs no root: every one fails before the maps are touched.
func TestUsageErrors(t *testing.T) {
	root := filepath.Join(t.TempDir(), "pins")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing command"},
		{[]string{"frob"}, `unknown command "frob"`},
		{[]string{"service"}, "service: missing subcommand"},
		{[]string{"service", "frob"}, `unknown command "service frob"`},
		{[]string{"attach"}, "attach: missing IFACE"},
		{[]string{"attach", "eth0", "--mode", "turbo"}, `unknown XDP mode "turbo"`},
		{[]string{"attach", "eth0", "--ring-size", "100"}, "ring size 100: want a prime"},
		{[]string{"attach", "eth0", "--services", "0"}, "services size 0"},
		{[]string{"detach"}, "detach: missing IFACE"},
		{[]string{"service", "add"}, "service add: missing VIP[:PORT]"},
		{[]string{"service", "add", "10.0.0.300:3306"}, `bad VIP "10.0.0.300:3306": not an IP address`},
		{[]string{"service", "add", "10.0.0.100:70000"}, "port 70000 out of range"},
		{[]string{"service", "add", "10.0.0.100:x"}, `port "x" is not a number`},
		{[]string{"service", "add", "[10.0.0.100]:3306"}, "brackets are for IPv6"},
		{[]string{"service", "add", "[fd00::1"}, "missing ]"},
		{[]string{"service", "add", "224.0.0.1:5"}, "VIP 224.0.0.1 is multicast"},
		{[]string{"service", "add", "0.0.0.0:5"}, "unspecified"},
		{[]string{"service", "add", "10.0.0.100:3306", "--proto", "sctp"}, `unknown protocol "sctp": want tcp or udp`},
		{[]string{"service", "add", "10.0.0.100:3306", "--persistence", "4294967296"}, "--persistence 4294967296"},
		{[]string{"service", "add", "10.0.0.100:3306", "--bogus"}, "service add: unknown option --bogus"},
		{[]string{"service", "add", "--bogus", "10.0.0.100:3306"}, "service add: unknown option --bogus"},
		{[]string{"service", "add", "10.0.0.100:3306", "extra"}, `unexpected argument "extra"`},
		{[]string{"service", "del", "10.0.0.100:3306", "--proto", "icmp"}, `unknown protocol "icmp"`},
		{[]string{"backend", "add", "10.0.0.100:3306"}, "backend add: missing ADDR"},
		{[]string{"backend", "add"}, "backend add: missing VIP[:PORT] and ADDR"},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.1111"}, `bad real server address "10.0.0.1111"`},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.11", "--mac", "zz:zz"}, `bad MAC "zz:zz"`},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.11", "--mac", "ff:ff:ff:ff:ff:ff"}, "multicast or broadcast"},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.11", "--mac", "00:00:00:00:00:00"}, "all zeros"},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.11", "--mac", "02:00:00:00:00:00:00:01"}, "6 bytes"},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.11", "--mac"}, "option --mac needs a value"},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.11", "--weight", "0"}, "--weight 0 needs --drain"},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.11", "--weight", "70000"}, "--weight 70000"},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.11", "--weight", "abc"}, `bad value "abc" for --weight`},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.11", "--weight", "abc"}, `bad value "abc" for --weight: want a whole number, 0 or more, like 3`},
		{[]string{"backend", "add", "--weight", "abc", "10.0.0.100:3306", "10.0.0.11"}, `backend add: bad value "abc" for --weight: want a whole number, 0 or more, like 3`},
		{[]string{"service", "add", "10.0.0.100:3306", "--persistence", "-1"}, `bad value "-1" for --persistence: want a whole number, 0 or more`},
		{[]string{"service", "add", "--persistence", "1m", "10.0.0.100:3306"}, `bad value "1m" for --persistence: want a whole number, 0 or more`},
		{[]string{"backend", "add", "10.0.0.100:3306", "10.0.0.11", "--drain=maybe"}, `bad value "maybe" for --drain: want true or false`},
		{[]string{"list", "--stats=maybe"}, `list: bad value "maybe" for --stats: want true or false`},
		{[]string{"backend", "add", "10.0.0.100:3306", "fd00::11", "--mac", "02:00:00:00:00:0b"}, "different IP versions"},
		{[]string{"backend", "add", "10.0.0.100:3306", "127.0.0.1", "--mac", "02:00:00:00:00:0b"}, "loopback"},
		{[]string{"backend", "del", "10.0.0.100:3306"}, "backend del: missing ADDR"},
		{[]string{"peer", "add"}, "peer add: missing MAC"},
		{[]string{"peer", "add", "01:00:5e:00:00:01"}, "multicast or broadcast"},
		{[]string{"peer", "del", "nope"}, `bad MAC "nope"`},
		{[]string{"list", "extra"}, `unexpected argument "extra"`},
		{[]string{"list", "--iface"}, "list: option --iface needs a value"},
		{[]string{"--log-level", "loud", "list"}, `bad --log-level "loud"`},
	} {
		r := runCLI(append([]string{"--pin-root", root}, tc.args...)...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, "xdplb: ") || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("xdplb %s: want exit 2 and an error containing %q, got %v", strings.Join(tc.args, " "), tc.want, r)
		}
		if leak := goErrorText(r.stderr); leak != "" {
			t.Errorf("xdplb %s: the error shows Go's text %q: %s", strings.Join(tc.args, " "), leak, r.stderr)
		}
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("usage errors touched the pin root %s: %v", root, err)
	}
}

// goErrorText returns the first piece of a Go library's error text in s (a function name,
// strconv's or the flag package's wording), or "".
func goErrorText(s string) string {
	for _, t := range []string{"ParseAddr", "ParseMAC", "ParseUint", "ParseInt", "ParseDuration", "strconv.", "invalid syntax",
		"parse error", "invalid MAC address", "time: ", "for flag -", "invalid boolean"} {
		if strings.Contains(s, t) {
			return t
		}
	}
	return ""
}

func TestParseVIPPort(t *testing.T) {
	for _, tc := range []struct {
		in       string
		addr     string
		port     uint16
		wantFail bool
	}{
		{in: "10.0.0.100:3306", addr: "10.0.0.100", port: 3306},
		{in: "10.0.0.100", addr: "10.0.0.100"},
		{in: "10.0.0.100:0", addr: "10.0.0.100"},
		{in: "10.0.0.100:65535", addr: "10.0.0.100", port: 65535},
		{in: "fd00::1", addr: "fd00::1"},
		{in: "[fd00::1]:3306", addr: "fd00::1", port: 3306},
		{in: "[fd00::1]", addr: "fd00::1"},
		{in: "::ffff:10.0.0.1", addr: "10.0.0.1"},
		{in: "10.0.0.100:65536", wantFail: true},
		{in: "10.0.0.100:", wantFail: true},
		{in: "[fd00::1]3306", wantFail: true},
		{in: "host:3306", wantFail: true},
		{in: "", wantFail: true},
	} {
		a, p, err := parseVIPPort(tc.in)
		if tc.wantFail {
			if err == nil {
				t.Errorf("%q: parsed as %s %d, want an error", tc.in, a, p)
			}
			continue
		}
		if err != nil || a.String() != tc.addr || p != tc.port {
			t.Errorf("%q: %s %d %v, want %s %d", tc.in, a, p, err, tc.addr, tc.port)
		}
	}
}

func TestHoistGlobals(t *testing.T) {
	got := hoistGlobals([]string{"xdplb", "list", "--pin-root", "/x", "--stats", "--log-level=debug", "--", "--pin-root"})
	want := []string{"xdplb", "--pin-root", "/x", "--log-level=debug", "list", "--stats", "--", "--pin-root"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestHuman(t *testing.T) {
	for n, want := range map[uint64]string{0: "0", 99999: "99999", 100000: "100K", 1234567: "1.2M", 98765432109: "98.8G"} {
		if got := human(n); got != want {
			t.Errorf("human(%d) = %q, want %q", n, got, want)
		}
	}
}

// netNS runs functions on one thread inside a new network namespace; the thread is never
// returned to the scheduler, so nothing else ever runs in the namespace.
type netNS struct {
	do chan func()
}

func newNetNS(t *testing.T) *netNS {
	t.Helper()
	ns := &netNS{do: make(chan func())}
	ready := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		h, err := netns.New()
		ready <- err
		if err != nil {
			return
		}
		defer h.Close()
		for f := range ns.do {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { close(ns.do) })
	return ns
}

func (ns *netNS) Do(f func()) {
	done := make(chan struct{})
	ns.do <- func() { defer close(done); f() }
	<-done
}

// addTestLink adds an interface to attach to: a dummy, or a veth pair where the kernel has no
// dummy driver.
func addTestLink(name string) error {
	err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}})
	if err != nil {
		err = netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"})
	}
	if err != nil {
		return fmt.Errorf("add test interface %s: %w", name, err)
	}
	for _, n := range []string{name, name + "p"} {
		if l, err := netlink.LinkByName(n); err == nil {
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
	}
	return nil
}

func TestCLIRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (BPF, XDP, network namespaces): run `sudo go test ./cmd/xdplb/`")
	}
	rnd := make([]byte, 4)
	rand.Read(rnd)
	root := "/sys/fs/bpf/xdplb-test-" + hex.EncodeToString(rnd)
	const iface = "xlbt0"
	ns := newNetNS(t)
	t.Cleanup(func() {
		if _, err := os.Stat(loader.PinDir(root, iface)); err == nil {
			if err := loader.Detach(root, iface); err != nil {
				t.Errorf("cleanup: detach: %v", err)
			}
		}
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	var err error
	ns.Do(func() { err = addTestLink(iface) })
	if err != nil {
		t.Fatal(err)
	}

	cli := func(args ...string) result {
		t.Helper()
		var r result
		ns.Do(func() { r = runCLI(append([]string{"--pin-root", root}, args...)...) })
		return r
	}
	ok := func(args ...string) string {
		t.Helper()
		r := cli(args...)
		if r.code != 0 {
			t.Fatalf("xdplb %s: %v", strings.Join(args, " "), r)
		}
		return r.stdout
	}
	fails := func(code int, want string, args ...string) {
		t.Helper()
		r := cli(args...)
		if r.code != code || !strings.Contains(r.stderr, want) {
			t.Fatalf("xdplb %s: want exit %d and an error containing %q, got %v", strings.Join(args, " "), code, want, r)
		}
	}

	fails(1, "nothing is attached: run `xdplb attach IFACE` first", "service", "add", "10.0.0.100:3306")
	fails(1, `no such interface "xlbt9"`, "attach", "xlbt9")
	sizes := []string{"--services", "8", "--backends", "16", "--peers", "4", "--conntrack", "1024", "--persist", "1024", "--ring-size", "251", "--hash-seed", "9"}
	out := ok(append([]string{"attach", iface, "--mode", "generic"}, sizes...)...)
	if want := fmt.Sprintf("attached to %s in generic mode (maps pinned in %s/%s)\n", iface, root, iface); out != want {
		t.Fatalf("attach said %q, want %q", out, want)
	}
	// Again, without the size options: the pinned sizes are kept.
	if out := ok("attach", iface, "--mode", "generic"); !strings.Contains(out, "program replaced, 0 tracked flows kept") {
		t.Fatalf("second attach said %q", out)
	}

	ok("service", "add", "10.0.0.100:3306", "--persistence", "120")
	ok("service", "add", "[fd00::100]:53", "--proto", "udp")
	if out := ok("backend", "add", "10.0.0.100:3306", "10.0.0.11", "--mac", "02:00:00:00:00:0b"); !strings.Contains(out, "added backend 10.0.0.11") {
		t.Fatalf("backend add said %q", out)
	}
	ok("backend", "add", "10.0.0.100:3306", "10.0.0.12", "--local", "--iface", iface)
	ok("backend", "add", "10.0.0.100:3306", "10.0.0.13", "--mac", "02:00:00:00:00:0d", "--weight", "0", "--drain")
	if out := ok("backend", "add", "10.0.0.100:3306", "10.0.0.11", "--mac", "02:00:00:00:00:0b", "--weight", "2"); !strings.Contains(out, "updated backend 10.0.0.11") {
		t.Fatalf("backend update said %q", out)
	}
	ok("backend", "add", "[fd00::100]:53", "fd00::11", "--proto", "udp", "--mac", "02:00:00:00:00:1b")
	ok("peer", "add", "02:00:00:00:00:aa")
	fails(1, "no MAC for 10.0.0.99 on xlbt0: is it on the same L2 segment? pass --mac", "backend", "add", "10.0.0.100:3306", "10.0.0.99")
	fails(1, "service TCP 10.0.0.100:80: not found", "backend", "add", "10.0.0.100:80", "10.0.0.11", "--mac", "02:00:00:00:00:0b")

	// list, shaped like ipvsadm -Ln.
	out = ok("list")
	// On a veth (the test link where the kernel has no dummy driver) generic mode says why.
	header := regexp.MustCompile(`^xdplb on xlbt0: generic mode, program id \d+( \(veth peer \S+ has no XDP program: native mode would drop the forwarded frames\))?, ring size 251, hash seed 9\n`)
	if !header.MatchString(out) {
		t.Fatalf("list header:\n%s", out)
	}
	for _, line := range []string{
		"Prot LocalAddress:Port           Scheduler Flags",
		"  -> RemoteAddress               Weight  MAC                Flags",
		"TCP  10.0.0.100:3306             maglev    persistent 120",
		"  -> 10.0.0.11                   2       02:00:00:00:00:0b",
		"  -> 10.0.0.12                   1       -                  local",
		"  -> 10.0.0.13                   0       02:00:00:00:00:0d  draining",
		"UDP  [fd00::100]:53              maglev",
		"  -> fd00::11                    1       02:00:00:00:00:1b",
		"  02:00:00:00:00:aa",
	} {
		if !slices.Contains(strings.Split(out, "\n"), line) {
			t.Errorf("list lacks the line %q:\n%s", line, out)
		}
	}

	// list --json parses back into the snapshot.
	var js struct {
		Interfaces []control.State `json:"interfaces"`
	}
	if err := json.Unmarshal([]byte(ok("list", "--json")), &js); err != nil {
		t.Fatalf("list --json: %v", err)
	}
	if len(js.Interfaces) != 1 {
		t.Fatalf("list --json: %d interfaces", len(js.Interfaces))
	}
	st := js.Interfaces[0]
	if st.Iface != iface || st.Mode != "generic" || st.ProgramID == 0 || st.RingSize != 251 || st.HashSeed != 9 || len(st.Services) != 2 || len(st.Peers) != 1 {
		t.Fatalf("list --json: %+v", st)
	}
	if s := st.Services[0]; s.Key.String() != "TCP 10.0.0.100:3306" || s.Persistence.Seconds() != 120 || len(s.Backends) != 3 ||
		s.Backends[0].MAC.String() != "02:00:00:00:00:0b" || s.Backends[0].Weight != 2 || !s.Backends[1].Local || !s.Backends[2].Draining {
		t.Fatalf("list --json service: %+v", s)
	}

	// list --stats, shaped like ipvsadm -Ln --stats, with peers and counters.
	out = ok("list", "--stats")
	for _, want := range []string{"Conns   InPkts  InBytes", "TCP  10.0.0.100:3306", "  -> 10.0.0.11", "02:00:00:00:00:aa", "Counters:\n  packets "} {
		if !strings.Contains(out, want) {
			t.Errorf("list --stats lacks %q:\n%s", want, out)
		}
	}
	for _, c := range (control.Counters{}).List() {
		if !regexp.MustCompile(`(?m)^  ` + c.Name + ` +\d+$`).MatchString(out) {
			t.Errorf("list --stats lacks counter %s:\n%s", c.Name, out)
		}
	}

	// Deletes, then detach.
	ok("backend", "del", "10.0.0.100:3306", "10.0.0.11")
	fails(1, "backend 10.0.0.11 of TCP 10.0.0.100:3306: not found", "backend", "del", "10.0.0.100:3306", "10.0.0.11")
	ok("peer", "del", "02:00:00:00:00:aa")
	fails(1, "not found", "peer", "del", "02:00:00:00:00:aa")
	ok("service", "del", "10.0.0.100:3306")
	ok("service", "del", "[fd00::100]:53", "--proto", "udp")
	fails(1, "not found", "service", "del", "10.0.0.100:3306")
	if out := ok("list"); strings.Contains(out, "10.0.0.100") {
		t.Fatalf("list after deletes:\n%s", out)
	}
	ok("detach", iface)
	if _, err := os.Stat(loader.PinDir(root, iface)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin dir after detach: %v", err)
	}
	fails(1, "not attached", "detach", iface)
	fails(1, "nothing is attached", "list")
}

// TestHelpPlaceholders: urfave/cli takes the first `backquoted` word of a flag's usage as its
// placeholder; a usage quoting a command once printed `--status-socket xdplb list`. Every flag
// of every command shows "value" or an upper-case placeholder.
func TestHelpPlaceholders(t *testing.T) {
	flagLine := regexp.MustCompile(`(?m)^\s+(--[a-z][a-z0-9-]*)(?:, -\w+)? (\S+(?: \S+)*?)\s{2,}`)
	for _, args := range [][]string{
		{"--help"}, {"attach", "--help"}, {"detach", "--help"}, {"service", "add", "--help"}, {"service", "del", "--help"},
		{"backend", "add", "--help"}, {"backend", "del", "--help"}, {"peer", "add", "--help"}, {"list", "--help"},
		{"run", "--help"}, {"reload", "--help"}, {"realserver", "up", "--help"}, {"realserver", "down", "--help"}, {"bench", "--help"},
	} {
		r := runCLI(args...)
		if r.code != 0 {
			t.Errorf("%v: %v", args, r)
			continue
		}
		opts := r.stdout[max(strings.Index(r.stdout, "OPTIONS:"), 0):]
		for _, m := range flagLine.FindAllStringSubmatch(opts, -1) {
			if !regexp.MustCompile(`^(value|[A-Z][A-Z0-9_]*)( \[ --[a-z-]+ (value|[A-Z][A-Z0-9_]*) \])?$`).MatchString(m[2]) {
				t.Errorf("xdplb %s: flag %s shows placeholder %q", strings.Join(args, " "), m[1], m[2])
			}
		}
	}
}
