package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/daemon"
	"github.com/xdplb/xdplb/loader"

	"github.com/xdplb/xdplb/internal/testbed"
	"github.com/xdplb/xdplb/internal/testbed/netns"
)

// VRRPLoadOptions configures [VRRPUnderLoad].
type VRRPLoadOptions struct {
	Duration   time.Duration // how long the load runs
	Interval   time.Duration // VRRPv3 advertisement interval
	XDPLB      string        // the xdplb binary run as both directors
	Mode       string        // XDP mode of the directors: native (live frames need it on the receiver)
	Generators int           // live-frame generator threads (each locked in the LAN namespace)
	Repeat     uint32        // frames per BPF_PROG_TEST_RUN call
	Progress   io.Writer     // a few lines of progress (nil: quiet)
}

// DefaultVRRPLoadOptions: 1 minute at 30 ms adverts (the full bench must stay under 10 minutes;
// `make bench-soak` runs the 5-minute soak), two generator threads (this machine has two cores:
// the load takes everything).
func DefaultVRRPLoadOptions(xdplb string) VRRPLoadOptions {
	return VRRPLoadOptions{Duration: time.Minute, Interval: 30 * time.Millisecond, XDPLB: xdplb, Mode: "native",
		Generators: 2, Repeat: 1 << 19}
}

// QuickVRRPLoadOptions: the same for 20 s.
func QuickVRRPLoadOptions(xdplb string) VRRPLoadOptions {
	o := DefaultVRRPLoadOptions(xdplb)
	o.Duration = 20 * time.Second
	return o
}

// VRRPLoadResult is one run of [VRRPUnderLoad].
type VRRPLoadResult struct {
	DurationS   float64 `json:"duration_s"`
	IntervalMs  float64 `json:"interval_ms"`
	Mode        string  `json:"mode"`
	Generators  int     `json:"generators"`
	Offered     uint64  `json:"frames_offered"` // frames the generator ran its XDP_TX program on
	OfferedMpps float64 `json:"offered_mpps"`
	Handled     uint64  `json:"a_packets"` // A's program: counters.packets
	HandledMpps float64 `json:"a_handled_mpps"`
	TX          uint64  `json:"a_tx"` // A's program: counters.tx (balanced and XDP_TX'd to the real server)
	TXMpps      float64 `json:"a_tx_mpps"`

	Samples      int               `json:"samples"`       // status samples per director (one per interval)
	SampleErrors int               `json:"sample_errors"` // status socket queries that failed
	MaxSampleGap float64           `json:"max_sample_gap_ms"`
	AStates      map[string]int    `json:"a_states"` // samples per state
	BStates      map[string]int    `json:"b_states"`
	Transitions  int               `json:"transitions"` // state changes seen + transition counters moved (target 0)
	ATransitions uint64            `json:"a_transition_counter_delta"`
	BTransitions uint64            `json:"b_transition_counter_delta"`
	BRejected    map[string]uint64 `json:"b_rejected"` // adverts B rejected during the run, by reason
	Events       []string          `json:"events,omitempty"`

	AdvertsAtB     int     `json:"adverts_at_b"`      // A's adverts received on B's eth0 (kernel timestamps)
	AdvertsWant    int     `json:"adverts_expected"`  // duration / interval
	AdvertMaxGapMs float64 `json:"advert_max_gap_ms"` // longest silence between two adverts at B
	MasterDownMs   float64 `json:"master_down_ms"`    // B's Master_Down_Interval: 3 × interval + Skew_Time(100)

	ATxDropped    uint64 `json:"a_eth0_tx_dropped"` // A's veth: XDP_TX and stack frames the peer ring refused
	PeerRxDropped uint64 `json:"a_peer_rx_dropped"` // bridge-side peer of A: frames the generator could not queue to A
	BRxDropped    uint64 `json:"b_eth0_rx_dropped"`

	OK   bool   `json:"ok"`
	Note string `json:"note,omitempty"`
}

// vlBed is the running bench.
type vlBed struct {
	opts    VRRPLoadOptions
	ctx     context.Context
	topo    *netns.LAN
	a, b    *netns.Node
	tmp     string
	pinBase string
	socks   [2]string
	procs   []*testbed.Proc
	links   []link.Link
	progs   []*ebpf.Program
	aStats  *ebpf.Map
}

