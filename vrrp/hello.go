package vrrp

// The director hello lets xdplb directors that are also real servers learn each other's MACs
// from the start: a VRRP Backup sends no adverts, so without it the Master never learns the
// Backup's MAC. Every daemon broadcasts a hello on each interface that has VRRP instances; a peer
// whose instances share a VRID with ours is reported with the hello's Ethernet source.
//
// Wire format: one Ethernet frame, no IP.
//
//	Ethernet header (14 bytes)
//	  0..5   destination  ff:ff:ff:ff:ff:ff
//	  6..11  source       the sending interface's MAC
//	 12..13  EtherType    0x88b5 (IEEE 802 local experimental EtherType 1)
//	Payload (HelloMinPayload = 46 bytes or more: the frame is at least 60 bytes)
//	  0..3   magic        "XLBH"
//	  4      version      1
//	  5      flags        bit 0 Solicit ("answer me at once"); the other bits are sent as 0
//	                      and ignored when received
//	  6      N            number of VRIDs, 1..255
//	  7..    VRIDs        N bytes: the VRIDs (1..255, no duplicates) of the sender's VRRP
//	                      instances on the interface
//	  7+N..  padding      zeros up to 46 bytes; trailing bytes are ignored when received
//
// VLAN tags are the kernel's business: a hello is sent and received on the (VLAN) interface.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/xdplb/xdplb/internal/clock"
)

// Hello wire constants.
const (
	// HelloEtherType is the EtherType of a hello frame (IEEE 802 local experimental 1).
	HelloEtherType = 0x88B5
	// HelloVersion is the only hello version sent and accepted.
	HelloVersion = 1
	// HelloMinPayload is the size a hello payload is padded to: 60-byte minimum Ethernet frame
	// (without FCS) less the 14-byte header.
	HelloMinPayload = 60 - 14

	helloMagic     = "XLBH"
	helloHeaderLen = 7 // magic, version, flags, N
	helloSolicit   = 1 << 0
)

// Errors of ParseHello and Hello.Marshal, wrapped with details (test with errors.Is).
var (
	ErrHelloShort     = errors.New("vrrp: hello: shorter than its 7-byte header")
	ErrHelloMagic     = errors.New("vrrp: hello: bad magic")
	ErrHelloVersion   = errors.New("vrrp: hello: unknown version")
	ErrHelloTruncated = errors.New("vrrp: hello: VRID list runs past the end")
	// ErrHelloVRID: no VRIDs, more than 255, VRID 0 or a duplicate VRID.
	ErrHelloVRID = errors.New("vrrp: hello: invalid VRID list")
)

// Hello is a decoded director hello payload.
type Hello struct {
	// Solicit asks the receivers whose VRIDs match to answer with a hello at once.
	Solicit bool
	// VRIDs are the sender's VRRP instances on the interface, in wire order.
	VRIDs []uint8
}

// checkVRIDs returns an ErrHelloVRID error unless v holds 1..255 distinct non-zero VRIDs.
func checkVRIDs(v []uint8) error {
	if len(v) == 0 || len(v) > 255 {
		return fmt.Errorf("%w: %d VRIDs, want 1..255", ErrHelloVRID, len(v))
	}
	var seen [256]bool
	for i, id := range v {
		if id == 0 {
			return fmt.Errorf("%w: VRID 0 at index %d", ErrHelloVRID, i)
		}
		if seen[id] {
			return fmt.Errorf("%w: VRID %d twice", ErrHelloVRID, id)
		}
		seen[id] = true
	}
	return nil
}

// Marshal encodes h as a hello payload (no Ethernet header), zero-padded to HelloMinPayload
// bytes. The VRIDs must be 1..255 distinct non-zero values.
func (h Hello) Marshal() ([]byte, error) {
	if err := checkVRIDs(h.VRIDs); err != nil {
		return nil, err
	}
	b := make([]byte, max(helloHeaderLen+len(h.VRIDs), HelloMinPayload))
	copy(b, helloMagic)
	b[4] = HelloVersion
	if h.Solicit {
		b[5] = helloSolicit
	}
	b[6] = uint8(len(h.VRIDs))
	copy(b[helloHeaderLen:], h.VRIDs)
	return b, nil
}

