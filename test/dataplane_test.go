//go:build linux

package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// The LVS-DR topology of the seeds on one bridge: a client, a director holding the VIP, and two
// real servers with the VIP on lo.
var (
	vip        = netip.MustParseAddr("10.77.0.100")
	vipService = netip.AddrPortFrom(vip, 3306)
)

const (
	balancedConns = 40 // connections in the balanced batch
	peerConns     = 10 // connections while the client's MAC is a peer, and after
	dialTimeout   = 5 * time.Second
)

type dataplaneBed struct {
	lan              *netns.LAN
	client           *netns.Node
	dir              *director
	rs1, rs2         *netns.Node
	rsByName         map[string]*netns.Node
	whoami1, whoami2 *netns.WhoAmI
}

// newDataplaneBed builds the topology. In native mode it adds what veth needs for native XDP_TX:
// an XDP_PASS program on the director's bridge port and TX checksum offload off on the senders
// whose frames go through XDP_TX (client and director).
func newDataplaneBed(t *testing.T, mode string) *dataplaneBed {
	t.Helper()
	b := &dataplaneBed{lan: netns.NewLAN(t)}
	b.client = b.lan.AddNode("client", "10.77.0.1/24")
	dn := b.lan.AddNode("director", "10.77.0.2/24")
	b.rs1 = b.lan.AddNode("rs1", "10.77.0.11/24")
	b.rs2 = b.lan.AddNode("rs2", "10.77.0.12/24")
	b.rsByName = map[string]*netns.Node{"rs1": b.rs1, "rs2": b.rs2}

	// The director answers ARP for the VIP, so the client sends VIP traffic to it.
	if err := dn.AddAddr(netns.NodeLink, netip.PrefixFrom(vip, 32)); err != nil {
		t.Fatal(err)
	}
	for _, rs := range []*netns.Node{b.rs1, b.rs2} {
		if err := rs.SetupRealServer(vip); err != nil {
			t.Fatalf("real server %s: %v", rs.Role, err)
		}
	}
	b.whoami1 = b.rs1.ServeWhoAmI(t, vipService.String(), "rs1")
	b.whoami2 = b.rs2.ServeWhoAmI(t, vipService.String(), "rs2")

	if mode == "native" {
		b.lan.AttachPassXDP(dn)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, n := range []*netns.Node{b.client, dn} {
			if err := n.TxChecksumOff(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}

	pinRoot := newPinRoot(t)
	b.dir = &director{Node: dn, pinRoot: pinRoot}
	t.Logf("topology: LAN %s; client %s %s, director %s %s, rs1 %s %s, rs2 %s %s; pin root %s",
		b.lan.Name, b.client.Addr(), b.client.MAC, dn.Addr(), dn.MAC, b.rs1.Addr(), b.rs1.MAC,
		b.rs2.Addr(), b.rs2.MAC, pinRoot)
	return b
}

// ask opens n who-am-I connections from the client to the VIP service and returns the answers.
func (b *dataplaneBed) ask(t *testing.T, n int) []netns.Answer {
	t.Helper()
	answers := make([]netns.Answer, 0, n)
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		a, err := b.client.AskWhoAmI(ctx, vipService.String())
		cancel()
		if err != nil {
			t.Fatalf("connection %d/%d from the client to %s: expected an answer, seen: %v", i+1, n, vipService, err)
		}
		answers = append(answers, a)
	}
	return answers
}

func tally(answers []netns.Answer) map[string]int {
	m := map[string]int{}
	for _, a := range answers {
		m[a.Name]++
	}
	return m
}

func TestDataplane(t *testing.T) {
	requireRoot(t)
	requireCLI(t)
	requireTools(t, "bpftool", "ethtool", "nsenter", "ip")
	for _, mode := range []string{"generic", "native"} {
		t.Run(mode, func(t *testing.T) {
			start := time.Now()
			testDataplane(t, mode)
			t.Logf("%s: %v", mode, time.Since(start).Round(time.Millisecond))
		})
	}
}

func testDataplane(t *testing.T, mode string) {
	b := newDataplaneBed(t, mode)
	d := b.dir
	const iface = netns.NodeLink

	// a. Attach, service, backends.
	out := d.cli(t, "attach", iface, "--mode", mode)
	if !strings.Contains(strings.ToLower(out), mode) {
		t.Errorf("`xdplb attach %s --mode %s`: expected the output to name the mode %q, seen %q", iface, mode, mode, out)
	}
	if got, id, err := d.XDPAttachMode(iface); err != nil || got != mode {
		t.Fatalf("after attach: expected an XDP program in %s mode on the director's %s, seen mode %q (prog id %d, err %v)",
			mode, iface, got, id, err)
	}
	if link := d.ipLink(t, iface); !ipLinkXDP.MatchString(link) {
		t.Errorf("after attach: expected `ip link show %s` on the director to show an XDP program (%s), seen:\n%s", iface, ipLinkXDP, link)
	}
	for _, m := range []string{"conntrack", "services", "backends", "stats", "peers"} {
		if _, err := os.Stat(d.pinDir(iface) + "/" + m); err != nil {
			t.Errorf("after attach: expected pinned map %s/%s, seen %v", d.pinDir(iface), m, err)
		}
	}

	d.cli(t, "service", "add", vipService.String(), "--iface", iface)

	// rs1's MAC comes from the director's neighbour table. In native mode the director has
	// talked to rs1 before; in generic mode the CLI has to make the kernel resolve it.
	if mode == "native" {
		primeNeighbour(t, d, b.rs1)
	} else if mac, state, err := d.Neighbour(iface, b.rs1.Addr()); err != nil || mac != nil {
		t.Fatalf("before `backend add` in generic mode: expected no neighbour entry for %s on the director, seen %v %s (err %v)",
			b.rs1.Addr(), mac, state, err)
	}
	d.cli(t, "backend", "add", vipService.String(), b.rs1.Addr().String(), "--iface", iface)
	d.cli(t, "backend", "add", vipService.String(), b.rs2.Addr().String(), "--iface", iface, "--mac", b.rs2.MAC.String())
	macs := d.backendMACs(t)
	for _, rs := range []*netns.Node{b.rs1, b.rs2} {
		if got := macs[rs.Addr()]; got.String() != rs.MAC.String() {
			t.Errorf("backends map: expected %s → %s (%s), seen %v (all used backends: %v)", rs.Addr(), rs.MAC, rs.Role, got, macs)
		}
	}
	if len(macs) != 2 {
		t.Errorf("backends map: expected 2 used backends, seen %d: %v", len(macs), macs)
	}

	// e. bpftool shows the services map field by field (BTF).
	svcDump := string(bpftool(t, "map", "dump", "pinned", d.pinDir(iface)+"/services"))
	for _, want := range []string{`"port": 3306`, `"proto": 6`, `"active_slot"`, `"persist_timeout"`, `"id"`} {
		if !strings.Contains(svcDump, want) {
			t.Errorf("`bpftool map dump pinned %s/services`: expected %s in the output, seen:\n%s", d.pinDir(iface), want, svcDump)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// b, c. Balanced connections; replies straight from the real servers.
	testBalanced(t, b)

	// d. The peer rule.
	testPeer(t, b)

	// The CLI's own view.
	listOut := d.cli(t, "list", "--stats", "--json")
	if !json.Valid([]byte(listOut)) {
		t.Errorf("`xdplb list --stats --json`: expected valid JSON, seen:\n%s", listOut)
	}
	for _, want := range []string{vip.String(), b.rs1.Addr().String(), b.rs2.Addr().String()} {
		if !strings.Contains(listOut, want) {
			t.Errorf("`xdplb list --stats --json`: expected %s in the output, seen:\n%s", want, listOut)
		}
	}
	t.Logf("xdplb list --stats --json: %d bytes; xdplb list:\n%s", len(listOut), d.cli(t, "list"))

	// f. Detach removes the program and the pins.
	d.cli(t, "detach", iface)
	if _, err := os.Stat(d.pinDir(iface)); !os.IsNotExist(err) {
		t.Errorf("after detach: expected %s to be gone, seen stat error %v", d.pinDir(iface), err)
	}
	if link := d.ipLink(t, iface); ipLinkXDP.MatchString(link) {
		t.Errorf("after detach: expected no XDP program in `ip link show %s` on the director, seen:\n%s", iface, link)
	}
	if got, id, err := d.XDPAttachMode(iface); err != nil || got != "" {
		t.Errorf("after detach: expected no XDP program on the director's %s, seen mode %q (prog id %d, err %v)", iface, got, id, err)
	}
	// With no program, VIP traffic goes to whoever holds the VIP: the director itself.
	if a := b.ask(t, 1)[0]; a.Name != "director" {
		t.Errorf("after detach: expected the director's own listener to answer on %s, seen %q", vipService, a.Name)
	}
}

// ipLinkXDP matches what `ip link show` prints for an attached XDP program ("xdpgeneric",
// "xdp" or "xdpdrv" before "qdisc", and a "prog/xdp id N" line).
var ipLinkXDP = regexp.MustCompile(`\s(xdp|xdpgeneric|xdpdrv|xdpoffload|xdpmulti)(\s|/)|prog/xdp`)

// ipLink returns `ip link show dev` in the node's namespace.
func (d *director) ipLink(t *testing.T, dev string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := d.Exec(ctx, "ip", "link", "show", dev)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// primeNeighbour makes d resolve rs's MAC (a UDP datagram to the discard port) and waits until the
// neighbour table has it.
func primeNeighbour(t *testing.T, d *director, rs *netns.Node) {
	t.Helper()
	err := d.Do(func() error {
		c, err := net.Dial("udp", netip.AddrPortFrom(rs.Addr(), 9).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("arp"))
		return err
	})
	if err != nil {
		t.Fatalf("director: send to %s to resolve its MAC: %v", rs.Addr(), err)
	}
	waitFor(t, 5*time.Second, "the director's neighbour entry for "+rs.Addr().String()+" = "+rs.MAC.String(),
		func() (bool, string) {
			mac, state, err := d.Neighbour(netns.NodeLink, rs.Addr())
			if err != nil {
				return false, err.Error()
			}
			return mac.String() == rs.MAC.String(), "MAC " + mac.String() + " state " + state
		})
}

func testBalanced(t *testing.T, b *dataplaneBed) {
	d := b.dir
	before := d.stats(t)
	clientCap := b.client.StartCapture(t, netns.NodeLink)
	dirCap := d.StartCapture(t, netns.NodeLink)
	served0 := b.whoami1.Served() + b.whoami2.Served()

	start := time.Now()
	answers := b.ask(t, balancedConns)
	elapsed := time.Since(start)

	// The last frames of a connection (the real server's ACK of the client's FIN) may still be
	// in flight when the client's Close returns.
	clientFrames := waitClientFrames(t, clientCap, answers)
	dirFrames, err := dirCap.Stop()
	if err != nil {
		t.Fatal(err)
	}

	// b. Both real servers answered, each connection end to end.
	counts := tally(answers)
	t.Logf("balanced: %d connections in %v: rs1 %d, rs2 %d (servers accepted rs1 %d, rs2 %d)",
		len(answers), elapsed.Round(time.Millisecond), counts["rs1"], counts["rs2"], b.whoami1.Served(), b.whoami2.Served())
	if counts["rs1"]+counts["rs2"] != balancedConns {
		t.Errorf("balanced: expected all %d answers from rs1 or rs2, seen %v", balancedConns, counts)
	}
	if counts["rs1"] == 0 || counts["rs2"] == 0 {
		t.Errorf("balanced: expected both rs1 and rs2 to answer some of %d connections, seen %v", balancedConns, counts)
	}
	if got := b.whoami1.Served() + b.whoami2.Served() - served0; got != balancedConns {
		t.Errorf("balanced: expected the real servers to accept %d connections, seen %d", balancedConns, got)
	}

	// c. Replies come straight from the real servers: every frame from the VIP to the client
	// carries the MAC of the real server that answered that connection, never the director's.
	byPort := map[uint16]string{}
	for _, a := range answers {
		byPort[uint16(a.Local.Port)] = a.Name
	}
	if len(byPort) != balancedConns {
		t.Errorf("balanced: expected %d connections from distinct client ports, seen %d distinct ports", balancedConns, len(byPort))
	}
	var toVIP, fromVIP, synAcks int
	for _, fr := range clientFrames {
		f, ok := parseTCP4(fr.Data)
		if !ok {
			continue
		}
		switch {
		case fr.Outgoing() && f.Dst == vipService:
			toVIP++
			if f.DstMAC.String() != d.MAC.String() {
				t.Errorf("client → %s (port %d): expected destination MAC %s (director), seen %s", vipService, f.Src.Port(), d.MAC, f.DstMAC)
			}
		case !fr.Outgoing() && f.Src == vipService:
			fromVIP++
			name, ok := byPort[f.Dst.Port()]
			if !ok {
				t.Errorf("frame from %s to client port %d: expected only the %d test connections, seen an unknown port", vipService, f.Dst.Port(), balancedConns)
				continue
			}
			if want := b.rsByName[name].MAC; f.SrcMAC.String() != want.String() {
				t.Errorf("frame from %s to client port %d (answered by %s): expected source MAC %s (%s), seen %s (director is %s)",
					vipService, f.Dst.Port(), name, want, name, f.SrcMAC, d.MAC)
			}
			if f.Flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK {
				synAcks++
			}
		}
	}
	t.Logf("client capture: %d frames to %s, %d from it (%d SYN-ACKs)", toVIP, vipService, fromVIP, synAcks)
	if synAcks != balancedConns {
		t.Errorf("client capture: expected %d SYN-ACKs from %s, seen %d", balancedConns, vipService, synAcks)
	}

	// The director sees none of the replies.
	var dirFromVIP, dirToVIP int
	for _, fr := range dirFrames {
		if f, ok := parseTCP4(fr.Data); ok {
			if f.Src == vipService {
				dirFromVIP++
			}
			if f.Dst == vipService {
				dirToVIP++
			}
		}
	}
	t.Logf("director capture: %d frames from %s (replies), %d to it (the kernel does not see XDP_TX'd frames)", dirFromVIP, vipService, dirToVIP)
	if dirFromVIP != 0 {
		t.Errorf("director capture: expected no reply frames from %s (they go from the real servers to the client), seen %d", vipService, dirFromVIP)
	}
	if dirToVIP != 0 {
		t.Errorf("director capture: expected the kernel to see none of the client's frames to %s (XDP_TX'd), seen %d", vipService, dirToVIP)
	}

	// The director forwarded every client frame (the last ones may still be in flight).
	var after, delta counters
	waitFor(t, 2*time.Second, fmt.Sprintf("director stats tx to grow by at least %d (client frames to %s)", toVIP, vipService),
		func() (bool, string) {
			after = d.stats(t)
			delta = after.sub(before)
			return delta["tx"] >= uint64(toVIP), fmt.Sprintf("tx +%d (delta %v)", delta["tx"], delta)
		})
	t.Logf("director stats delta: %v", delta)
	if delta["new_flow"] < balancedConns {
		t.Errorf("stats: expected new_flow to grow by at least %d, seen %d", balancedConns, delta["new_flow"])
	}
	if after["packets"] != after.verdicts() {
		t.Errorf("stats: expected packets = tx + pass_* + drop_*, seen packets %d, sum %d (%v)", after["packets"], after.verdicts(), after)
	}
}

// waitClientFrames stops the client capture once it holds the end of every connection (the real
// server's ACK of the client's FIN, which may still be in flight when Close returns) and returns
// its frames.
func waitClientFrames(t *testing.T, c *netns.Capture, answers []netns.Answer) []netns.Frame {
	t.Helper()
	waitFor(t, 3*time.Second, "the real server's answer to the client's FIN for every connection in the client capture", func() (bool, string) {
		finSent, closed := map[uint16]bool{}, map[uint16]bool{}
		for _, fr := range c.Frames() {
			f, ok := parseTCP4(fr.Data)
			switch {
			case !ok:
			case fr.Outgoing() && f.Dst == vipService && f.Flags&tcpFIN != 0:
				finSent[f.Src.Port()] = true
			case !fr.Outgoing() && f.Src == vipService && finSent[f.Dst.Port()]:
				closed[f.Dst.Port()] = true
			}
		}
		var open []int
		for _, a := range answers {
			if !closed[uint16(a.Local.Port)] {
				open = append(open, a.Local.Port)
			}
		}
		return len(open) == 0, fmt.Sprintf("%d connections not closed yet (client ports %v)", len(open), open)
	})
	frames, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	return frames
}

func testPeer(t *testing.T, b *dataplaneBed) {
	d := b.dir
	const iface = netns.NodeLink
	// The director is also a real server: its own listener on the VIP (held by its eth0).
	self := d.ServeWhoAmI(t, vipService.String(), "director")

	d.cli(t, "peer", "add", b.client.MAC.String(), "--iface", iface)
	before := d.stats(t)
	answers := b.ask(t, peerConns)
	delta := d.stats(t).sub(before)
	counts := tally(answers)
	t.Logf("peer %s: %d connections: %v; stats delta %v", b.client.MAC, len(answers), counts, delta)
	if counts["director"] != peerConns {
		t.Errorf("with the client's MAC as a peer: expected all %d connections answered by the director, seen %v", peerConns, counts)
	}
	if delta["pass_peer"] < peerConns {
		t.Errorf("with the client's MAC as a peer: expected pass_peer to grow by at least %d, seen %d (delta %v)", peerConns, delta["pass_peer"], delta)
	}
	if delta["tx"] != 0 {
		t.Errorf("with the client's MAC as a peer: expected tx not to grow, seen +%d (delta %v)", delta["tx"], delta)
	}

	d.cli(t, "peer", "del", b.client.MAC.String(), "--iface", iface)
	served := self.Served()
	before = d.stats(t)
	answers = b.ask(t, peerConns)
	delta = d.stats(t).sub(before)
	counts = tally(answers)
	t.Logf("peer deleted: %d connections: %v; stats delta %v", len(answers), counts, delta)
	if counts["rs1"]+counts["rs2"] != peerConns {
		t.Errorf("after peer del: expected all %d connections balanced to rs1/rs2, seen %v", peerConns, counts)
	}
	if got := self.Served() - served; got != 0 {
		t.Errorf("after peer del: expected the director's listener to get no connections, seen %d", got)
	}
	if delta["pass_peer"] != 0 || delta["tx"] < 2*peerConns {
		t.Errorf("after peer del: expected pass_peer +0 and tx +%d or more, seen pass_peer +%d, tx +%d", 2*peerConns, delta["pass_peer"], delta["tx"])
	}
}
