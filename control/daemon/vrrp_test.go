//go:build linux

package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdplb/xdplb/internal/wait"
	"github.com/xdplb/xdplb/vrrp"
)

// vrrpConfig writes a configuration with one VRRP instance on the director's interface.
func (tp *topo) vrrpConfig(t *testing.T, priority int) string {
	t.Helper()
	p := filepath.Join(tp.dir, "xdplb.yaml")
	y := fmt.Sprintf(`interfaces: [%s]
maps: {services: 8, backends: 64, peers: 4, conntrack: 1024, persist: 1024, ring_size: 251}
metrics: %s
peers: [02:00:00:00:00:aa]
services:
  - {name: writer, vip: %s, port: 3306, check: {type: none}, real_servers: [{address: %s}]}
vrrp:
  - name: VI_1
    interface: %s
    vrid: 51
    priority: %d
    advert_interval: 100ms
    vips: [%s]
    garp_delay: 0s
    peer_timeout: 1s
`, tp.iface, tp.metrics, tp.vip, tp.rsAddr, tp.iface, priority, tp.vip)
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func hasAddr(t *testing.T, iface string, a netip.Addr) bool {
	l, err := netlink.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range addrs {
		if y, ok := netip.AddrFromSlice(x.IP); ok && y.Unmap() == a {
			return true
		}
	}
	return false
}

func metricsBody(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestDaemonVRRP: the daemon's instance meets a higher-priority router (a vrrp.Instance run in
// the other namespace), learns its MAC into the peers map, takes over when it stops, and keeps
// the MAC after peer_timeout (only the VRRP status forgets the silent peer).
func TestDaemonVRRP(t *testing.T) {
	tp := newTopo(t)
	var otherMAC net.HardwareAddr
	var other *vrrp.Instance
	err := tp.rs.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		otherMAC = l.Attrs().HardwareAddr
		other, err = vrrp.NewInstance(vrrp.InstanceConfig{
			Name: "other", Iface: "eth0", VRID: 51, Priority: 200, Interval: 100 * time.Millisecond, Preempt: true,
			VIPs: []netip.Addr{tp.vip}, GARPDelay: -1, PeerTimeout: time.Second,
		}, tp.log.With("node", "other"))
		return err
	})
	if err != nil {
		t.Fatalf("other instance: %v", err)
	}
	octx, ocancel := context.WithCancel(context.Background())
	odone := make(chan error, 1)
	go func() { odone <- other.Run(octx) }()
	t.Cleanup(func() { ocancel(); <-odone })
	wait.Until(t, 3*time.Second, "other instance Master", func() bool { return other.Status().State == vrrp.Master })

	o := tp.options(tp.vrrpConfig(t, 100))
	_, stop := start(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	inPeers := func(mac net.HardwareAddr) bool {
		for _, p := range tp.snapshot(t).Peers {
			if bytes.Equal(p, mac) {
				return true
			}
		}
		return false
	}
	static, _ := net.ParseMAC("02:00:00:00:00:aa")

	// Backup, the other router a peer, its MAC in the data path's peers.
	var sr StatusReply
	took := wait.Until(t, 3*time.Second, "Backup with the other router as peer", func() bool {
		sr, err = QueryStatus(ctx, o.StatusSocket)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		return len(sr.VRRP) == 1 && sr.VRRP[0].State == "BACKUP" && len(sr.VRRP[0].Peers) == 1 && inPeers(otherMAC)
	})
	t.Logf("backup, peer learned after %v", took)
	v := sr.VRRP[0]
	if v.Name != "VI_1" || v.Priority != 100 || v.VRID != 51 || v.Master != tp.rsAddr || v.Peers[0].Addr != tp.rsAddr ||
		v.Peers[0].MAC != otherMAC.String() || v.Peers[0].Priority != 200 || v.Peers[0].LastSeen.IsZero() {
		t.Errorf("status: %+v", v)
	}
	if !inPeers(static) {
		t.Errorf("static peer missing: %v", tp.snapshot(t).Peers)
	}
	if hasAddr(t, tp.iface, tp.vip) {
		t.Errorf("Backup holds the VIP")
	}
	m := metricsBody(t, tp.metrics)
	for _, want := range []string{
		`xdplb_vrrp_state{instance="VI_1",state="backup"} 1`,
		`xdplb_vrrp_state{instance="VI_1",state="master"} 0`,
		`xdplb_vrrp_peers{instance="VI_1"} 1`,
		`xdplb_vrrp_transitions_total{instance="VI_1"} 1`,
		`xdplb_vrrp_split_brain_total{instance="VI_1"} 0`,
		"# TYPE xdplb_vrrp_rejected_total counter",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(m, "vrrp"))
		}
	}

	// The other router stops (priority 0): this one takes over and holds the VIP.
	ocancel()
	if err := <-odone; err != nil {
		t.Errorf("other Run: %v", err)
	}
	odone <- nil // for the cleanup
	took = wait.Until(t, 2*time.Second, "Master after the other's handover", func() bool {
		sr, _ = QueryStatus(ctx, o.StatusSocket)
		return len(sr.VRRP) == 1 && sr.VRRP[0].State == "MASTER" && hasAddr(t, tp.iface, tp.vip)
	})
	t.Logf("master with the VIP %v after the handover", took)
	if !inPeers(otherMAC) {
		t.Errorf("the peer's MAC left before peer_timeout")
	}
	if m := metricsBody(t, tp.metrics); !strings.Contains(m, `xdplb_vrrp_state{instance="VI_1",state="master"} 1`) {
		t.Errorf("metrics: not master:\n%s", grep(m, "vrrp_state"))
	}

	// peer_timeout (1s) of silence: the peer leaves the VRRP status, but its MAC stays in the
	// peers map (a silent director may still run a data path: forgetting it brings back the
	// loop). A reload runs a peer sync synchronously, so the map is read after one.
	took = wait.Until(t, 3*time.Second, "the silent peer out of the VRRP status", func() bool {
		sr, _ = QueryStatus(ctx, o.StatusSocket)
		return len(sr.VRRP) == 1 && len(sr.VRRP[0].Peers) == 0
	})
	t.Logf("peer out of the status %v after the takeover", took)
	if r, err := RequestReload(ctx, o.StatusSocket); err != nil || !r.OK {
		t.Fatalf("reload: %+v %v", r, err)
	}
	if !inPeers(otherMAC) {
		t.Errorf("the silent peer's learned MAC %s left the peers map: %v", otherMAC, tp.snapshot(t).Peers)
	}
	if !inPeers(static) {
		t.Errorf("static peer removed: %v", tp.snapshot(t).Peers)
	}

	// Stop: the Master hands over and removes its VIP.
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if hasAddr(t, tp.iface, tp.vip) {
		t.Errorf("VIP left on %s after stop", tp.iface)
	}
}

