package maglev

import (
	"cmp"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"testing"
)

// equalBackends returns n weight-1 backends with IP-like keys, the shape
// of real configurations (keys differing only in their last bytes).
func equalBackends(n int) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = Backend{
			ID:     uint32(i + 1),
			Key:    fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff),
			Weight: 1,
		}
	}
	return bs
}

func mustBuild(t testing.TB, bs []Backend, size uint32) []uint32 {
	t.Helper()
	table, err := Build(bs, size)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if len(table) != int(size) {
		t.Fatalf("len(table) = %d, want %d", len(table), size)
	}
	return table
}

func counts(table []uint32) map[uint32]int {
	c := make(map[uint32]int)
	for _, id := range table {
		c[id]++
	}
	return c
}

func TestUniformity(t *testing.T) {
	for _, n := range []int{2, 3, 7, 10, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			bs := equalBackends(n)
			table := mustBuild(t, bs, DefaultSize)
			c := counts(table)
			if c[0] != 0 {
				t.Fatalf("%d empty slots", c[0])
			}
			fair := float64(DefaultSize) / float64(n)
			worst := 0.0
			for _, b := range bs {
				dev := math.Abs(float64(c[b.ID])-fair) / fair
				worst = max(worst, dev)
				if dev > 0.01 {
					t.Errorf("backend %d holds %d slots, fair share %.1f (%.3f%% off)", b.ID, c[b.ID], fair, dev*100)
				}
			}
			t.Logf("N=%d fair=%.1f worst deviation %.4f%%", n, fair, worst*100)
		})
	}
}

func TestWeights(t *testing.T) {
	cases := []struct {
		name    string
		weights []uint32
	}{
		{"1-2-3-4", []uint32{1, 2, 3, 4}},
		{"1-vs-100", []uint32{1, 100}},
		{"100-vs-1", []uint32{100, 1}},
		{"large-3-5-7", []uint32{3_000_000, 5_000_000, 7_000_000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bs := equalBackends(len(tc.weights))
			var sum uint64
			for i, w := range tc.weights {
				bs[i].Weight = w
				sum += uint64(w)
			}
			table := mustBuild(t, bs, DefaultSize)
			c := counts(table)
			if c[0] != 0 {
				t.Fatalf("%d empty slots", c[0])
			}
			worst := 0.0
			for _, b := range bs {
				want := float64(DefaultSize) * float64(b.Weight) / float64(sum)
				dev := math.Abs(float64(c[b.ID])-want) / want
				worst = max(worst, dev)
				if dev > 0.02 {
					t.Errorf("backend %d (weight %d) holds %d slots, want %.1f (%.3f%% off)", b.ID, b.Weight, c[b.ID], want, dev*100)
				}
			}
			t.Logf("weights %v: worst relative deviation %.4f%%", tc.weights, worst*100)
		})
	}
}

// TestZeroWeightExcluded checks that weight 0 drains a backend entirely
// and that the remaining table equals the one built without it.
func TestZeroWeightExcluded(t *testing.T) {
	bs := equalBackends(5)
	bs[2].Weight = 0
	with := mustBuild(t, bs, DefaultSize)
	if n := counts(with)[bs[2].ID]; n != 0 {
		t.Fatalf("weight-0 backend holds %d slots", n)
	}
	without := mustBuild(t, slices.Delete(slices.Clone(bs), 2, 3), DefaultSize)
	if !slices.Equal(with, without) {
		t.Fatal("weight-0 backend changed the table")
	}
}

// changed returns the fraction of slots whose value differs.
func changed(a, b []uint32) float64 {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return float64(n) / float64(len(a))
}

