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
			"  {\"iface\", \"mode\" (native|generic; absent without a pinned link), \"program_id\", \"ring_size\", \"hash_seed\",\n" +
			"   \"services\": [{\"id\", \"vip\", \"port\" (0 = every port), \"proto\" (tcp|udp), \"scheduler\",\n" +
			"                 \"persistence_seconds\", \"active_slot\", \"sorry_backend_id\" (0 = none),\n" +
			"                 \"traffic\": {\"packets\", \"bytes\", \"new_flows\"},\n" +
			"                 \"backends\": [{\"id\", \"addr\", \"mac\", \"weight\", \"local\", \"draining\", \"sorry\", \"traffic\"}]}],\n" +
			"   \"peers\": [\"02:00:00:00:00:aa\", ...],\n" +
			"   \"counters\": {\"packets\", \"tx\", \"pass_local\", ... every verdict counter of the data path}}\n" +
			"Addresses and MACs are strings; counters and traffic are summed over CPUs.\n\n" +
			"When the daemon answers on the status socket, the list (also with --stats) shows a Health column\n" +
			"(up or down, and the last check error) for every real server of its configuration, and --json\n" +
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

// healthList is the daemon's view of the real servers; nil when no daemon answers.
type healthList map[control.ServiceKey]map[netip.Addr]daemon.BackendStatus

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
		m := map[netip.Addr]daemon.BackendStatus{}
		for _, b := range s.Backends {
			m[b.Addr.Unmap()] = b
		}
		k := s.Key()
		k.VIP = k.VIP.Unmap()
		hl[k] = m
	}
	return &r, hl
}

// health is the Health column of a backend: up, down (last error), or - when the daemon does
// not check it (a sorry server, a backend added by hand).
func (hl healthList) health(k control.ServiceKey, b control.BackendState) (string, string) {
	bs, ok := hl[k][b.Addr]
	switch {
	case !ok || b.Sorry:
		return "-", ""
	case bs.Up:
		return "up", ""
	case bs.LastError != "":
		return "down", "(" + bs.LastError + ")"
	}
	return "down", ""
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
	}
	return st, nil
}

func writeHeader(w io.Writer, st control.State) {
	link := "not attached (maps pinned, no XDP link)"
	if st.ProgramID != 0 {
		link = fmt.Sprintf("%s mode, program id %d", st.Mode, st.ProgramID)
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
		fmt.Fprintln(w, "  -> RemoteAddress               Weight  MAC                Health Flags")
	} else {
		fmt.Fprintln(w, "  -> RemoteAddress               Weight  MAC                Flags")
	}
	for _, s := range st.Services {
		var flags []string
		if s.Persistence > 0 {
			flags = append(flags, fmt.Sprintf("persistent %d", int64(s.Persistence.Seconds())))
		}
		line := col(s.Key.Proto.String(), 5) + col(localAddr(s.Key), 28) + col(s.Scheduler, 10) + strings.Join(flags, " ")
		fmt.Fprintln(w, strings.TrimRight(line, " "))
		for _, b := range s.Backends {
			line := "  -> " + col(b.Addr.String(), 28) + col(fmt.Sprint(b.Weight), 8) + col(macString(b.MAC), 19)
			if hl != nil {
				h, why := hl.health(s.Key, b)
				line += col(h, 7) + col(strings.Join(backendFlags(b), " "), 1) + why
			} else {
				line += strings.Join(backendFlags(b), " ")
			}
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
		fmt.Fprintln(w, row(col(s.Key.Proto.String(), 5)+localAddr(s.Key), s.Traffic))
		for _, b := range s.Backends {
			line := row("  -> "+b.Addr.String(), b.Traffic)
			if hl != nil {
				h, why := hl.health(s.Key, b)
				line = strings.TrimRight(line+"  "+h+" "+why, " ")
			}
			fmt.Fprintln(w, line)
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