// ParseHello decodes a hello payload (the bytes after the Ethernet header). Unknown flag bits and
// trailing bytes are ignored. The error wraps ErrHelloShort, ErrHelloMagic, ErrHelloVersion,
// ErrHelloTruncated or ErrHelloVRID (no VRIDs, VRID 0, a duplicate), checked in that order.
// The returned VRIDs do not alias b.
func ParseHello(b []byte) (Hello, error) {
	if len(b) < helloHeaderLen {
		return Hello{}, fmt.Errorf("%w: %d bytes", ErrHelloShort, len(b))
	}
	if string(b[:4]) != helloMagic {
		return Hello{}, fmt.Errorf("%w: % x", ErrHelloMagic, b[:4])
	}
	if b[4] != HelloVersion {
		return Hello{}, fmt.Errorf("%w: %d, want %d", ErrHelloVersion, b[4], HelloVersion)
	}
	n := int(b[6])
	if helloHeaderLen+n > len(b) {
		return Hello{}, fmt.Errorf("%w: %d VRIDs in %d bytes", ErrHelloTruncated, n, len(b))
	}
	h := Hello{Solicit: b[5]&helloSolicit != 0, VRIDs: slices.Clone(b[helloHeaderLen : helloHeaderLen+n])}
	if err := checkVRIDs(h.VRIDs); err != nil {
		return Hello{}, err
	}
	return h, nil
}

// HelloPacketConn sends and receives hellos on one interface. [HelloConn] is the real one; tests
// of the runner use a fake.
type HelloPacketConn interface {
	// Send broadcasts h.
	Send(h Hello) error
	// Recv blocks until a valid hello from someone else arrives (malformed frames are skipped),
	// ctx ends (ctx.Err()) or the conn is closed ([ErrClosed]).
	Recv(ctx context.Context) (src net.HardwareAddr, h Hello, err error)
	Close() error
}

// HelloConnStats are the counters of a [HelloConn].
type HelloConnStats struct {
	Received  uint64 // valid hellos returned by Recv
	Malformed uint64 // 0x88b5 frames skipped: bad payload, short frame, group or zero source MAC
	Own       uint64 // frames skipped because their source MAC is the interface's
}

// helloConnStatser is implemented by a HelloPacketConn that counts what it skips, as HelloConn
// does; the runner adds its counters to its own.
type helloConnStatser interface {
	Stats() HelloConnStats
}

// HelloConfig configures the hellos of one interface.
type HelloConfig struct {
	Iface string // for logs
	// VRIDs are our VRRP instances on Iface: 1..255 distinct non-zero values. A received hello
	// matches when it shares at least one VRID with them.
	VRIDs []uint8
	// Interval between periodic hellos; 0 means 1 s. Answers to a Solicit are at most one per
	// Interval/4.
	Interval time.Duration
	// SolicitFor: the hellos sent in the first SolicitFor of the runner's life have Solicit set;
	// 0 means 3 s, negative means never.
	SolicitFor time.Duration
}

// Defaults of HelloConfig.
const (
	DefaultHelloInterval   = time.Second
	DefaultHelloSolicitFor = 3 * time.Second
)

func (c HelloConfig) withDefaults() HelloConfig {
	if c.Interval == 0 {
		c.Interval = DefaultHelloInterval
	}
	if c.SolicitFor == 0 {
		c.SolicitFor = DefaultHelloSolicitFor
	}
	c.VRIDs = slices.Clone(c.VRIDs)
	return c
}

// Validate checks c (defaults applied).
func (c HelloConfig) Validate() error {
	c = c.withDefaults()
	if err := checkVRIDs(c.VRIDs); err != nil {
		return fmt.Errorf("vrrp: hello config on %s: %w", c.Iface, err)
	}
	if c.Interval < 0 {
		return fmt.Errorf("vrrp: hello config on %s: negative interval %v", c.Iface, c.Interval)
	}
	return nil
}