// TestDisruption measures how many slots change when one backend leaves or
// joins. The ideal is exactly the share of that backend (1/N or 1/(N+1)).
// Maglev trades some extra churn for its perfect balance: a change shifts
// the round-robin timing, so surviving backends also swap some slots among
// themselves. That excess grows with N/M, which is why N=100 at 65537 gets a
// looser bound: the measured ratio there is ~1.58 for any key set (IP-like
// or random), intrinsic to the algorithm, not a hashing defect. At 10x the
// table size the same N is back near 1.14.
func TestDisruption(t *testing.T) {
	cases := []struct {
		n        int
		size     uint32
		maxRatio float64 // allowed changed fraction / ideal fraction
	}{
		{10, DefaultSize, 1.5},
		{100, DefaultSize, 1.75},
		{100, 655373, 1.5},
	}
	for _, tc := range cases {
		n, size := tc.n, tc.size
		t.Run(fmt.Sprintf("remove/N=%d/M=%d", n, size), func(t *testing.T) {
			bs := equalBackends(n)
			before := mustBuild(t, bs, size)
			victim := bs[n/2]
			after := mustBuild(t, slices.Delete(slices.Clone(bs), n/2, n/2+1), size)
			owned := 0
			for i := range before {
				if after[i] == victim.ID {
					t.Fatalf("slot %d still points at removed backend", i)
				}
				if before[i] == victim.ID {
					owned++
				}
			}
			frac := changed(before, after)
			ideal := 1 / float64(n)
			t.Logf("N=%d M=%d remove one: %.4f%% of slots changed (ideal %.4f%%, ratio %.3f), victim owned %d",
				n, size, frac*100, ideal*100, frac/ideal, owned)
			if frac > ideal*tc.maxRatio {
				t.Errorf("changed fraction %.4f > %.2f * %.4f", frac, tc.maxRatio, ideal)
			}
			if frac < ideal*0.99 {
				t.Errorf("changed fraction %.4f below the removed share %.4f", frac, ideal)
			}
		})
		t.Run(fmt.Sprintf("add/N=%d/M=%d", n, size), func(t *testing.T) {
			bs := equalBackends(n + 1)
			before := mustBuild(t, bs[:n], size)
			after := mustBuild(t, bs, size)
			added := bs[n].ID
			moved, toNew := 0, 0
			for i := range before {
				if before[i] != after[i] {
					moved++
					if after[i] == added {
						toNew++
					}
				}
			}
			frac := float64(moved) / float64(size)
			ideal := 1 / float64(n+1)
			t.Logf("N=%d M=%d add one: %.4f%% of slots changed (ideal %.4f%%, ratio %.3f), %d of %d to the new backend",
				n, size, frac*100, ideal*100, frac/ideal, toNew, moved)
			if frac > ideal*tc.maxRatio {
				t.Errorf("changed fraction %.4f > %.2f * %.4f", frac, tc.maxRatio, ideal)
			}
			if frac < ideal*0.99 {
				t.Errorf("changed fraction %.4f below the new share %.4f", frac, ideal)
			}
		})
	}
}

func TestDeterminism(t *testing.T) {
	bs := equalBackends(50)
	for i := range bs {
		bs[i].Weight = uint32(i%7 + 1)
	}
	want := mustBuild(t, bs, DefaultSize)
	rng := rand.New(rand.NewSource(42))
	for i := range 5 {
		shuffled := slices.Clone(bs)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		got := mustBuild(t, shuffled, DefaultSize)
		if !slices.Equal(got, want) {
			t.Fatalf("shuffle %d produced a different table", i)
		}
	}
	// Build must not reorder the caller's slice.
	orig := equalBackends(3)
	in := []Backend{orig[2], orig[0], orig[1]}
	mustBuild(t, in, 13)
	if in[0] != orig[2] || in[1] != orig[0] || in[2] != orig[1] {
		t.Fatal("Build modified its input slice")
	}
}

// TestGolden pins the exact output for a small input. If it fails, the
// hash, salts or fill order changed, which would reshuffle every deployed
// table: update the golden value only deliberately.
func TestGolden(t *testing.T) {
	bs := []Backend{
		{ID: 7, Key: "10.0.0.11", Weight: 1},
		{ID: 8, Key: "10.0.0.12", Weight: 1},
		{ID: 9, Key: "10.0.0.13", Weight: 2},
	}
	got := mustBuild(t, bs, 13)
	// Computed once and cross-checked against an independent Python
	// implementation of the same hash and fill order.
	want := []uint32{9, 7, 7, 9, 9, 9, 9, 7, 9, 8, 9, 8, 8}
	if !slices.Equal(got, want) {
		t.Fatalf("golden table changed:\n got %#v\nwant %#v", got, want)
	}
	// Also pin the hash itself on a fixed key, independently of Build.
	if h := hashKey(saltOffset, "10.0.0.11"); h != 0x2e360c974171a1ed {
		t.Fatalf("hashKey(saltOffset, 10.0.0.11) = %#x", h)
	}
}

