//go:build linux

package test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// VRRP between two xdplb directors, and between xdplb and keepalived 2.2.7, on one LAN:
// director a 10.99.0.1, director b 10.99.0.2, keepalived's node ka 10.99.0.3, a client
// 10.99.0.10 and a real server 10.99.0.20 holding the VIP 10.99.0.100 on lo. Each director runs
// `xdplb run` (generic XDP) with one service on the VIP (check none) and one VRRP instance.
const (
	vrInterval = 100 * time.Millisecond // v3 adverts between two xdplb
	vrSlack    = 250 * time.Millisecond // polling, scheduling, the VIP netlink call
	vrSlackV2  = 500 * time.Millisecond // at 1 s adverts
	vrPoll     = 25 * time.Millisecond  // sampling of the states by the hold and watch helpers
)

var (
	vrA = xvrrp{version: 3, vrid: 51, priority: 150, interval: vrInterval, preempt: true}
	vrB = xvrrp{version: 3, vrid: 51, priority: 100, interval: vrInterval, preempt: true}
)

type vrrpBed struct {
	lan        *netns.LAN
	a, b       *vrrpDirector
	ka, client *netns.Node
	rs         *netns.Node
}

func newVRRPBed(t *testing.T) *vrrpBed {
	t.Helper()
	lan := netns.NewLAN(t)
	b := &vrrpBed{lan: lan}
	mk := func(role, addr string) *vrrpDirector {
		n := lan.AddNode(role, addr)
		tmp := t.TempDir()
		return &vrrpDirector{director: &director{Node: n, pinRoot: newPinRoot(t)}, top: t, tmp: tmp,
			cfgPath: tmp + "/xdplb.yaml", socket: tmp + "/xdplb.sock"}
	}
	b.a = mk("a", vrAddrA)
	b.b = mk("b", vrAddrB)
	b.ka = lan.AddNode("ka", vrAddrKA)
	b.client = lan.AddNode("client", vrClient)
	b.rs = lan.AddNode("rs", vrRS)
	if err := b.rs.SetupRealServer(vrVIP); err != nil {
		t.Fatal(err)
	}
	t.Logf("topology: LAN %s; a %s %s, b %s %s, ka %s %s, client %s, rs %s; VIP %s",
		lan.Name, b.a.Addr(), b.a.MAC, b.b.Addr(), b.b.MAC, b.ka.Addr(), b.ka.MAC, b.client.Addr(), b.rs.Addr(), vrVIP)
	return b
}

// pingVIP connects from n to the VIP's port 9 (a port no service balances, so the VIP holder's
// own stack answers, with a reset): the test fails without an answer.
func pingVIP(t *testing.T, n *netns.Node) {
	t.Helper()
	err := n.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(vrVIP, 9).String(), 2*time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatalf("expected the VIP's holder to answer a TCP connection from %s to %s:9 (reset), seen %v", n.Role, vrVIP, err)
	}
}

// vipNeighbour is the MAC of the VIP in n's ARP table ("" when none).
func vipNeighbour(t *testing.T, n *netns.Node) string {
	t.Helper()
	mac, _, err := n.Neighbour(netns.NodeLink, vrVIP)
	if err != nil {
		t.Fatal(err)
	}
	if mac == nil {
		return ""
	}
	return strings.ToLower(mac.String())
}

