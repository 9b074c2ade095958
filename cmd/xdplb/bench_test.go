package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBenchBadArgs: every bad combination is a usage error (exit 2) naming the problem, found
// before any section starts.
func TestBenchBadArgs(t *testing.T) {
	existing := filepath.Join(t.TempDir(), "old.json")
	if err := os.WriteFile(existing, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--only", "nosuch"}, `unknown section "nosuch"`},
		{[]string{"--only", "dataplane,bogus"}, `unknown section "bogus"`},
		{[]string{"--dataplane=false", "--control-plane=false", "--scaling=false", "--failover=false",
			"--vrrp-load=false", "--throughput=false", "--sysbench=false"}, "no section left"},
		{[]string{"--rounds", "0"}, "--rounds"},
		{[]string{"--repeat", "10"}, "--repeat"},
		{[]string{"--throughput-duration", "-1s"}, "--throughput-duration"},
		{[]string{"--failover-rounds", "0"}, "--failover-rounds"},
		{[]string{"--iface", "eth0"}, "--iface-dst"},
		{[]string{"--iface-dst", "02:00:00:00:00:01"}, "--iface-dst needs --iface"},
		{[]string{"--iface", "eth0", "--iface-dst", "zz"}, "--iface-dst"},
		{[]string{"--iface", "eth0", "--iface-dst", "zz"}, `bad --iface-dst "zz": want a MAC, six hex bytes like 02:00:00:00:00:0b`},
		{[]string{"--rounds", "x"}, `bad value "x" for --rounds: want a whole number, like 3`},
		{[]string{"--throughput-duration", "3"}, `bad value "3" for --throughput-duration: want a duration with its unit, like 3s`},
		{[]string{"--dataplane=maybe"}, `bad value "maybe" for --dataplane: want true or false`},
		{[]string{"--iface", "eth0", "--iface-dst", "02:00:00:00:00:01", "--only", "dataplane"}, "throughput section"},
		{[]string{"extra"}, "extra"},
		{[]string{"--out", existing}, "--out " + existing + " exists: results are never overwritten"},
		{[]string{"--out", "x.json", "--results-dir", "d"}, "--out and --results-dir"},
	} {
		r := runCLI(append([]string{"bench", "--no-results"}, tc.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("bench %v: want exit 2 with %q; got %v", tc.args, tc.want, r)
		}
		if leak := goErrorText(r.stderr); leak != "" {
			t.Errorf("bench %v: the error shows Go's text %q: %s", tc.args, leak, r.stderr)
		}
	}
}

// TestBenchQuickSections runs the in-kernel sections end to end through the CLI (root): every
// data-path case and profile row is there with the verdict it must have, the sections' results
// are in the JSON on stdout and in the results file, with the machine header.
func TestBenchQuickSections(t *testing.T) {
	// No --out: the results go to ./xdplb-bench-<date>.json of the current directory, never
	// into a bench/ tree there (it used to write bench/results/<date>.json wherever it ran).
	dir := t.TempDir()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	r := runCLI("bench", "--quick", "--only", "scaling,dataplane,control-plane", "--rounds", "1", "--repeat", "2000000", "--json")
	if r.code != 0 {
		t.Fatalf("bench: %v", r)
	}
	var out struct {
		Dataplane []struct {
			Name    string  `json:"name"`
			Verdict string  `json:"verdict"`
			Ns      float64 `json:"ns_per_packet"`
			Ratio   float64 `json:"ratio_to_swap_mac_tx"`
			Profile string  `json:"profile_step"`
		} `json:"dataplane"`
		Maglev  []json.RawMessage `json:"maglev"`
		Scaling []struct {
			Series string  `json:"series"`
			Ns     float64 `json:"ns_per_packet"`
		} `json:"scaling"`
		Sections []string `json:"sections_run"`
		Elapsed  struct {
			Sections []struct{ Section string } `json:"sections"`
		} `json:"elapsed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	if want := []string{"dataplane", "control-plane", "scaling"}; !slices.Equal(out.Sections, want) {
		t.Errorf("sections run %v, want %v (the usual order)", out.Sections, want)
	}
	if len(out.Elapsed.Sections) != 3 {
		t.Errorf("elapsed: %+v, want one entry per section", out.Elapsed)
	}
	verdicts := map[string]string{}
	profile := 0
	for _, d := range out.Dataplane {
		if d.Ns <= 0 || d.Ratio <= 0 {
			t.Errorf("%s: %v ns, ratio %v: want positive", d.Name, d.Ns, d.Ratio)
		}
		if d.Profile != "" {
			profile++
			if d.Verdict != "TX" {
				t.Errorf("profile row %q: verdict %s, want TX (the conntrack-hit path)", d.Name, d.Verdict)
			}
			continue
		}
		verdicts[d.Name] = d.Verdict
	}
	for name, want := range map[string]string{
		"xdplb: conntrack hit": "TX", "xdplb: peer pass": "PASS", "xdplb: non-VIP pass": "PASS",
		"xdplb: drop, no backend": "DROP", "xdplb: new flow (Maglev + conntrack insert)": "TX",
	} {
		if verdicts[name] != want {
			t.Errorf("%s: verdict %q, want %s (rows: %v)", name, verdicts[name], want, verdicts)
		}
	}
	if profile != 5 {
		t.Errorf("%d profile rows, want 5", profile)
	}
	if len(out.Maglev) == 0 || len(out.Scaling) == 0 {
		t.Errorf("maglev %d rows, scaling %d rows: want both", len(out.Maglev), len(out.Scaling))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	want := filepath.Join(dir, "xdplb-bench-"+time.Now().Format("2006-01-02")+".json")
	if len(files) != 1 || files[0] != want || !strings.Contains(r.stderr, "xdplb-bench-") {
		t.Fatalf("expected only %s in the current directory, seen %v; stderr %q should name it", want, files, r.stderr)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Header struct {
			Kernel string `json:"kernel"`
			Mode   string `json:"mode"`
			Go     string `json:"go"`
		} `json:"header"`
		Results map[string]json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatalf("%s: %v", files[0], err)
	}
	if file.Header.Kernel == "" || file.Header.Mode != "quick" || file.Header.Go == "" || file.Results["dataplane"] == nil {
		t.Errorf("%s: header %+v, sections %d: want kernel, go, mode quick and the dataplane section", files[0], file.Header, len(file.Results))
	}
}