// VRRPUnderLoad runs two xdplb directors A (priority 150) and B (100) with VRRPv3 at
// opts.Interval on a bridge in network namespaces, A Master, with a service on the VIP whose real
// server is B, and drives A's eth0 as hard as the machine allows with live frames
// (BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, XDP_TX on the bridge-side peer of A's veth:
// the frames land straight in A's XDP program, which balances them and XDP_TXes them back to the
// peer, where a filter drops the TCP load and passes everything else, adverts included, to the
// bridge). Both directors' VRRP states are sampled every interval through their status sockets;
// any transition after the start is a failure. Everything is removed on return, error or signal.
func VRRPUnderLoad(opts VRRPLoadOptions) (res VRRPLoadResult, err error) {
	if os.Geteuid() != 0 {
		return res, fmt.Errorf("vrrp-load bench needs root (network namespaces, BPF)")
	}
	if opts.Duration <= 0 || opts.Interval <= 0 || opts.Generators < 1 || opts.Repeat < 1 {
		return res, fmt.Errorf("vrrp-load: want a positive duration, interval, generators and repeat")
	}
	if _, err := os.Stat(opts.XDPLB); err != nil {
		return res, fmt.Errorf("vrrp-load: xdplb binary: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	bed := &vlBed{opts: opts, ctx: ctx}
	defer func() {
		if cerr := bed.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("vrrp-load cleanup: %w", cerr))
		}
		if ctx.Err() != nil && err == nil {
			err = fmt.Errorf("vrrp-load: interrupted; everything it created is removed")
		}
	}()
	if err := bed.setup(); err != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("vrrp-load: interrupted during setup; everything it created is removed")
		}
		return res, fmt.Errorf("vrrp-load setup: %w", err)
	}
	res, err = bed.run()
	if err != nil && ctx.Err() != nil {
		return res, fmt.Errorf("vrrp-load: interrupted; everything it created is removed")
	}
	return res, err
}

func (bed *vlBed) logf(format string, args ...any) {
	if bed.opts.Progress != nil {
		fmt.Fprintf(bed.opts.Progress, format+"\n", args...)
	}
}

func (bed *vlBed) close() error {
	var wg sync.WaitGroup
	for _, p := range bed.procs {
		wg.Go(func() { p.Stop(5 * time.Second) })
	}
	wg.Wait()
	var errs []error
	for _, l := range bed.links {
		errs = append(errs, l.Close())
	}
	for _, p := range bed.progs {
		errs = append(errs, p.Close())
	}
	if bed.aStats != nil {
		errs = append(errs, bed.aStats.Close())
	}
	if bed.topo != nil {
		errs = append(errs, bed.topo.Close())
	}
	if bed.pinBase != "" {
		errs = append(errs, os.RemoveAll(bed.pinBase))
	}
	if bed.tmp != "" {
		errs = append(errs, os.RemoveAll(bed.tmp))
	}
	return errors.Join(errs...)
}

// sinkProg drops IPv4 TCP and passes everything else: on the bridge-side peer of A's veth it
// takes A's XDP_TX'd load off the bridge (native XDP_TX on a veth needs a program on the peer
// anyway) while A's adverts and ARP go on to B.
func sinkProg() (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "vl_sink", Type: ebpf.XDP, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 34),
			asm.JGT.Reg(asm.R4, asm.R3, "pass"),
			asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
			asm.JNE.Imm(asm.R5, 0x0008, "pass"), // ETH_P_IP, network order read little-endian
			asm.LoadMem(asm.R5, asm.R2, 23, asm.Byte),
			asm.JNE.Imm(asm.R5, 6, "pass"), // IPPROTO_TCP
			asm.Mov.Imm(asm.R0, xdpDrop),
			asm.Return(),
			asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
			asm.Return(),
		},
	})
}

