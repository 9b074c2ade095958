package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/daemon"
	"github.com/xdplb/xdplb/loader"
)

func (e *env) listCmd() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "show services, real servers and peers, like `ipvsadm -Ln` (--stats: like `ipvsadm -Ln --stats`)",
		Description: "Without --iface every attached interface is listed.\n\n" +
			"--json prints {\"interfaces\": [STATE, ...]}, one STATE per interface:\n" +
			"  {\"iface\", \"mode\" (native|generic; absent without a pinned link), \"mode_note\" (a veth whose peer has\n" +
			"   no XDP program: why generic, or a warning for native; absent otherwise), \"program_id\", \"ring_size\", \"hash_seed\",\n" +
			"   \"services\": [{\"id\", \"vip\", \"port\" (0 = every port), \"proto\" (tcp|udp), \"scheduler\",\n" +
			"                 \"persistence_seconds\", \"active_slot\", \"sorry_backend_id\" (0 = none),\n" +
			"                 \"traffic\": {\"packets\", \"bytes\", \"new_flows\"},\n" +
			"                 \"backends\": [{\"id\", \"addr\", \"mac\", \"weight\", \"local\", \"draining\", \"sorry\", \"traffic\"}]}],\n" +
			"   \"peers\": [\"02:00:00:00:00:aa\", ...],\n" +
			"   \"counters\": {\"packets\", \"tx\", \"pass_local\", ... every verdict counter of the data path}}\n" +
			"Addresses and MACs are strings; counters and traffic are summed over CPUs.\n\n" +
			"When the daemon answers on the status socket, the list (also with --stats) shows a Health column\n" +
			"(starting, up, down or draining, for how long, and the last check error) for every real server of\n" +
			"its configuration, also those the maps do not hold (flag \"not in maps\"); a single-writer service\n" +
			"(mysql check with writable: true) is flagged single-writer, with an ALARM naming the servers when two\n" +
			"or more are writable, and the writable ones that are not the writer say so. --json\n" +
			"adds \"daemon\": the status socket's reply (see docs/daemon.md).",
		Flags: []cli.Flag{
			ifaceFlag(),
			statusSocketFlag(),
			&cli.BoolFlag{Name: "stats", Usage: "show traffic per service and real server, and the verdict counters"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON (see the description)"},
		},
		Action: e.list,
	}
}

func (e *env) list(c *cli.Context) error {
	if _, err := positional(c); err != nil {
		return err
	}
	var ifaces []string
	if s := c.String("iface"); s != "" {
		ifaces = []string{s}
	} else {
		names, err := loader.Attached(e.root)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			return fmt.Errorf("nothing is attached: run `xdplb attach IFACE` first")
		}
		ifaces = names
	}
	var states []control.State
	for _, iface := range ifaces {
		st, err := e.state(iface)
		if err != nil {
			return err
		}
		states = append(states, st)
	}
	reply, hl := queryHealth(c.String("status-socket"))
	if c.Bool("json") {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Interfaces []control.State     `json:"interfaces"`
			Daemon     *daemon.StatusReply `json:"daemon,omitempty"`
		}{states, reply})
	}
	for i, st := range states {
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		if c.Bool("stats") {
			writeStats(e.stdout, st, hl)
		} else {
			writeList(e.stdout, st, hl)
		}
	}
	if reply != nil {
		writeVRRP(e.stdout, reply.VRRP, ifaces)
	}
	return nil
}

// writeVRRP writes one line per VRRP instance of the daemon on one of ifaces, after a blank
// line; nothing when there is none.
func writeVRRP(w io.Writer, instances []daemon.VRRPStatus, ifaces []string) {
	first := true
	for _, v := range instances {
		if !slices.Contains(ifaces, v.Interface) {
			continue
		}
		if first {
			fmt.Fprintln(w)
			first = false
		}
		master := "-"
		if v.Master.IsValid() {
			master = v.Master.String()
		}
		peers := "none"
		if len(v.Peers) > 0 {
			list := make([]string, len(v.Peers))
			for i, p := range v.Peers {
				list[i] = fmt.Sprintf("%s (%s)", p.Addr, p.MAC)
			}
			peers = strings.Join(list, ", ")
		}
		fmt.Fprintf(w, "VRRP %s on %s: %s priority %d, master %s, peers %s, %d transitions", v.Name, v.Interface, v.State,
			v.Priority, master, peers, v.Transitions)
		if v.SplitBrains > 0 {
			fmt.Fprintf(w, ", %d split brains", v.SplitBrains)
		}
		fmt.Fprintln(w)
	}
}

// statusTimeout bounds the question to the daemon: list works without it.
const statusTimeout = time.Second

// healthList is the daemon's view of the services and their real servers; nil when no daemon
// answers.
type healthList map[control.ServiceKey]daemon.ServiceStatus