// vrrpTrackConfig writes a configuration with one VRRP instance tracking the writer service,
// whose only real server is TCP-checked.
func (tp *topo) vrrpTrackConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(tp.dir, "xdplb.yaml")
	y := fmt.Sprintf(`interfaces: [%s]
maps: {services: 8, backends: 64, peers: 4, conntrack: 1024, persist: 1024, ring_size: 251}
metrics: %s
services:
  - name: writer
    vip: %s
    port: 3306
    check: {type: tcp, interval: %v, timeout: %v, rise: 1, fall: %d, dr_path: false}
    real_servers: [{address: %s}]
vrrp:
  - name: VI_1
    interface: %s
    vrid: 51
    advert_interval: 100ms
    vips: [%s]
    garp_delay: 0s
    track_services: [writer]
`, tp.iface, tp.metrics, tp.vip, checkInterval, checkTimeout, checkFall, tp.rsAddr, tp.iface, tp.vip)
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// vrrpState polls the status socket until the instance is in state, holding the VIP or not
// (Master holds it, nobody else does), with faults containing fault ("" : none at all).
func vrrpState(t *testing.T, tp *topo, socket, what, state, fault string, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit+5*time.Second)
	defer cancel()
	var last VRRPStatus
	took := wait.Until(t, limit, what, func() bool {
		sr, err := QueryStatus(ctx, socket)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if len(sr.VRRP) != 1 {
			t.Fatalf("status: %d VRRP instances", len(sr.VRRP))
		}
		last = sr.VRRP[0]
		faultOK := len(last.Faults) == 0
		if fault != "" {
			faultOK = slices.ContainsFunc(last.Faults, func(f string) bool { return strings.Contains(f, fault) })
		}
		return last.State == state && faultOK && hasAddr(t, tp.iface, tp.vip) == (state == "MASTER")
	})
	t.Logf("%s after %v (faults %q)", what, took, last.Faults)
}

