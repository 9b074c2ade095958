//go:build linux

package vrrp

import (
	"context"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkResubscribe is how long WatchLink waits before subscribing again after the netlink
// subscription failed.
const linkResubscribe = time.Second

// LinkRunning reports whether a link's flags say it can carry traffic: administratively up
// (IFF_UP) and with a carrier (IFF_RUNNING; a veth whose peer is down is not running).
func LinkRunning(flags uint32) bool {
	return flags&unix.IFF_UP != 0 && flags&unix.IFF_RUNNING != 0
}

// WatchLink calls f with the operational state of iface (LinkRunning) in the current network
// namespace: once with the state found when it starts, then on every change, until ctx ends. A
// missing or deleted interface is down. f runs on WatchLink's goroutine and must not block for
// long (Instance.SetInterface does not). When the netlink subscription fails, WatchLink logs it
// and subscribes again after a second, calling f only if the state changed meanwhile.
// It returns when ctx ends.
func WatchLink(ctx context.Context, log *slog.Logger, iface string, f func(up bool)) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	known, last := false, false
	report := func(up bool) {
		if !known || up != last {
			known, last = true, up
			f(up)
		}
	}
	for ctx.Err() == nil {
		watchLinkOnce(ctx, log, iface, report)
		select {
		case <-ctx.Done():
		case <-time.After(linkResubscribe):
		}
	}
}

// watchLinkOnce runs one subscription until it fails or ctx ends.
func watchLinkOnce(ctx context.Context, log *slog.Logger, iface string, report func(bool)) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan netlink.LinkUpdate, 64)
	failed := make(chan error, 1)
	err := netlink.LinkSubscribeWithOptions(updates, sctx.Done(), netlink.LinkSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case failed <- err:
			default:
			}
		},
	})
	if err != nil {
		log.Warn("VRRP: link subscription failed, retrying", "iface", iface, "err", err)
		return
	}
	// ListExisting sends every link then NLMSG_DONE, which the library does not pass on: an
	// interface absent from the dump is only known to be absent by asking.
	if _, err := netlink.LinkByName(iface); err != nil {
		if _, ok := err.(netlink.LinkNotFoundError); ok {
			report(false)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-failed:
			log.Warn("VRRP: link subscription failed, retrying", "iface", iface, "err", err)
			return
		case u, ok := <-updates:
			if !ok {
				select {
				case err := <-failed:
					log.Warn("VRRP: link subscription ended, retrying", "iface", iface, "err", err)
				default:
					log.Warn("VRRP: link subscription ended, retrying", "iface", iface)
				}
				return
			}
			if u.Link == nil || u.Link.Attrs().Name != iface {
				continue
			}
			if u.Header.Type == unix.RTM_DELLINK {
				report(false)
				continue
			}
			report(LinkRunning(u.IfInfomsg.Flags))
		}
	}
}
