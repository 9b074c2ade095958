package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/loader"
)

// Time limits of the CLI's waits.
const (
	resolveTimeout = 2 * time.Second // backend MAC resolution
	lockTimeout    = 5 * time.Second // another writer holding the maps
)

// run is main without the exit: exit code 0 on success, 1 for runtime errors, 2 for usage
// errors (bad arguments or options; nothing was changed).
func run(args []string, stdout, stderr io.Writer) int {
	err := newApp(stdout, stderr).Run(hoistGlobals(args))
	if err == nil || errors.Is(err, errHelpShown) {
		return 0
	}
	fmt.Fprintf(stderr, "xdplb: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// env is what every command shares: writers, logger and the pin root.
type env struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	root           string
}

func newApp(stdout, stderr io.Writer) *cli.App {
	e := &env{stdout: stdout, stderr: stderr, log: slog.New(slog.DiscardHandler)}
	app := &cli.App{
		Name:  "xdplb",
		Usage: "XDP direct-routing layer-4 load balancer (keepalived + LVS-DR replacement)",
		Description: "xdplb balances TCP/UDP services in an XDP program on the director's NIC: it picks a real\n" +
			"server per flow (Maglev) and rewrites only the Ethernet addresses (direct routing).\n" +
			"The maps are pinned under the pin root, one directory per interface; these commands edit them.\n" +
			"VIP[:PORT] is 10.0.0.100:3306, 10.0.0.100 (every port), fd00::1 or [fd00::1]:3306.",
		HideVersion:    true,
		Writer:         stdout,
		ErrWriter:      stderr,
		ExitErrHandler: func(*cli.Context, error) {}, // run() prints and exits
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "pin-root", Value: loader.DefaultPinRoot, EnvVars: []string{"XDPLB_PIN_ROOT"},
				Usage: "bpffs directory holding one directory of pinned maps per interface"},
			&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "debug, info, warn or error (logs go to stderr)"},
		},
		Before: func(c *cli.Context) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return usagef("bad --log-level %q: want debug, info, warn or error", c.String("log-level"))
			}
			e.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lvl}))
			e.root = c.String("pin-root")
			return nil
		},
		Action: groupAction,
		Commands: []*cli.Command{
			e.attachCmd(),
			{
				Name:      "detach",
				Usage:     "detach the XDP program from IFACE and remove its pinned maps (tracked flows are lost)",
				ArgsUsage: "IFACE",
				Action:    e.detach,
			},
			{
				Name:        "service",
				Usage:       "add or delete a virtual service",
				Subcommands: []*cli.Command{e.serviceAddCmd(), e.serviceDelCmd()},
				Action:      groupAction,
			},
			{
				Name:        "backend",
				Usage:       "add, update or delete a real server of a service",
				Subcommands: []*cli.Command{e.backendAddCmd(), e.backendDelCmd()},
				Action:      groupAction,
			},
			{
				Name:  "peer",
				Usage: "add or delete a peer director's MAC (frames from it pass to the local stack)",
				Subcommands: []*cli.Command{
					{
						Name: "add", Usage: "add a peer director's MAC", ArgsUsage: "MAC",
						Flags: []cli.Flag{ifaceFlag()}, Action: e.peer(true),
					},
					{
						Name: "del", Usage: "delete a peer director's MAC", ArgsUsage: "MAC",
						Flags: []cli.Flag{ifaceFlag()}, Action: e.peer(false),
					},
				},
				Action: groupAction,
			},
			e.listCmd(),
			e.runCmd(),
			e.reloadCmd(),
			e.realserverCmd(),
			e.benchCmd(),
			{
				Name:  "version",
				Usage: "print the versions of xdplb, Go and cilium/ebpf",
				Action: func(c *cli.Context) error {
					if _, err := positional(c); err != nil {
						return err
					}
					printVersion(e.stdout)
					return nil
				},
			},
		},
	}
	var setUsage func([]*cli.Command)
	setUsage = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.OnUsageError = onUsageError
			setUsage(c.Subcommands)
		}
	}
	app.OnUsageError = onUsageError
	setUsage(app.Commands)
	return app
}

