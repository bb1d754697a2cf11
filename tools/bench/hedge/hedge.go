// Package hedge reproduces the shape of "The Tail at Scale" (Dean and
// Barroso, CACM 56(2), 2013): most requests are fast, a few are very slow
// for reasons unrelated to the request, and a second copy sent once the
// first has waited past about the 95th-percentile latency cuts the tail for
// a few percent more load.
//
// It runs tank's real Transport, and failsafe-go's hedge policy for
// comparison, against an in-memory server inside a testing/synctest bubble:
// time is virtual, so a run of 10,000 requests with one-second stalls takes
// a second or two to compute, and every latency is decided by the seed.
// RunReal runs the same workload in real time over loopback HTTP.
package hedge

import (
	"context"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/hedgepolicy"

	"github.com/tankhttp/tank/middleware"
)

// Config describes one scenario.
type Config struct {
	Scenario string
	Requests int // logical requests (GET), all told
	// Workers are closed-loop callers: each sends its next request when
	// the one before has ended, so the run measures latency rather than
	// queueing. Worker w sends requests w, w+Workers, w+2·Workers, …
	Workers int
	// A copy's latency at the server is drawn uniformly from [SlowMin,
	// SlowMax] with probability SlowShare, else from [FastMin, FastMax].
	// Each copy of a request draws again, so a hedge of a slow request is
	// usually fast: the stall belongs to the server instance or moment,
	// not to the request.
	FastMin, FastMax time.Duration
	SlowShare        float64
	SlowMin, SlowMax time.Duration
	// StallFrom, if positive, is the first request id to find the server
	// stalled: from it on, every copy draws from [SlowMin, SlowMax].
	StallFrom int
	// Delay is the fixed hedging delay of tank_fixed and failsafe.
	Delay   time.Duration
	Timeout time.Duration // each logical request's deadline
	// Limit, if positive, stops the workers sending new requests this
	// long after the start (for real-time runs); Result.Requests counts
	// those sent.
	Limit time.Duration
	Seed  uint64
}

// Tail is the long-tail scenario BENCHMARKS.md reports: 98% of copies take
// 1–5 ms, 2% take 0.8–1.2 s.
//
// Delay is 5 ms: the top of the fast range, which is the 98th percentile
// of the distribution; its 95th percentile is 4.88 ms (Quantile). The
// paper defers the second copy until the first has been outstanding past
// the 95th-percentile expected latency, which by definition hedges 5% of
// requests; with a tail this clear-cut, a delay just above that, on the
// edge of the fast range, hedges only the requests that are really
// stalled (2%) and costs the caller at most 0.12 ms more on the hedged
// ones. A delay of exactly the p95 would put the extra load on the 5%
// goal, passing or failing by sampling noise.
var Tail = Config{
	Scenario: "tail", Requests: 10000, Workers: 50,
	FastMin: 1 * time.Millisecond, FastMax: 5 * time.Millisecond,
	SlowShare: 0.02, SlowMin: 800 * time.Millisecond, SlowMax: 1200 * time.Millisecond,
	Delay: 5 * time.Millisecond, Timeout: 10 * time.Second, Seed: 1,
}

// Outage is the same client against a server that stalls for everything
// after the first 1,000 requests (which see the Tail distribution): from
// then on every copy takes 0.8–1.2 s, so hedging cannot help and every
// hedge is pure extra load. The healthy start lets tank_adaptive learn a
// short delay first, as it would in production; tank's budget must then
// hold every strategy's hedges to its ratio.
var Outage = func() Config {
	c := Tail
	c.Scenario, c.StallFrom = "outage", 1000
	return c
}()

// Quantile returns the q-quantile of the configured latency distribution
// (before any stall).
func (c Config) Quantile(q float64) time.Duration {
	lerp := func(lo, hi time.Duration, f float64) time.Duration {
		return lo + time.Duration(f*float64(hi-lo))
	}
	fast := 1 - c.SlowShare
	if q <= fast {
		return lerp(c.FastMin, c.FastMax, q/fast)
	}
	return lerp(c.SlowMin, c.SlowMax, (q-fast)/c.SlowShare)
}

