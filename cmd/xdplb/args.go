package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control"
)

// usageError is a mistake in the command line: exit code 2, and nothing was changed.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// errHelpShown ends a command that printed its help because of --help among its arguments.
var errHelpShown = errors.New("help shown")

// globalFlags take a value and may be given anywhere on the command line.
var globalFlags = []string{"pin-root", "log-level"}

// hoistGlobals moves global flags given after the command to the front, where urfave/cli
// looks for them: `xdplb list --pin-root X` works like `xdplb --pin-root X list`.
func hoistGlobals(args []string) []string {
	if len(args) < 2 {
		return args
	}
	var globals, rest []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || !slices.Contains(globalFlags, name) {
			rest = append(rest, a)
			continue
		}
		globals = append(globals, a)
		if !hasValue && i+1 < len(args) {
			i++
			globals = append(globals, args[i])
		}
	}
	return append(append([]string{args[0]}, globals...), rest...)
}

// positional returns the positional arguments of a leaf command, applying the flags that
// follow them (urfave/cli v2 stops parsing flags at the first positional argument; the
// documented syntax puts options last). It checks their number against the names in want.
func positional(c *cli.Context, want ...string) ([]string, error) {
	var pos []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "help" || name == "h" {
			cli.HelpPrinter(c.App.Writer, cli.CommandHelpTemplate, c.Command)
			return nil, errHelpShown
		}
		f := lookupFlag(c.Command.Flags, name)
		if f == nil {
			return nil, usagef("%s: unknown option %s (see `%s --help`)", cmdName(c), a, c.Command.HelpName)
		}
		if _, isBool := f.(*cli.BoolFlag); isBool && !hasValue {
			value, hasValue = "true", true
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, usagef("%s: option %s needs a value", cmdName(c), a)
			}
			i++
			value = args[i]
		}
		if err := c.Set(f.Names()[0], value); err != nil {
			opt, _, _ := strings.Cut(a, "=")
			return nil, usagef("%s: bad value %q for %s: %s", cmdName(c), value, opt, flagWant(f))
		}
	}
	if len(pos) < len(want) {
		return nil, usagef("%s: missing %s (usage: %s %s)", cmdName(c), strings.Join(want[len(pos):], " and "), c.Command.HelpName, c.Command.ArgsUsage)
	}
	if len(pos) > len(want) {
		return nil, usagef("%s: unexpected argument %q (usage: %s %s)", cmdName(c), pos[len(want)], c.Command.HelpName, c.Command.ArgsUsage)
	}
	return pos, nil
}

// flagWant says what a flag's value must look like, in place of the flag package's "parse
// error" or strconv's text.
func flagWant(f cli.Flag) string {
	switch f.(type) {
	case *cli.BoolFlag:
		return "want true or false"
	case *cli.IntFlag, *cli.Int64Flag:
		return "want a whole number, like 3"
	case *cli.UintFlag, *cli.Uint64Flag:
		return "want a whole number, 0 or more, like 3"
	case *cli.DurationFlag:
		return "want a duration with its unit, like 3s, 500ms or 1m"
	case *cli.Float64Flag:
		return "want a number, like 1.5"
	}
	return "not a valid value"
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

// parseVIPPort reads VIP, VIP:PORT, IPV6 or [IPV6]:PORT. No port means every port (0).
func parseVIPPort(s string) (netip.Addr, uint16, error) {
	bad := func(why string) (netip.Addr, uint16, error) {
		return netip.Addr{}, 0, usagef("bad VIP %q: %s (want ADDR, ADDR:PORT, IPV6 or [IPV6]:PORT)", s, why)
	}
	host, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return bad("missing ]")
		}
		host, port = s[1:end], s[end+1:]
		if port != "" {
			if !strings.HasPrefix(port, ":") {
				return bad("junk after ]")
			}
			port = port[1:]
		}
	case strings.Count(s, ":") == 1:
		host, port, _ = strings.Cut(s, ":")
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return bad("not an IP address")
	}
	if strings.HasPrefix(s, "[") && !addr.Is6() {
		return bad("brackets are for IPv6")
	}
	var p uint64
	if port != "" || strings.HasSuffix(s, ":") {
		p, err = strconv.ParseUint(port, 10, 64)
		if err != nil {
			return bad(fmt.Sprintf("port %q is not a number", port))
		}
		if p > 65535 {
			return bad(fmt.Sprintf("port %d out of range 0 to 65535 (0 = every port)", p))
		}
	}
	return addr.Unmap(), uint16(p), nil
}

// serviceKey reads the VIP[:PORT] argument and --proto, and checks them.
func serviceKey(c *cli.Context, arg string) (control.ServiceKey, error) {
	vip, port, err := parseVIPPort(arg)
	if err != nil {
		return control.ServiceKey{}, err
	}
	proto, err := control.ParseProto(c.String("proto"))
	if err != nil {
		return control.ServiceKey{}, usageError{err}
	}
	k := control.ServiceKey{VIP: vip, Port: port, Proto: proto}
	if err := k.Validate(); err != nil {
		return k, usageError{err}
	}
	return k, nil
}

// parseAddr reads a real server's address.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, usagef("bad real server address %q: want an IPv4 or IPv6 address", s)
	}
	return a.Unmap(), nil
}

// parseMAC reads a 6-byte unicast MAC.
func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, usagef("bad MAC %q: want six hex bytes like 02:00:00:00:00:0b", s)
	}
	if err := control.CheckMAC(mac); err != nil {
		return nil, usageError{err}
	}
	return mac, nil
}

// cmdName is the command's path without the program name: "service add".
func cmdName(c *cli.Context) string {
	return strings.TrimPrefix(c.Command.HelpName, c.App.Name+" ")
}
