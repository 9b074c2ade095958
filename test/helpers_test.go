//go:build linux

package test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// director is a node running the xdplb CLI against its own pin root.
type director struct {
	*netns.Node
	pinRoot string
}

// cli runs `xdplb --pin-root ROOT args...` in the director's network namespace (nsenter --net,
// so bpffs stays visible) and returns its output; the test fails if it exits non-zero.
func (d *director) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.cliErr(args...)
	if err != nil {
		t.Fatalf("expected `xdplb %s` to succeed, seen: %v", strings.Join(args, " "), err)
	}
	return out
}

func (d *director) cliErr(args ...string) (string, error) {
	return runCLI(d.NS, d.pinRoot, args...)
}

// runCLI runs `xdplb --pin-root pinRoot args...` in ns's network namespace.
func runCLI(ns *netns.NS, pinRoot string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return ns.Exec(ctx, xdplbBin, append([]string{"--pin-root", pinRoot}, args...)...)
}

// pinDir is where the CLI pins the maps of iface.
func (d *director) pinDir(iface string) string { return d.pinRoot + "/" + iface }

// bpftool runs bpftool with args (in the host namespace: it reads only bpffs).
func bpftool(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bpftool", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("expected `bpftool %s` to succeed, seen: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// dumpEntries runs `bpftool -j map dump pinned PATH` and returns each entry's key and value (or,
// for per-CPU maps, its per-CPU values) as bpftool formats them from BTF.
func dumpEntries(t *testing.T, path string) []bpftoolEntry {
	t.Helper()
	raw := bpftool(t, "-j", "map", "dump", "pinned", path)
	var entries []map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&entries); err != nil {
		t.Fatalf("`bpftool -j map dump pinned %s`: expected a JSON array, seen %v in %.300q", path, err, raw)
	}
	var out []bpftoolEntry
	for _, e := range entries {
		if f, ok := e["formatted"]; ok { // raw bytes plus the BTF view: use the BTF view
			e = nil
			if err := json.Unmarshal(f, &e); err != nil {
				t.Fatalf("bpftool dump of %s: formatted entry: %v", path, err)
			}
		}
		var be bpftoolEntry
		be.Key = decodeNumbers(t, e["key"])
		if v, ok := e["value"]; ok {
			be.Value = decodeNumbers(t, v)
		}
		if vs, ok := e["values"]; ok {
			var cpus []struct {
				CPU   int             `json:"cpu"`
				Value json.RawMessage `json:"value"`
			}
			if err := json.Unmarshal(vs, &cpus); err != nil {
				t.Fatalf("bpftool dump of %s: per-CPU values: %v", path, err)
			}
			for _, c := range cpus {
				be.PerCPU = append(be.PerCPU, decodeNumbers(t, c.Value))
			}
		}
		out = append(out, be)
	}
	return out
}

type bpftoolEntry struct {
	Key, Value any   // decoded JSON with json.Number
	PerCPU     []any // per-CPU maps
}

func decodeNumbers(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	if raw == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode bpftool JSON %.200q: %v", raw, err)
	}
	return v
}

// counters is the director's `stats` map summed over CPUs, by field name.
type counters map[string]uint64

// stats reads PINROOT/eth0/stats with bpftool, summing each named counter over CPUs.
func (d *director) stats(t *testing.T) counters {
	t.Helper()
	path := d.pinDir(netns.NodeLink) + "/stats"
	entries := dumpEntries(t, path)
	if len(entries) != 1 || len(entries[0].PerCPU) == 0 {
		t.Fatalf("bpftool dump of %s: expected one per-CPU entry, seen %d entries (%+v)", path, len(entries), entries)
	}
	c := counters{}
	for cpu, v := range entries[0].PerCPU {
		fields, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("bpftool dump of %s: expected named counter fields (BTF) for CPU %d, seen %v", path, cpu, v)
		}
		for name, x := range fields {
			c[name] += toUint(t, x)
		}
	}
	return c
}

