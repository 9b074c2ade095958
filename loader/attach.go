package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultPinRoot is where each attached interface gets its directory of pins.
const DefaultPinRoot = "/sys/fs/bpf/xdplb"

const (
	linkPin   = "link"
	tmpPrefix = "tmp-"
)

// Mode is the XDP attach mode.
type Mode int

const (
	ModeAuto    Mode = iota // native if the driver supports it, else generic
	ModeNative              // in the driver (fast; needs driver support)
	ModeGeneric             // in the kernel's generic path (works everywhere, slower)
)

func (m Mode) String() string {
	switch m {
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	}
	return "auto"
}

// ParseMode accepts auto, native (alias driver) and generic (alias skb).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return ModeAuto, nil
	case "native", "driver", "drv":
		return ModeNative, nil
	case "generic", "skb":
		return ModeGeneric, nil
	}
	return 0, fmt.Errorf("unknown XDP mode %q: want auto, native or generic", s)
}

// Options control Attach.
type Options struct {
	PinRoot string // default DefaultPinRoot
	Mode    Mode
	Sizes   Sizes // zero value: DefaultSizes
	// HashSeed seeds the flow hash; nil keeps the seed of existing pins (0 for new ones).
	// Directors that must agree on flows need the same seed.
	HashSeed *uint32
	Logger   *slog.Logger
}

// Attachment is an interface with the program attached and its maps pinned.
type Attachment struct {
	Iface   string
	Dir     string // pin directory
	Mode    Mode   // mode actually in use
	Created bool   // maps were created now (false: existing pinned maps, and their flows, kept)
	// ModeChanged: the program moved to another XDP mode (a new link; maps and flows kept).
	ModeChanged bool
	Objects     *Objects
	Link        link.Link

	// ModeReason says why auto mode chose Mode, or warns about it ("" when nothing to say).
	ModeReason string
}

// Close releases file descriptors; the data path stays attached through the pins.
func (a *Attachment) Close() error {
	var errs []error
	if a.Link != nil {
		errs = append(errs, a.Link.Close())
	}
	if a.Objects != nil {
		errs = append(errs, a.Objects.Close())
	}
	return errors.Join(errs...)
}

// PinDir is the pin directory of iface under root. bpffs refuses names with a dot, so a dot in an
// interface name (VLAN devices such as eth0.100) becomes a colon, which interface names cannot hold.
func PinDir(root, iface string) string {
	if root == "" {
		root = DefaultPinRoot
	}
	return filepath.Join(root, strings.ReplaceAll(iface, ".", ":"))
}

// Attach loads the program, pins its maps and the XDP link under PinDir, and attaches it to
// iface. If pins exist it adopts their maps (flows survive) and swaps the program in place, so
// running it twice is harmless.
func Attach(iface string, opts Options) (*Attachment, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Sizes == (Sizes{}) {
		opts.Sizes = DefaultSizes()
	}
	if err := opts.Sizes.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("%w %q (see `ip link`)", ErrNoInterface, iface)
	}
	root := opts.PinRoot
	if root == "" {
		root = DefaultPinRoot
	}
	if err := ensureBPFFS(root); err != nil {
		return nil, err
	}
	dir := PinDir(root, iface)

	existing, layout, err := openPinnedMaps(dir)
	if err != nil {
		return nil, err
	}
	defer closeMaps(existing)
	cookie, err := netnsCookie()
	if err != nil {
		return nil, err
	}
	if existing != nil {
		if err := checkNamespace(dir, iface, layout, cookie); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, linkPin)); errors.Is(err, os.ErrNotExist) {
		if id, name := foreignProgram(ifc.Index); id != 0 {
			return nil, fmt.Errorf("%w on %s (id %d, %q): remove it with `ip link set dev %s xdp off` or detach its owner",
				ErrForeignProgram, iface, id, name, iface)
		}
	}

	seed := uint32(0)
	if existing != nil {
		seed = layout.HashSeed
		if layout.RingSize != opts.Sizes.RingSize {
			return nil, fmt.Errorf("%w: %s has Maglev ring size %d, requested %d; `xdplb detach %s` first (drops tracked flows)",
				ErrIncompatible, dir, layout.RingSize, opts.Sizes.RingSize, iface)
		}
	}
	if opts.HashSeed != nil {
		if existing != nil && *opts.HashSeed != seed {
			log.Warn("hash seed changed: established flows keep their backend, new flows may map differently",
				"old", seed, "new", *opts.HashSeed)
		}
		seed = *opts.HashSeed
	}
	if existing != nil {
		spec, err := Spec(opts.Sizes, seed)
		if err != nil {
			return nil, err
		}
		for name, m := range existing {
			if err := spec.Maps[name].Compatible(m); err != nil {
				return nil, fmt.Errorf("%w: map %s in %s: %v; use the sizes it was created with, or `xdplb detach %s` first (drops tracked flows)",
					ErrIncompatible, name, dir, err, iface)
			}
		}
	}

	objs, err := load(opts.Sizes, seed, existing)
	if err != nil {
		return nil, err
	}
	a := &Attachment{Iface: iface, Dir: dir, Objects: objs, Created: existing == nil}
	// meta carries the seed (it may have changed) and the interface MAC: the program passes
	// unicast frames addressed to any other MAC. The director lease is kept: attaching again
	// does not revive a data path whose daemon is gone (only a daemon renews it).
	if existing != nil {
		objs.Layout.LeaseUntil = layout.LeaseUntil
	}
	objs.Layout.NetnsCookie, objs.Layout.Ifindex = cookie, uint32(ifc.Index)
	if len(ifc.HardwareAddr) == 6 {
		copy(objs.Layout.Mac[:], ifc.HardwareAddr)
	}
	if err := objs.Meta.Put(uint32(0), objs.Layout); err != nil {
		a.Close()
		return nil, fmt.Errorf("update meta: %w", err)
	}
	if existing == nil {
		if err := pinNew(root, dir, objs); err != nil {
			a.Close()
			return nil, err
		}
	}

	if err := a.attachLink(ifc, opts.Mode, log); err != nil {
		if a.Created {
			os.RemoveAll(dir)
		}
		a.Close()
		return nil, err
	}
	return a, nil
}

