//go:build linux

package vrrp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdplb/xdplb/internal/clock"
)

// InstanceConfig is one VRRP instance (keepalived's vrrp_instance).
type InstanceConfig struct {
	Name  string
	Iface string
	// Version 0 means 3 (see Config). v2 is IPv4 only.
	Version  Version
	VRID     uint8
	Priority uint8         // 0 means 100
	Interval time.Duration // 0 means 1 s
	Preempt  bool
	// PreemptDelay: see Config.
	PreemptDelay time.Duration
	Auth         AuthType // v2 only
	Password     string
	// PseudoHeader: whether a v3 IPv4 checksum covers the pseudo-header; nil means true
	// (RFC 5798 and keepalived's default).
	PseudoHeader *bool
	// VIPs are the virtual addresses, all of one family: the instance's family.
	VIPs []netip.Addr
	// VIPPrefixLen is the prefix length the VIPs are added with; 0 means /32 or /128.
	VIPPrefixLen int
	// UnicastPeers: send to each of these instead of the multicast group.
	UnicastPeers []netip.Addr
	// SourceAddr is the source of our adverts and our primary address (the tie-breaker). Invalid
	// means the interface's first address of the family (first link-local one for IPv6).
	SourceAddr netip.Addr
	// NotifyCmd is run (never through a shell) on every state change with keepalived's extra
	// arguments: INSTANCE <name> <MASTER|BACKUP|FAULT|STOP> <priority>. Runs are serialised.
	NotifyCmd []string
	// NotifyTimeout kills a notify command still running after it; 0 means 30 s.
	NotifyTimeout time.Duration
	// GARPRepeat is how many gratuitous ARPs / unsolicited NAs per VIP are sent on becoming
	// Master, and again GARPDelay later (keepalived's garp_master_repeat, garp_master_delay).
	// 0 means 5; negative means none.
	GARPRepeat int
	// GARPDelay: 0 means 5 s; negative means no second burst.
	GARPDelay time.Duration
	// PeerTimeout forgets a peer silent for that long; 0 means 3 × Master_Down_Interval.
	PeerTimeout time.Duration
}

// pseudoHeader returns the PseudoHeader setting with its default.
func (c InstanceConfig) pseudoHeader() bool { return c.PseudoHeader == nil || *c.PseudoHeader }

// machineConfig is the Machine's part of c.
func (c InstanceConfig) machineConfig() Config {
	return Config{
		VRID: c.VRID, Priority: c.Priority, Interval: c.Interval, Version: c.Version,
		Preempt: c.Preempt, PreemptDelay: c.PreemptDelay,
	}
}

// withDefaults fills in the defaults that do not need the interface.
func (c InstanceConfig) withDefaults() InstanceConfig {
	mc := c.machineConfig().withDefaults()
	c.Version, c.Priority, c.Interval = mc.Version, mc.Priority, mc.Interval
	if c.Name == "" {
		c.Name = fmt.Sprintf("%s-%d", c.Iface, c.VRID)
	}
	if c.GARPRepeat == 0 {
		c.GARPRepeat = 5
	}
	if c.GARPDelay == 0 {
		c.GARPDelay = 5 * time.Second
	}
	if c.NotifyTimeout == 0 {
		c.NotifyTimeout = 30 * time.Second
	}
	if c.PeerTimeout <= 0 {
		unit := c.Interval
		if c.Version == V2 {
			unit = time.Second
		}
		skew := time.Duration(256-int64(c.Priority)) * unit / 256
		c.PeerTimeout = 3 * (3*c.Interval + skew)
	}
	c.VIPs = slices.Clone(c.VIPs)
	for i, v := range c.VIPs {
		c.VIPs[i] = v.Unmap()
	}
	c.UnicastPeers = slices.Clone(c.UnicastPeers)
	for i, v := range c.UnicastPeers {
		c.UnicastPeers[i] = v.Unmap()
	}
	c.SourceAddr = c.SourceAddr.Unmap()
	return c
}