// txProg writes dst and src MACs and returns XDP_TX: in live-frame mode the frame goes out of
// the ingress interface. The MACs are written on every run because the frame's page comes back
// to the generator's page pool after A rewrote them (XDP_TX to the real server) and the sink
// dropped it: pages are recycled without being initialised again.
func txProg(dst, src net.HardwareAddr) (*ebpf.Program, error) {
	w := func(m net.HardwareAddr, i int) int64 { return int64(int32(binary.LittleEndian.Uint32(m[i:]))) }
	h := func(m net.HardwareAddr, i int) int64 { return int64(binary.LittleEndian.Uint16(m[i:])) }
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "vl_gen_tx", Type: ebpf.XDP, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 14),
			asm.JGT.Reg(asm.R4, asm.R3, "drop"),
			asm.StoreImm(asm.R2, 0, w(dst, 0), asm.Word),
			asm.StoreImm(asm.R2, 4, h(dst, 4), asm.Half),
			asm.StoreImm(asm.R2, 6, w(src, 0), asm.Word),
			asm.StoreImm(asm.R2, 10, h(src, 4), asm.Half),
			asm.Mov.Imm(asm.R0, xdpTX),
			asm.Return(),
			asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
			asm.Return(),
		},
	})
}

// xdpMD is struct xdp_md, the context of an XDP test run.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

