// Package maglev builds Maglev consistent-hashing lookup tables
// (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016), extended with integer weights.
//
// The table is consumed by the XDP data path, which indexes it with a flow
// hash modulo the table size. Two control-plane instances given the same set
// of backends must produce byte-identical tables, so everything here is
// deterministic: stable hashes, sorting by Key, integer arithmetic only.
package maglev

import (
	"fmt"
	"hash/fnv"
	"math/bits"
	"slices"
	"strings"
)

// DefaultSize is the default table size M (prime).
//
// 65537 keeps the per-backend share within ~1% for up to a few hundred
// backends while keeping the BPF map small.
const DefaultSize = 65537

// maxSize bounds the table so that k*maxWeight stays far below 2^64 and the
// BPF array map remains a sane size.
const maxSize = 1 << 24

// Backend is one entry to place in the table.
type Backend struct {
	ID     uint32 // value written in the table (0 is reserved for "no backend" and must be rejected)
	Key    string // stable identity used for the permutation (e.g. "10.0.0.11"); must be unique
	Weight uint32 // relative weight; 0 means "not in the table"
}

// IsPrime reports whether n is prime.
//
// It is a deterministic Miller-Rabin test: the witness set below is proven
// sufficient for every 64-bit integer, so there are no false answers.
func IsPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for _, p := range []uint64{2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37} {
		if n == p {
			return true
		}
		if n%p == 0 {
			return false
		}
	}
	d, r := n-1, 0
	for d%2 == 0 {
		d /= 2
		r++
	}
witness:
	for _, a := range []uint64{2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37} {
		x := powMod(a, d, n)
		if x == 1 || x == n-1 {
			continue
		}
		for i := 1; i < r; i++ {
			x = mulMod(x, x, n)
			if x == n-1 {
				continue witness
			}
		}
		return false
	}
	return true
}

// mulMod uses a 128-bit intermediate so IsPrime is exact for all uint64.
func mulMod(a, b, m uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	_, rem := bits.Div64(hi%m, lo, m)
	return rem
}

func powMod(b, e, m uint64) uint64 {
	result := uint64(1)
	b %= m
	for e > 0 {
		if e&1 == 1 {
			result = mulMod(result, b, m)
		}
		b = mulMod(b, b, m)
		e >>= 1
	}
	return result
}

// Salts make h1 and h2 independent functions of the same key. Changing
// them (or the hash) reshuffles every table in the fleet; the golden test
// exists to catch that.
const (
	saltOffset = "xdplb-maglev-offset\x00"
	saltSkip   = "xdplb-maglev-skip\x00"
)

// hashKey is FNV-1a 64 (fixed by its spec, so stable across Go versions and
// architectures) followed by the murmur3 fmix64 finalizer. FNV-1a alone
// mixes the last bytes of a key poorly, and backend keys such as
// "10.0.0.11"/"10.0.0.12" typically differ only there.
func hashKey(salt, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(salt))
	h.Write([]byte(key))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// slot is the per-backend fill state.
type slot struct {
	id     uint32
	weight uint64
	pos    uint32 // next candidate slot in this backend's permutation
	skip   uint32
	placed uint64 // entries placed so far
	round  uint64 // round in which the next entry is due
}

