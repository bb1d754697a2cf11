// Package storm simulates a retry storm: clients sending at a steady rate to
// a server that fails completely for a while and then recovers with a
// bounded capacity. It runs tank's real Transport against an in-memory
// server, inside a testing/synctest bubble, so time is virtual: the result is
// deterministic for a given seed and takes seconds to compute.
package storm

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/tankhttp/tank/middleware"
)

// Config describes one scenario.
type Config struct {
	Clients       int           // client processes, each with its own Transport (and budget)
	RatePerClient int           // logical requests a second, per client
	Duration      time.Duration // how long clients send
	OutageStart   time.Duration // the server fails every request from here...
	OutageEnd     time.Duration // ...to here
	Capacity      int           // requests a second the server can serve once up
	Timeout       time.Duration // each logical request's deadline
	Bucket        time.Duration // width of a time-series bucket
}

// Default is the scenario BENCHMARKS.md reports.
var Default = Config{
	Clients: 10, RatePerClient: 100, Duration: 40 * time.Second,
	OutageStart: 10 * time.Second, OutageEnd: 20 * time.Second,
	Capacity: 1250, Timeout: 10 * time.Second, Bucket: 100 * time.Millisecond,
}

// Strategy is a named way to build each client's transport.
type Strategy struct {
	Name string
	New  func(next http.RoundTripper) http.RoundTripper
}

// Strategies are the four BENCHMARKS.md compares.
var Strategies = []Strategy{
	{"no_retry", func(n http.RoundTripper) http.RoundTripper {
		return middleware.NewTransport(n, middleware.WithMaxAttempts(1))
	}},
	{"retry3_no_jitter", func(n http.RoundTripper) http.RoundTripper {
		return middleware.NewTransport(n, middleware.WithMaxAttempts(4),
			middleware.WithBackoff(100*time.Millisecond, 2*time.Second), middleware.WithJitter(middleware.JitterNone))
	}},
	{"retry3_full_jitter", func(n http.RoundTripper) http.RoundTripper {
		return middleware.NewTransport(n, middleware.WithMaxAttempts(4),
			middleware.WithBackoff(100*time.Millisecond, 2*time.Second))
	}},
	{"tank_budget", func(n http.RoundTripper) http.RoundTripper {
		b, err := middleware.NewBudget(0.2, 1, nil)
		if err != nil {
			panic(err)
		}
		return middleware.NewTransport(n, middleware.WithMaxAttempts(4),
			middleware.WithBackoff(100*time.Millisecond, 2*time.Second), middleware.WithBudget(b))
	}},
}

// Result is what one strategy did to the server.
type Result struct {
	Strategy      string
	Amplification float64   // peak offered load over one second ÷ base load
	Attempts      int       // requests the server received
	Logical       int       // logical requests sent
	Failed        int       // logical requests that did not end in a 200
	FailedShare   float64   // Failed / Logical
	Recovery      float64   // seconds from the outage's end to the first whole second with no failed attempt
	Offered       []float64 // attempts a second, per bucket
	BucketSeconds float64
}

// server is an in-memory HTTP server with an outage and a capacity.
type server struct {
	cfg   Config
	t0    time.Time
	mu    sync.Mutex
	win   time.Time // start of the current 100ms capacity window
	used  int
	hits  []int // attempts per bucket
	fails []int // failed attempts per bucket
}

func (s *server) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	status := s.serve()
	return &http.Response{
		StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: req,
	}, nil
}

// ServeHTTP is the same server over real HTTP, for RunReal.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(s.serve())
}

// serve records one attempt and returns its status.
func (s *server) serve() int {
	now := time.Now()
	at := now.Sub(s.t0)
	s.mu.Lock()
	i := int(at / s.cfg.Bucket)
	for len(s.hits) <= i {
		s.hits = append(s.hits, 0)
		s.fails = append(s.fails, 0)
	}
	s.hits[i]++
	if now.Sub(s.win) >= 100*time.Millisecond {
		s.win, s.used = now.Truncate(100*time.Millisecond), 0
	}
	ok := !(at >= s.cfg.OutageStart && at < s.cfg.OutageEnd) && s.used < s.cfg.Capacity/10
	if ok {
		s.used++
	} else {
		s.fails[i]++
	}
	s.mu.Unlock()
	if !ok {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

// Run simulates s under cfg. It must run inside a synctest bubble
// (synctest.Test), where time.Now and timers are virtual.
func Run(cfg Config, s Strategy) Result {
	srv := &server{cfg: cfg, t0: time.Now(), win: time.Now()}
	return run(cfg, s, srv, srv, "http://storm.test/")
}

// RunReal runs the same scenario in real time over loopback HTTP, to
// confirm the simulation. It takes cfg.Duration plus the last requests'
// retries.
func RunReal(cfg Config, s Strategy) Result {
	srv := &server{cfg: cfg}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 256
	defer base.CloseIdleConnections()
	srv.mu.Lock()
	srv.t0, srv.win = time.Now(), time.Now()
	srv.mu.Unlock()
	return run(cfg, s, srv, base, hs.URL)
}

func run(cfg Config, s Strategy, srv *server, next http.RoundTripper, url string) Result {
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		logical, fails int
	)
	interval := time.Second / time.Duration(cfg.RatePerClient)
	perClient := int(cfg.Duration / interval)
	for c := 0; c < cfg.Clients; c++ {
		rt := s.New(next)
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			// Stagger clients evenly inside one interval.
			time.Sleep(interval * time.Duration(c) / time.Duration(cfg.Clients))
			for i := 0; i < perClient; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
					defer cancel()
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
					resp, err := rt.RoundTrip(req)
					failed := err != nil || resp.StatusCode != http.StatusOK
					if resp != nil {
						resp.Body.Close()
					}
					mu.Lock()
					logical++
					if failed {
						fails++
					}
					mu.Unlock()
				}()
				time.Sleep(interval)
			}
		}(c)
	}
	wg.Wait()
	return summarise(cfg, s.Name, srv, logical, fails)
}

func summarise(cfg Config, name string, srv *server, logical, fails int) Result {
	r := Result{Strategy: name, Logical: logical, Failed: fails, BucketSeconds: cfg.Bucket.Seconds()}
	if logical > 0 {
		r.FailedShare = float64(fails) / float64(logical)
	}
	perSec := int(time.Second / cfg.Bucket)
	base := float64(cfg.Clients * cfg.RatePerClient)
	for i, h := range srv.hits {
		r.Attempts += h
		r.Offered = append(r.Offered, float64(h)/cfg.Bucket.Seconds())
		// Peak over a sliding one-second window, within the sending period.
		if i+perSec <= len(srv.hits) && time.Duration(i+perSec)*cfg.Bucket <= cfg.Duration {
			sum := 0
			for _, x := range srv.hits[i : i+perSec] {
				sum += x
			}
			if a := float64(sum) / base; a > r.Amplification {
				r.Amplification = a
			}
		}
	}
	end := int(cfg.OutageEnd / cfg.Bucket)
	r.Recovery = -1
	for i := end; i+perSec <= len(srv.fails); i++ {
		bad := 0
		for _, f := range srv.fails[i : i+perSec] {
			bad += f
		}
		if bad == 0 {
			r.Recovery = float64(i-end) * cfg.Bucket.Seconds()
			break
		}
	}
	return r
}
