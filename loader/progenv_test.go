package loader_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/testbed/packet"
	"github.com/xdplb/xdplb/loader"
)

// XDP verdicts (enum xdp_action).
const (
	xdpAborted = 0
	xdpDrop    = 1
	xdpPass    = 2
	xdpTX      = 3
)

func actionName(a uint32) string {
	switch a {
	case xdpAborted:
		return "XDP_ABORTED"
	case xdpDrop:
		return "XDP_DROP"
	case xdpPass:
		return "XDP_PASS"
	case xdpTX:
		return "XDP_TX"
	}
	return fmt.Sprintf("XDP_%d", a)
}

// testRingSize keeps the Maglev rings small; the program only needs it to be prime.
const testRingSize = 13

// testSizes are small maps: a fresh load per test case stays cheap.
func testSizes() loader.Sizes {
	s := loader.DefaultSizes()
	s.Services = 32
	s.Backends = 64
	s.Peers = 4
	s.Conntrack = 1024
	s.Persist = 1024
	s.RingSize = testRingSize
	return s
}

// progEnv is the XDP program loaded with fresh, unpinned maps, driven with BPF_PROG_TEST_RUN.
type progEnv struct {
	tb testing.TB
	o  *loader.Objects
}

func newProgEnv(tb testing.TB, opts ...loader.LoadOption) *progEnv {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: BPF_PROG_TEST_RUN")
	}
	o, err := loader.Load(testSizes(), 0x5eed, opts...)
	if errors.Is(err, os.ErrPermission) || errors.Is(err, loader.ErrNotRoot) {
		tb.Skipf("needs root: BPF_PROG_TEST_RUN: %v", err)
	}
	if err != nil {
		tb.Fatalf("load: %+v", err)
	}
	tb.Cleanup(func() { o.Close() })
	return &progEnv{tb: tb, o: o}
}

// run runs the program once on a copy of in and returns the verdict and the frame after it.
func (e *progEnv) run(in []byte) (uint32, []byte, error) {
	opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
	action, err := e.o.Program.Run(opts)
	if err != nil {
		return action, nil, err
	}
	return action, opts.DataOut, nil
}

func (e *progEnv) mustRun(in []byte) (uint32, []byte) {
	e.tb.Helper()
	action, out, err := e.run(in)
	if err != nil {
		e.tb.Fatalf("run %d-byte frame: %v", len(in), err)
	}
	return action, out
}

// counters sums the per-CPU verdict counters.
func (e *progEnv) counters() loader.Counters {
	e.tb.Helper()
	var per []loader.Counters
	if err := e.o.Stats.Lookup(uint32(0), &per); err != nil {
		e.tb.Fatalf("read stats: %v", err)
	}
	var sum loader.Counters
	for _, c := range per {
		sum = addCounters(sum, c, 1)
	}
	return sum
}

// traffic sums one per-CPU svc_stats or backend_stats entry.
func (e *progEnv) traffic(m *ebpf.Map, id uint32) loader.Traffic {
	e.tb.Helper()
	var per []loader.Traffic
	if err := m.Lookup(id, &per); err != nil {
		e.tb.Fatalf("read traffic %d: %v", id, err)
	}
	var sum loader.Traffic
	for _, t := range per {
		sum.Packets += t.Packets
		sum.Bytes += t.Bytes
		sum.NewFlows += t.NewFlows
	}
	return sum
}

// addService adds a service and counts it in vips, as the control plane does.
func (e *progEnv) addService(vip netip.Addr, port uint16, proto uint8, svc loader.Service) {
	e.tb.Helper()
	key := loader.ServiceKey{Addr: loader.Addr16(vip), Port: port, Proto: proto}
	if err := e.o.Services.Put(key, svc); err != nil {
		e.tb.Fatalf("put service %v:%d/%d: %v", vip, port, proto, err)
	}
	var v loader.VIP
	if err := e.o.VIPs.Lookup(loader.Addr16(vip), &v); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		e.tb.Fatalf("read vip %v: %v", vip, err)
	}
	v.Services++
	if err := e.o.VIPs.Put(loader.Addr16(vip), v); err != nil {
		e.tb.Fatalf("put vip %v: %v", vip, err)
	}
}

// updateService rewrites an existing service's value.
func (e *progEnv) updateService(vip netip.Addr, port uint16, proto uint8, update func(*loader.Service)) {
	e.tb.Helper()
	var svc loader.Service
	key := loader.ServiceKey{Addr: loader.Addr16(vip), Port: port, Proto: proto}
	if err := e.o.Services.Lookup(key, &svc); err != nil {
		e.tb.Fatalf("read service %v:%d/%d: %v", vip, port, proto, err)
	}
	update(&svc)
	if err := e.o.Services.Update(key, svc, ebpf.UpdateExist); err != nil {
		e.tb.Fatalf("update service %v:%d/%d: %v", vip, port, proto, err)
	}
}