// queryHealth asks the daemon for its status; nil, nil when none answers.
func queryHealth(socket string) (*daemon.StatusReply, healthList) {
	if socket == "" {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	r, err := daemon.QueryStatus(ctx, socket)
	if err != nil {
		return nil, nil
	}
	hl := healthList{}
	for _, s := range r.Services {
		k := s.Key()
		k.VIP = k.VIP.Unmap()
		hl[k] = s
	}
	return &r, hl
}

func (hl healthList) backend(k control.ServiceKey, addr netip.Addr) (daemon.BackendStatus, bool) {
	for _, b := range hl[k].Backends {
		if b.Addr.Unmap() == addr.Unmap() {
			return b, true
		}
	}
	return daemon.BackendStatus{}, false
}

// health is the Health column of a backend: its state (starting, up, down, draining) and for
// how long, and the last check error; - when the daemon does not check it (a sorry server, a
// backend added by hand).
func (hl healthList) health(k control.ServiceKey, b control.BackendState) (string, string) {
	bs, ok := hl.backend(k, b.Addr)
	if !ok || b.Sorry {
		return "-", ""
	}
	return healthOf(bs)
}

func healthOf(bs daemon.BackendStatus) (string, string) {
	state := bs.State
	if state == "" { // a daemon of an earlier version
		state = "down"
		if bs.Up {
			state = "up"
		}
	}
	if !bs.Since.IsZero() {
		state += " " + age(time.Since(bs.Since))
	}
	why := ""
	if !bs.Up && bs.LastError != "" {
		why = "(" + bs.LastError + ")"
	}
	return state, why
}

// age is a short duration for the Health column: 42s, 5m07s, 3h05m, 4d.
func age(d time.Duration) string {
	d = max(d, 0).Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours())/24)
}

// serviceMarks are the daemon's flags of a service: single-writer, and the alarm when two or
// more of its real servers are writable.
func (hl healthList) serviceMarks(k control.ServiceKey) []string {
	s, ok := hl[k]
	if !ok || !s.SingleWriter {
		return nil
	}
	marks := []string{"single-writer"}
	if len(s.Writable) >= 2 {
		names := make([]string, len(s.Writable))
		for i, a := range s.Writable {
			names[i] = a.String()
		}
		writer := "none"
		if s.Writer.IsValid() {
			writer = s.Writer.String()
		}
		marks = append(marks, fmt.Sprintf("ALARM: %d writable (%s), writer %s", len(s.Writable), strings.Join(names, " "), writer))
	}
	return marks
}

// missing lists the real servers of the daemon's configuration that the maps of service k do
// not hold (down, starting, or writable but not the writer), each with the reason.
func (hl healthList) missing(k control.ServiceKey, in []control.BackendState) []daemon.BackendStatus {
	var out []daemon.BackendStatus
	for _, b := range hl[k].Backends {
		if !slices.ContainsFunc(in, func(x control.BackendState) bool { return x.Addr.Unmap() == b.Addr.Unmap() }) {
			out = append(out, b)
		}
	}
	return out
}

// notInMapsFlag says why a configured real server is not in the maps.
func (hl healthList) notInMapsFlag(k control.ServiceKey, b daemon.BackendStatus) string {
	s := hl[k]
	if s.SingleWriter && b.Up && slices.Contains(s.Writable, b.Addr) && b.Addr != s.Writer {
		return "writable, not the writer"
	}
	return "not in maps"
}

// state reads one interface's maps and link.
func (e *env) state(iface string) (control.State, error) {
	s, err := e.open(iface)
	if err != nil {
		return control.State{}, err
	}
	defer s.close()
	st, err := s.maps.Snapshot()
	if err != nil {
		return st, err
	}
	st.Iface = iface
	if li, err := loader.Status(e.root, iface); err == nil {
		st.Mode = li.Mode.String()
		st.ProgramID = li.ProgramID
		st.ModeNote = loader.ModeNote(li.Ifindex, li.Mode)
	}
	return st, nil
}

func writeHeader(w io.Writer, st control.State) {
	link := "not attached (maps pinned, no XDP link)"
	if st.ProgramID != 0 {
		link = fmt.Sprintf("%s mode, program id %d", st.Mode, st.ProgramID)
		if st.ModeNote != "" {
			link += " (" + st.ModeNote + ")"
		}
	}
	fmt.Fprintf(w, "xdplb on %s: %s, ring size %d, hash seed %d\n", st.Iface, link, st.RingSize, st.HashSeed)
	switch {
	case st.Lease.Expired():
		fmt.Fprintf(w, "ORPHANED: director lease %s; start the daemon again to direct\n", st.Lease)
	case st.Lease.Set:
		fmt.Fprintf(w, "director lease: %s (renewed by the daemon)\n", st.Lease)
	}
}

// col pads s to width w, always leaving at least one space (long IPv6 addresses).
func col(s string, w int) string {
	if len(s) >= w {
		return s + " "
	}
	return s + strings.Repeat(" ", w-len(s))
}

func localAddr(k control.ServiceKey) string {
	return netip.AddrPortFrom(k.VIP, k.Port).String()
}

