package hedge

import (
	"encoding/json"
	"flag"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

var write = flag.String("hedge.write", "", "write the full-size results as JSON to this file")

// burst is the most tokens the budget banks (NewBudget: 10 × ratio, at
// least 1): the hedges it allows beyond the ratio.
const burst = 2

// runAll runs every strategy under cfg, each in its own bubble.
func runAll(t *testing.T, cfg Config) map[string]Result {
	got := map[string]Result{}
	for _, s := range Strategies {
		synctest.Test(t, func(t *testing.T) { got[s.Name] = Run(cfg, s) })
		r := got[s.Name]
		t.Logf("%-7s %-14s p50 %7.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  hits %5d  extra %+6.2f%%  failed %d",
			r.Scenario, r.Strategy, r.P50, r.P99, r.P999, r.Hits, 100*r.Extra, r.Failed)
		if r.Requests != cfg.Requests || r.Failed != 0 {
			t.Errorf("%s/%s: %d requests, %d failed; want %d, 0", cfg.Scenario, s.Name, r.Requests, r.Failed, cfg.Requests)
		}
	}
	if r := got["none"]; r.Hits != cfg.Requests {
		t.Errorf("%s/none: %d hits at the server; want %d (one per request)", cfg.Scenario, r.Hits, cfg.Requests)
	}
	return got
}

// checkTail asserts what hedging must do to the long tail. tail is the
// percentile compared for tank_adaptive, which sends its first 50 requests
// unhedged while it learns (a few slow ones among them can fill p99.9 of a
// small run).
func checkTail(t *testing.T, got map[string]Result, adaptiveP999 bool) {
	none := got["none"]
	if none.P999 < 500 {
		t.Fatalf("none p99.9 = %.1f ms; the scenario has no tail", none.P999)
	}
	for _, name := range []string{"tank_fixed", "tank_adaptive", "failsafe"} {
		r := got[name]
		a, b, what := r.P999, none.P999, "p99.9"
		if name == "tank_adaptive" && !adaptiveP999 {
			a, b, what = r.P99, none.P99, "p99"
		}
		if a > b/10 {
			t.Errorf("tail/%s %s = %.1f ms; want at most a tenth of none's %.1f ms", name, what, a, b)
		}
		if r.Extra <= 0 || r.Extra > 0.05 {
			t.Errorf("tail/%s extra requests = %.2f%%; want more than 0, at most 5%%", name, 100*r.Extra)
		}
	}
}

// checkOutage asserts that the budget holds tank's hedges to its ratio when
// the server stalls, and that failsafe (no budget) hedges every stalled
// request.
func checkOutage(t *testing.T, cfg Config, got map[string]Result) {
	n := cfg.Requests
	limit := 0.2 + float64(burst)/float64(n)
	stalled := float64(n-cfg.StallFrom) / float64(n)
	for _, name := range []string{"tank_fixed", "tank_adaptive"} {
		if x := got[name].Extra; x > limit+1e-9 {
			t.Errorf("outage/%s extra requests = %.2f%%; want at most the budget's %.2f%%", name, 100*x, 100*limit)
		}
	}
	// Every stalled first copy waits past the delay: the budget is the
	// only limit. Its bucket banks no more than the burst while the
	// server is healthy, so the stalled requests' deposits pay for almost
	// all the hedges.
	if x, want := got["tank_fixed"].Extra, 0.9*0.2*stalled; x < want {
		t.Errorf("outage/tank_fixed extra requests = %.2f%%; want at least %.2f%% (hedges sent while the budget allows)", 100*x, 100*want)
	}
	if x := got["failsafe"].Extra; x < stalled {
		t.Errorf("outage/failsafe extra requests = %.2f%%; want at least the stalled share, %.2f%%", 100*x, 100*stalled)
	}
}

// Small scenarios for CI: they check that the figures are produced and
// that the strategies order as they must, without asserting timings (all
// time here is virtual).
func smoke(c Config) Config {
	c.Requests, c.Workers = 2000, 20
	if c.Scenario == "outage" {
		c.Requests, c.StallFrom = 700, 200
	}
	return c
}

func TestHedgeSmoke(t *testing.T) {
	checkTail(t, runAll(t, smoke(Tail)), false)
	out := smoke(Outage)
	checkOutage(t, out, runAll(t, out))
}

// TestQuantile checks the Tail comment's figures and that draw follows
// the configured distribution.
func TestQuantile(t *testing.T) {
	if q := Tail.Quantile(0.95); q < 4870*time.Microsecond || q > 4890*time.Microsecond {
		t.Errorf("Tail p95 = %v; want 4.88ms", q)
	}
	if q := Tail.Quantile(0.98); q != Tail.Delay {
		t.Errorf("Tail p98 = %v; want the delay %v", q, Tail.Delay)
	}
	slow := 0
	for id := range 100000 {
		d := Tail.draw(id, 0)
		if d < Tail.FastMin || d > Tail.SlowMax || (d > Tail.FastMax && d < Tail.SlowMin) {
			t.Fatalf("draw(%d, 0) = %v: outside the distribution", id, d)
		}
		if d >= Tail.SlowMin {
			slow++
		}
	}
	if slow < 1800 || slow > 2200 {
		t.Errorf("%d slow copies in 100,000; want about 2,000", slow)
	}
}

// TestHedgeFull runs the BENCHMARKS.md scenarios when -hedge.write is
// given, writes the results, then checks tank's goals: in the long tail,
// p99.9 at least 10× lower than without hedging for at most 5% more
// requests; in the outage, extra requests within the budget.
func TestHedgeFull(t *testing.T) {
	if *write == "" {
		t.Skip("run with -hedge.write=FILE to simulate the full scenarios")
	}
	tail, outage := runAll(t, Tail), runAll(t, Outage)
	var all []Result
	for _, m := range []map[string]Result{tail, outage} {
		for _, s := range Strategies {
			all = append(all, m[s.Name])
		}
	}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(*write, b, 0o644); err != nil {
		t.Fatal(err)
	}
	checkTail(t, tail, true)
	checkOutage(t, Outage, outage)
}