// draw returns the latency of copy n (0 is the first) of request id. It
// depends on nothing else, so the order in which concurrent copies reach
// the server does not change the result.
func (c Config) draw(id, n int) time.Duration {
	r := rand.New(rand.NewPCG(c.Seed, mix(uint64(id)<<16|uint64(n))))
	lo, hi := c.FastMin, c.FastMax
	if r.Float64() < c.SlowShare || (c.StallFrom > 0 && id >= c.StallFrom) {
		lo, hi = c.SlowMin, c.SlowMax
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
}

// mix is the SplitMix64 finaliser: neighbouring ids give unrelated seeds.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// Budget is the retry budget of every tank strategy: hedges may add 20% to
// the requests, and the bucket banks at most 2 tokens (10 × 0.2) for
// bursts. No per-second allowance, so in an outage the ratio is the bound.
func Budget() *middleware.Budget {
	b, err := middleware.NewBudget(0.2, 0, nil)
	if err != nil {
		panic(err)
	}
	return b
}

// Strategy is a named way to build the client's transport. New is called
// once per run: state (budget, learnt latencies) lives for one run.
type Strategy struct {
	Name string
	New  func(cfg Config, next http.RoundTripper) http.RoundTripper
}

// Strategies are the four BENCHMARKS.md compares.
var Strategies = []Strategy{
	{"none", func(_ Config, n http.RoundTripper) http.RoundTripper {
		return middleware.NewTransport(n, middleware.WithBudget(Budget()))
	}},
	{"tank_fixed", func(c Config, n http.RoundTripper) http.RoundTripper {
		return middleware.NewTransport(n, middleware.WithBudget(Budget()),
			middleware.WithHedging(c.Delay, 1))
	}},
	{"tank_adaptive", func(_ Config, n http.RoundTripper) http.RoundTripper {
		return middleware.NewTransport(n, middleware.WithBudget(Budget()),
			middleware.WithAdaptiveHedging(0.95, 1))
	}},
	// failsafe-go's hedge policy with its defaults otherwise: the first
	// result of any kind cancels the other copy; no hedge budget.
	{"failsafe", func(c Config, n http.RoundTripper) http.RoundTripper {
		p := hedgepolicy.NewBuilderWithDelay[*http.Response](c.Delay).WithMaxHedges(1).Build()
		return failsafehttp.NewRoundTripper(n, p)
	}},
}

// Quantile is one point of a latency distribution.
type Quantile struct {
	Q  float64 `json:"q"`
	MS float64 `json:"ms"`
}

// Result is what one strategy did in one scenario.
type Result struct {
	Scenario string  `json:"scenario"`
	Strategy string  `json:"strategy"`
	Requests int     `json:"requests"` // logical requests sent
	Failed   int     `json:"failed"`   // logical requests that did not end in a 200
	P50      float64 `json:"p50_ms"`   // caller-side latency, headers and body
	P99      float64 `json:"p99_ms"`
	P999     float64 `json:"p999_ms"`
	Max      float64 `json:"max_ms"`
	Hits     int     `json:"hits"`  // copies the server received
	Extra    float64 `json:"extra"` // Hits/Requests − 1
	// Seconds is how long the run took (virtual time inside synctest).
	Seconds   float64    `json:"seconds"`
	Quantiles []Quantile `json:"quantiles"`
}

// Qs are the quantiles kept in Result.Quantiles, for the chart.
var Qs = []float64{0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999}

// server answers 200 after the drawn latency, or the request's context
// error if that ends first. It counts every copy it receives.
type server struct {
	cfg    Config
	mu     sync.Mutex
	hits   int
	copies map[int]int // copies seen per request id
}

func newServer(cfg Config) *server { return &server{cfg: cfg, copies: map[int]int{}} }

// arrive records one copy and returns its latency; false: no request id.
func (s *server) arrive(r *http.Request) (time.Duration, bool) {
	id, err := strconv.Atoi(r.URL.Query().Get("id"))
	s.mu.Lock()
	s.hits++
	n := s.copies[id]
	s.copies[id]++
	s.mu.Unlock()
	if err != nil {
		return 0, false
	}
	return s.cfg.draw(id, n), true
}

// wait waits d or until ctx ends.
func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

const body = "ok\n"

func (s *server) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	status := http.StatusOK
	if d, ok := s.arrive(req); !ok {
		status = http.StatusBadRequest
	} else if err := wait(req.Context(), d); err != nil {
		return nil, err
	}
	return &http.Response{
		StatusCode: status, Status: strconv.Itoa(status) + " " + http.StatusText(status),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/plain"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req,
	}, nil
}

