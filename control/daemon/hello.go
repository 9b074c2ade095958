package daemon

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/vrrp"
)

// helloFresh is how long after its last hello a peer counts as heard in a peer sync. The peers
// map keeps a learned peer regardless; this only decides whether a sync adds it back after an
// operator removed it by hand (`xdplb peer del`): a director that still says hello comes back.
const helloFresh = 5 * time.Second

// helloRunner sends and hears director hellos on one interface (vrrp.HelloRunner): a VRRP
// Backup sends no adverts, so without hellos the Master would never learn the Backup's MAC and
// would balance frames the Backup had balanced already.
type helloRunner struct {
	iface  string
	vrids  []uint8
	run    *vrrp.HelloRunner
	conn   *vrrp.HelloConn
	cancel context.CancelFunc
	done   chan struct{}
}

// helloVRIDs returns, per interface, the sorted VRIDs of the VRRP instances on it.
func helloVRIDs(cfg *config.Config) map[string][]uint8 {
	out := map[string][]uint8{}
	for _, v := range cfg.VRRP {
		if !slices.Contains(out[v.Interface], v.VRID) {
			out[v.Interface] = append(out[v.Interface], v.VRID)
		}
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out
}

// openHello opens the hello socket of iface (in the calling thread's network namespace).
func (d *Daemon) openHello(iface string, vrids []uint8) (*helloRunner, error) {
	conn, err := vrrp.OpenHelloConn(iface)
	if err != nil {
		return nil, fmt.Errorf("director hellos on %s: %w", iface, err)
	}
	h := &helloRunner{iface: iface, vrids: vrids, conn: conn}
	h.run, err = vrrp.NewHelloRunner(d.log, conn, vrrp.HelloConfig{Iface: iface, VRIDs: vrids}, nil,
		func(mac net.HardwareAddr) { d.heard(iface, mac) })
	if err != nil {
		conn.Close()
		return nil, err
	}
	return h, nil
}

func (d *Daemon) startHello(h *helloRunner) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		if err := h.run.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("director hellos ended", "iface", h.iface, "error", err)
		}
	}()
}

func (h *helloRunner) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
	}
	h.conn.Close()
}

// heard records a hello from a peer director; a peer not heard lately wakes a peer sync.
func (d *Daemon) heard(iface string, mac net.HardwareAddr) {
	now := time.Now()
	d.mu.Lock()
	if d.hellos[iface] == nil {
		d.hellos[iface] = map[string]heardPeer{}
	}
	k := mac.String()
	last, known := d.hellos[iface][k]
	d.hellos[iface][k] = heardPeer{mac: slices.Clone(mac), at: now}
	d.mu.Unlock()
	if known && now.Sub(last.at) < helloFresh {
		return
	}
	select {
	case d.peerCh <- struct{}{}:
	default: // a sync is pending already
	}
}

type heardPeer struct {
	mac net.HardwareAddr
	at  time.Time
}

// helloPeers returns the peers heard through hellos on iface within helloFresh.
func (d *Daemon) helloPeers(iface string) map[string]net.HardwareAddr {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]net.HardwareAddr{}
	for k, p := range d.hellos[iface] {
		if time.Since(p.at) < helloFresh {
			out[k] = p.mac
		}
	}
	return out
}

// reloadHellos opens the hello runners the new configuration needs (an interface whose VRIDs
// changed gets a new one); apply stops the replaced ones and starts the new ones, abort closes
// the new ones instead. On error nothing was changed.
func (d *Daemon) reloadHellos(cfg *config.Config) (apply, abort func(), err error) {
	want := helloVRIDs(cfg)
	old := map[string]*helloRunner{}
	for _, h := range d.hellosNow() {
		old[h.iface] = h
	}
	var next, opened, stop []*helloRunner
	for _, iface := range cfg.Interfaces {
		ids := want[iface]
		h, ok := old[iface]
		switch {
		case ok && slices.Equal(h.vrids, ids):
			next = append(next, h)
			continue
		case ok:
			stop = append(stop, h)
		}
		if len(ids) == 0 {
			continue
		}
		nh, err := d.openHello(iface, ids)
		if err != nil {
			for _, o := range opened {
				o.stop()
			}
			return nil, nil, err
		}
		opened = append(opened, nh)
		next = append(next, nh)
	}
	return func() {
			for _, h := range stop {
				h.stop()
			}
			d.mu.Lock()
			d.helloRunners = next
			d.mu.Unlock()
			for _, h := range opened {
				d.startHello(h)
			}
		}, func() {
			for _, h := range opened {
				h.stop()
			}
		}, nil
}

// stopHellos stops every hello runner.
func (d *Daemon) stopHellos() {
	d.mu.Lock()
	hs := d.helloRunners
	d.helloRunners = nil
	d.mu.Unlock()
	for _, h := range hs {
		h.stop()
	}
}

func (d *Daemon) hellosNow() []*helloRunner {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.helloRunners)
}