func (bed *vlBed) setup() error {
	var err error
	if bed.tmp, err = os.MkdirTemp("", "xdplb-bench-vrrpload-"); err != nil {
		return err
	}
	if bed.topo, err = netns.OpenLAN(nsPrefix); err != nil {
		return err
	}
	bed.pinBase = "/sys/fs/bpf/xdplb-bench-" + bed.topo.ID
	if bed.a, err = bed.topo.Add("a", foAddrA); err != nil {
		return err
	}
	if bed.b, err = bed.topo.Add("b", foAddrB); err != nil {
		return err
	}
	sink, err := sinkProg()
	if err != nil {
		return fmt.Errorf("load the peer's sink program: %w", err)
	}
	bed.progs = append(bed.progs, sink)
	for _, n := range []*netns.Node{bed.a, bed.b} {
		err := bed.topo.Do(func() error {
			l, err := netlink.LinkByName("p-" + n.Role)
			if err != nil {
				return err
			}
			xl, err := link.AttachXDP(link.XDPOptions{Program: sink, Interface: l.Attrs().Index, Flags: link.XDPDriverMode})
			if err != nil {
				return fmt.Errorf("attach the sink to p-%s: %w", n.Role, err)
			}
			bed.links = append(bed.links, xl)
			return nil
		})
		if err != nil {
			return err
		}
	}
	iv := bed.opts.Interval
	for i, d := range []struct {
		n    *netns.Node
		name string
		prio int
		rs   string
	}{
		{bed.b, "b", foPrioB, fmt.Sprintf("      - address: %s\n        local: true\n", bed.b.Addr())},
		{bed.a, "a", foPrioA, fmt.Sprintf("      - address: %s\n        mac: %s\n", bed.b.Addr(), bed.b.MAC)},
	} {
		conf := filepath.Join(bed.tmp, d.name+".conf")
		text := fmt.Sprintf(`# xdplb bench vrrp-load, director %s
interfaces: [%s]
maps:
  conntrack: 4096
  persist: 1024
services:
  - name: mysql
    vip: %s
    port: %d
    check:
      type: none
    real_servers:
%svrrp:
  - name: VI_%d
    interface: %s
    version: 3
    vrid: %d
    priority: %d
    advert_interval: %v
    preempt: true
    vips: [%s]
`, d.name, netns.NodeLink, foVIP, foPort, d.rs, foVRID, netns.NodeLink, foVRID, d.prio, iv, foVIP)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return err
		}
		sock := filepath.Join(bed.tmp, d.name+".sock")
		bed.socks[1-i] = sock // socks[0] = A, socks[1] = B
		p, err := testbed.StartProc(d.n.Path, "xdplb@"+d.name, filepath.Join(bed.tmp, d.name+".log"), bed.opts.XDPLB,
			"--pin-root", filepath.Join(bed.pinBase, d.name), "run", "--config", conf, "--mode", bed.opts.Mode,
			"--status-socket", sock, "--detach-on-exit")
		if err != nil {
			return err
		}
		bed.procs = append(bed.procs, p)
	}
	// Wait for A Master, B Backup.
	deadline := time.Now().Add(30 * time.Second)
	for {
		sa, ea := bed.status(0)
		sb, eb := bed.status(1)
		if ea == nil && eb == nil && sa.State == "MASTER" && sb.State == "BACKUP" {
			break
		}
		for _, p := range bed.procs {
			if !p.Running() {
				return fmt.Errorf("%s exited (%v); log:\n%s", p.Name, p.WaitErr(), p.LogTail(20))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("A did not become Master with B Backup (A %s %v, B %s %v)\nA's log:\n%s\nB's log:\n%s",
				sa.State, ea, sb.State, eb, bed.procs[1].LogTail(15), bed.procs[0].LogTail(15))
		}
		if err := sleepCtx(bed.ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	o, err := loader.OpenAnyNamespace(filepath.Join(bed.pinBase, "a"), netns.NodeLink)
	if err != nil {
		return fmt.Errorf("open A's pinned maps: %w", err)
	}
	bed.aStats = o.Stats
	o.Stats = nil
	_ = o.Close()
	return sleepCtx(bed.ctx, 3*iv+200*time.Millisecond) // B settles
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// status asks director i (0 = A, 1 = B) for its VRRP instance.
func (bed *vlBed) status(i int) (daemon.VRRPStatus, error) {
	ctx, cancel := context.WithTimeout(bed.ctx, time.Second)
	defer cancel()
	r, err := daemon.QueryStatus(ctx, bed.socks[i])
	if err != nil {
		return daemon.VRRPStatus{}, err
	}
	if len(r.VRRP) != 1 {
		return daemon.VRRPStatus{}, fmt.Errorf("%d VRRP instances in the status", len(r.VRRP))
	}
	return r.VRRP[0], nil
}

func (bed *vlBed) counters() (loader.Counters, error) {
	c, err := control.ReadCounters(bed.aStats)
	return loader.Counters(c), err
}

type vlLinkStats struct{ aTxDrop, peerRxDrop, bRxDrop uint64 }

func (bed *vlBed) linkStats() (vlLinkStats, error) {
	var s vlLinkStats
	get := func(ns *netns.NS, name string, f func(*netlink.LinkStatistics)) error {
		return ns.Do(func() error {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if st := l.Attrs().Statistics; st != nil {
				f(st)
			}
			return nil
		})
	}
	err := errors.Join(
		get(bed.a.NS, netns.NodeLink, func(st *netlink.LinkStatistics) { s.aTxDrop = st.TxDropped }),
		get(bed.topo.NS, "p-a", func(st *netlink.LinkStatistics) { s.peerRxDrop = st.RxDropped }),
		get(bed.b.NS, netns.NodeLink, func(st *netlink.LinkStatistics) { s.bRxDrop = st.RxDropped }))
	return s, err
}

// generate runs live-frame calls on a thread locked in the LAN namespace until stop is set.
func (bed *vlBed) generate(prog *ebpf.Program, ifindex int, pkt []byte, repeat uint32, stop *atomic.Bool, sent *atomic.Uint64) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves the host namespace
		if err := vnetns.Set(bed.topo.Handle()); err != nil {
			errc <- err
			return
		}
		for !stop.Load() {
			_, err := prog.Run(&ebpf.RunOptions{Data: pkt, Repeat: repeat, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES,
				BatchSize: 64, Context: &xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(ifindex)}})
			if err != nil {
				errc <- fmt.Errorf("live frames: %w", err)
				return
			}
			sent.Add(uint64(repeat))
		}
		errc <- nil
	}()
	return <-errc
}