func (e *progEnv) putBackend(id uint32, be loader.Backend) {
	e.tb.Helper()
	if err := e.o.Backends.Put(id, be); err != nil {
		e.tb.Fatalf("put backend %d: %v", id, err)
	}
}

func (e *progEnv) backend(id uint32) loader.Backend {
	e.tb.Helper()
	var be loader.Backend
	if err := e.o.Backends.Lookup(id, &be); err != nil {
		e.tb.Fatalf("read backend %d: %v", id, err)
	}
	return be
}

// setRing installs a fresh ring for the service's slot, filled by repeating ids (no ids: every
// slot is 0, an empty ring).
func (e *progEnv) setRing(svcID, slot uint32, ids ...uint32) {
	e.tb.Helper()
	table := make([]uint32, testRingSize)
	for i := range table {
		if len(ids) > 0 {
			table[i] = ids[i%len(ids)]
		}
	}
	inner, err := loader.NewRing(table)
	if err != nil {
		e.tb.Fatalf("create ring: %v", err)
	}
	defer inner.Close()
	if err := e.o.Maglev.Put(svcID*2+slot, inner); err != nil {
		e.tb.Fatalf("install ring %d/%d: %v", svcID, slot, err)
	}
}

func (e *progEnv) deleteRing(svcID, slot uint32) {
	e.tb.Helper()
	if err := e.o.Maglev.Delete(svcID*2 + slot); err != nil {
		e.tb.Fatalf("delete ring %d/%d: %v", svcID, slot, err)
	}
}

// flowKey is the conntrack key of a packet: ports in network byte order, as on the wire.
func flowKey(src, dst netip.Addr, sport, dport uint16, proto uint8) loader.FlowKey {
	return loader.FlowKey{
		Src: loader.Addr16(src), Dst: loader.Addr16(dst),
		Sport: wire16(sport), Dport: wire16(dport), Proto: proto,
	}
}

// wire16 is the value a __be16 field holds when read in host order.
func wire16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// monoNow is what bpf_ktime_get_coarse_ns() would return now.
func monoNow(tb testing.TB) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		tb.Fatalf("clock_gettime: %v", err)
	}
	return uint64(ts.Nano())
}

func ago(tb testing.TB, d time.Duration) uint64 { return monoNow(tb) - uint64(d) }

// addCounters returns a + sign*b field by field.
func addCounters(a, b loader.Counters, sign int64) loader.Counters {
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(b)
	for i := range va.NumField() {
		if f := va.Field(i); f.CanSet() {
			f.SetUint(uint64(int64(f.Uint()) + sign*int64(vb.Field(i).Uint())))
		}
	}
	return a
}

// counterMismatch lists the fields whose delta after-before differs from want ("" if none).
func counterMismatch(before, after, want loader.Counters) string {
	got := addCounters(after, before, -1)
	vg, vw := reflect.ValueOf(got), reflect.ValueOf(want)
	var diffs []string
	for i := range vg.NumField() {
		name := vg.Type().Field(i).Name
		if name == "_" {
			continue
		}
		if g, w := vg.Field(i).Uint(), vw.Field(i).Uint(); g != w {
			diffs = append(diffs, fmt.Sprintf("%s %+d (want %+d)", name, int64(g), int64(w)))
		}
	}
	return strings.Join(diffs, ", ")
}

// verdictSum is tx + pass_* + drop_*: every packet increments exactly one of these.
func verdictSum(c loader.Counters) (sum uint64) {
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if name == "Tx" || strings.HasPrefix(name, "Pass") || strings.HasPrefix(name, "Drop") {
			sum += v.Field(i).Uint()
		}
	}
	return sum
}

func checkInvariant(tb testing.TB, c loader.Counters) {
	tb.Helper()
	if s := verdictSum(c); s != c.Packets {
		tb.Errorf("counters: packets = %d but tx + pass_* + drop_* = %d (%+v)", c.Packets, s, c)
	}
}

// forwarded is in as direct routing sends it to the real server with MAC to: the destination MAC
// becomes the source, to the destination, every other byte unchanged.
func forwarded(in []byte, to packet.MAC) []byte {
	out := append([]byte{}, in...)
	copy(out[6:12], in[0:6])
	copy(out[0:6], to[:])
	return out
}

// sentTo reports whether frame's destination MAC is mac.
func sentTo(frame []byte, mac packet.MAC) bool {
	return len(frame) >= 6 && packet.MAC(frame[:6]) == mac
}
