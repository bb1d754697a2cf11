package storm

import (
	"encoding/json"
	"flag"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

var write = flag.String("storm.write", "", "write the full-size results as JSON to this file")

// smoke is a small scenario for CI: it checks that the figures are produced
// and that the strategies order as they must, without asserting timings
// (all time here is virtual).
var smoke = Config{
	Clients: 4, RatePerClient: 50, Duration: 8 * time.Second,
	OutageStart: 2 * time.Second, OutageEnd: 4 * time.Second,
	Capacity: 250, Timeout: 5 * time.Second, Bucket: 100 * time.Millisecond,
}

func TestStormSmoke(t *testing.T) {
	got := map[string]Result{}
	for _, s := range Strategies {
		synctest.Test(t, func(t *testing.T) { got[s.Name] = Run(smoke, s) })
		r := got[s.Name]
		t.Logf("%-20s amplification %.2f attempts %d failed %.1f%% recovery %.1fs",
			r.Strategy, r.Amplification, r.Attempts, 100*r.FailedShare, r.Recovery)
		if r.Logical != smoke.Clients*smoke.RatePerClient*int(smoke.Duration/time.Second) {
			t.Errorf("%s: %d logical requests; want %d", s.Name, r.Logical, smoke.Clients*smoke.RatePerClient*8)
		}
	}
	if a := got["no_retry"].Amplification; a > 1.05 {
		t.Errorf("no_retry amplification = %.2f; want about 1", a)
	}
	if a := got["retry3_no_jitter"].Amplification; a < 3 {
		t.Errorf("retry3_no_jitter amplification = %.2f; want about 4", a)
	}
	if a, b := got["tank_budget"].Amplification, got["retry3_full_jitter"].Amplification; a >= b {
		t.Errorf("budget amplification %.2f not below unbudgeted %.2f", a, b)
	}
}

// TestStormFull runs the BENCHMARKS.md scenario when -storm.write is given.
func TestStormFull(t *testing.T) {
	if *write == "" {
		t.Skip("run with -storm.write=FILE to simulate the full scenario")
	}
	var all []Result
	for _, s := range Strategies {
		synctest.Test(t, func(t *testing.T) { all = append(all, Run(Default, s)) })
		r := all[len(all)-1]
		t.Logf("%-20s amplification %.2f attempts %d failed %.1f%% recovery %.1fs",
			r.Strategy, r.Amplification, r.Attempts, 100*r.FailedShare, r.Recovery)
	}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(*write, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