// attachLink updates the pinned link in place, or creates and pins a new one.
func (a *Attachment) attachLink(ifc *net.Interface, want Mode, log *slog.Logger) error {
	pin := filepath.Join(a.Dir, linkPin)
	cur := currentMode(ifc.Index)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		if want == ModeAuto || want == cur {
			if err := l.Update(a.Objects.Program); err != nil {
				l.Close()
				return fmt.Errorf("replace program on %s: %w", ifc.Name, err)
			}
			a.Link, a.Mode = l, cur
			log.Info("program replaced, maps and flows kept", "iface", ifc.Name, "mode", cur)
			if note := ModeNote(ifc.Index, cur); cur == ModeNative && note != "" {
				a.ModeReason = note
				log.Warn("native XDP on a veth whose peer cannot take the frames", "iface", ifc.Name, "why", note)
			}
			return nil
		}
		// Changing mode needs a new link; the pinned maps (and flows) are kept. The kernel
		// holds one mode at a time, so there is a short gap; if the new mode fails, the old
		// one is restored.
		log.Info("changing XDP mode", "iface", ifc.Name, "from", cur, "to", want)
		if err := detachLink(l); err != nil {
			return err
		}
		if err := a.attachMode(ifc, want, pin); err != nil {
			if rerr := a.attachMode(ifc, cur, pin); rerr != nil {
				return fmt.Errorf("switch %s to %s mode: %w; restoring %s mode also failed: %v", ifc.Name, want, err, cur, rerr)
			}
			return fmt.Errorf("switch %s to %s mode: %w (kept %s mode)", ifc.Name, want, err, cur)
		}
		a.ModeChanged = true
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open pinned link %s: %w", pin, err)
	} else if id, name := foreignProgram(ifc.Index); id != 0 {
		return fmt.Errorf("%w on %s (id %d, %q): remove it with `ip link set dev %s xdp off` or detach its owner",
			ErrForeignProgram, ifc.Name, id, name, ifc.Name)
	}

	tryModes := []Mode{want}
	if want == ModeAuto {
		tryModes = []Mode{ModeNative, ModeGeneric}
		// Native XDP_TX on a veth needs an XDP program on the peer, else the forwarded frames
		// vanish while the counters say sent: auto must not pick a mode that silently drops.
		if p, ok, err := vethPeer(ifc.Index); ok && (err != nil || !p.XDP) {
			tryModes = []Mode{ModeGeneric}
			if err != nil {
				a.ModeReason = fmt.Sprintf("auto: generic, as the peer of veth %s could not be checked for an XDP program (%v)", ifc.Name, err)
			} else {
				a.ModeReason = fmt.Sprintf("auto: generic, as veth peer %s has no XDP program (native XDP_TX frames would be dropped there)", p.Name)
			}
		}
	}
	var errs []error
	for _, m := range tryModes {
		err := a.attachMode(ifc, m, pin)
		if err == nil {
			if want == ModeAuto && m == ModeGeneric && a.ModeReason == "" {
				a.ModeReason = "auto: generic, as the driver has no native XDP (slower)"
			}
			if note := ModeNote(ifc.Index, m); m == ModeNative && note != "" {
				a.ModeReason = note
				log.Warn("native XDP on a veth whose peer cannot take the frames", "iface", ifc.Name, "why", note)
			}
			if a.ModeReason != "" {
				log.Info("attached", "iface", ifc.Name, "mode", m, "why", a.ModeReason)
			} else {
				log.Info("attached", "iface", ifc.Name, "mode", m)
			}
			return nil
		}
		if errors.Is(err, ErrForeignProgram) {
			return err
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("attach XDP to %s: %w", ifc.Name, errors.Join(errs...))
}

// attachMode attaches the program in mode m and pins the link.
func (a *Attachment) attachMode(ifc *net.Interface, m Mode, pin string) error {
	flags := link.XDPDriverMode
	if m == ModeGeneric {
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: a.Objects.Program, Interface: ifc.Index, Flags: flags})
	if err != nil {
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			id, name := foreignProgram(ifc.Index)
			return fmt.Errorf("%w on %s (id %d, %q): remove it with `ip link set dev %s xdp off`",
				ErrForeignProgram, ifc.Name, id, name, ifc.Name)
		}
		return fmt.Errorf("%s: %w", m, permissionHint(err))
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pin link %s: %w", pin, err)
	}
	a.Link, a.Mode = l, m
	return nil
}

