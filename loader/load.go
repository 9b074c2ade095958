package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
)

// Sizes are the map sizes fixed at load time.
type Sizes struct {
	Services  uint32 // virtual services (also the number of Maglev ring pairs)
	Backends  uint32 // real servers over all services, plus one (id 0 is reserved)
	Peers     uint32 // peer director MACs
	Conntrack uint32 // tracked flows (LRU)
	Persist   uint32 // persistence entries (LRU)
	RingSize  uint32 // Maglev ring size M, a prime
}

// DefaultSizes matches bpf/consts.h.
func DefaultSizes() Sizes {
	return Sizes{
		Services:  256,
		Backends:  4096,
		Peers:     64,
		Conntrack: 1 << 20,
		Persist:   1 << 16,
		RingSize:  65537,
	}
}

// Validate reports the first unusable size.
func (s Sizes) Validate() error {
	switch {
	case s.Services < 1 || s.Services > 1<<16:
		return fmt.Errorf("services size %d: want 1..65536", s.Services)
	case s.Backends < 2 || s.Backends > 1<<20:
		return fmt.Errorf("backends size %d: want 2..1048576", s.Backends)
	case s.Peers < 1 || s.Peers > 1<<16:
		return fmt.Errorf("peers size %d: want 1..65536", s.Peers)
	case s.Conntrack < 1024 || s.Conntrack > 1<<28:
		return fmt.Errorf("conntrack size %d: want 1024..268435456", s.Conntrack)
	case s.Persist < 1024 || s.Persist > 1<<28:
		return fmt.Errorf("persist size %d: want 1024..268435456", s.Persist)
	case s.RingSize < 3 || s.RingSize > 1<<24 || !isPrime(s.RingSize):
		return fmt.Errorf("ring size %d: want a prime between 3 and 16777216 (default 65537)", s.RingSize)
	}
	return nil
}

func isPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	for d := uint32(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// Objects are the loaded program and its maps.
type Objects struct {
	Program *ebpf.Program

	Services     *ebpf.Map
	VIPs         *ebpf.Map
	Backends     *ebpf.Map
	Maglev       *ebpf.Map
	Conntrack    *ebpf.Map
	Persist      *ebpf.Map
	Peers        *ebpf.Map
	Stats        *ebpf.Map
	SvcStats     *ebpf.Map
	BackendStats *ebpf.Map
	Meta         *ebpf.Map

	// Layout is what Meta holds: ring size and hash seed of these maps.
	Layout Layout
}

// mapNames lists every map the program uses, in the order they are pinned.
var mapNames = []string{
	"services", "vips", "backends", "maglev", "conntrack", "persist",
	"peers", "stats", "svc_stats", "backend_stats", "meta",
}

func (o *Objects) byName() map[string]**ebpf.Map {
	return map[string]**ebpf.Map{
		"services": &o.Services, "vips": &o.VIPs, "backends": &o.Backends,
		"maglev": &o.Maglev, "conntrack": &o.Conntrack, "persist": &o.Persist,
		"peers": &o.Peers, "stats": &o.Stats, "svc_stats": &o.SvcStats,
		"backend_stats": &o.BackendStats, "meta": &o.Meta,
	}
}

// Sizes reads the sizes the maps were created with.
func (o *Objects) Sizes() Sizes {
	return Sizes{
		Services:  o.Services.MaxEntries(),
		Backends:  o.Backends.MaxEntries(),
		Peers:     o.Peers.MaxEntries(),
		Conntrack: o.Conntrack.MaxEntries(),
		Persist:   o.Persist.MaxEntries(),
		RingSize:  o.Layout.RingSize,
	}
}

// Close releases the file descriptors; pinned objects stay in the kernel.
func (o *Objects) Close() error {
	var errs []error
	if o.Program != nil {
		errs = append(errs, o.Program.Close())
	}
	for _, m := range o.byName() {
		if *m != nil {
			errs = append(errs, (*m).Close())
		}
	}
	return errors.Join(errs...)
}

// Spec returns the program's collection spec sized by s and seeded by seed.
func Spec(s Sizes, seed uint32) (*ebpf.CollectionSpec, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	spec, err := loadXdplb()
	if err != nil {
		return nil, fmt.Errorf("parse embedded BPF object: %w", err)
	}
	set := map[string]uint32{
		"services": s.Services, "vips": s.Services, "svc_stats": s.Services,
		"maglev": s.Services * 2, "backends": s.Backends, "backend_stats": s.Backends,
		"peers": s.Peers, "conntrack": s.Conntrack, "persist": s.Persist,
	}
	for name, n := range set {
		spec.Maps[name].MaxEntries = n
	}
	spec.Maps["maglev"].InnerMap.MaxEntries = s.RingSize
	if err := spec.Variables["hash_seed"].Set(seed); err != nil {
		return nil, fmt.Errorf("set hash seed: %w", err)
	}
	if err := spec.Variables["ring_size"].Set(s.RingSize); err != nil {
		return nil, fmt.Errorf("set ring size: %w", err)
	}
	return spec, nil
}

// LoadOption adjusts the spec before Load; for benchmarks and tests.
type LoadOption func(*ebpf.CollectionSpec) error

// WithConntrackBypass makes every packet skip the conntrack lookup, so a benchmark can time the
// new-flow path with one repeated packet. Never used by attach.
func WithConntrackBypass() LoadOption {
	return func(spec *ebpf.CollectionSpec) error {
		return spec.Variables["ct_bypass"].Set(uint32(1))
	}
}

// Load loads program and fresh maps without pinning or attaching: for tests and benchmarks.
func Load(s Sizes, seed uint32, opts ...LoadOption) (*Objects, error) {
	return load(s, seed, nil, opts...)
}

func load(s Sizes, seed uint32, replace map[string]*ebpf.Map, opts ...LoadOption) (*Objects, error) {
	if err := checkKernel(); err != nil {
		return nil, err
	}
	spec, err := Spec(s, seed)
	if err != nil {
		return nil, err
	}
	for _, opt := range opts {
		if err := opt(spec); err != nil {
			return nil, fmt.Errorf("load option: %w", err)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: replace})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("the kernel's verifier rejected the program (kernel too old?): %+v", ve)
		}
		return nil, fmt.Errorf("load BPF objects: %w", permissionHint(err))
	}
	o := &Objects{Program: coll.Programs["xdplb_prog"]}
	delete(coll.Programs, "xdplb_prog")
	for name, m := range o.byName() {
		*m = coll.Maps[name]
		delete(coll.Maps, name)
	}
	coll.Close()
	o.Layout = Layout{Version: LayoutVersion, RingSize: s.RingSize, HashSeed: seed}
	if replace == nil {
		if err := o.Meta.Put(uint32(0), o.Layout); err != nil {
			o.Close()
			return nil, fmt.Errorf("write meta: %w", err)
		}
	}
	return o, nil
}

// checkKernel turns missing kernel features into errors that say which one.
func checkKernel() error {
	for _, mt := range []ebpf.MapType{ebpf.Hash, ebpf.Array, ebpf.PerCPUArray, ebpf.LRUHash, ebpf.ArrayOfMaps} {
		if err := features.HaveMapType(mt); err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("kernel lacks BPF map type %s (need Linux >= 5.11): %w", mt, err)
			}
			return fmt.Errorf("probe BPF map type %s: %w", mt, permissionHint(err))
		}
	}
	if err := features.HaveProgramType(ebpf.XDP); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("kernel lacks XDP programs: %w", err)
		}
		return fmt.Errorf("probe XDP support: %w", permissionHint(err))
	}
	return nil
}

// Profiling knobs for benchmarks: each leaves one step of the data path out (bpf/consts.h).
const (
	ProfSkipPeers   = 1 << 0 // the peer-director lookup
	ProfSkipTraffic = 1 << 1 // the per-service and per-backend traffic counters
	ProfSkipClock   = 1 << 2 // bpf_ktime_get_coarse_ns() and the last_seen refresh
	ProfSkipOwnMAC  = 1 << 3 // the own-MAC (other host) check
)

// WithProfSkip loads a program with the ProfSkip* steps left out, so a benchmark can show what
// each step costs. Never used by attach: the result is not a correct load balancer.
func WithProfSkip(bits uint32) LoadOption {
	return func(spec *ebpf.CollectionSpec) error {
		return spec.Variables["prof_skip"].Set(bits)
	}
}
