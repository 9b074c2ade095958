package daemon

import (
	"context"
	"time"
)

// leaseRenewal is how often the director lease is renewed: a quarter of the lease, at most a
// second, so that a few missed renewals (a busy machine) never let it lapse.
func leaseRenewal(lease time.Duration) time.Duration {
	return min(lease/4, time.Second)
}

// startLease sets the director lease on every data path at start, saying so when the data path
// had been orphaned (its lease passed while no daemon ran).
func (d *Daemon) startLease() error {
	lease := d.cfgNow().Lease()
	for i, m := range d.maps {
		iface := d.cfgNow().Interfaces[i]
		if old, err := m.Lease(); err == nil && old.Expired() {
			d.log.Warn("the data path was orphaned: no daemon renewed its director lease; directing again",
				"iface", iface, "expired_ago", (-old.Remaining).Round(time.Millisecond))
		}
		if err := m.SetLease(lease); err != nil {
			return err
		}
	}
	if lease > 0 {
		d.log.Info("director lease: an orphaned data path stops directing this long after the daemon's last renewal",
			"lease", lease, "renewed_every", leaseRenewal(lease))
	}
	return nil
}

// keepLease renews the director lease of every data path until ctx ends. It runs apart from
// the main loop, so that a long reload does not let the lease lapse; a process that is killed or
// stopped renews nothing, which is the point.
func (d *Daemon) keepLease(ctx context.Context) {
	failing := false
	for {
		lease := d.cfgNow().Lease()
		renew := time.Second
		if lease > 0 {
			renew = leaseRenewal(lease)
		}
		var errs []error
		for _, m := range d.maps {
			if err := m.SetLease(lease); err != nil {
				errs = append(errs, err)
			}
		}
		switch {
		case len(errs) > 0 && !failing:
			d.log.Error("director lease not renewed, retrying", "error", errs[0], "every", renew)
		case len(errs) == 0 && failing:
			d.log.Info("director lease renewed again")
		}
		failing = len(errs) > 0
		t := d.clock.NewTimer(renew)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}