// currentMode reads the attach mode of the interface's XDP program from the kernel.
func currentMode(ifindex int) Mode {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
		return ModeAuto
	}
	switch l.Attrs().Xdp.AttachMode {
	case nl_XDP_ATTACHED_DRV:
		return ModeNative
	case nl_XDP_ATTACHED_SKB:
		return ModeGeneric
	}
	return ModeAuto
}

// Values of IFLA_XDP_ATTACHED.
const (
	nl_XDP_ATTACHED_DRV = 1
	nl_XDP_ATTACHED_SKB = 2
)

func foreignProgram(ifindex int) (uint32, string) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
		return 0, ""
	}
	id := l.Attrs().Xdp.ProgId
	name := ""
	if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id)); err == nil {
		if info, err := p.Info(); err == nil {
			name = info.Name
		}
		p.Close()
	}
	return id, name
}

// pinNew pins fresh maps in a temporary directory, then renames it into place, so a reader never
// sees a half-populated pin directory.
func pinNew(root, dir string, objs *Objects) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("create pin root %s: %w", root, err)
	}
	tmp, err := os.MkdirTemp(root, tmpPrefix) // no dots: bpffs refuses them
	if err != nil {
		return fmt.Errorf("create pin directory under %s: %w", root, err)
	}
	for name, m := range objs.byName() {
		if err := (*m).Pin(filepath.Join(tmp, name)); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("move pins into %s: %w", dir, err)
	}
	for _, m := range objs.byName() {
		// Pin() recorded the temporary path; record the final one.
		if err := (*m).Unpin(); err != nil && !errors.Is(err, os.ErrNotExist) {
			_ = err // the path moved with the rename; nothing left to remove
		}
	}
	return nil
}

// openPinnedMaps opens the maps pinned in dir; nil, nil when dir does not exist.
func openPinnedMaps(dir string) (map[string]*ebpf.Map, Layout, error) {
	var layout Layout
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, layout, nil
	}
	maps := map[string]*ebpf.Map{}
	for _, name := range mapNames {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			closeMaps(maps)
			if errors.Is(err, os.ErrNotExist) {
				return nil, layout, fmt.Errorf("%w: %s is not a complete set of xdplb pins: it has no map %s (another version's, or another tool's directory?). Nothing was changed. Check --pin-root: two directors on one host need one pin root each",
					ErrIncompatible, dir, name)
			}
			return nil, layout, fmt.Errorf("open pinned map %s: %w", name, permissionHint(err))
		}
		maps[name] = m
	}
	if err := maps["meta"].Lookup(uint32(0), &layout); err != nil {
		closeMaps(maps)
		return nil, layout, fmt.Errorf("read %s/meta: %w", dir, err)
	}
	if layout.Version != LayoutVersion {
		closeMaps(maps)
		return nil, layout, fmt.Errorf("%w: %s has map layout version %d, this xdplb uses %d (pins of another xdplb version). Nothing was changed. If no running director uses them (check --pin-root), `xdplb detach` removes them, dropping tracked flows",
			ErrIncompatible, dir, layout.Version, LayoutVersion)
	}
	return maps, layout, nil
}

func closeMaps(maps map[string]*ebpf.Map) {
	for _, m := range maps {
		m.Close()
	}
}

