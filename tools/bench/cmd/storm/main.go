// Command storm runs the retry-storm scenario in real time over loopback
// HTTP, to confirm the virtual-time simulation (storm_test.go).
//
//	go run ./cmd/storm            # about 4 × 8 s
package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/tankhttp/tank/tools/bench/storm"
)

func main() {
	cfg := storm.Config{
		Clients: 4, RatePerClient: 50, Duration: 8 * time.Second,
		OutageStart: 2 * time.Second, OutageEnd: 4 * time.Second,
		Capacity: 250, Timeout: 5 * time.Second, Bucket: 100 * time.Millisecond,
	}
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long clients send (at most 60s)")
	flag.Parse()
	if cfg.Duration > time.Minute {
		cfg.Duration = time.Minute
	}
	fmt.Println("| strategy | amplification | requests at the server | failed | recovery |")
	fmt.Println("|---|---|---|---|---|")
	for _, s := range storm.Strategies {
		r := storm.RunReal(cfg, s)
		fmt.Printf("| %s | %.2f | %d | %.1f%% | %.1f s |\n", r.Strategy, r.Amplification, r.Attempts, 100*r.FailedShare, r.Recovery)
	}
}