// sub returns c - before, field by field.
func (c counters) sub(before counters) counters {
	d := counters{}
	for k, v := range c {
		d[k] = v - before[k]
	}
	return d
}

// String lists non-zero counters, sorted.
func (c counters) String() string {
	var parts []string
	for k, v := range c {
		if v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, " ") + "}"
}

// verdicts is the sum of the fields that count a verdict (tx, pass_*, drop_*): every packet
// increments exactly one of them.
func (c counters) verdicts() uint64 {
	var n uint64
	for k, v := range c {
		if k == "tx" || strings.HasPrefix(k, "pass_") || strings.HasPrefix(k, "drop_") {
			n += v
		}
	}
	return n
}

func toUint(t *testing.T, x any) uint64 {
	t.Helper()
	switch v := x.(type) {
	case json.Number:
		n, err := strconv.ParseUint(v.String(), 10, 64)
		if err != nil {
			t.Fatalf("bpftool value %q: expected an unsigned integer: %v", v, err)
		}
		return n
	case string: // "0x1f"
		n, err := strconv.ParseUint(v, 0, 64)
		if err != nil {
			t.Fatalf("bpftool value %q: expected an unsigned integer: %v", v, err)
		}
		return n
	}
	t.Fatalf("bpftool value %v (%T): expected a number", x, x)
	return 0
}

// toBytes turns a bpftool byte array (numbers or "0x.." strings) into bytes.
func toBytes(t *testing.T, x any) []byte {
	t.Helper()
	arr, ok := x.([]any)
	if !ok {
		t.Fatalf("bpftool value %v (%T): expected a byte array", x, x)
	}
	b := make([]byte, len(arr))
	for i, e := range arr {
		b[i] = byte(toUint(t, e))
	}
	return b
}

// backendMACs reads the used entries of PINROOT/eth0/backends: real server address → MAC.
func (d *director) backendMACs(t *testing.T) map[netip.Addr]net.HardwareAddr {
	t.Helper()
	path := d.pinDir(netns.NodeLink) + "/backends"
	out := map[netip.Addr]net.HardwareAddr{}
	for _, e := range dumpEntries(t, path) {
		v, ok := e.Value.(map[string]any)
		if !ok {
			t.Fatalf("bpftool dump of %s: expected named backend fields (BTF), seen %v", path, e.Value)
		}
		if toUint(t, v["flags"])&1 == 0 { // BE_F_USED
			continue
		}
		a, ok := netip.AddrFromSlice(toBytes(t, v["addr"]))
		if !ok {
			t.Fatalf("bpftool dump of %s: backend addr %v: expected 16 bytes", path, v["addr"])
		}
		out[a.Unmap()] = net.HardwareAddr(toBytes(t, v["mac"]))
	}
	return out
}

// tcpFrame is the part of an Ethernet/IPv4/TCP frame the tests look at.
type tcpFrame struct {
	SrcMAC, DstMAC net.HardwareAddr
	Src, Dst       netip.AddrPort
	Flags          uint8
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// parseTCP4 decodes an untagged Ethernet/IPv4/TCP frame; ok is false for anything else.
func parseTCP4(b []byte) (f tcpFrame, ok bool) {
	if len(b) < 14+20 || binary.BigEndian.Uint16(b[12:14]) != 0x0800 {
		return f, false
	}
	ip := b[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || ip[9] != 6 || len(ip) < ihl+14 {
		return f, false
	}
	src, _ := netip.AddrFromSlice(ip[12:16])
	dst, _ := netip.AddrFromSlice(ip[16:20])
	tcp := ip[ihl:]
	f.DstMAC = net.HardwareAddr(append([]byte(nil), b[0:6]...))
	f.SrcMAC = net.HardwareAddr(append([]byte(nil), b[6:12]...))
	f.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2]))
	f.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4]))
	f.Flags = tcp[13]
	return f, true
}