// badFlagValue matches the flag package's error for a value it cannot parse.
var badFlagValue = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-+([^:\s]+): `)

func commandFlags(c *cli.Context) []cli.Flag {
	if c.Command == nil {
		return nil
	}
	return c.Command.Flags
}

// onUsageError turns urfave/cli's flag errors into usage errors (exit code 2).
func onUsageError(c *cli.Context, err error, _ bool) error {
	msg := err.Error()
	for _, r := range []struct {
		re *regexp.Regexp
		to string
	}{
		{regexp.MustCompile(`^flag provided but not defined: -+(\S+)`), "unknown option --$1"},
		{regexp.MustCompile(`^flag needs an argument: -+(\S+)`), "option --$1 needs a value"},
	} {
		msg = r.re.ReplaceAllString(msg, r.to)
	}
	// The flag package says only "parse error": say what the value must look like.
	if m := badFlagValue.FindStringSubmatch(msg); m != nil {
		want := "not a valid value"
		if f := lookupFlag(append(slices.Clone(c.App.Flags), commandFlags(c)...), m[2]); f != nil {
			want = flagWant(f)
		}
		msg = fmt.Sprintf("bad value %q for --%s: %s", m[1], m[2], want)
	}
	name := c.App.Name
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	if sub := strings.TrimPrefix(name, c.App.Name+" "); sub != name {
		msg = sub + ": " + msg
	}
	return usagef("%s (see `%s --help`)", msg, name)
}

// groupAction runs for a command that only has subcommands: none given, or an unknown one.
func groupAction(c *cli.Context) error {
	name := c.App.Name
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	if c.Args().Present() {
		return usagef("unknown command %q (see `%s --help`)", strings.Join(append(strings.Fields(strings.TrimPrefix(name, c.App.Name)), c.Args().First()), " "), name)
	}
	if c.Command == nil || c.Command.Name == "" || c.Command.HelpName == c.App.Name {
		cli.ShowAppHelp(c)
		return usagef("missing command")
	}
	cli.ShowSubcommandHelp(c)
	return usagef("%s: missing subcommand", strings.TrimPrefix(name, c.App.Name+" "))
}

func ifaceFlag() cli.Flag {
	return &cli.StringFlag{Name: "iface", Usage: "interface whose maps to edit (default: the only attached one)"}
}

func protoFlag() cli.Flag {
	return &cli.StringFlag{Name: "proto", Value: "tcp", Usage: "protocol of the service: tcp or udp"}
}

// pickIface is --iface, else the only attached interface.
func (e *env) pickIface(c *cli.Context) (string, error) {
	if s := c.String("iface"); s != "" {
		return s, nil
	}
	names, err := loader.Attached(e.root)
	if err != nil {
		return "", err
	}
	switch len(names) {
	case 0:
		return "", fmt.Errorf("nothing is attached: run `xdplb attach IFACE` first")
	case 1:
		return names[0], nil
	}
	return "", fmt.Errorf("several interfaces are attached (%s): pass --iface", strings.Join(names, ", "))
}

// session is an open set of pinned maps, locked against other writers when asked.
type session struct {
	iface  string
	objs   *loader.Objects
	maps   *control.Maps
	unlock func() error
}

func (s *session) close() {
	if s.unlock != nil {
		s.unlock()
	}
	s.objs.Close()
}

// lock keeps other xdplb processes from editing the maps until close.
func (s *session) lock(root string) error {
	ctx, cancel := context.WithTimeout(context.Background(), lockTimeout)
	defer cancel()
	unlock, err := control.Lock(ctx, loader.PinDir(root, s.iface))
	if err != nil {
		return err
	}
	s.unlock = unlock
	return nil
}

func (e *env) open(iface string) (*session, error) {
	o, err := loader.Open(e.root, iface)
	if err != nil {
		return nil, err
	}
	return &session{iface: iface, objs: o, maps: control.NewMaps(o)}, nil
}

// openEdit opens the maps of --iface (or the only attached interface) and locks them.
func (e *env) openEdit(c *cli.Context) (*session, error) {
	iface, err := e.pickIface(c)
	if err != nil {
		return nil, err
	}
	s, err := e.open(iface)
	if err != nil {
		return nil, err
	}
	if err := s.lock(e.root); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (e *env) attachCmd() *cli.Command {
	d := loader.DefaultSizes()
	size := func(name string, def uint32, usage string) cli.Flag {
		return &cli.UintFlag{Name: name, Value: uint(def), Usage: usage + " (default: the existing pins' size, else this)"}
	}
	return &cli.Command{
		Name:  "attach",
		Usage: "load the XDP program on IFACE and pin its maps; nothing else is configured",
		Description: "Maps are pinned in PIN-ROOT/IFACE. Attaching again replaces the program and keeps the maps,\n" +
			"their services and the tracked flows; size options not given keep the pinned maps' sizes.",
		ArgsUsage: "IFACE",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mode", Value: "auto", Usage: "XDP mode: auto (native if the driver has it, else generic; generic on a veth whose peer has no XDP program), native or generic"},
			size("services", d.Services, "number of virtual services"),
			size("backends", d.Backends, "number of real servers over all services, plus one"),
			size("peers", d.Peers, "number of peer director MACs"),
			size("conntrack", d.Conntrack, "number of tracked flows"),
			size("persist", d.Persist, "number of persistence entries"),
			size("ring-size", d.RingSize, "Maglev ring size, a prime"),
			&cli.UintFlag{Name: "hash-seed", Usage: "seed of the flow hash; directors that must agree on flows need the same (default: the pinned one, else 0)"},
		},
		Action: e.attach,
	}
}

func (e *env) attach(c *cli.Context) error {
	pos, err := positional(c, "IFACE")
	if err != nil {
		return err
	}
	iface := pos[0]
	mode, err := loader.ParseMode(c.String("mode"))
	if err != nil {
		return usageError{err}
	}
	sizes := loader.DefaultSizes()
	if o, err := loader.Open(e.root, iface); err == nil {
		sizes = o.Sizes()
		o.Close()
	}
	for _, f := range []struct {
		name string
		v    *uint32
	}{
		{"services", &sizes.Services}, {"backends", &sizes.Backends}, {"peers", &sizes.Peers},
		{"conntrack", &sizes.Conntrack}, {"persist", &sizes.Persist}, {"ring-size", &sizes.RingSize},
	} {
		if !c.IsSet(f.name) {
			continue
		}
		n := c.Uint(f.name)
		if n > 1<<32-1 {
			return usagef("--%s %d is too large", f.name, n)
		}
		*f.v = uint32(n)
	}
	if err := sizes.Validate(); err != nil {
		return usageError{err}
	}
	opts := loader.Options{PinRoot: e.root, Mode: mode, Sizes: sizes, Logger: e.log}
	if c.IsSet("hash-seed") {
		n := c.Uint("hash-seed")
		if n > 1<<32-1 {
			return usagef("--hash-seed %d is too large: want 0 to %d", n, uint32(1<<32-1))
		}
		seed := uint32(n)
		opts.HashSeed = &seed
	}

	a, err := loader.Attach(iface, opts)
	if err != nil {
		return err
	}
	defer a.Close()
	msg := fmt.Sprintf("attached to %s in %s mode (maps pinned in %s)", iface, a.Mode, a.Dir)
	if !a.Created {
		n, err := control.NewMaps(a.Objects).TrackedFlows()
		if err != nil {
			return err
		}
		what := "program replaced"
		if a.ModeChanged {
			what = "moved to " + a.Mode.String() + " mode"
		}
		msg += fmt.Sprintf(": %s, %d tracked flows kept", what, n)
	}
	fmt.Fprintln(e.stdout, msg)
	switch {
	case a.ModeReason != "" && a.Mode == loader.ModeNative:
		fmt.Fprintf(e.stdout, "%s\n", a.ModeReason)
	case a.ModeReason != "":
		fmt.Fprintf(e.stdout, "note: %s. Generic mode runs after the kernel has built a socket buffer for each packet,\n"+
			"several times slower than native mode. Fine for tests; in production use a NIC whose driver supports XDP\n"+
			"(--mode native fails instead of falling back).\n", a.ModeReason)
	}
	return nil
}

func (e *env) detach(c *cli.Context) error {
	pos, err := positional(c, "IFACE")
	if err != nil {
		return err
	}
	if err := loader.Detach(e.root, pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "detached from %s (pins in %s removed, tracked flows dropped)\n", pos[0], loader.PinDir(e.root, pos[0]))
	return nil
}

func (e *env) serviceAddCmd() *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "add a virtual service, or change the persistence of an existing one",
		ArgsUsage: "VIP[:PORT]",
		Description: "No port (or port 0) balances every port of the VIP. A new service drops its packets\n" +
			"until it has a backend.",
		Flags: []cli.Flag{
			ifaceFlag(), protoFlag(),
			&cli.UintFlag{Name: "persistence", Usage: "seconds a client sticks to its real server after its last packet (0 = off)"},
		},
		Action: e.serviceAdd,
	}
}

func (e *env) serviceAdd(c *cli.Context) error {
	pos, err := positional(c, "VIP[:PORT]")
	if err != nil {
		return err
	}
	k, err := serviceKey(c, pos[0])
	if err != nil {
		return err
	}
	p := c.Uint("persistence")
	if p > 1<<32-1 {
		return usagef("--persistence %d: want 0 to %d seconds", p, uint32(1<<32-1))
	}
	s, err := e.openEdit(c)
	if err != nil {
		return err
	}
	defer s.close()
	_, exists, err := findService(s.maps, k)
	if err != nil {
		return err
	}
	if err := s.maps.AddService(control.ServiceSpec{Key: k, Persistence: time.Duration(p) * time.Second}); err != nil {
		return err
	}
	verb := "added"
	if exists {
		verb = "updated"
	}
	msg := fmt.Sprintf("%s service %s on %s", verb, k, s.iface)
	if p > 0 {
		msg += fmt.Sprintf(" (persistent %d s)", p)
	}
	fmt.Fprintln(e.stdout, msg)
	return nil
}

func (e *env) serviceDelCmd() *cli.Command {
	return &cli.Command{
		Name:      "del",
		Usage:     "delete a virtual service and its backends",
		ArgsUsage: "VIP[:PORT]",
		Flags:     []cli.Flag{ifaceFlag(), protoFlag()},
		Action:    e.serviceDel,
	}
}

func (e *env) serviceDel(c *cli.Context) error {
	pos, err := positional(c, "VIP[:PORT]")
	if err != nil {
		return err
	}
	k, err := serviceKey(c, pos[0])
	if err != nil {
		return err
	}
	s, err := e.openEdit(c)
	if err != nil {
		return err
	}
	defer s.close()
	cur, _, err := findService(s.maps, k)
	if err != nil {
		return err
	}
	if err := s.maps.DeleteService(k); err != nil {
		return notFoundHint(err, s.iface)
	}
	fmt.Fprintf(e.stdout, "deleted service %s on %s (and its %d backends)\n", k, s.iface, len(cur.Backends))
	return nil
}

func (e *env) backendAddCmd() *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "add a real server to a service, or update the one with this address",
		ArgsUsage: "VIP[:PORT] ADDR",
		Description: "Without --mac (and not --local) the MAC is looked up in the kernel's neighbour table of the\n" +
			"interface, resolving it with ARP/ND if needed: the real server must be on the same L2 segment.",
		Flags: []cli.Flag{
			ifaceFlag(), protoFlag(),
			&cli.UintFlag{Name: "weight", Value: 1, Usage: "Maglev weight, 1 to 65535 (0 only with --drain)"},
			&cli.StringFlag{Name: "mac", Usage: "the real server's MAC (default: resolved on the interface)"},
			&cli.BoolFlag{Name: "local", Usage: "the real server is this director: its packets go to the local stack"},
			&cli.BoolFlag{Name: "drain", Usage: "take no new flows; established flows finish"},
			&cli.BoolFlag{Name: "sorry", Usage: "the sorry server: used only when no other real server is usable (replaces the previous one)"},
		},
		Action: e.backendAdd,
	}
}

// backendArgs parses the VIP[:PORT] ADDR arguments of the backend commands.
func backendArgs(c *cli.Context) (control.ServiceKey, netip.Addr, error) {
	pos, err := positional(c, "VIP[:PORT]", "ADDR")
	if err != nil {
		return control.ServiceKey{}, netip.Addr{}, err
	}
	k, err := serviceKey(c, pos[0])
	if err != nil {
		return control.ServiceKey{}, netip.Addr{}, err
	}
	addr, err := parseAddr(pos[1])
	return k, addr, err
}

func (e *env) backendAdd(c *cli.Context) error {
	k, addr, err := backendArgs(c)
	if err != nil {
		return err
	}
	w := c.Uint("weight")
	switch {
	case w > control.MaxWeight:
		return usagef("--weight %d: want 1 to %d", w, control.MaxWeight)
	case w == 0 && !c.Bool("drain"):
		return usagef("--weight 0 needs --drain: a real server with weight 0 takes no new flows, which is draining")
	}
	spec := control.BackendSpec{
		Addr: addr, Weight: uint32(w),
		Local: c.Bool("local"), Draining: c.Bool("drain"), Sorry: c.Bool("sorry"),
	}
	if c.IsSet("mac") {
		if spec.MAC, err = parseMAC(c.String("mac")); err != nil {
			return err
		}
	}
	probe := spec
	if probe.MAC == nil && !probe.Local {
		probe.MAC = []byte{2, 0, 0, 0, 0, 1} // validated below, resolved later
	}
	if err := probe.Validate(); err != nil {
		return usageError{err}
	}
	if addr.Is4() != k.VIP.Is4() {
		return usagef("real server %s and VIP %s are of different IP versions", addr, k.VIP)
	}

	iface, err := e.pickIface(c)
	if err != nil {
		return err
	}
	s, err := e.open(iface)
	if err != nil {
		return err
	}
	defer s.close()
	cur, ok, err := findService(s.maps, k)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("service %s: %w on %s: add it first with `xdplb service add`", k, control.ErrNotFound, iface)
	}
	if spec.MAC == nil && !spec.Local {
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		spec.MAC, err = control.ResolveMAC(ctx, iface, addr)
		cancel()
		if err != nil {
			return err
		}
	}
	if err := s.lock(e.root); err != nil {
		return err
	}
	if err := s.maps.SetBackend(k, spec); err != nil {
		return notFoundHint(err, iface)
	}
	verb := "added"
	for _, b := range cur.Backends {
		if b.Addr == addr {
			verb = "updated"
		}
	}
	mac := "no MAC"
	if spec.MAC != nil {
		mac = "MAC " + spec.MAC.String()
	}
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{spec.Local, "local"}, {spec.Draining, "draining"}, {spec.Sorry, "sorry"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	extra := ""
	if len(flags) > 0 {
		extra = ", " + strings.Join(flags, ", ")
	}
	fmt.Fprintf(e.stdout, "%s backend %s of %s on %s (%s, weight %d%s)\n", verb, addr, k, iface, mac, spec.Weight, extra)
	return nil
}

func (e *env) backendDelCmd() *cli.Command {
	return &cli.Command{
		Name:      "del",
		Usage:     "delete a real server from a service (its flows are rescheduled)",
		ArgsUsage: "VIP[:PORT] ADDR",
		Flags:     []cli.Flag{ifaceFlag(), protoFlag()},
		Action:    e.backendDel,
	}
}

func (e *env) backendDel(c *cli.Context) error {
	k, addr, err := backendArgs(c)
	if err != nil {
		return err
	}
	s, err := e.openEdit(c)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.maps.DeleteBackend(k, addr); err != nil {
		return notFoundHint(err, s.iface)
	}
	fmt.Fprintf(e.stdout, "deleted backend %s of %s on %s\n", addr, k, s.iface)
	return nil
}

func (e *env) peer(add bool) cli.ActionFunc {
	return func(c *cli.Context) error {
		pos, err := positional(c, "MAC")
		if err != nil {
			return err
		}
		mac, err := parseMAC(pos[0])
		if err != nil {
			return err
		}
		s, err := e.openEdit(c)
		if err != nil {
			return err
		}
		defer s.close()
		if add {
			if err := s.maps.AddPeer(mac, 0); err != nil { // no flags: made by hand, the daemon leaves it alone
				return err
			}
			fmt.Fprintf(e.stdout, "added peer %s on %s\n", mac, s.iface)
			return nil
		}
		if err := s.maps.DeletePeer(mac); err != nil {
			return notFoundHint(err, s.iface)
		}
		fmt.Fprintf(e.stdout, "deleted peer %s on %s\n", mac, s.iface)
		return nil
	}
}

// findService returns the service's state, and whether it exists.
func findService(m *control.Maps, k control.ServiceKey) (control.ServiceState, bool, error) {
	st, err := m.Snapshot()
	if err != nil {
		return control.ServiceState{}, false, err
	}
	for _, s := range st.Services {
		if s.Key == k {
			return s, true, nil
		}
	}
	return control.ServiceState{}, false, nil
}

// notFoundHint adds where to look to a control.ErrNotFound error.
func notFoundHint(err error, iface string) error {
	if errors.Is(err, control.ErrNotFound) {
		return fmt.Errorf("%w on %s (see `xdplb list --iface %s`)", err, iface, iface)
	}
	return err
}