func (bed *vlBed) run() (VRRPLoadResult, error) {
	o := bed.opts
	res := VRRPLoadResult{IntervalMs: ms(o.Interval), Mode: o.Mode, Generators: o.Generators,
		MasterDownMs: ms(3*o.Interval + foSkew(3, foPrioB, o.Interval)), AStates: map[string]int{}, BStates: map[string]int{}}
	gen, err := txProg(bed.a.MAC, net.HardwareAddr(clientMAC[:]))
	if err != nil {
		return res, fmt.Errorf("load the generator program: %w", err)
	}
	bed.progs = append(bed.progs, gen)
	var ifindex int
	if err := bed.topo.Do(func() error {
		l, err := netlink.LinkByName("p-a")
		if err == nil {
			ifindex = l.Attrs().Index
		}
		return err
	}); err != nil {
		return res, err
	}
	pkt := frame(clientMAC, [6]byte(bed.a.MAC), netip.MustParseAddr("10.98.0.50"), foVIP, 40000, uint16(foPort))

	// Check that the frames reach A's program and are balanced (tx), before timing anything.
	c0, err := bed.counters()
	if err != nil {
		return res, fmt.Errorf("read A's counters: %w", err)
	}
	var probeSent atomic.Uint64
	if err := bed.generateN(gen, ifindex, pkt, 10000, &probeSent); err != nil {
		return res, err
	}
	time.Sleep(100 * time.Millisecond)
	c1, err := bed.counters()
	if err != nil {
		return res, err
	}
	if d := c1.Tx - c0.Tx; d < probeSent.Load()/2 {
		return res, fmt.Errorf("live frames do not reach A's program as balanced traffic: %d sent, A counted packets +%d tx +%d "+
			"(pass_other_host %d, pass_no_service %d, drop_no_backend %d)", probeSent.Load(), c1.Packets-c0.Packets, d,
			c1.PassOtherHost, c1.PassNoService, c1.DropNoBackend)
	}
	bed.logf("vrrp-load: live frames reach A (%d sent, tx +%d); A Master, B Backup; loading A for %v with %d generator thread(s)",
		probeSent.Load(), c1.Tx-c0.Tx, o.Duration, o.Generators)

	sa0, err := bed.status(0)
	if err != nil {
		return res, fmt.Errorf("A's status: %w", err)
	}
	sb0, err := bed.status(1)
	if err != nil {
		return res, fmt.Errorf("B's status: %w", err)
	}
	adv, err := watchAdvertsTS(bed.b.NS, bed.a.Addr())
	if err != nil {
		return res, err
	}
	ls0, err := bed.linkStats()
	if err != nil {
		return res, err
	}
	c0, err = bed.counters()
	if err != nil {
		return res, err
	}

	// Sampler: both directors every interval.
	var evMu sync.Mutex
	stopSample := make(chan struct{})
	sampleDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(sampleDone)
		tk := time.NewTicker(o.Interval)
		defer tk.Stop()
		prev := [2]string{sa0.State, sb0.State}
		want := [2]string{"MASTER", "BACKUP"}
		last := time.Now()
		for {
			select {
			case <-stopSample:
				return
			case <-tk.C:
			}
			now := time.Now()
			var wg sync.WaitGroup
			var st [2]daemon.VRRPStatus
			var errs [2]error
			for i := range 2 {
				wg.Go(func() { st[i], errs[i] = bed.status(i) })
			}
			wg.Wait()
			evMu.Lock()
			res.Samples++
			res.MaxSampleGap = max(res.MaxSampleGap, ms(now.Sub(last)))
			last = now
			for i, name := range []string{"A", "B"} {
				if errs[i] != nil {
					res.SampleErrors++
					continue
				}
				s := st[i].State
				if i == 0 {
					res.AStates[s]++
				} else {
					res.BStates[s]++
				}
				if s != prev[i] || s != want[i] {
					if s != prev[i] {
						res.Transitions++
					}
					if len(res.Events) < 20 {
						res.Events = append(res.Events, fmt.Sprintf("+%.3fs %s %s (was %s, master %s, transitions counter %d)",
							now.Sub(start).Seconds(), name, s, prev[i], st[i].Master, st[i].Transitions))
					}
				}
				prev[i] = s
			}
			evMu.Unlock()
		}
	}()

	var stop atomic.Bool
	var sent atomic.Uint64
	genErrs := make(chan error, o.Generators)
	for range o.Generators {
		go func() { genErrs <- bed.generate(gen, ifindex, pkt, o.Repeat, &stop, &sent) }()
	}
	progress := time.NewTicker(max(o.Duration/10, 5*time.Second))
	end := time.After(o.Duration)
	var runErr error