// Validate checks c (defaults applied) without looking at the system.
func (c InstanceConfig) Validate() error {
	c = c.withDefaults()
	if err := c.machineConfig().Validate(); err != nil {
		return fmt.Errorf("vrrp: instance %s: %w", c.Name, err)
	}
	if c.Iface == "" {
		return fmt.Errorf("vrrp: instance %s: no interface", c.Name)
	}
	if len(c.VIPs) == 0 {
		return fmt.Errorf("vrrp: instance %s: no VIPs", c.Name)
	}
	if len(c.VIPs) > 255 {
		return fmt.Errorf("vrrp: instance %s: %d VIPs, at most 255", c.Name, len(c.VIPs))
	}
	is6 := c.VIPs[0].Is6()
	check := func(what string, a netip.Addr) error {
		if !a.IsValid() || a.Is6() != is6 {
			return fmt.Errorf("vrrp: instance %s: %s %v is not of the VIPs' family", c.Name, what, a)
		}
		return nil
	}
	for _, v := range c.VIPs {
		if err := check("VIP", v); err != nil {
			return err
		}
	}
	for _, p := range c.UnicastPeers {
		if err := check("unicast peer", p); err != nil {
			return err
		}
	}
	if c.SourceAddr.IsValid() {
		if err := check("source address", c.SourceAddr); err != nil {
			return err
		}
	}
	if is6 && c.Version == V2 {
		return fmt.Errorf("vrrp: instance %s: VRRPv2 is IPv4 only", c.Name)
	}
	if c.Auth != AuthNone && c.Auth != AuthPass {
		return fmt.Errorf("vrrp: instance %s: auth type %d not supported", c.Name, c.Auth)
	}
	if c.VIPPrefixLen < 0 || c.VIPPrefixLen > c.VIPs[0].BitLen() {
		return fmt.Errorf("vrrp: instance %s: VIP prefix length %d", c.Name, c.VIPPrefixLen)
	}
	return nil
}

// InstanceStatus is a snapshot of an instance.
type InstanceStatus struct {
	Name        string
	State       State
	Priority    uint8 // ours
	MasterAddr  netip.Addr
	Transitions uint64
	SplitBrains uint64
	SendErrors  uint64
	Received    uint64            // valid adverts
	Rejected    map[string]uint64 // by Reason.String()
	Peers       []Peer
}

// InstanceOption changes how NewInstance builds an instance (mostly for tests).
type InstanceOption func(*instanceOptions)

type instanceOptions struct {
	clock    clock.Clock
	conn     PacketConn
	vips     VIPManager
	ann      Announcer
	peerFunc func([]Peer)
}

// WithClock replaces the system clock.
func WithClock(c clock.Clock) InstanceOption { return func(o *instanceOptions) { o.clock = c } }

// WithPacketConn replaces the sockets (the config's SourceAddr must then be set).
func WithPacketConn(c PacketConn) InstanceOption { return func(o *instanceOptions) { o.conn = c } }

// WithVIPManager replaces the netlink VIP manager.
func WithVIPManager(m VIPManager) InstanceOption { return func(o *instanceOptions) { o.vips = m } }

// WithAnnouncer replaces the gratuitous ARP / NA sender.
func WithAnnouncer(a Announcer) InstanceOption { return func(o *instanceOptions) { o.ann = a } }

// WithPeerFunc sets a function called, from the instance's goroutine, with every peer whenever a
// peer appears, changes MAC or priority, or expires after PeerTimeout of silence. It must not
// block.
func WithPeerFunc(f func([]Peer)) InstanceOption { return func(o *instanceOptions) { o.peerFunc = f } }

// Instance runs one virtual router: one goroutine (Run) owns the Machine and carries out its
// actions; a reader goroutine feeds it received packets.
type Instance struct {
	cfg      InstanceConfig
	log      *slog.Logger
	clock    clock.Clock
	conn     PacketConn
	vips     VIPManager
	ann      Announcer
	peerFunc func([]Peer)
	m        *Machine
	dests    []netip.Addr

	// owned by the Run goroutine
	timers  Timers
	garpAt  time.Time // second announcement burst; zero: none
	peers   *peerTable
	peersAt time.Time // next peer expiry check; zero: none
	armed   time.Time // deadline the Timer is set for; zero: stopped
	notifyq chan []string

	events    chan Event
	stopc     chan struct{}
	stopOnce  sync.Once
	started   atomic.Bool
	closeOnce sync.Once

	mu     sync.Mutex
	status InstanceStatus
}