// TestDaemonVRRPLinkDown: the Master goes to Fault and drops its VIP when its interface goes
// down, administratively or because the veth's peer is down (no carrier), and becomes Master
// again when it is back.
func TestDaemonVRRPLinkDown(t *testing.T) {
	tp := newTopo(t)
	o := tp.options(tp.vrrpConfig(t, 100))
	_, stop := start(t, o)
	link := func(up bool) {
		t.Helper()
		l, err := netlink.LinkByName(tp.iface)
		if err != nil {
			t.Fatal(err)
		}
		if up {
			err = netlink.LinkSetUp(l)
		} else {
			err = netlink.LinkSetDown(l)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	peerLink := func(up bool) {
		t.Helper()
		err := tp.rs.Do(func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			if up {
				return netlink.LinkSetUp(l)
			}
			return netlink.LinkSetDown(l)
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	vrrpState(t, tp, o.StatusSocket, "Master alone", "MASTER", "", 3*time.Second)

	link(false)
	vrrpState(t, tp, o.StatusSocket, "Fault with the link down", "FAULT", "interface "+tp.iface+" down", 2*time.Second)
	link(true)
	// Fault → Backup (the restart) → Master after Master_Down_Interval with nobody advertising.
	vrrpState(t, tp, o.StatusSocket, "Master with the link back", "MASTER", "", 3*time.Second)

	// The veth's other end down: ours is up but not running (no carrier).
	peerLink(false)
	vrrpState(t, tp, o.StatusSocket, "Fault without carrier", "FAULT", "interface "+tp.iface+" down", 2*time.Second)
	peerLink(true)
	vrrpState(t, tp, o.StatusSocket, "Master with the carrier back", "MASTER", "", 3*time.Second)

	if m := metricsBody(t, tp.metrics); !strings.Contains(m, `xdplb_vrrp_transitions_total{instance="VI_1"} 8`) {
		t.Errorf("metrics: expected 8 transitions (Backup, Master, then twice Fault, Backup, Master):\n%s", grep(m, "vrrp_transitions"))
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestDaemonVRRPTrackServices: an instance tracking a service goes to Fault (its VIP to the
// peer) while the service has lost its quorum — its only real server's listener stopped — and
// is Master again when the real server is back.
func TestDaemonVRRPTrackServices(t *testing.T) {
	tp := newTopo(t)
	listen := netip.AddrPortFrom(tp.rsAddr, 3306).String()
	srv := tp.rs.ServeWhoAmI(t, listen, "rs1")
	o := tp.options(tp.vrrpTrackConfig(t))
	_, stop := start(t, o)

	vrrpState(t, tp, o.StatusSocket, "Master with the real server up", "MASTER", "", 5*time.Second)

	srv.Close()
	limit := checkFall*checkInterval + checkTimeout
	vrrpState(t, tp, o.StatusSocket, "Fault with the quorum lost", "FAULT", "service writer without quorum", limit+2*time.Second)

	tp.rs.ServeWhoAmI(t, listen, "rs1")
	vrrpState(t, tp, o.StatusSocket, "Master with the quorum back", "MASTER", "", 5*time.Second)

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if hasAddr(t, tp.iface, tp.vip) {
		t.Errorf("VIP left on %s after stop", tp.iface)
	}
}