func TestVRRP(t *testing.T) {
	requireRoot(t)
	requireCLI(t)
	requireTools(t, "nsenter", "ip", "keepalived", "nft")
	testStart := time.Now()
	defer func() { t.Logf("TestVRRP: %v", time.Since(testStart).Round(time.Millisecond)) }()

	bed := newVRRPBed(t)
	A, B := bed.a, bed.b
	rs := bed.rs.Addr()
	pair := []vrrpRouter{xdplbRouter(A), xdplbRouter(B)}
	mdA := masterDown(3, vrA.priority, vrInterval) // 341 ms
	mdB := masterDown(3, vrB.priority, vrInterval) // 361 ms
	macA, macB := strings.ToLower(A.MAC.String()), strings.ToLower(B.MAC.String())

	steps := []struct {
		name string
		f    func(t *testing.T)
	}{
		{"a_master_backup", func(t *testing.T) {
			A.start(t, rs, vrA)
			el := waitStates(t, time.Now(), mdA+vrSlack, "a alone after its start", pair[:1], stMaster)
			t.Logf("a (priority 150) alone: MASTER %v after its status socket answered (Master_Down_Interval %v)", el.Round(time.Millisecond), mdA)
			// The client resolves the VIP now: a's MAC; b's gratuitous ARPs must replace it in b
			// (Linux ignores them within locktime, 1 s, of the last update: the hold below waits it).
			pingVIP(t, bed.client)
			if mac := vipNeighbour(t, bed.client); mac != macA {
				t.Errorf("client's ARP entry for the VIP %s: expected a's MAC %s, seen %q", vrVIP, macA, mac)
			}
			B.start(t, rs, vrB)
			waitStates(t, time.Now(), time.Second, "b joining a", pair, stMaster, stBackup)
			n := holdStates(t, 10*vrInterval, vrPoll, "a and b steady", pair, stMaster, stBackup)
			t.Logf("a MASTER, b BACKUP held over %d samples in %v", n, 10*vrInterval)
			mustHaveVIP(t, A.Node, true)
			mustHaveVIP(t, B.Node, false)
			for _, d := range []*vrrpDirector{A, B} {
				if cfg, err := os.ReadFile(d.cfgPath); err != nil || strings.Contains(string(cfg), "peers") {
					t.Fatalf("config of %s: expected no static peers, seen %v %q", d.Role, err, cfg)
				}
			}

			// b hears a's adverts: a's MAC in b's instance and in b's peers map.
			st := B.status(t)
			if !slices.Contains(st.peerMACs(), macA) || st.Master != A.Addr().String() {
				t.Errorf("status of b: expected master %s and peer MAC %s (a), seen master %q peers %+v", A.Addr(), macA, st.Master, st.Peers)
			}
			waitFor(t, 2*time.Second, "a's MAC "+macA+" in b's pinned peers map", func() (bool, string) {
				m := B.peersInMap(t)
				return slices.Contains(m, macA), fmt.Sprint(m)
			})
			// a hears nothing from b: a Backup does not advertise (RFC 5798 6.4.2).
			t.Logf("peers maps: a %v (a's instance peers %+v), b %v", A.peersInMap(t), A.status(t).Peers, B.peersInMap(t))
		}},

		{"b_machine_death", func(t *testing.T) {
			down := A.kill9(t)
			el := waitStates(t, down, mdB+vrSlack, "b after a's link went down and its daemon was SIGKILLed", pair[1:], stMaster)
			var vipAt time.Duration
			waitFor(t, mdB+vrSlack, "the VIP on b", func() (bool, string) {
				has, err := hasVIP(B.Node)
				vipAt = time.Since(down)
				return has && err == nil, fmt.Sprintf("present=%t (%v)", has, err)
			})
			t.Logf("machine death of a: b MASTER %v and VIP on b %v after the link went down (bound Master_Down_Interval %v + %v)",
				el.Round(time.Millisecond), vipAt.Round(time.Millisecond), mdB, vrSlack)
			var garpAt time.Duration
			waitFor(t, mdB+vrSlack, "the client's ARP entry for the VIP to be b's MAC "+macB+" (gratuitous ARP)", func() (bool, string) {
				mac := vipNeighbour(t, bed.client)
				garpAt = time.Since(down)
				return mac == macB, mac
			})
			pingVIP(t, bed.client)
			t.Logf("client's ARP entry for the VIP: b's MAC %v after the link went down; the VIP answers", garpAt.Round(time.Millisecond))
		}},

		{"c_preempt_then_graceful", func(t *testing.T) {
			A.reboot(t)
			A.start(t, rs, vrA)
			start := time.Now()
			el := waitStates(t, start, mdA+vrSlack, "a preempting b after its restart", pair, stMaster, stBackup)
			t.Logf("a restarted: preempted b %v after its status socket answered (Master_Down_Interval %v)", el.Round(time.Millisecond), mdA)
			waitFor(t, time.Second, "the VIP only on a", func() (bool, string) {
				ha, _ := hasVIP(A.Node)
				hb, _ := hasVIP(B.Node)
				return ha && !hb, fmt.Sprintf("a=%t b=%t", ha, hb)
			})
			// a heard b's adverts while b was Master: both maps hold the other's MAC now.
			if m := A.peersInMap(t); !slices.Contains(m, macB) {
				t.Errorf("a's pinned peers map after hearing b as Master: expected %s (b), seen %v", macB, m)
			}
			if m := B.peersInMap(t); !slices.Contains(m, macA) {
				t.Errorf("b's pinned peers map: expected %s (a), seen %v", macA, m)
			}

			skew := skewTime(3, vrB.priority, vrInterval)
			bound := skew + 150*time.Millisecond
			sig := time.Now()
			A.d.signal(t, syscall.SIGTERM)
			el = waitStates(t, sig, bound, "b after SIGTERM to a's daemon", pair[1:], stMaster)
			t.Logf("graceful stop of a (SIGTERM): b MASTER %v after the signal (bound Skew_Time %v + 150ms; Master_Down_Interval %v)",
				el.Round(time.Millisecond), skew, mdB)
			if el >= mdB {
				t.Errorf("graceful stop: expected b to take over well before Master_Down_Interval %v (priority-0 advert), seen %v", mdB, el)
			}
			select {
			case <-A.d.done:
				if A.d.waitErr != nil {
					t.Errorf("a's daemon: expected exit 0 on SIGTERM, seen %v", A.d.waitErr)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("a's daemon: expected an exit within 5 s of SIGTERM, seen it running")
			}
			mustHaveVIP(t, A.Node, false)
			mustHaveVIP(t, B.Node, true)
		}},

		{"d_nopreempt", func(t *testing.T) {
			if err := B.d.stop(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			nA, nB := vrA, vrB
			nA.preempt, nB.preempt = false, false
			B.start(t, rs, nB)
			waitStates(t, time.Now(), mdB+vrSlack, "b alone (preempt: false)", pair[1:], stMaster)
			A.start(t, rs, nA)
			waitStates(t, time.Now(), time.Second, "a (priority 150, preempt: false) joining b", pair, stBackup, stMaster)
			hold := 5 * max(mdA, mdB)
			n := holdStates(t, hold, vrPoll, "nopreempt: a stays BACKUP", pair, stBackup, stMaster)
			t.Logf("nopreempt: a (150) stayed BACKUP behind b (100) for %v (5 × Master_Down_Interval), %d samples", hold, n)
			mustHaveVIP(t, A.Node, false)
			mustHaveVIP(t, B.Node, true)
		}},

		// g before e and f: it reuses the two xdplb of d (nopreempt changes nothing here: a Master
		// yields to a higher priority whatever its preempt setting).
		{"g_split_brain", func(t *testing.T) {
			before := A.status(t).SplitBrains + B.status(t).SplitBrains
			unblock := nftBlockVRRP(t, bed.lan, A.Node, B.Node)
			blocked := time.Now()
			el := waitStates(t, blocked, mdA+vrSlack, "both with VRRP blocked between them", pair, stMaster, stMaster)
			t.Logf("VRRP blocked (netdev ingress drop of protocol 112 on both bridge ports): both MASTER after %v", el.Round(time.Millisecond))
			holdStates(t, 3*vrInterval, vrPoll, "split brain while blocked", pair, stMaster, stMaster)
			t.Logf("nft counters: %s", nftDropped(bed.lan))
			// b's adverts reach a first, so that a hears another Master (the split brain it
			// must count); which advert crosses first when both blocks go at once is luck.
			if err := nftUnblockFrom(bed.lan, 1); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 3*vrInterval+vrSlack, "a to count the split brain once b's adverts reach it", func() (bool, string) {
				n := A.status(t).SplitBrains
				return n > 0, fmt.Sprint(n)
			})
			unblock()
			el = waitStates(t, time.Now(), 3*vrInterval+vrSlack, "one Master after unblocking", pair, stMaster, stBackup)
			t.Logf("unblocked: a MASTER, b BACKUP after %v", el.Round(time.Millisecond))
			holdStates(t, 5*vrInterval, vrPoll, "one Master after unblocking", pair, stMaster, stBackup)
			after := A.status(t).SplitBrains + B.status(t).SplitBrains
			logged := strings.Contains(A.d.log(), "split brain") || strings.Contains(B.d.log(), "split brain")
			t.Logf("split_brains: a %d, b %d (before %d); logged: %t", A.status(t).SplitBrains, B.status(t).SplitBrains, before, logged)
			if after <= before || !logged {
				t.Errorf("split brain: expected split_brains to grow (before %d) and a \"split brain\" log line, seen %d and logged=%t", before, after, logged)
			}
			waitFor(t, time.Second, "the VIP only on a", func() (bool, string) {
				ha, _ := hasVIP(A.Node)
				hb, _ := hasVIP(B.Node)
				return ha && !hb, fmt.Sprintf("a=%t b=%t", ha, hb)
			})
			t.Logf("peers maps after the split: a %v, b %v", A.peersInMap(t), B.peersInMap(t))
		}},

		{"e_keepalived_v2_auth", func(t *testing.T) {
			testInterop(t, bed, 2, time.Second, 52, "secret")
		}},

		{"f_keepalived_v3", func(t *testing.T) {
			testInterop(t, bed, 3, vrInterval, 53, "")
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			t.Fatalf("subtest %s failed: the later ones depend on its state, not run", s.name)
		}
	}
}

// testInterop runs xdplb on b against keepalived on ka: xdplb 150 Master and keepalived 100
// Backup, xdplb dies, keepalived takes over; then keepalived 150 Master and xdplb 100 Backup,
// keepalived dies, xdplb takes over. Both states are sampled all along: never two Masters, never
// none for longer than Master_Down_Interval + slack.
func testInterop(t *testing.T, bed *vrrpBed, version int, interval time.Duration, vrid int, auth string) {
	top := bed.a.top
	A, B := bed.a, bed.b
	rs := bed.rs.Addr()
	slack := vrSlack
	if version == 2 {
		slack = vrSlackV2
	}
	for _, d := range []*vrrpDirector{A, B} {
		if d.d != nil && d.d.running() {
			if err := d.d.stop(5 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	B.reboot(t)
	delVIP(t, bed.ka)
	linkSet(t, bed.ka, "up")

	// 1. xdplb 150 Master, keepalived 100 Backup.
	x := xvrrp{version: version, vrid: vrid, priority: 150, interval: interval, preempt: true, authPass: auth}
	kc := kaConf{version: version, vrid: vrid, priority: 100, interval: interval, state: "BACKUP", authPass: auth}
	B.start(t, bed.rs.Addr(), x)
	k := startKeepalived(t, top, bed.ka, kc)
	rsAll := []vrrpRouter{xdplbRouter(B), keepalivedRouter(k)}
	start := time.Now()
	mdX := masterDown(version, 150, interval)
	el := waitStates(t, start, mdX+2*slack+time.Second, "xdplb (150) and keepalived (100) starting", rsAll, stMaster, stBackup)
	t.Logf("v%d: xdplb MASTER, keepalived BACKUP %v after the start", version, el.Round(time.Millisecond))
	w := watchRouters(rsAll, vrPoll)
	t.Cleanup(func() { w.stop() })
	holdStates(t, 2*interval, vrPoll, "xdplb MASTER, keepalived BACKUP", rsAll, stMaster, stBackup)
	mustHaveVIP(t, B.Node, true)
	mustHaveVIP(t, bed.ka, false)

	mdK := masterDown(version, 100, interval)
	down := B.kill9(t)
	el = waitStates(t, down, mdK+slack, "keepalived after xdplb's machine died", rsAll, stDown, stMaster)
	waitFor(t, slack, "the VIP on keepalived's node", func() (bool, string) {
		has, err := hasVIP(bed.ka)
		return has && err == nil, fmt.Sprintf("present=%t (%v)", has, err)
	})
	longest := checkOneMaster(t, fmt.Sprintf("v%d xdplb→keepalived", version), rsAll, w.stop(), mdK+slack)
	t.Logf("v%d: xdplb dead (link down + SIGKILL): keepalived MASTER after %v (Master_Down_Interval %v); longest time with no Master %v",
		version, el.Round(time.Millisecond), mdK, longest.Round(time.Millisecond))

	// 2. keepalived 150 Master, xdplb 100 Backup.
	k.Stop(5 * time.Second)
	B.reboot(t)
	kc.priority, kc.state = 150, "MASTER"
	k = startKeepalived(t, top, bed.ka, kc)
	rsAll = []vrrpRouter{xdplbRouter(B), keepalivedRouter(k)}
	el = waitStates(t, time.Now(), masterDown(version, 150, interval)+2*slack, "keepalived (150, state MASTER) alone", rsAll[1:], stMaster)
	t.Logf("v%d: keepalived (150, state MASTER) MASTER %v after its start", version, el.Round(time.Millisecond))
	x.priority = 100
	B.start(t, rs, x)
	waitStates(t, time.Now(), 2*interval+slack, "xdplb (100) joining keepalived (150)", rsAll, stBackup, stMaster)
	w = watchRouters(rsAll, vrPoll)
	w2 := w
	t.Cleanup(func() { w2.stop() })
	holdStates(t, 2*interval, vrPoll, "keepalived MASTER, xdplb BACKUP", rsAll, stBackup, stMaster)
	mustHaveVIP(t, B.Node, false)
	mustHaveVIP(t, bed.ka, true)
	if st := B.status(t); !slices.Contains(st.peerMACs(), strings.ToLower(bed.ka.MAC.String())) {
		t.Errorf("xdplb's VRRP peers: expected keepalived's MAC %s, seen %+v", bed.ka.MAC, st.Peers)
	}
	waitFor(t, 2*time.Second, "keepalived's MAC in xdplb's pinned peers map", func() (bool, string) {
		m := B.peersInMap(t)
		return slices.Contains(m, strings.ToLower(bed.ka.MAC.String())), fmt.Sprint(m)
	})

	mdX = masterDown(version, 100, interval)
	down = kill9Keepalived(t, k)
	el = waitStates(t, down, mdX+slack, "xdplb after keepalived's machine died", rsAll, stMaster, stDown)
	waitFor(t, slack, "the VIP on xdplb's node", func() (bool, string) {
		has, err := hasVIP(B.Node)
		return has && err == nil, fmt.Sprintf("present=%t (%v)", has, err)
	})
	longest = checkOneMaster(t, fmt.Sprintf("v%d keepalived→xdplb", version), rsAll, w.stop(), mdX+slack)
	t.Logf("v%d: keepalived dead (link down + SIGKILL): xdplb MASTER after %v (Master_Down_Interval %v); longest time with no Master %v",
		version, el.Round(time.Millisecond), mdX, longest.Round(time.Millisecond))
	st := B.status(t)
	t.Logf("v%d: xdplb instance: transitions %d, rejected %s", version, st.Transitions, st.Rejected)

	// Leave ka usable for the next subtest.
	delVIP(t, bed.ka)
	linkSet(t, bed.ka, "up")
}
