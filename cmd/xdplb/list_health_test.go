package main

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/daemon"
)

// TestWriteListSingleWriter: the daemon's view of a single-writer service with two writable
// real servers shows in `xdplb list` (and --stats): the service flagged with the alarm naming
// both, the writer in the ring, the other listed although the maps do not hold it.
func TestWriteListSingleWriter(t *testing.T) {
	vip := netip.MustParseAddr("10.0.0.100")
	db1, db3, db2 := netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.13"), netip.MustParseAddr("10.0.0.12")
	key := control.ServiceKey{VIP: vip, Port: 3306, Proto: control.TCP}
	mac, _ := net.ParseMAC("02:00:00:00:00:11")
	st := control.State{Iface: "eth0", Mode: "native", ProgramID: 7, RingSize: 251,
		Services: []control.ServiceState{{Key: key, Scheduler: "maglev", Backends: []control.BackendState{{Addr: db1, MAC: mac, Weight: 1}}}}}
	since := time.Now().Add(-125 * time.Second)
	hl := healthList{key: daemon.ServiceStatus{VIP: vip, Port: 3306, Proto: control.TCP, SingleWriter: true,
		Writer: db1, Writable: []netip.Addr{db1, db3},
		Backends: []daemon.BackendStatus{
			{Addr: db1, State: "up", Since: since, Up: true, InRing: true, Weight: 1},
			{Addr: db2, State: "down", Since: since, LastError: "mysql check: @@read_only is 1"},
			{Addr: db3, State: "up", Since: since, Up: true},
		}}}
	var b strings.Builder
	writeList(&b, st, hl)
	out := b.String()
	for _, want := range []string{
		"TCP  10.0.0.100:3306             maglev    single-writer ALARM: 2 writable (10.0.0.11 10.0.0.13), writer 10.0.0.11\n",
		"  -> 10.0.0.11                   1       02:00:00:00:00:11  up 2m05s\n",
		"  -> 10.0.0.12                   -       -                  down 2m05s     not in maps (mysql check: @@read_only is 1)\n",
		"  -> 10.0.0.13                   -       -                  up 2m05s       writable, not the writer\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("list: expected the line %q, seen:\n%s", want, out)
		}
	}
	b.Reset()
	writeStats(&b, st, hl)
	for _, want := range []string{"ALARM: 2 writable (10.0.0.11 10.0.0.13), writer 10.0.0.11", "10.0.0.13", "writable, not the writer"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("list --stats: expected %q, seen:\n%s", want, b.String())
		}
	}
	// One writable server: flagged single-writer, no alarm.
	s := hl[key]
	s.Writable = []netip.Addr{db1}
	hl[key] = s
	b.Reset()
	writeList(&b, st, hl)
	if !strings.Contains(b.String(), "maglev    single-writer\n") || strings.Contains(b.String(), "ALARM") {
		t.Errorf("list with one writable server: expected single-writer without alarm, seen:\n%s", b.String())
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 1500 * time.Millisecond: "1s", 59 * time.Second: "59s", 61 * time.Second: "1m01s",
		3*time.Hour + 5*time.Minute + 3*time.Second: "3h05m", 50 * time.Hour: "2d", -time.Second: "0s",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
}
