package bench

// BenchmarkPeers measures the per-request cost of tank and its peers on
// loopback, in one run: the success path (GET, POST of 1 KiB) and the
// one-retry path (503 then 200), sequential and parallel. Besides ns/op,
// B/op and allocs/op it reports cpu-ns/op (process user+sys time) and
// attempts/op (the server's count, a check that every lib did the same work).
//
//	go test -run '^$' -bench Peers -benchmem -count 6 ./ | tee ../../docs/bench/peers.txt
//	go run ./cmd/report   # paired ratios vs bare, charts

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/go-resty/resty/v2"
	"github.com/hashicorp/go-retryablehttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tankhttp/tank/middleware"
)

var payload = bytes.Repeat([]byte("x"), 1024)

// target counts attempts; on /retry it answers 503 the first time it sees
// an X-Req-Id and 200 the second time.
type target struct {
	attempts atomic.Int64
	mu       sync.Mutex
	seen     map[string]bool
}

func (s *target) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.attempts.Add(1)
	io.Copy(io.Discard, r.Body)
	if r.URL.Path == "/retry" {
		id := r.Header.Get("X-Req-Id")
		s.mu.Lock()
		first := !s.seen[id]
		if first {
			s.seen[id] = true
		} else {
			delete(s.seen, id)
		}
		s.mu.Unlock()
		if first {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "no")
			return
		}
	}
	io.WriteString(w, "ok")
}

// doer sends one logical request and returns the final status.
type doer func(method, url, id string) (int, error)

