// Command hedge runs the hedging scenarios in real time over loopback HTTP,
// to confirm the virtual-time simulation (hedge_test.go). The tail is
// shorter (2% of copies take 250–350 ms) and the outage smaller (1,000
// requests, the server stalled from the 200th), so the whole takes about
// half a minute; the long-tail run keeps 10,000 requests, so that its
// p99.9 is the 10th-slowest request rather than one or two.
//
//	go run ./cmd/hedge
//
// Over real HTTP every request pays the client's, the server's and the
// scheduler's overhead on top of the drawn latency, so the 5 ms of the
// simulation would sit well inside the fast mode here. The fixed delay is
// therefore measured, as the paper prescribes: the p95 that the unhedged
// run (none, which goes first) saw from the caller's side.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/tankhttp/tank/tools/bench/hedge"
)

func main() {
	tail := hedge.Tail
	tail.SlowMin, tail.SlowMax = 250*time.Millisecond, 350*time.Millisecond
	// Bounds: each request ends within 5 s, and each run sends nothing
	// new after 20 s.
	tail.Timeout, tail.Limit = 5*time.Second, 20*time.Second
	outage := tail
	outage.Scenario, outage.Requests, outage.StallFrom = "outage", 1000, 200
	flag.IntVar(&tail.Requests, "requests", tail.Requests, "logical requests in the tail scenario (at most 10,000)")
	flag.IntVar(&tail.Workers, "workers", tail.Workers, "concurrent callers (1 to 200)")
	delay := flag.Duration("delay", 0, "fixed hedging delay; 0: none's p95 in the tail scenario")
	flag.Parse()
	tail.Requests = min(max(tail.Requests, 1), 10000)
	tail.Workers = min(max(tail.Workers, 1), 200)
	outage.Workers = tail.Workers

	var rows []hedge.Result
	for _, cfg := range []*hedge.Config{&tail, &outage} {
		for _, s := range hedge.Strategies {
			r := hedge.RunReal(*cfg, s)
			if r.Requests < cfg.Requests {
				fmt.Fprintf(os.Stderr, "%s/%s: stopped after %d of %d requests (20 s)\n", r.Scenario, r.Strategy, r.Requests, cfg.Requests)
			}
			rows = append(rows, r)
			if s.Name == "none" && cfg == &tail {
				d := *delay
				if d <= 0 {
					d = p95(r).Round(100 * time.Microsecond)
				}
				tail.Delay, outage.Delay = d, d
			}
		}
	}
	fmt.Printf("%d workers; fixed delay %v\n\n", tail.Workers, tail.Delay)
	fmt.Println("| scenario | strategy | p50 | p99 | p99.9 | requests at the server | extra requests | failed |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %.2f ms | %.2f ms | %.2f ms | %d | %+.2f%% | %d |\n",
			r.Scenario, r.Strategy, r.P50, r.P99, r.P999, r.Hits, 100*r.Extra, r.Failed)
	}
}

func p95(r hedge.Result) time.Duration {
	for _, q := range r.Quantiles {
		if q.Q == 0.95 {
			return time.Duration(q.MS * float64(time.Millisecond))
		}
	}
	return hedge.Tail.Delay
}