// HelloStats are the counters of a [HelloRunner].
type HelloStats struct {
	Sent              uint64 // hellos sent, periodic and answers
	Answers           uint64 // of Sent: answers to a Solicit
	AnswersSuppressed uint64 // Solicits not answered: an answer went out less than Interval/4 ago
	SendErrors        uint64
	Received          uint64 // valid hellos received, matching or not
	Foreign           uint64 // of Received: no VRID in common with ours, ignored
	RecvErrors        uint64 // receive errors other than the end of the context or the conn
	// Malformed and Own are the conn's HelloConnStats counters when it keeps them
	// (HelloConn does); 0 otherwise.
	Malformed uint64
	Own       uint64
}

// helloRecvBackoff is how long the runner waits after a receive error before receiving again.
const helloRecvBackoff = 100 * time.Millisecond

// HelloRunner sends our hellos on one interface and reports the directors it hears. Run it once;
// Stats may be called from any goroutine.
type HelloRunner struct {
	cfg   HelloConfig
	log   *slog.Logger
	conn  HelloPacketConn
	clk   clock.Clock
	found func(net.HardwareAddr)
	mine  [256]bool

	started    atomic.Bool
	lastAnswer time.Time // owned by Run

	sent, answers, suppressed, sendErrors atomic.Uint64
	received, foreign, recvErrors         atomic.Uint64
}

// NewHelloRunner checks cfg and returns a runner that uses conn (which it does not close) and clk
// (nil: the system clock).
//
// found is called, on the Run goroutine, with the source MAC of every received hello that shares
// a VRID with cfg.VRIDs: every time, not only for new MACs, so that the caller can keep a
// last-seen time; the caller dedups. It must not block. A nil found is allowed.
func NewHelloRunner(log *slog.Logger, conn HelloPacketConn, cfg HelloConfig, clk clock.Clock, found func(net.HardwareAddr)) (*HelloRunner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if conn == nil {
		return nil, fmt.Errorf("vrrp: hello on %s: no conn", cfg.Iface)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if clk == nil {
		clk = clock.Real{}
	}
	if found == nil {
		found = func(net.HardwareAddr) {}
	}
	r := &HelloRunner{cfg: cfg, log: log.With("iface", cfg.Iface), conn: conn, clk: clk, found: found}
	for _, id := range cfg.VRIDs {
		r.mine[id] = true
	}
	return r, nil
}

// RunHello is NewHelloRunner(log, conn, cfg, clk, found).Run(ctx), for a caller that does not
// read the counters.
func RunHello(ctx context.Context, log *slog.Logger, conn HelloPacketConn, cfg HelloConfig, clk clock.Clock, found func(net.HardwareAddr)) error {
	r, err := NewHelloRunner(log, conn, cfg, clk, found)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// Config returns the runner's configuration with its defaults filled in.
func (r *HelloRunner) Config() HelloConfig {
	c := r.cfg
	c.VRIDs = slices.Clone(c.VRIDs)
	return c
}

// Stats returns a snapshot of the counters. Safe for concurrent use.
func (r *HelloRunner) Stats() HelloStats {
	s := HelloStats{
		Sent: r.sent.Load(), Answers: r.answers.Load(), AnswersSuppressed: r.suppressed.Load(),
		SendErrors: r.sendErrors.Load(), Received: r.received.Load(), Foreign: r.foreign.Load(),
		RecvErrors: r.recvErrors.Load(),
	}
	if cs, ok := r.conn.(helloConnStatser); ok {
		c := cs.Stats()
		s.Malformed, s.Own = c.Malformed, c.Own
	}
	return s
}

// helloRx is what the reader goroutine hands to Run: a hello, or the error that ended it.
type helloRx struct {
	src net.HardwareAddr
	h   Hello
	err error
}

// Run sends a hello at once and then every Interval (with Solicit during the first SolicitFor),
// answers matching Solicits, and reports matching senders to found, until ctx ends (it returns
// nil) or the conn is closed (it returns an error wrapping ErrClosed). Periodic hellos keep to a
// fixed schedule from the start; ticks missed (a stalled process) are skipped, not sent in a
// burst. Run may be called once.
func (r *HelloRunner) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("vrrp: hello runner already run")
	}
	rctx, cancelReader := context.WithCancel(ctx)
	rx := make(chan helloRx, 16)
	readerDone := make(chan struct{})
	go r.reader(rctx, rx, readerDone)
	defer func() {
		cancelReader()
		<-readerDone
	}()

	start := r.clk.Now()
	solicitUntil := start.Add(r.cfg.SolicitFor) // before start when SolicitFor < 0
	next := start.Add(r.cfg.Interval)
	// The timer is armed before each send, so that whoever sees a hello go out knows the next
	// one is already scheduled (tests advance a fake clock on that signal).
	timer := r.clk.NewTimer(r.cfg.Interval)
	defer timer.Stop()
	r.log.Info("director hello starting", "vrids", r.cfg.VRIDs, "interval", r.cfg.Interval,
		"solicit_for", max(r.cfg.SolicitFor, 0))
	r.send(start.Before(solicitUntil), false)
	for {
		select {
		case <-timer.C():
			now := r.clk.Now()
			for !next.After(now) {
				next = next.Add(r.cfg.Interval)
			}
			timer.Reset(next.Sub(now))
			r.send(now.Before(solicitUntil), false)
		case m := <-rx:
			if m.err != nil {
				r.log.Warn("director hello stopped: receive failed", "err", m.err)
				return fmt.Errorf("vrrp: hello on %s: %w", r.cfg.Iface, m.err)
			}
			r.hello(m.src, m.h)
		case <-ctx.Done():
			r.log.Info("director hello stopping", "why", "context done")
			return nil
		}
	}
}