// newRequest builds the benchmark's request: GET, or POST of 1 KiB.
func newRequest(method, url, id string) (*http.Request, error) {
	var body io.Reader
	if method == http.MethodPost {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Req-Id", id)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	return req, nil
}

// send does req and throws the body away.
func send(c *http.Client, req *http.Request) (int, error) { return drain(c.Do(req)) }

// drain throws resp's body away and returns its status code.
func drain(resp *http.Response, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func stdDoer(c *http.Client) doer {
	return func(method, url, id string) (int, error) {
		req, err := newRequest(method, url, id)
		if err != nil {
			return 0, err
		}
		return send(c, req)
	}
}

// bareDoer retries by hand on a 503: the floor for the retry path.
func bareDoer(c *http.Client) doer {
	return func(method, url, id string) (int, error) {
		req, err := newRequest(method, url, id)
		if err != nil {
			return 0, err
		}
		for range 4 { // bounded: the server answers 200 on the second attempt
			code, err := send(c, req)
			if err != nil || code != http.StatusServiceUnavailable {
				return code, err
			}
			if req.GetBody != nil {
				req.Body, _ = req.GetBody()
			}
		}
		return http.StatusServiceUnavailable, nil
	}
}

func restyDoer(c *resty.Client) doer {
	return func(method, url, id string) (int, error) {
		r := c.R().SetHeader("X-Req-Id", id)
		if method == http.MethodPost {
			r.SetHeader("Content-Type", "application/octet-stream").SetBody(payload)
		}
		resp, err := r.Execute(method, url)
		if err != nil {
			return 0, err
		}
		return resp.StatusCode(), nil
	}
}

func rhttpDoer(c *retryablehttp.Client) doer {
	return func(method, url, id string) (int, error) {
		var body any
		if method == http.MethodPost {
			body = payload
		}
		req, err := retryablehttp.NewRequest(method, url, body)
		if err != nil {
			return 0, err
		}
		req.Header.Set("X-Req-Id", id)
		return drain(c.Do(req))
	}
}

// libs builds every client over the same base transport.
func libs(base *http.Transport) []struct {
	name string
	do   doer
} {
	rc := retryablehttp.NewClient()
	rc.Logger, rc.RetryWaitMin, rc.RetryWaitMax, rc.RetryMax = nil, 0, 0, 3
	rc.HTTPClient = &http.Client{Transport: base}
	retry3 := resty.NewWithClient(&http.Client{Transport: base}).
		SetRetryCount(3).SetRetryWaitTime(0).SetRetryMaxWaitTime(0).
		AddRetryCondition(func(r *resty.Response, err error) bool {
			return err == nil && (r.StatusCode() == 429 || r.StatusCode() >= 500 && r.StatusCode() != 501)
		})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(discard{}))
	out := []struct {
		name string
		do   doer
	}{
		{"bare", nil}, // filled per path below
		{"tank", stdDoer(&http.Client{Transport: middleware.NewTransport(base, middleware.WithBackoff(0, 0))})},
		{"rhttp_client", rhttpDoer(rc)},
		{"rhttp_rt", stdDoer(rc.StandardClient())},
		{"resty_noretry", restyDoer(resty.NewWithClient(&http.Client{Transport: base}))},
		{"resty_retry3", restyDoer(retry3)},
		{"failsafe_rt", stdDoer(&http.Client{Transport: failsafehttp.NewRoundTripper(base,
			failsafehttp.NewRetryPolicyBuilder().WithMaxRetries(3).Build())})},
		{"otelhttp", stdDoer(&http.Client{Transport: otelhttp.NewTransport(base,
			otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(noop.NewMeterProvider()),
			otelhttp.WithPropagators(propagation.TraceContext{}))})},
	}
	out = append(out, extraLibs(base)...)
	return out
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkPeers(b *testing.B) {
	srv := httptest.NewServer(&target{seen: map[string]bool{}})
	defer srv.Close()
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConns, base.MaxIdleConnsPerHost = 100, 100
	defer base.CloseIdleConnections()
	t := srv.Config.Handler.(*target)
	var seq atomic.Int64
	// A process's first benchmark runs cold (about 40% slow here): warm up
	// with a throwaway one.
	b.Run("warmup", func(b *testing.B) {
		do := stdDoer(&http.Client{Transport: base})
		for i := 0; i < b.N; i++ {
			do(http.MethodGet, srv.URL+"/ok", "w")
		}
	})
	for _, path := range []string{"ok", "retry"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			for _, mode := range []string{"seq", "par"} {
				ls := libs(base)
				// Shuffle the libs in each process, so that drift over a pass
				// does not always favour the same ones; ratios are paired per
				// pass, so order does not matter otherwise.
				rand.Shuffle(len(ls), func(i, j int) { ls[i], ls[j] = ls[j], ls[i] })
				for _, l := range ls {
					do := l.do
					if l.name == "bare" {
						do = stdDoer(&http.Client{Transport: base})
						if path == "retry" {
							do = bareDoer(&http.Client{Transport: base})
						}
					}
					if path == "retry" && (l.name == "resty_noretry" || l.name == "otelhttp") {
						continue // they do not retry
					}
					url := srv.URL + "/" + path
					name := "path=" + path + "/method=" + method + "/mode=" + mode + "/lib=" + l.name
					b.Run(name, func(b *testing.B) {
						one := func() {
							id := strconv.FormatInt(seq.Add(1), 36)
							code, err := do(method, url, id)
							if err != nil || code != http.StatusOK {
								b.Fatalf("status %d, err %v", code, err)
							}
						}
						for i := 0; i < 8; i++ { // warm the idle pool
							one()
						}
						b.ReportAllocs()
						a0, c0 := t.attempts.Load(), cpuNow()
						b.ResetTimer()
						if mode == "seq" {
							for i := 0; i < b.N; i++ {
								one()
							}
						} else {
							b.SetParallelism(4)
							b.RunParallel(func(pb *testing.PB) {
								for pb.Next() {
									one()
								}
							})
						}
						b.StopTimer()
						b.ReportMetric(float64(cpuNow()-c0)/float64(b.N), "cpu-ns/op")
						b.ReportMetric(float64(t.attempts.Load()-a0)/float64(b.N), "attempts/op")
					})
				}
			}
		}
	}
	_ = context.Background
}