wait:
	for {
		select {
		case <-bed.ctx.Done():
			runErr = bed.ctx.Err()
			break wait
		case <-end:
			break wait
		case err := <-genErrs:
			o.Generators-- // one fewer to wait for
			if err == nil {
				err = errors.New("a generator stopped")
			}
			runErr = err
			break wait
		case <-progress.C:
			evMu.Lock()
			tr := res.Transitions
			evMu.Unlock()
			bed.logf("vrrp-load: +%4.0fs offered %.2f Mpps, transitions so far %d", time.Since(start).Seconds(),
				float64(sent.Load())/time.Since(start).Seconds()/1e6, tr)
		}
	}
	progress.Stop()
	stop.Store(true)
	for range o.Generators {
		if err := <-genErrs; err != nil && runErr == nil {
			runErr = err
		}
	}
	elapsed := time.Since(start)
	close(stopSample)
	<-sampleDone
	adv.close()
	if runErr != nil {
		return res, runErr
	}
	c1, err = bed.counters()
	if err != nil {
		return res, err
	}
	ls1, err := bed.linkStats()
	if err != nil {
		return res, err
	}
	sa1, errA := bed.status(0)
	sb1, errB := bed.status(1)
	if err := errors.Join(errA, errB); err != nil {
		return res, fmt.Errorf("status after the load: %w", err)
	}
	res.DurationS = elapsed.Seconds()
	res.Offered = sent.Load()
	res.OfferedMpps = float64(res.Offered) / elapsed.Seconds() / 1e6
	res.Handled = c1.Packets - c0.Packets
	res.HandledMpps = float64(res.Handled) / elapsed.Seconds() / 1e6
	res.TX = c1.Tx - c0.Tx
	res.TXMpps = float64(res.TX) / elapsed.Seconds() / 1e6
	res.ATransitions = sa1.Transitions - sa0.Transitions
	res.BTransitions = sb1.Transitions - sb0.Transitions
	res.Transitions += int(res.ATransitions + res.BTransitions)
	if sa1.State != "MASTER" || sb1.State != "BACKUP" {
		res.Events = append(res.Events, fmt.Sprintf("after the load: A %s, B %s", sa1.State, sb1.State))
	}
	res.BRejected = map[string]uint64{}
	for k, v := range sb1.Rejected {
		if d := v - sb0.Rejected[k]; d > 0 {
			res.BRejected[k] = d
		}
	}
	res.AdvertsAtB, res.AdvertMaxGapMs = adv.result()
	res.AdvertsWant = int(elapsed / o.Interval)
	res.ATxDropped = ls1.aTxDrop - ls0.aTxDrop
	res.PeerRxDropped = ls1.peerRxDrop - ls0.peerRxDrop
	res.BRxDropped = ls1.bRxDrop - ls0.bRxDrop
	res.OK = res.Transitions == 0 && len(res.AStates) == 1 && res.AStates["MASTER"] > 0 &&
		len(res.BStates) == 1 && res.BStates["BACKUP"] > 0 && sa1.State == "MASTER" && sb1.State == "BACKUP" && res.SampleErrors == 0 && res.Samples > 0
	var notes []string
	if res.ATransitions+res.BTransitions > 0 {
		notes = append(notes, fmt.Sprintf("transition counters moved: A +%d, B +%d (between two samples: too short for the sampler)",
			res.ATransitions, res.BTransitions))
	}
	if res.SampleErrors > 0 {
		notes = append(notes, fmt.Sprintf("%d status queries failed", res.SampleErrors))
	}
	if res.AdvertMaxGapMs >= res.MasterDownMs {
		notes = append(notes, fmt.Sprintf("B went %.1f ms without an advert from A (Master_Down_Interval %.1f ms)",
			res.AdvertMaxGapMs, res.MasterDownMs))
	}
	if lost := res.AdvertsWant - res.AdvertsAtB; lost > res.AdvertsWant/100 {
		notes = append(notes, fmt.Sprintf("B received %d of ~%d adverts (A's veth dropped %d frames on egress)",
			res.AdvertsAtB, res.AdvertsWant, res.ATxDropped))
	}
	if len(res.BRejected) > 0 {
		notes = append(notes, fmt.Sprintf("B rejected adverts: %v", res.BRejected))
	}
	if !res.OK && len(res.Events) > 0 {
		notes = append(notes, "events: "+strings.Join(res.Events, "; "))
	}
	res.Note = strings.Join(notes, "; ")
	return res, nil
}