func TestErrors(t *testing.T) {
	ok := equalBackends(3)
	cases := []struct {
		name string
		bs   []Backend
		size uint32
	}{
		{"size not prime", ok, 65535},
		{"size zero", ok, 0},
		{"size one", ok, 1},
		{"size two", ok, 2},
		{"size too large", ok, 1<<24 + 1},
		{"size prime above limit", ok, 16777259},
		{"ID 0", []Backend{{ID: 0, Key: "a", Weight: 1}}, 13},
		{"ID 0 with weight 0", []Backend{{ID: 1, Key: "a", Weight: 1}, {ID: 0, Key: "b"}}, 13},
		{"duplicate key", []Backend{{ID: 1, Key: "a", Weight: 1}, {ID: 2, Key: "a", Weight: 1}}, 13},
		{"duplicate key weight 0", []Backend{{ID: 1, Key: "a", Weight: 1}, {ID: 2, Key: "a"}}, 13},
		{"duplicate ID", []Backend{{ID: 1, Key: "a", Weight: 1}, {ID: 1, Key: "b", Weight: 1}}, 13},
		{"more backends than slots", equalBackends(4), 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			table, err := Build(tc.bs, tc.size)
			if err == nil {
				t.Fatalf("Build succeeded, want error")
			}
			if table != nil {
				t.Errorf("table returned alongside error")
			}
			t.Logf("error: %v", err)
		})
	}

	// Exactly as many weighted backends as slots is allowed, and each
	// backend must then get exactly one slot.
	t.Run("backends equal size", func(t *testing.T) {
		table := mustBuild(t, equalBackends(13), 13)
		c := counts(table)
		for id := uint32(1); id <= 13; id++ {
			if c[id] != 1 {
				t.Errorf("backend %d holds %d slots, want 1", id, c[id])
			}
		}
	})
	// Weight-0 backends do not count against the size limit.
	t.Run("many unweighted backends", func(t *testing.T) {
		bs := equalBackends(20)
		for i := 3; i < len(bs); i++ {
			bs[i].Weight = 0
		}
		mustBuild(t, bs, 13)
	})

	for _, tc := range []struct {
		name string
		bs   []Backend
	}{
		{"no backends", nil},
		{"all weights zero", []Backend{{ID: 1, Key: "a"}, {ID: 2, Key: "b"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := mustBuild(t, tc.bs, DefaultSize)
			for i, v := range table {
				if v != 0 {
					t.Fatalf("slot %d = %d, want 0", i, v)
				}
			}
		})
	}
}

func TestIsPrime(t *testing.T) {
	cases := map[uint64]bool{
		0: false, 1: false, 2: true, 3: true, 4: false, 5: true, 9: false,
		13: true, 25: false, 97: true, 561: false, // Carmichael number
		65535: false, 65537: true, 655373: true, 655371: false,
		1 << 24: false, 16777213: true, 16777259: true,
		3215031751:           false, // strong pseudoprime to bases 2,3,5,7
		4294967291:           true,  // largest 32-bit prime
		4294967297:           false, // 641 * 6700417
		18446744073709551557: true,  // largest 64-bit prime
		18446744073709551615: false,
		3825123056546413051:  false, // strong pseudoprime to bases 2..23
	}
	for n, want := range cases {
		if got := IsPrime(n); got != want {
			t.Errorf("IsPrime(%d) = %v, want %v", n, got, want)
		}
	}
	// Cross-check against trial division on a small range.
	for n := uint64(0); n < 20000; n++ {
		want := n >= 2
		for d := uint64(2); d*d <= n; d++ {
			if n%d == 0 {
				want = false
				break
			}
		}
		if got := IsPrime(n); got != want {
			t.Fatalf("IsPrime(%d) = %v, trial division says %v", n, got, want)
		}
	}
}