// ServeHTTP is the same server over real HTTP, for RunReal.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d, ok := s.arrive(r)
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if wait(r.Context(), d) != nil {
		return // the client has gone
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, body)
}

// Run runs s under cfg against the in-memory server. It must run inside a
// synctest bubble (synctest.Test), where time.Now and timers are virtual.
func Run(cfg Config, s Strategy) Result {
	srv := newServer(cfg)
	return run(cfg, s, srv, srv, "http://hedge.test/")
}

// RunReal runs the same workload in real time against an httptest server
// on loopback, to confirm the simulation. It takes about
// Requests/Workers × the mean latency, plus HTTP overhead.
func RunReal(cfg Config, s Strategy) Result {
	srv := newServer(cfg)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	base := http.DefaultTransport.(*http.Transport).Clone()
	// Room for every worker's connection and a hedge each.
	base.MaxIdleConnsPerHost = 2 * cfg.Workers
	defer base.CloseIdleConnections()
	return run(cfg, s, srv, base, hs.URL+"/")
}

func run(cfg Config, s Strategy, srv *server, next http.RoundTripper, url string) Result {
	rt := s.New(cfg, next)
	lat := make([]time.Duration, cfg.Requests)
	failed := make([]bool, cfg.Requests)
	sent := make([]bool, cfg.Requests)
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wg.Go(func() {
			for id := w; id < cfg.Requests; id += cfg.Workers {
				if cfg.Limit > 0 && time.Since(t0) >= cfg.Limit {
					return
				}
				sent[id] = true
				lat[id], failed[id] = do(cfg, rt, url+"?id="+strconv.Itoa(id))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	var kept []time.Duration
	var keptFailed []bool
	for id := range sent {
		if sent[id] {
			kept, keptFailed = append(kept, lat[id]), append(keptFailed, failed[id])
		}
	}
	if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	srv.mu.Lock()
	hits := srv.hits
	srv.mu.Unlock()
	return summarise(cfg, s.Name, kept, keptFailed, hits, elapsed)
}

// do sends one logical request and returns its latency as the caller sees
// it: from the call to the end of the body.
func do(cfg Config, rt http.RoundTripper, url string) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, true
	}
	start := time.Now()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return time.Since(start), true
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(start), err != nil || resp.StatusCode != http.StatusOK
}

func summarise(cfg Config, name string, lat []time.Duration, failed []bool, hits int, elapsed time.Duration) Result {
	r := Result{Scenario: cfg.Scenario, Strategy: name, Requests: len(lat), Hits: hits, Seconds: elapsed.Seconds()}
	for _, f := range failed {
		if f {
			r.Failed++
		}
	}
	if len(lat) == 0 {
		return r
	}
	r.Extra = float64(hits)/float64(len(lat)) - 1
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	r.P50, r.P99, r.P999 = ms(Percentile(sorted, 0.5)), ms(Percentile(sorted, 0.99)), ms(Percentile(sorted, 0.999))
	r.Max = ms(sorted[len(sorted)-1])
	for _, q := range Qs {
		r.Quantiles = append(r.Quantiles, Quantile{q, ms(Percentile(sorted, q))})
	}
	return r
}

// Percentile returns the nearest-rank q-quantile of sorted latencies: the
// smallest value that at least q of them do not exceed.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The epsilon keeps 0.999 × 10,000 at rank 9,990 despite rounding.
	i := int(math.Ceil(q*float64(len(sorted))-1e-9)) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
