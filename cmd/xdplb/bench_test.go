package main

import (
	"strings"
	"testing"
)

// TestBenchBadArgs: every bad combination is a usage error (exit 2) naming the problem, found
// before any section starts.
func TestBenchBadArgs(t *testing.T) {
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
		{[]string{"--iface", "eth0", "--iface-dst", "02:00:00:00:00:01", "--only", "dataplane"}, "throughput section"},
		{[]string{"extra"}, "extra"},
	} {
		r := runCLI(append([]string{"bench", "--no-results"}, tc.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("bench %v: want exit 2 with %q; got %v", tc.args, tc.want, r)
		}
	}
}
