package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

// server answers a script of statuses (the last repeats) and records the
// traceparent header of every request.
type server struct {
	*httptest.Server
	mu          sync.Mutex
	statuses    []int
	retryAfter  string
	traceparent []string
}

func newServer(t *testing.T, statuses ...int) *server {
	t.Helper()
	s := &server{statuses: statuses}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		n := len(s.traceparent)
		s.traceparent = append(s.traceparent, r.Header.Get("Traceparent"))
		ra := s.retryAfter
		s.mu.Unlock()
		code := s.statuses[min(n, len(s.statuses)-1)]
		if ra != "" && code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(code)
		io.WriteString(w, strconv.Itoa(code))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) headers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.traceparent...)
}

// recorder is an SDK tracer provider that keeps every ended span.
type recorder struct {
	*tracetest.SpanRecorder
	tp *sdktrace.TracerProvider
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return &recorder{SpanRecorder: sr, tp: tp}
}

// testOptions are the policy options of the span tests: 3 attempts and a
// fixed 1ms wait, so sleeps are exact.
func testOptions(rec *recorder, extra ...tracing.Option) []middleware.Option {
	opts := append([]tracing.Option{
		tracing.WithTracerProvider(rec.tp),
		tracing.WithPropagators(propagation.TraceContext{}),
	}, extra...)
	return []middleware.Option{
		middleware.WithMaxAttempts(3),
		middleware.WithBackoff(time.Millisecond, time.Millisecond),
		middleware.WithJitter(middleware.JitterNone),
		tracing.With(opts...),
	}
}

// newClient returns a client over a Transport with opts and a base
// transport that is closed when the test ends.
func newClient(t *testing.T, opts ...middleware.Option) *http.Client {
	t.Helper()
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return &http.Client{Transport: middleware.NewTransport(base, opts...)}
}

// get sends a GET to url with ctx and reads the whole response.
func get(t *testing.T, c *http.Client, ctx context.Context, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// attr returns the value of key in kvs, and whether it is there.
func attr(kvs []attribute.KeyValue, key string) (attribute.Value, bool) {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// byKind splits spans into tank's INTERNAL spans and attempt (CLIENT) spans,
// each in start order.
func byKind(spans []sdktrace.ReadOnlySpan) (internal, attempts []sdktrace.ReadOnlySpan) {
	for _, s := range spans {
		switch s.SpanKind() {
		case trace.SpanKindInternal:
			internal = append(internal, s)
		case trace.SpanKindClient:
			attempts = append(attempts, s)
		}
	}
	sortByStart(internal)
	sortByStart(attempts)
	return internal, attempts
}

func sortByStart(s []sdktrace.ReadOnlySpan) {
	slices.SortFunc(s, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
}

// view is what a user sees of a span in Jaeger, minus ids and times.
type view struct {
	Name   string
	Kind   string
	Parent string // "tank" (tank's INTERNAL span), "caller", or "" (root)
	Status string
	Attrs  map[string]string
}

// views renders spans in start order, INTERNAL first. caller is the span
// context of the caller's span, if any. Attributes whose values differ
// from run to run (server.port, url.full) are checked elsewhere and left
// out, so are sleeps (they are checked as exact values in other tests).
func views(spans []sdktrace.ReadOnlySpan, caller trace.SpanContext) []view {
	internal, attempts := byKind(spans)
	var tankIDs []trace.SpanID
	for _, s := range internal {
		if s.InstrumentationScope().Name == "github.com/tankhttp/tank/tracing" {
			tankIDs = append(tankIDs, s.SpanContext().SpanID())
		}
	}
	var out []view
	for _, s := range append(internal, attempts...) {
		v := view{Name: s.Name(), Kind: s.SpanKind().String(), Status: s.Status().Code.String(), Attrs: map[string]string{}}
		switch p := s.Parent(); {
		case slices.Contains(tankIDs, p.SpanID()):
			v.Parent = "tank"
		case p.IsValid() && p.SpanID() == caller.SpanID():
			v.Parent = "caller"
		case p.IsValid():
			v.Parent = "other:" + p.SpanID().String()
		}
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case "server.port", "url.full", "tank.attempt.sleep", "tank.request.slept":
				continue
			}
			v.Attrs[string(kv.Key)] = kv.Value.String()
		}
		out = append(out, v)
	}
	return out
}

// wantRetried is the layout of a GET answered 503, 503, 200 without a
// caller span: tank's INTERNAL span and three sibling attempts under it.
func wantRetried() []view {
	attempt := func(status, class, decision, reason string, resend int) view {
		v := view{Name: "GET", Kind: "client", Parent: "tank", Status: "Unset", Attrs: map[string]string{
			"http.request.method":       "GET",
			"server.address":            "127.0.0.1",
			"http.response.status_code": status,
			"tank.attempt.class":        class,
			"tank.attempt.decision":     decision,
			"tank.attempt.reason":       reason,
		}}
		if status >= "400" {
			v.Status = "Error"
			v.Attrs["error.type"] = status
		}
		if decision == "retry" {
			v.Attrs["tank.attempt.sleep_source"] = "backoff"
		}
		if resend > 0 {
			v.Attrs["http.request.resend_count"] = strconv.Itoa(resend)
		}
		return v
	}
	return []view{
		{Name: "GET (tank)", Kind: "internal", Status: "Unset", Attrs: map[string]string{
			"http.request.method":   "GET",
			"server.address":        "127.0.0.1",
			"tank.request.attempts": "3",
			"tank.request.outcome":  "final",
		}},
		attempt("503", "unavailable", "retry", "not_processed", 0),
		attempt("503", "unavailable", "retry", "not_processed", 1),
		attempt("200", "final", "stop", "final", 2),
	}
}