// TestLargeBuild checks the big configuration both completes in
// reasonable time and stays uniform; skipped in -short mode.
func TestLargeBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("large build")
	}
	const size = 655373
	bs := equalBackends(10000)
	table := mustBuild(t, bs, size)
	c := counts(table)
	lo, hi := size, 0
	for _, b := range bs {
		lo, hi = min(lo, c[b.ID]), max(hi, c[b.ID])
	}
	if c[0] != 0 || hi-lo > 1 {
		t.Fatalf("equal weights: per-backend counts range [%d, %d], %d empty", lo, hi, c[0])
	}
}

// TestSkewedWeightsFast guards the heap-based fill: a literal round loop
// would take O(M*N) here (one heavy backend, many light ones).
func TestSkewedWeightsFast(t *testing.T) {
	bs := equalBackends(10000)
	bs[0].Weight = math.MaxUint32
	table := mustBuild(t, bs, DefaultSize)
	// The light backends would first be due in round 2^32-1, long after
	// the heavy one has filled the table on its own.
	if c := counts(table); c[bs[0].ID] != DefaultSize {
		t.Fatalf("heavy backend holds %d slots, want all %d", c[bs[0].ID], DefaultSize)
	}
}

// referenceBuild is the literal round-by-round weighted Maglev fill: each
// round every backend (in Key order) earns its weight in credit and places
// one entry when the credit reaches the maximum weight. It is O(rounds*N),
// too slow for production, but obviously matches the described algorithm.
func referenceBuild(bs []Backend, size uint32) []uint32 {
	bs = slices.Clone(bs)
	slices.SortFunc(bs, func(a, b Backend) int { return cmp.Compare(a.Key, b.Key) })
	bs = slices.DeleteFunc(bs, func(b Backend) bool { return b.Weight == 0 })
	table := make([]uint32, size)
	if len(bs) == 0 {
		return table
	}
	var maxW uint64
	for _, b := range bs {
		maxW = max(maxW, uint64(b.Weight))
	}
	m := uint64(size)
	credit := make([]uint64, len(bs))
	next := make([]uint64, len(bs))
	for filled := uint32(0); ; {
		for i, b := range bs {
			credit[i] += uint64(b.Weight)
			if credit[i] < maxW {
				continue
			}
			credit[i] -= maxW
			off := hashKey(saltOffset, b.Key) % m
			skip := hashKey(saltSkip, b.Key)%(m-1) + 1
			for {
				c := (off + next[i]*skip) % m
				next[i]++
				if table[c] == 0 {
					table[c] = b.ID
					break
				}
			}
			if filled++; filled == size {
				return table
			}
		}
	}
}

// TestMatchesReference checks that the heap-driven fill reproduces the
// literal round loop exactly, over random sets, weights and sizes.
func TestMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	sizes := []uint32{3, 13, 101, 1009, 65537}
	for trial := range 200 {
		size := sizes[rng.Intn(len(sizes))]
		n := 1 + rng.Intn(min(int(size), 60))
		bs := make([]Backend, n)
		for i := range bs {
			bs[i] = Backend{ID: uint32(i + 1), Key: fmt.Sprintf("k%d-%d", rng.Intn(1e6), i), Weight: uint32(rng.Intn(10))}
		}
		if trial%10 == 0 {
			bs[0].Weight = 1000 // skewed
		}
		got := mustBuild(t, bs, size)
		if want := referenceBuild(bs, size); !slices.Equal(got, want) {
			t.Fatalf("trial %d (size %d, %d backends): Build differs from reference", trial, size, n)
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			bs := equalBackends(n)
			for b.Loop() {
				if _, err := Build(bs, DefaultSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("10000@655373", func(b *testing.B) {
		bs := equalBackends(10000)
		for b.Loop() {
			if _, err := Build(bs, 655373); err != nil {
				b.Fatal(err)
			}
		}
	})
}
