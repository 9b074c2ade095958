package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// procSys is where the sysctls are written; a variable for tests.
var procSys = "/proc/sys"

func (e *env) realserverCmd() *cli.Command {
	flags := func() []cli.Flag {
		return []cli.Flag{
			&cli.StringSliceFlag{Name: "vip", Usage: "a virtual IP this real server answers for (repeat for several)"},
			&cli.StringSliceFlag{Name: "iface", Usage: "interface whose arp_ignore/arp_announce to set (repeat; default: every interface but lo)"},
		}
	}
	return &cli.Command{
		Name:  "realserver",
		Usage: "set up (or undo) this machine as a direct-routing real server: the VIPs on lo, no ARP for them",
		Description: "up: adds each VIP as /32 (/128) on lo and sets net.ipv4.conf.{all,IFACE}.arp_ignore=1 and\n" +
			"arp_announce=2, so the machine accepts packets for the VIP but never answers ARP for it (the\n" +
			"seeds' lvs_real script). Idempotent. A director that is also a real server runs it too: VRRP adds\n" +
			"the VIP to its interface when it is Master, lo keeps its own copy.\n" +
			"down: removes the VIPs from lo and sets arp_ignore and arp_announce back to 0 (the kernel\n" +
			"defaults; earlier values are not remembered).",
		Subcommands: []*cli.Command{
			{Name: "up", Usage: "add the VIPs to lo and stop answering ARP for them", Flags: flags(), Action: e.realserver(true)},
			{Name: "down", Usage: "remove the VIPs from lo and restore arp_ignore/arp_announce to 0", Flags: flags(), Action: e.realserver(false)},
		},
		Action: groupAction,
	}
}

func (e *env) realserver(up bool) cli.ActionFunc {
	return func(c *cli.Context) error {
		if _, err := positional(c); err != nil {
			return err
		}
		var vips []netip.Prefix
		for _, v := range c.StringSlice("vip") {
			for _, s := range strings.Split(v, ",") {
				a, err := netip.ParseAddr(strings.TrimSpace(s))
				if err != nil {
					return usagef("bad --vip %q: want an IPv4 or IPv6 address", s)
				}
				a = a.Unmap()
				vips = append(vips, netip.PrefixFrom(a, a.BitLen()))
			}
		}
		if len(vips) == 0 {
			return usagef("%s: missing --vip VIP", cmdName(c))
		}
		if os.Geteuid() != 0 {
			return fmt.Errorf("xdplb realserver needs root: it changes addresses and sysctls (%w)", os.ErrPermission)
		}
		ifaces := c.StringSlice("iface")
		if len(ifaces) == 0 {
			links, err := netlink.LinkList()
			if err != nil {
				return fmt.Errorf("list interfaces: %w", err)
			}
			for _, l := range links {
				if l.Attrs().Flags&net.FlagLoopback == 0 {
					ifaces = append(ifaces, l.Attrs().Name)
				}
			}
		}
		if up {
			return realserverUp(e.stdout, vips, ifaces)
		}
		return realserverDown(e.stdout, vips, ifaces)
	}
}

func realserverUp(w io.Writer, vips []netip.Prefix, ifaces []string) error {
	lo, err := loopback()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range vips {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		switch err := netlink.AddrAdd(lo, a); {
		case errors.Is(err, unix.EEXIST):
			fmt.Fprintf(w, "%s already on %s\n", p, lo.Attrs().Name)
		case err != nil:
			errs = append(errs, fmt.Errorf("add %s to %s: %w", p, lo.Attrs().Name, err))
		default:
			fmt.Fprintf(w, "added %s to %s\n", p, lo.Attrs().Name)
		}
	}
	errs = append(errs, setARPSysctls(w, ifaces, "1", "2"))
	return errors.Join(errs...)
}

func realserverDown(w io.Writer, vips []netip.Prefix, ifaces []string) error {
	lo, err := loopback()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range vips {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		switch err := netlink.AddrDel(lo, a); {
		case errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH):
			fmt.Fprintf(w, "%s not on %s\n", p, lo.Attrs().Name)
		case err != nil:
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", p, lo.Attrs().Name, err))
		default:
			fmt.Fprintf(w, "removed %s from %s\n", p, lo.Attrs().Name)
		}
	}
	errs = append(errs, setARPSysctls(w, ifaces, "0", "0"))
	return errors.Join(errs...)
}

func loopback() (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			return l, nil
		}
	}
	return nil, errors.New("no loopback interface")
}

// setARPSysctls writes arp_ignore and arp_announce of all and of each interface, printing the
// ones that changed.
func setARPSysctls(w io.Writer, ifaces []string, ignore, announce string) error {
	var errs []error
	for _, dev := range append([]string{"all"}, ifaces...) {
		for _, kv := range [][2]string{{"arp_ignore", ignore}, {"arp_announce", announce}} {
			key := "net/ipv4/conf/" + dev + "/" + kv[0]
			p := filepath.Join(procSys, key)
			old, err := os.ReadFile(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("read %s: %w", strings.ReplaceAll(key, "/", "."), err))
				continue
			}
			if strings.TrimSpace(string(old)) == kv[1] {
				fmt.Fprintf(w, "%s = %s already\n", strings.ReplaceAll(key, "/", "."), kv[1])
				continue
			}
			if err := os.WriteFile(p, []byte(kv[1]), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("write %s: %w", strings.ReplaceAll(key, "/", "."), err))
				continue
			}
			fmt.Fprintf(w, "%s = %s (was %s)\n", strings.ReplaceAll(key, "/", "."), kv[1], strings.TrimSpace(string(old)))
		}
	}
	return errors.Join(errs...)
}