// NewInstance checks cfg and opens what the instance needs on cfg.Iface, in the current network
// namespace: the VRRP sockets (Conn), a netlink handle (NetlinkVIPs) and the announcer's sockets,
// unless options replace them. Run (or Close) releases them.
func NewInstance(cfg InstanceConfig, log *slog.Logger, opts ...InstanceOption) (*Instance, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var o instanceOptions
	for _, f := range opts {
		f(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("instance", cfg.Name, "vrid", cfg.VRID)
	if o.clock == nil {
		o.clock = clock.Real{}
	}
	is6 := cfg.VIPs[0].Is6()
	in := &Instance{
		cfg: cfg, log: log, clock: o.clock, peerFunc: o.peerFunc,
		events: make(chan Event, 16), stopc: make(chan struct{}),
		peers: newPeerTable(cfg.PeerTimeout),
	}
	ok := false
	defer func() {
		if !ok {
			in.closeAll()
		}
	}()
	if !cfg.SourceAddr.IsValid() {
		if o.conn != nil {
			return nil, fmt.Errorf("vrrp: instance %s: a PacketConn was given without SourceAddr", cfg.Name)
		}
		src, err := interfaceAddr(cfg.Iface, is6)
		if err != nil {
			return nil, fmt.Errorf("vrrp: instance %s: %w", cfg.Name, err)
		}
		in.cfg.SourceAddr = src
	}
	in.conn, in.vips, in.ann = o.conn, o.vips, o.ann
	// Locals, not the interface fields: a nil *Conn in an interface is not a nil interface.
	if in.conn == nil {
		c, err := OpenConn(ConnConfig{Iface: cfg.Iface, Source: in.cfg.SourceAddr})
		if err != nil {
			return nil, err
		}
		in.conn = c
	}
	if in.vips == nil {
		v, err := NewNetlinkVIPs(log, cfg.Iface, cfg.VIPs, cfg.VIPPrefixLen)
		if err != nil {
			return nil, err
		}
		in.vips = v
	}
	if in.ann == nil {
		a, err := NewLinkAnnouncer(cfg.Iface, !is6, is6)
		if err != nil {
			return nil, err
		}
		in.ann = a
	}
	in.dests = cfg.UnicastPeers
	if len(in.dests) == 0 {
		in.dests = []netip.Addr{GroupV4}
		if is6 {
			in.dests = []netip.Addr{GroupV6}
		}
	}
	in.m = NewMachine(cfg.machineConfig(), in.cfg.SourceAddr)
	in.status = InstanceStatus{Name: cfg.Name, State: Init, Priority: in.m.Config().Priority, Rejected: map[string]uint64{}}
	ok = true
	return in, nil
}

// interfaceAddr returns the first address of the family on iface (the first link-local one for
// IPv6, as VRRPv3 wants).
func interfaceAddr(iface string, is6 bool) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %q: %w", iface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", iface, err)
	}
	var first netip.Addr
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is6() != is6 {
			continue
		}
		if !is6 || ip.IsLinkLocalUnicast() {
			return ip, nil
		}
		if !first.IsValid() {
			first = ip
		}
	}
	if first.IsValid() {
		return first, nil
	}
	fam := "IPv4"
	if is6 {
		fam = "IPv6"
	}
	return netip.Addr{}, fmt.Errorf("no %s address on %s", fam, iface)
}

// Config returns the instance's configuration with its defaults filled in.
func (in *Instance) Config() InstanceConfig { return in.cfg }

// Status returns a snapshot of the instance. Safe for concurrent use.
func (in *Instance) Status() InstanceStatus {
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.status
	s.Rejected = make(map[string]uint64, len(in.status.Rejected))
	for k, v := range in.status.Rejected {
		s.Rejected[k] = v
	}
	s.Peers = slices.Clone(in.status.Peers)
	return s
}