// reader feeds received hellos to Run until ctx ends; when the conn is closed it hands
// ErrClosed to Run and returns. Other errors are counted, logged and retried after a pause.
func (r *HelloRunner) reader(ctx context.Context, out chan<- helloRx, done chan<- struct{}) {
	defer close(done)
	for {
		src, h, err := r.conn.Recv(ctx)
		if ctx.Err() != nil {
			return
		}
		m := helloRx{src: src, h: h}
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				// The timer exists before the counter moves: a test that sees the count can
				// advance a fake clock past the pause.
				pause := r.clk.NewTimer(helloRecvBackoff)
				n := r.recvErrors.Add(1)
				if n == 1 || n%100 == 0 {
					r.log.Warn("director hello: receive failed", "err", err, "recv_errors", n)
				}
				select {
				case <-ctx.Done():
					pause.Stop()
					return
				case <-pause.C():
				}
				continue
			}
			m = helloRx{err: err}
		}
		select {
		case out <- m:
		case <-ctx.Done():
			return
		}
		if m.err != nil {
			return
		}
	}
}

// hello handles a received hello: a matching one is reported to found and, if it solicits, answered
// unless an answer went out less than Interval/4 ago. The answer is broadcast, so one answer
// serves every director that solicited meanwhile.
func (r *HelloRunner) hello(src net.HardwareAddr, h Hello) {
	r.received.Add(1)
	if !slices.ContainsFunc(h.VRIDs, func(id uint8) bool { return r.mine[id] }) {
		r.foreign.Add(1)
		r.log.Debug("director hello with no VRID of ours ignored", "src", src, "vrids", h.VRIDs)
		return
	}
	r.found(src)
	if !h.Solicit {
		return
	}
	now := r.clk.Now()
	if !r.lastAnswer.IsZero() && now.Sub(r.lastAnswer) < r.cfg.Interval/4 {
		r.suppressed.Add(1)
		return
	}
	r.lastAnswer = now
	r.send(false, true)
}

// send sends one hello; answer says it answers a Solicit.
func (r *HelloRunner) send(solicit, answer bool) {
	err := r.conn.Send(Hello{Solicit: solicit, VRIDs: r.cfg.VRIDs})
	if err != nil {
		n := r.sendErrors.Add(1)
		if n == 1 || n%100 == 0 {
			r.log.Warn("director hello not sent", "answer", answer, "err", err, "send_errors", n)
		}
		return
	}
	r.sent.Add(1)
	if answer {
		r.answers.Add(1)
	}
}