// Build returns a table of `size` entries, each a Backend.ID. size must be a prime >= 3 and
// at most 1<<24 (error otherwise). If no backend has weight > 0 the table is all zeros (nil error).
// Errors: duplicate Key, duplicate ID, ID 0, size not prime, more weighted backends than size.
// The result depends only on the SET of backends (not their order in the slice): sort by Key internally.
//
// Validation covers every entry, including weight-0 ones: a duplicate or a
// zero ID is a configuration error whether or not the backend is drained.
//
// Weighting: classic Maglev lets each backend claim one slot per round. Here
// each backend earns credit equal to its weight per round and claims a slot
// whenever its credit reaches the maximum weight, so the heaviest backends
// claim every round and the split of slots is proportional to weight (to
// within about one slot). With equal weights this is exactly classic Maglev. A
// backend whose weight is tiny relative to the others may receive no slot.
func Build(backends []Backend, size uint32) ([]uint32, error) {
	if size < 3 || size > maxSize || !IsPrime(uint64(size)) {
		return nil, fmt.Errorf("maglev: table size %d must be a prime in [3, %d]", size, maxSize)
	}

	sorted := slices.Clone(backends)
	slices.SortFunc(sorted, func(a, b Backend) int { return strings.Compare(a.Key, b.Key) })

	ids := make(map[uint32]string, len(sorted))
	var maxWeight uint64
	weighted := 0
	for i, b := range sorted {
		if b.ID == 0 {
			return nil, fmt.Errorf("maglev: backend %q has reserved ID 0", b.Key)
		}
		if i > 0 && sorted[i-1].Key == b.Key {
			return nil, fmt.Errorf("maglev: duplicate backend key %q", b.Key)
		}
		if other, ok := ids[b.ID]; ok {
			return nil, fmt.Errorf("maglev: duplicate backend ID %d (keys %q and %q)", b.ID, other, b.Key)
		}
		ids[b.ID] = b.Key
		if b.Weight > 0 {
			weighted++
			maxWeight = max(maxWeight, uint64(b.Weight))
		}
	}
	if weighted > int(size) {
		return nil, fmt.Errorf("maglev: %d weighted backends do not fit in a table of %d", weighted, size)
	}

	table := make([]uint32, size)
	if weighted == 0 {
		return table, nil
	}

	m := uint64(size)
	state := make([]slot, 0, weighted)
	for _, b := range sorted {
		if b.Weight == 0 {
			continue
		}
		w := uint64(b.Weight)
		state = append(state, slot{
			id:     b.ID,
			weight: w,
			pos:    uint32(hashKey(saltOffset, b.Key) % m),
			skip:   uint32(hashKey(saltSkip, b.Key)%(m-1) + 1),
			round:  ceilDiv(maxWeight, w),
		})
	}

	// Simulating rounds literally costs O(N) per round even when only a
	// few backends are due, which degenerates to O(M*N) with skewed
	// weights. Instead a min-heap ordered by (due round, Key order) yields
	// exactly the same placement sequence in O(M log N).
	h := make(dueHeap, len(state))
	for i := range state {
		h[i] = int32(i)
	}
	h.init(state)

	for filled := uint32(0); filled < size; filled++ {
		s := &state[h[0]]
		// Walk this backend's permutation to its next free slot. The
		// permutation is a full cycle because size is prime and
		// 1 <= skip < size, so a free slot is always reached.
		for table[s.pos] != 0 {
			s.pos += s.skip
			if s.pos >= size {
				s.pos -= size
			}
		}
		table[s.pos] = s.id
		s.placed++
		// Entry k (1-based) is due in the first round r with
		// r*weight >= k*maxWeight. k <= 2^24 and maxWeight < 2^32,
		// so the product cannot overflow.
		s.round = ceilDiv((s.placed+1)*maxWeight, s.weight)
		h.fixTop(state)
	}
	return table, nil
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

// dueHeap is a binary min-heap of indices into the state slice. It is
// hand-rolled rather than container/heap because the interface calls
// dominate the build time at these sizes.
type dueHeap []int32

// less breaks ties by index, i.e. by Key order, which reproduces the
// in-round ordering of classic Maglev.
func less(state []slot, a, b int32) bool {
	ra, rb := state[a].round, state[b].round
	return ra < rb || (ra == rb && a < b)
}

func (h dueHeap) init(state []slot) {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(state, i)
	}
}

func (h dueHeap) fixTop(state []slot) { h.down(state, 0) }

func (h dueHeap) down(state []slot, i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && less(state, h[r], h[l]) {
			c = r
		}
		if !less(state, h[c], h[i]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}