// Stop asks Run to stop as on cancellation of its context (gracefully). It does not wait.
func (in *Instance) Stop() { in.stopOnce.Do(func() { close(in.stopc) }) }

// SetTracking reports the aggregated state of tracked checks: down puts the instance in Fault.
// It may be called before Run: the instance then starts in Fault. It does not block (the event is dropped if 16 are already queued).
func (in *Instance) SetTracking(up bool) {
	in.event(map[bool]Event{true: TrackUp{}, false: TrackDown{}}[up])
}

// SetInterface reports the state of the interface: down puts the instance in Fault. Like
// SetTracking, it may be called before Run and does not block.
func (in *Instance) SetInterface(up bool) {
	in.event(map[bool]Event{true: IfaceUp{}, false: IfaceDown{}}[up])
}

func (in *Instance) event(ev Event) {
	select {
	case in.events <- ev:
	default:
		in.log.Warn("VRRP event queue full: event dropped", "event", fmt.Sprintf("%T", ev))
	}
}

// Close releases the sockets and the netlink handle of an instance that was never Run. Run does
// it itself.
func (in *Instance) Close() error {
	if in.started.Load() {
		return nil
	}
	in.closeAll()
	return nil
}

func (in *Instance) closeAll() {
	in.closeOnce.Do(func() {
		if in.conn != nil {
			_ = in.conn.Close()
		}
		if in.vips != nil {
			_ = in.vips.Close()
		}
		if in.ann != nil {
			_ = in.ann.Close()
		}
	})
}

// Run runs the instance until ctx ends or Stop is called, then stops gracefully: a Master sends a
// priority-0 advertisement and removes its VIPs; VIPs we added are removed in any case. It
// returns nil after a graceful stop. Run may be called once.
func (in *Instance) Run(ctx context.Context) error {
	if !in.started.CompareAndSwap(false, true) {
		return errors.New("vrrp: instance already run")
	}
	defer in.closeAll()

	rctx, cancelReader := context.WithCancel(context.Background())
	pkts := make(chan Packet, 64)
	readerDone := make(chan struct{})
	go in.reader(rctx, pkts, readerDone)

	in.notifyq = make(chan []string, 32)
	notifyDone := make(chan struct{})
	go in.notifier(in.notifyq, notifyDone)

	defer func() {
		cancelReader()
		_ = in.conn.Close()
		<-readerDone
		close(in.notifyq)
		<-notifyDone
	}()

	timer := in.clock.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	in.log.Info("VRRP instance starting", "iface", in.cfg.Iface, "src", in.cfg.SourceAddr,
		"priority", in.m.Config().Priority, "version", in.m.Config().Version, "vips", in.cfg.VIPs,
		"dests", in.dests)
	// Interface and tracking states reported before Run apply to the Startup: an instance with a
	// fault pending starts in Fault, not in Backup for an instant.
	for pending := true; pending; {
		select {
		case ev := <-in.events:
			in.handle(in.clock.Now(), ev)
		default:
			pending = false
		}
	}
	// VIPs left on the interface by a killed run are ours to clear: a node starts without them
	// and adds them only on becoming Master (keepalived: "removing VIPs" at start).
	if err := in.vips.Remove(); err != nil {
		in.log.Warn("removing leftover VIPs at start", "err", err)
	}
	in.handle(in.clock.Now(), Startup{})
	for {
		in.rearm(timer)
		select {
		case p := <-pkts:
			in.packet(p)
		case <-timer.C():
			in.armed = time.Time{}
			in.fire()
		case ev := <-in.events:
			in.handle(in.clock.Now(), ev)
		case <-ctx.Done():
			in.shutdown("context done")
			return nil
		case <-in.stopc:
			in.shutdown("stop requested")
			return nil
		}
	}
}