// writeList prints what `ipvsadm -Ln` prints, with a Health column when hl is not nil.
func writeList(w io.Writer, st control.State, hl healthList) {
	writeHeader(w, st)
	fmt.Fprintln(w, "Prot LocalAddress:Port           Scheduler Flags")
	if hl != nil {
		fmt.Fprintln(w, "  -> RemoteAddress               Weight  MAC                Health         Flags")
	} else {
		fmt.Fprintln(w, "  -> RemoteAddress               Weight  MAC                Flags")
	}
	for _, s := range st.Services {
		var flags []string
		if s.Persistence > 0 {
			flags = append(flags, fmt.Sprintf("persistent %d", int64(s.Persistence.Seconds())))
		}
		flags = append(flags, hl.serviceMarks(s.Key)...)
		line := col(s.Key.Proto.String(), 5) + col(localAddr(s.Key), 28) + col(s.Scheduler, 10) + strings.Join(flags, " ")
		fmt.Fprintln(w, strings.TrimRight(line, " "))
		for _, b := range s.Backends {
			line := "  -> " + col(b.Addr.String(), 28) + col(fmt.Sprint(b.Weight), 8) + col(macString(b.MAC), 19)
			if hl != nil {
				h, why := hl.health(s.Key, b)
				line += col(h, 15) + col(strings.Join(backendFlags(b), " "), 1) + why
			} else {
				line += strings.Join(backendFlags(b), " ")
			}
			fmt.Fprintln(w, strings.TrimRight(line, " "))
		}
		for _, b := range hl.missing(s.Key, s.Backends) {
			h, why := healthOf(b)
			line := "  -> " + col(b.Addr.String(), 28) + col("-", 8) + col("-", 19) + col(h, 15) + col(hl.notInMapsFlag(s.Key, b), 1) + why
			fmt.Fprintln(w, strings.TrimRight(line, " "))
		}
	}
	writePeers(w, st)
}

func backendFlags(b control.BackendState) []string {
	var f []string
	if b.Local {
		f = append(f, "local")
	}
	if b.Draining {
		f = append(f, "draining")
	}
	if b.Sorry {
		f = append(f, "sorry")
	}
	return f
}

func macString(mac net.HardwareAddr) string {
	if len(mac) == 0 || control.CheckMAC(mac) != nil {
		return "-"
	}
	return mac.String()
}

func writePeers(w io.Writer, st control.State) {
	if len(st.Peers) == 0 {
		return
	}
	fmt.Fprintln(w, "Peers (frames from these directors pass to the local stack):")
	for _, p := range st.Peers {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// writeStats prints what `ipvsadm -Ln --stats` prints (no outbound columns: in direct routing
// replies bypass the director), then the peers and the verdict counters.
// writeStats prints what `ipvsadm -Ln --stats` prints, with a Health column when hl is not nil.
func writeStats(w io.Writer, st control.State, hl healthList) {
	writeHeader(w, st)
	head := fmt.Sprintf("%s%8s %8s %8s", col("Prot LocalAddress:Port", 33), "Conns", "InPkts", "InBytes")
	if hl != nil {
		head += "  Health"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, "  -> RemoteAddress")
	row := func(name string, t control.Traffic) string {
		return fmt.Sprintf("%s%8s %8s %8s", col(name, 33), human(t.NewFlows), human(t.Packets), human(t.Bytes))
	}
	for _, s := range st.Services {
		svc := row(col(s.Key.Proto.String(), 5)+localAddr(s.Key), s.Traffic)
		if marks := hl.serviceMarks(s.Key); len(marks) > 0 {
			svc += "  " + strings.Join(marks, " ")
		}
		fmt.Fprintln(w, svc)
		for _, b := range s.Backends {
			line := row("  -> "+b.Addr.String(), b.Traffic)
			if hl != nil {
				h, why := hl.health(s.Key, b)
				line = strings.TrimRight(line+"  "+h+" "+why, " ")
			}
			fmt.Fprintln(w, line)
		}
		for _, b := range hl.missing(s.Key, s.Backends) {
			h, why := healthOf(b)
			line := fmt.Sprintf("%s%8s %8s %8s  %s %s %s", col("  -> "+b.Addr.String(), 33), "-", "-", "-", h, hl.notInMapsFlag(s.Key, b), why)
			fmt.Fprintln(w, strings.TrimRight(line, " "))
		}
	}
	writePeers(w, st)
	fmt.Fprintln(w, "Counters:")
	for _, c := range st.Counters.List() {
		fmt.Fprintf(w, "  %-18s %d\n", c.Name, c.Value)
	}
}

// human prints a count with K, M, G, T suffixes (powers of 1000, as ipvsadm does).
func human(n uint64) string {
	if n < 100000 {
		return fmt.Sprint(n)
	}
	v := float64(n)
	for _, unit := range []string{"K", "M", "G", "T", "P"} {
		v /= 1000
		if v < 1000 || unit == "P" {
			if v < 100 {
				return fmt.Sprintf("%.1f%s", v, unit)
			}
			return fmt.Sprintf("%.0f%s", v, unit)
		}
	}
	return fmt.Sprint(n)
}
