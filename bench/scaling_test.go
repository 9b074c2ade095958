package bench

import "testing"

// TestScalingFlowsCold runs the flows-cold series at two sizes (root: it loads BPF programs, and
// fails rather than skips without, as CI runs as root): every row must come from timed calls in
// which xdplb counted each packet as a conntrack hit and none as a new flow, with positive times.
func TestScalingFlowsCold(t *testing.T) {
	opts := ScalingOptions{Rounds: 1, Repeat: 2_000_000}
	res, err := flowsCold([]int{1, 1000}, opts)
	if err != nil {
		t.Fatalf("flows-cold: %v", err)
	}
	if len(res) != 2 {
		t.Fatalf("%d rows, want 2: %+v", len(res), res)
	}
	for i, r := range res {
		// timeRun makes at least one call of the row's repeat per round.
		least := uint64(opts.Rounds * r.Repeat)
		if r.Series != "flows-cold" || r.Path != "conntrack hit" || r.N != []int{1, 1000}[i] {
			t.Errorf("row %d: %s %s %d, want flows-cold conntrack hit %d", i, r.Series, r.Path, r.N, []int{1, 1000}[i])
		}
		if r.Repeat < 100 || r.TimedRuns < least || r.CtHits != r.TimedRuns || r.NewFlows != 0 {
			t.Errorf("N=%d: %d timed packets (want >= %d), %d conntrack hits, %d new flows: want every packet a hit",
				r.N, r.TimedRuns, least, r.CtHits, r.NewFlows)
		}
		if r.XdplbNs <= 0 || r.BaselineNs <= 0 || r.Median <= 0 || r.Min <= 0 || r.Ratio <= 0 {
			t.Errorf("N=%d: xdplb %v ns, baseline %v ns, difference %v (min %v), ratio %v: want all positive",
				r.N, r.XdplbNs, r.BaselineNs, r.Median, r.Min, r.Ratio)
		}
	}
	t.Logf("%+v", res)
}