// reader feeds received packets to the Run goroutine until ctx ends or the conn is closed.
func (in *Instance) reader(ctx context.Context, out chan<- Packet, done chan<- struct{}) {
	defer close(done)
	fails := 0
	for {
		p, err := in.conn.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				return
			}
			fails++
			if fails == 1 || fails%100 == 0 {
				in.log.Warn("VRRP receive failed", "err", err, "failures", fails)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		fails = 0
		select {
		case out <- p:
		case <-ctx.Done():
			return
		}
	}
}

// rearm sets the Timer for the earliest deadline of the Machine's timers, the second
// announcement burst and the peer expiry.
func (in *Instance) rearm(t clock.Timer) {
	var next time.Time
	consider := func(at time.Time, ok bool) {
		if ok && !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	consider(in.timers.Next())
	consider(in.garpAt, true)
	consider(in.peersAt, true)
	if next.Equal(in.armed) {
		return
	}
	t.Stop()
	in.armed = next
	if !next.IsZero() {
		t.Reset(max(next.Sub(in.clock.Now()), 0))
	}
}

// fire runs what is due.
func (in *Instance) fire() {
	now := in.clock.Now()
	for id, ok := in.timers.Pop(now); ok; id, ok = in.timers.Pop(now) {
		in.handle(now, Timeout{Timer: id})
	}
	if !in.garpAt.IsZero() && !in.garpAt.After(now) {
		in.garpAt = time.Time{}
		if in.m.State() == Master {
			in.announce()
		}
	}
	if !in.peersAt.IsZero() && !in.peersAt.After(now) {
		in.peersAt = time.Time{}
		if in.peers.expire(now) {
			in.peersChanged()
		}
		if at, ok := in.peers.next(); ok {
			in.peersAt = at
		}
	}
}

// packet parses a received packet and feeds a valid advert to the Machine.
func (in *Instance) packet(p Packet) {
	now := in.clock.Now()
	adv, err := Parse(p.Payload, p.Src, p.Dst, ParseOptions{
		Version: in.m.Config().Version, VRID: in.cfg.VRID, TTL: p.TTL,
		PseudoHeader: in.cfg.pseudoHeader(), Auth: in.cfg.Auth, Password: in.cfg.Password,
		Interval: in.m.Config().Interval,
	})
	if err != nil {
		reason := "other"
		var re *RejectError
		if errors.As(err, &re) {
			reason = re.Reason.String()
		}
		in.mu.Lock()
		in.status.Rejected[reason]++
		in.mu.Unlock()
		in.log.Debug("VRRP packet rejected", "src", p.Src, "mac", p.SrcMAC, "reason", reason, "err", err)
		return
	}
	if !sameAddrs(adv.Addrs, in.cfg.VIPs) {
		in.log.Debug("VRRP advert with other addresses than ours", "src", p.Src, "addrs", adv.Addrs)
	}
	if in.peers.seen(p.Src, p.SrcMAC, adv.Priority, now) {
		in.peersChanged()
	}
	if in.peersAt.IsZero() {
		in.peersAt, _ = in.peers.next()
	}
	in.handle(now, AdvertRecv{Priority: adv.Priority, Interval: adv.Interval, From: p.Src})
	in.mu.Lock()
	in.status.Received++
	in.mu.Unlock()
}

func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func (in *Instance) peersChanged() {
	list := in.peers.list()
	in.mu.Lock()
	in.status.Peers = list
	in.mu.Unlock()
	in.log.Debug("VRRP peers changed", "peers", len(list))
	if in.peerFunc != nil {
		in.peerFunc(in.peers.list())
	}
}

// handle feeds ev to the Machine and carries out the actions.
func (in *Instance) handle(now time.Time, ev Event) {
	acts := in.m.Handle(now, ev)
	in.timers.Apply(now, acts)
	for _, a := range acts {
		switch a := a.(type) {
		case SendAdvert:
			in.send(a.Priority)
		case AddVIPs:
			if err := in.vips.Add(); err != nil {
				in.log.Error("VRRP: adding VIPs failed", "err", err)
			}
		case RemoveVIPs:
			in.garpAt = time.Time{}
			if err := in.vips.Remove(); err != nil {
				in.log.Error("VRRP: removing VIPs failed", "err", err)
			}
		case Announce:
			in.announce()
			if in.cfg.GARPDelay > 0 && in.cfg.GARPRepeat > 0 {
				in.garpAt = now.Add(in.cfg.GARPDelay)
			}
		case StateChange:
			in.stateChange(a)
		case SplitBrain:
			in.mu.Lock()
			in.status.SplitBrains++
			in.mu.Unlock()
			in.log.Warn("VRRP split brain: another Master with a lower priority; re-asserting",
				"peer", a.Peer, "peer_priority", a.PeerPriority, "priority", in.m.Config().Priority)
		case StartTimer, StopTimer:
			// in.timers.Apply did it
		}
	}
	in.mu.Lock()
	in.status.State = in.m.State()
	in.status.MasterAddr = in.m.MasterAddr()
	in.mu.Unlock()
}

// send sends an advert with priority prio to every destination.
func (in *Instance) send(prio uint8) {
	adv := Advert{
		Version: in.m.Config().Version, VRID: in.cfg.VRID, Priority: prio,
		Interval: in.m.Config().Interval, Auth: in.cfg.Auth, Password: in.cfg.Password, Addrs: in.cfg.VIPs,
	}
	if adv.Version == V3 {
		adv.Auth, adv.Password = AuthNone, ""
	}
	for _, dst := range in.dests {
		b, err := adv.Marshal(in.cfg.SourceAddr, dst, in.cfg.pseudoHeader())
		if err == nil {
			err = in.conn.Send(b, dst)
		}
		if err != nil {
			in.mu.Lock()
			in.status.SendErrors++
			n := in.status.SendErrors
			in.mu.Unlock()
			if n == 1 || n%100 == 0 {
				in.log.Warn("VRRP advert not sent", "dst", dst, "err", err, "send_errors", n)
			}
		}
	}
}

// announce sends GARPRepeat rounds of gratuitous ARPs / unsolicited NAs.
func (in *Instance) announce() {
	for range max(in.cfg.GARPRepeat, 0) {
		if err := in.ann.Announce(in.cfg.VIPs); err != nil {
			in.log.Warn("VRRP: announcing VIPs failed", "err", err)
			return
		}
	}
}

func (in *Instance) stateChange(a StateChange) {
	in.mu.Lock()
	in.status.Transitions++
	in.mu.Unlock()
	prio := in.m.Config().Priority
	in.log.Info("VRRP state change", "from", a.From.String(), "to", a.To.String(), "reason", a.Reason,
		"priority", prio, "master", in.m.MasterAddr())
	if len(in.cfg.NotifyCmd) == 0 || in.notifyq == nil {
		return
	}
	argv := append(slices.Clone(in.cfg.NotifyCmd), "INSTANCE", in.cfg.Name, notifyState(a.To), strconv.Itoa(int(prio)))
	select {
	case in.notifyq <- argv:
	default:
		in.log.Warn("VRRP notify queue full: notification dropped", "state", a.To.String())
	}
}

// notifyState is keepalived's name of a state in notify arguments.
func notifyState(s State) string {
	if s == Init {
		return "STOP"
	}
	return strings.ToUpper(s.String())
}

// notifier runs the notify commands one at a time, in order.
func (in *Instance) notifier(q <-chan []string, done chan<- struct{}) {
	defer close(done)
	for argv := range q {
		ctx, cancel := context.WithTimeout(context.Background(), in.cfg.NotifyTimeout)
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			in.log.Warn("VRRP notify command failed", "argv", argv, "err", err, "output", string(out))
		} else {
			in.log.Debug("VRRP notify command ran", "argv", argv)
		}
	}
}

// shutdown stops gracefully: Shutdown to the Machine (a Master resigns and removes its VIPs),
// then whatever VIPs we still hold are removed.
func (in *Instance) shutdown(why string) {
	in.log.Info("VRRP instance stopping", "why", why, "state", in.m.State().String())
	in.handle(in.clock.Now(), Shutdown{})
	in.garpAt = time.Time{}
	if err := in.vips.Remove(); err != nil {
		in.log.Error("VRRP: removing VIPs on stop failed", "err", err)
	}
}