// generateN runs one live-frame call of n frames (the reachability check).
func (bed *vlBed) generateN(prog *ebpf.Program, ifindex int, pkt []byte, n uint32, sent *atomic.Uint64) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked
		if err := vnetns.Set(bed.topo.Handle()); err != nil {
			errc <- err
			return
		}
		_, err := prog.Run(&ebpf.RunOptions{Data: pkt, Repeat: n, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES,
			BatchSize: 64, Context: &xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(ifindex)}})
		if err == nil {
			sent.Add(uint64(n))
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("live frames into A (ifindex %d of p-a): %w", ifindex, err)
	}
	return nil
}

// vlAdverts counts VRRP adverts from one source on a node's eth0 with kernel receive timestamps
// (SO_TIMESTAMPNS), so that a starved reader does not inflate the gaps.
type vlAdverts struct {
	fd     int
	src    netip.Addr
	mu     sync.Mutex
	n      int
	last   time.Time
	maxGap time.Duration
	done   chan struct{}
	closed atomic.Bool
}

func watchAdvertsTS(ns *netns.NS, src netip.Addr) (*vlAdverts, error) {
	w := &vlAdverts{fd: -1, src: src, done: make(chan struct{})}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(netns.NodeLink)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			unix.Close(fd)
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		w.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("advert watcher in %s: %w", ns.Name, err)
	}
	go w.loop()
	return w, nil
}

func (w *vlAdverts) loop() {
	defer close(w.done)
	buf := make([]byte, 2048)
	oob := make([]byte, 128)
	for !w.closed.Load() {
		n, oobn, _, _, err := unix.Recvmsg(w.fd, buf, oob, 0)
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			return
		}
		if n < 20 || buf[0]>>4 != 4 || buf[9] != 112 || netip.AddrFrom4([4]byte(buf[12:16])) != w.src {
			continue
		}
		at := time.Now()
		if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SO_TIMESTAMPNS &&
					len(cm.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					ts := *(*unix.Timespec)(unsafe.Pointer(&cm.Data[0]))
					at = time.Unix(ts.Unix())
				}
			}
		}
		w.mu.Lock()
		if w.n > 0 {
			w.maxGap = max(w.maxGap, at.Sub(w.last))
		}
		w.n++
		w.last = at
		w.mu.Unlock()
	}
}

func (w *vlAdverts) close() {
	w.closed.Store(true)
	<-w.done // the loop sees the flag within SO_RCVTIMEO
	unix.Close(w.fd)
}

func (w *vlAdverts) result() (int, float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, ms(w.maxGap)
}

// PrintVRRPLoad writes the result as a table with the verdict.
func PrintVRRPLoad(w io.Writer, r VRRPLoadResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "duration s\tinterval\tmode\tgen threads\toffered Mpps\tA handled Mpps\tA tx Mpps\tsamples\ttransitions\tadverts at B\tmax advert gap ms\tMaster_Down ms\tB rejected\ttarget\t")
	rej := "0"
	if len(r.BRejected) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(r.BRejected)) {
			parts = append(parts, fmt.Sprintf("%s=%d", k, r.BRejected[k]))
		}
		rej = strings.Join(parts, ",")
	}
	fmt.Fprintf(tw, "%.1f\t%v\t%s\t%d\t%.3f\t%.3f\t%.3f\t%d\t%d\t%d/%d\t%.1f\t%.1f\t%s\t0 transitions %s\t\n",
		r.DurationS, time.Duration(r.IntervalMs*float64(time.Millisecond)), r.Mode, r.Generators, r.OfferedMpps,
		r.HandledMpps, r.TXMpps, r.Samples, r.Transitions, r.AdvertsAtB, r.AdvertsWant, r.AdvertMaxGapMs, r.MasterDownMs,
		rej, okMissed(r.OK))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "A states %v, B states %v; frames offered %d, A packets %d, tx %d; A eth0 tx_dropped %d, p-a rx_dropped %d, B eth0 rx_dropped %d\n",
		r.AStates, r.BStates, r.Offered, r.Handled, r.TX, r.ATxDropped, r.PeerRxDropped, r.BRxDropped)
	if r.Note != "" {
		fmt.Fprintln(w, r.Note)
	}
	return nil
}