// Open opens the pinned maps of an attached interface for reading and editing. Pins of an
// interface in another network namespace (another director on this host) are refused with
// ErrOtherNamespace.
func Open(root, iface string) (*Objects, error) {
	o, err := OpenAnyNamespace(root, iface)
	if err != nil {
		return nil, err
	}
	cookie, err := netnsCookie()
	if err == nil {
		err = checkNamespace(PinDir(root, iface), iface, o.Layout, cookie)
	}
	if err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

// OpenAnyNamespace is Open without the namespace check, for a tool that reads the pins of a
// director in another network namespace on purpose (a benchmark or a test watching its
// counters from outside). The CLI and the daemon use Open.
func OpenAnyNamespace(root, iface string) (*Objects, error) {
	dir := PinDir(root, iface)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w (no %s; run `xdplb attach %s`)", iface, ErrNotAttached, dir, iface)
		}
		return nil, fmt.Errorf("%s: %w", dir, permissionHint(err))
	}
	maps, layout, err := openPinnedMaps(dir)
	if err != nil {
		return nil, err
	}
	o := &Objects{Layout: layout}
	for name, m := range o.byName() {
		*m = maps[name]
	}
	return o, nil
}

// Attached lists the interfaces with a pin directory under root.
func Attached(root string) ([]string, error) {
	if root == "" {
		root = DefaultPinRoot
	}
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", root, permissionHint(err))
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), tmpPrefix) {
			out = append(out, strings.ReplaceAll(e.Name(), ":", "."))
		}
	}
	sort.Strings(out)
	return out, nil
}

// LinkInfo describes the pinned XDP link of an attachment.
type LinkInfo struct {
	ProgramID uint32
	Ifindex   int
	Mode      Mode
}

// Status reads the pinned link's program and the kernel's attach mode.
func Status(root, iface string) (LinkInfo, error) {
	var li LinkInfo
	l, err := link.LoadPinnedLink(filepath.Join(PinDir(root, iface), linkPin), nil)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return li, fmt.Errorf("%s: %w (no pinned link)", iface, ErrNotAttached)
		}
		return li, fmt.Errorf("open pinned link: %w", permissionHint(err))
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return li, fmt.Errorf("link info: %w", err)
	}
	li.ProgramID = uint32(info.Program)
	if x := info.XDP(); x != nil {
		li.Ifindex = int(x.Ifindex)
		li.Mode = currentMode(li.Ifindex)
	}
	return li, nil
}

// Detach removes the XDP link and every pin of iface. Tracked flows are lost.
func Detach(root, iface string) error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	dir := PinDir(root, iface)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w (no %s)", iface, ErrNotAttached, dir)
	}
	if m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "meta"), nil); err == nil {
		var l Layout
		lerr := m.Lookup(uint32(0), &l)
		m.Close()
		cookie, cerr := netnsCookie()
		if lerr == nil && cerr == nil && l.Version == LayoutVersion {
			if err := checkNamespace(dir, iface, l, cookie); err != nil {
				return err
			}
		}
	}
	pin := filepath.Join(dir, linkPin)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		if err := detachLink(l); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove pins %s: %w", dir, err)
	}
	return nil
}

// detachLink detaches the program even if another process (a daemon) still holds the link open,
// then removes the pin.
func detachLink(l link.Link) error {
	defer l.Close()
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("detach link: %w", err)
	}
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin link: %w", err)
	}
	return nil
}

// ensureBPFFS mounts bpffs on /sys/fs/bpf when root lives there and nothing is mounted.
func ensureBPFFS(root string) error {
	base := root
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(base, &st); err == nil {
			if st.Type == unix.BPF_FS_MAGIC {
				return nil
			}
			break
		}
		parent := filepath.Dir(base)
		if parent == base {
			break
		}
		base = parent
	}
	if !strings.HasPrefix(filepath.Clean(root)+"/", "/sys/fs/bpf/") {
		return fmt.Errorf("%w at %s: mount it with `mount -t bpf bpf <dir>` or choose a pin root under /sys/fs/bpf", ErrNoBPFFS, root)
	}
	if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("%w and mounting it failed (%v): run `mount -t bpf bpf /sys/fs/bpf`", ErrNoBPFFS, err)
	}
	return nil
}

// netnsCookie identifies the calling thread's network namespace (SO_NETNS_COOKIE of a socket
// made in it; Linux 5.14+).
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("identify the network namespace: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("identify the network namespace (SO_NETNS_COOKIE, Linux 5.14+): %w", err)
	}
	return c, nil
}

// checkNamespace refuses pins that another namespace's interface owns.
func checkNamespace(dir, iface string, l Layout, cookie uint64) error {
	if l.NetnsCookie == 0 || l.NetnsCookie == cookie {
		return nil
	}
	return fmt.Errorf("%w: %s holds the data path of %s in another network namespace (interface index %d there), so another director on this host uses it; nothing was changed. Give each director its own pin root: `xdplb --pin-root /sys/fs/bpf/xdplb-NAME ...` (and its own `run --status-socket`); see docs/daemon.md, two directors on one host",
		ErrOtherNamespace, dir, iface, l.Ifindex)
}
