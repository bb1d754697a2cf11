package tracing_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tankhttp/tank/internal/testsupport/faultserver"
	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

func TestRetriedRequestLayout(t *testing.T) {
	rec := newRecorder(t)
	srv := newServer(t, 503, 503, 200)
	c := newClient(t, testOptions(rec)...)
	resp, err := get(t, c, context.Background(), srv.URL+"/items?page=2")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("get = %v, %v; want 200", resp, err)
	}
	spans := rec.Ended()
	if diff := cmp.Diff(wantRetried(), views(spans, trace.SpanContext{})); diff != "" {
		t.Errorf("spans (-want +got):\n%s", diff)
	}

	internal, attempts := byKind(spans)
	if len(internal) != 1 || len(attempts) != 3 {
		t.Fatalf("got %d internal and %d attempt spans; want 1 and 3", len(internal), len(attempts))
	}
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	for i, s := range append(internal, attempts...) {
		if got := s.SpanContext().TraceID(); got != internal[0].SpanContext().TraceID() {
			t.Errorf("span %d trace id = %v; want the request's %v", i, got, internal[0].SpanContext().TraceID())
		}
		if v, _ := attr(s.Attributes(), "server.port"); v.AsInt64() != int64(port) {
			t.Errorf("span %d server.port = %v; want %d", i, v.String(), port)
		}
		if v, _ := attr(s.Attributes(), "url.full"); v.AsString() != srv.URL+"/items?page=2" {
			t.Errorf("span %d url.full = %q; want %q", i, v.AsString(), srv.URL+"/items?page=2")
		}
	}
	for i, want := range []float64{0.001, 0.001} {
		if v, ok := attr(attempts[i].Attributes(), "tank.attempt.sleep"); !ok || v.AsFloat64() != want {
			t.Errorf("attempt %d tank.attempt.sleep = %v (present %v); want %v", i+1, v.String(), ok, want)
		}
	}
	if _, ok := attr(attempts[2].Attributes(), "tank.attempt.sleep"); ok {
		t.Errorf("last attempt has tank.attempt.sleep; want none after a stop")
	}
	if v, _ := attr(internal[0].Attributes(), "tank.request.slept"); v.AsFloat64() != 0.002 {
		t.Errorf("tank.request.slept = %v; want 0.002", v.String())
	}
	// Each attempt ends before the next starts: the wait is a gap, not a bar.
	for i := 1; i < 3; i++ {
		if attempts[i].StartTime().Before(attempts[i-1].EndTime()) {
			t.Errorf("attempt %d starts before attempt %d ends", i+1, i)
		}
	}
	if internal[0].EndTime().Before(attempts[2].EndTime()) {
		t.Errorf("request span ends before its last attempt")
	}
}

func TestAttemptsUnderCallerSpan(t *testing.T) {
	rec := newRecorder(t)
	srv := newServer(t, 503, 200)
	c := newClient(t, testOptions(rec)...)
	ctx, caller := rec.tp.Tracer("test").Start(context.Background(), "caller")
	get(t, c, ctx, srv.URL)
	caller.End()

	// tank's request span sits under the caller's, so the request's summary
	// shows in the trace there too.
	var got []string
	for _, v := range views(rec.Ended(), caller.SpanContext()) {
		got = append(got, v.Kind+" "+v.Name+" parent="+v.Parent)
	}
	want := []string{"internal caller parent=", "internal GET (tank) parent=caller", "client GET parent=tank", "client GET parent=tank"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("spans (-want +got):\n%s", diff)
	}
	internal, _ := byKind(rec.Ended())
	for _, s := range internal {
		if s.Name() != "GET (tank)" {
			continue
		}
		if v, _ := attr(s.Attributes(), "tank.request.attempts"); v.AsInt64() != 2 {
			t.Errorf("tank.request.attempts under a caller's span = %v; want 2", v.String())
		}
	}
}

// TestRedirectIsOneTrace: http.Client follows a 307 with a second
// RoundTrip; with no caller span the hops share one trace, and
// http.request.resend_count counts every physical request, redirects
// included, as the HTTP semantic conventions say.
func TestRedirectIsOneTrace(t *testing.T) {
	rec := newRecorder(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := hits.Add(1); {
		case r.URL.Path == "/old":
			http.Redirect(w, r, "/new", http.StatusTemporaryRedirect)
		case n == 2:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	c := newClient(t, testOptions(rec)...)
	if resp, err := get(t, c, context.Background(), srv.URL+"/old"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /old = %v, %v; want 200 after a redirect and a retry", resp, err)
	}
	internal, attempts := byKind(rec.Ended())
	if len(internal) != 2 || len(attempts) != 3 {
		t.Fatalf("%d request and %d attempt spans; want 2 (one per hop) and 3", len(internal), len(attempts))
	}
	traceID := internal[0].SpanContext().TraceID()
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() != traceID {
			t.Errorf("span %q is in trace %s; want every hop in %s", s.Name(), s.SpanContext().TraceID(), traceID)
		}
	}
	if p := internal[1].Parent(); p.SpanID() != internal[0].SpanContext().SpanID() {
		t.Errorf("second hop's request span has parent %s; want the first hop's", p.SpanID())
	}
	for i, want := range []int64{-1, 1, 2} {
		v, ok := attr(attempts[i].Attributes(), "http.request.resend_count")
		if (want < 0) == ok || ok && v.AsInt64() != want {
			t.Errorf("attempt %d: resend_count = %v (present %v); want %d (-1: absent)", i+1, v.String(), ok, want)
		}
	}
}

// TestCancelDuringWaitTellsTheTruth: a wait cut by the caller shows what was
// planned (on the attempt span) and what was slept (on the request span),
// and the cancel is the request's outcome and error.
func TestCancelDuringWaitTellsTheTruth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder(t)
		rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 503, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
		})
		tr := middleware.NewTransport(rt, middleware.WithBackoff(300*time.Millisecond, 300*time.Millisecond),
			middleware.WithJitter(middleware.JitterNone), tracing.With(tracing.WithTracerProvider(rec.tp)))
		ctx, cancel := context.WithCancelCause(context.Background())
		time.AfterFunc(50*time.Millisecond, func() { cancel(errors.New("user closed the tab")) })
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/", nil)
		if _, err := tr.RoundTrip(req); !errors.Is(err, middleware.ReasonCanceled) {
			t.Fatalf("RoundTrip error = %v; want ReasonCanceled", err)
		}
		internal, attempts := byKind(rec.Ended())
		if len(internal) != 1 || len(attempts) != 1 {
			t.Fatalf("%d request and %d attempt spans; want 1 and 1", len(internal), len(attempts))
		}
		if v, _ := attr(attempts[0].Attributes(), "tank.attempt.sleep"); v.AsFloat64() != 0.3 {
			t.Errorf("attempt's tank.attempt.sleep = %v; want 0.3, the wait planned", v.String())
		}
		req0 := internal[0]
		want := map[string]string{"tank.request.outcome": "canceled", "tank.request.slept": "0.05", "error.type": "canceled"}
		for k, w := range want {
			if v, _ := attr(req0.Attributes(), k); v.String() != w {
				t.Errorf("request span %s = %q; want %q", k, v.String(), w)
			}
		}
		if st := req0.Status(); st.Code != codes.Error || st.Description != "user closed the tab" {
			t.Errorf("request span status = %v %q; want Error with the cancel's cause", st.Code, st.Description)
		}
	})
}

func TestTraceparentPerAttempt(t *testing.T) {
	rec := newRecorder(t)
	srv := newServer(t, 503, 503, 200)
	c := newClient(t, testOptions(rec)...)
	get(t, c, context.Background(), srv.URL)

	_, attempts := byKind(rec.Ended())
	hdrs := srv.headers()
	if len(hdrs) != 3 || len(attempts) != 3 {
		t.Fatalf("server saw %d requests, recorder %d attempts; want 3 and 3", len(hdrs), len(attempts))
	}
	for i, h := range hdrs {
		sc := propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier{"Traceparent": {h}})
		got := trace.SpanContextFromContext(sc)
		want := attempts[i].SpanContext()
		if got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() {
			t.Errorf("attempt %d sent traceparent %q; want trace %v span %v", i+1, h, want.TraceID(), want.SpanID())
		}
	}
	if hdrs[0] == hdrs[1] || hdrs[1] == hdrs[2] {
		t.Errorf("traceparents %q repeat; want one span per attempt", hdrs)
	}
}

func TestCallerRequestUnchanged(t *testing.T) {
	rec := newRecorder(t)
	srv := newServer(t, 503, 200)
	c := newClient(t, testOptions(rec)...)
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(req.Header) != 0 {
		t.Errorf("caller's request headers = %v; want none added", req.Header)
	}
}

func TestTransportErrorAttempts(t *testing.T) {
	rec := newRecorder(t)
	addr := faultserver.RefusedAddr()
	c := newClient(t, testOptions(rec)...)
	_, err := get(t, c, context.Background(), "http://"+addr+"/")
	if !errors.Is(err, middleware.ReasonAttempts) {
		t.Fatalf("get error = %v; want one wrapping %v", err, middleware.ReasonAttempts)
	}
	internal, attempts := byKind(rec.Ended())
	if len(internal) != 1 || len(attempts) != 3 {
		t.Fatalf("got %d internal and %d attempt spans; want 1 and 3", len(internal), len(attempts))
	}
	for i, s := range attempts {
		if v, _ := attr(s.Attributes(), "error.type"); v.AsString() != "refused" {
			t.Errorf("attempt %d error.type = %q; want refused", i+1, v.AsString())
		}
		if _, ok := attr(s.Attributes(), "http.response.status_code"); ok {
			t.Errorf("attempt %d has http.response.status_code without a response", i+1)
		}
		if st := s.Status(); st.Code != codes.Error || !strings.Contains(st.Description, "refused") {
			t.Errorf("attempt %d status = %v %q; want Error with the error's text", i+1, st.Code, st.Description)
		}
	}
	if v, _ := attr(attempts[2].Attributes(), "tank.attempt.reason"); v.AsString() != string(middleware.ReasonAttempts) {
		t.Errorf("last attempt reason = %q; want %q", v.AsString(), middleware.ReasonAttempts)
	}
	r := internal[0]
	if r.Status().Code != codes.Error {
		t.Errorf("request span status = %v; want Error when the last attempt failed", r.Status().Code)
	}
	if v, _ := attr(r.Attributes(), "error.type"); v.AsString() != "refused" {
		t.Errorf("request span error.type = %q; want refused", v.AsString())
	}
	if v, _ := attr(r.Attributes(), "tank.request.outcome"); v.AsString() != string(middleware.ReasonAttempts) {
		t.Errorf("tank.request.outcome = %q; want %q", v.AsString(), middleware.ReasonAttempts)
	}
}

func TestFinalStatuses(t *testing.T) {
	for _, tt := range []struct {
		method    string
		status    int
		wantError bool
		wantClass string
		wantWhy   string
	}{
		{"GET", 200, false, "final", "final"},
		{"GET", 302, false, "final", "final"},
		{"GET", 404, true, "final", "final"},
		{"POST", 500, true, "server_error", "not_replayable"},
	} {
		t.Run(tt.method+" "+strconv.Itoa(tt.status), func(t *testing.T) {
			rec := newRecorder(t)
			srv := newServer(t, tt.status)
			c := newClient(t, testOptions(rec)...)
			c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			req, _ := http.NewRequest(tt.method, srv.URL, strings.NewReader("x"))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			_, attempts := byKind(rec.Ended())
			if len(attempts) != 1 {
				t.Fatalf("got %d attempt spans; want 1", len(attempts))
			}
			s := attempts[0]
			if got := s.Status().Code == codes.Error; got != tt.wantError {
				t.Errorf("status = %v; want Error %v", s.Status().Code, tt.wantError)
			}
			et, ok := attr(s.Attributes(), "error.type")
			if ok != tt.wantError || (ok && et.AsString() != strconv.Itoa(tt.status)) {
				t.Errorf("error.type = %q (present %v); want %q only on errors", et.AsString(), ok, strconv.Itoa(tt.status))
			}
			if _, ok := attr(s.Attributes(), "http.request.resend_count"); ok {
				t.Errorf("first attempt has http.request.resend_count; want none")
			}
			for key, want := range map[string]string{
				"http.request.method": tt.method, "tank.attempt.class": tt.wantClass,
				"tank.attempt.decision": "stop", "tank.attempt.reason": tt.wantWhy,
			} {
				if v, _ := attr(s.Attributes(), key); v.AsString() != want {
					t.Errorf("%s = %q; want %q", key, v.AsString(), want)
				}
			}
		})
	}
}

func TestRetryAfterSource(t *testing.T) {
	rec := newRecorder(t)
	srv := newServer(t, 503, 200)
	srv.retryAfter = "0"
	c := newClient(t, testOptions(rec)...)
	get(t, c, context.Background(), srv.URL)
	_, attempts := byKind(rec.Ended())
	if len(attempts) != 2 {
		t.Fatalf("got %d attempt spans; want 2", len(attempts))
	}
	a := attempts[0].Attributes()
	if v, _ := attr(a, "tank.attempt.sleep_source"); v.AsString() != string(middleware.SleepRetryAfter) {
		t.Errorf("tank.attempt.sleep_source = %q; want %q", v.AsString(), middleware.SleepRetryAfter)
	}
	if v, ok := attr(a, "tank.attempt.sleep"); !ok || v.AsFloat64() != 0 {
		t.Errorf("tank.attempt.sleep = %v (present %v); want 0", v.String(), ok)
	}
}

func TestOtherMethod(t *testing.T) {
	rec := newRecorder(t)
	srv := newServer(t, 200)
	c := newClient(t, testOptions(rec)...)
	req, _ := http.NewRequest("PURGE", srv.URL, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	internal, attempts := byKind(rec.Ended())
	if len(internal) != 1 || len(attempts) != 1 {
		t.Fatalf("got %d internal and %d attempt spans; want 1 and 1", len(internal), len(attempts))
	}
	if internal[0].Name() != "HTTP (tank)" || attempts[0].Name() != "HTTP" {
		t.Errorf("span names = %q, %q; want %q, %q", internal[0].Name(), attempts[0].Name(), "HTTP (tank)", "HTTP")
	}
	a := attempts[0].Attributes()
	if v, _ := attr(a, "http.request.method"); v.AsString() != "_OTHER" {
		t.Errorf("http.request.method = %q; want _OTHER", v.AsString())
	}
	if v, _ := attr(a, "http.request.method_original"); v.AsString() != "PURGE" {
		t.Errorf("http.request.method_original = %q; want PURGE", v.AsString())
	}
}

func TestURLRedaction(t *testing.T) {
	for _, tt := range []struct{ give, want string }{
		{"https://example.com/a?b=c", "https://example.com/a?b=c"},
		{"https://user:pw@example.com/a", "https://REDACTED:REDACTED@example.com/a"},
		{"https://user@example.com/a", "https://REDACTED:REDACTED@example.com/a"},
		{"https://s3.example.com/o?AWSAccessKeyId=AKIA&Signature=abc%2F&Expires=9",
			"https://s3.example.com/o?AWSAccessKeyId=REDACTED&Signature=REDACTED&Expires=9"},
		{"https://x.example.com/o?sig=abc&sign=keep&X-Goog-Signature=zz",
			"https://x.example.com/o?sig=REDACTED&sign=keep&X-Goog-Signature=REDACTED"},
		{"https://x.example.com/o?%73ig=abc&q=signature", "https://x.example.com/o?%73ig=REDACTED&q=signature"},
		{"https://x.example.com/o?sig", "https://x.example.com/o?sig=REDACTED"},
	} {
		u, err := url.Parse(tt.give)
		if err != nil {
			t.Fatal(err)
		}
		rec := newRecorder(t)
		tr := middleware.NewTransport(roundTripFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
		}), testOptions(rec)...)
		resp, err := tr.RoundTrip(&http.Request{Method: "GET", URL: u, Header: http.Header{}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, s := range rec.Ended() {
			if v, _ := attr(s.Attributes(), "url.full"); v.AsString() != tt.want {
				t.Errorf("%s url.full for %q = %q; want %q", s.Name(), tt.give, v.AsString(), tt.want)
			}
		}
		if len(rec.Ended()) != 2 {
			t.Errorf("%q: got %d spans; want 2", tt.give, len(rec.Ended()))
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestWithRequestSpanFalse(t *testing.T) {
	rec := newRecorder(t)
	srv := newServer(t, 503, 200)
	c := newClient(t, testOptions(rec, tracing.WithRequestSpan(false))...)
	get(t, c, context.Background(), srv.URL)
	internal, attempts := byKind(rec.Ended())
	if len(internal) != 0 || len(attempts) != 2 {
		t.Fatalf("got %d internal and %d attempt spans; want 0 and 2", len(internal), len(attempts))
	}
	for i, s := range attempts {
		if s.Parent().IsValid() {
			t.Errorf("attempt %d has a parent; want a root span", i+1)
		}
	}
	if attempts[0].SpanContext().TraceID() == attempts[1].SpanContext().TraceID() {
		t.Errorf("attempts share a trace without a parent span")
	}
	if v, _ := attr(attempts[1].Attributes(), "http.request.resend_count"); v.AsInt64() != 1 {
		t.Errorf("second attempt resend_count = %v; want 1", v.String())
	}
}

func TestBudgetTokens(t *testing.T) {
	rec := newRecorder(t)
	srv := newServer(t, 503, 200)
	b, err := middleware.NewBudget(0.2, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, append(testOptions(rec), middleware.WithBudget(b))...)
	get(t, c, context.Background(), srv.URL)
	_, attempts := byKind(rec.Ended())
	if len(attempts) != 2 {
		t.Fatalf("got %d attempt spans; want 2", len(attempts))
	}
	if _, ok := attr(attempts[0].Attributes(), "tank.attempt.budget_tokens"); !ok {
		t.Errorf("retried attempt has no tank.attempt.budget_tokens with a budget")
	}
	rec2 := newRecorder(t)
	c2 := newClient(t, testOptions(rec2)...)
	get(t, c2, context.Background(), srv.URL)
	for _, s := range rec2.Ended() {
		if _, ok := attr(s.Attributes(), "tank.attempt.budget_tokens"); ok {
			t.Errorf("%s has tank.attempt.budget_tokens without a budget", s.Name())
		}
	}
}

// With no SDK the hooks leave the request alone: no state in the context,
// no header written, even with a real propagator.
func TestNoSDKDoesNothing(t *testing.T) {
	h := tracing.Hooks(
		tracing.WithTracerProvider(noop.NewTracerProvider()),
		tracing.WithMeterProvider(metricnoop.NewMeterProvider()),
		tracing.WithPropagators(propagation.TraceContext{}),
	)
	req, _ := http.NewRequest("GET", "http://127.0.0.1/", nil)
	ctx := h.RequestStart(req.Context(), req)
	if ctx != nil {
		t.Errorf("RequestStart returned a new context with no SDK; want nil (unchanged)")
	}
	a := &middleware.Attempt{Request: req, Header: http.Header{}, Number: 1}
	if c := h.AttemptStart(req.Context(), a); c != nil {
		t.Errorf("AttemptStart returned a new context with no SDK; want nil")
	}
	if len(a.Header) != 0 {
		t.Errorf("AttemptStart wrote headers %v with no SDK", a.Header)
	}
	h.AttemptEnd(req.Context(), a)
	h.RequestEnd(req.Context(), a)
	allocs := testing.AllocsPerRun(100, func() {
		h.AttemptStart(req.Context(), a)
		h.AttemptEnd(req.Context(), a)
	})
	if allocs != 0 {
		t.Errorf("attempt hooks allocate %v times with no SDK; want 0", allocs)
	}
}

// Many requests at once through one Transport: each gets its own trace
// with its own attempts (run with -race).
func TestConcurrentRequests(t *testing.T) {
	rec := newRecorder(t)
	srv := newServer(t, 503, 200, 503, 200, 503, 200, 503, 200, 503, 200, 503, 200, 503, 200, 503, 200)
	c := newClient(t, testOptions(rec)...)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { get(t, c, context.Background(), srv.URL) })
	}
	wg.Wait()
	internal, attempts := byKind(rec.Ended())
	if len(internal) != 8 {
		t.Fatalf("got %d request spans; want 8", len(internal))
	}
	perTrace := map[trace.TraceID]int{}
	for _, s := range attempts {
		if s.Parent().TraceID() != s.SpanContext().TraceID() || !s.Parent().IsValid() {
			t.Errorf("attempt span without its request's parent")
		}
		perTrace[s.SpanContext().TraceID()]++
	}
	for _, s := range internal {
		n := perTrace[s.SpanContext().TraceID()]
		if v, _ := attr(s.Attributes(), "tank.request.attempts"); v.AsInt64() != int64(n) {
			t.Errorf("trace %v has %d attempt spans, tank.request.attempts = %v", s.SpanContext().TraceID(), n, v.String())
		}
	}
}

// TestFilter: the otelhttp filter stands aside for what tank traces: each
// attempt below tank, and a request above a tank Transport that traces it;
// with no SDK it lets other instrumentation trace as usual.
func TestFilter(t *testing.T) {
	rec := newRecorder(t)
	traced := []tracing.Option{tracing.WithTracerProvider(rec.tp)}
	off := []tracing.Option{tracing.WithTracerProvider(noop.NewTracerProvider()), tracing.WithMeterProvider(metricnoop.NewMeterProvider())}
	for _, tt := range []struct {
		name string
		opts []tracing.Option
		want bool // what the filter says: true lets otelhttp trace
	}{{"SDK", traced, false}, {"no SDK", off, true}} {
		filter := tracing.Filter(tt.opts...)
		var below []bool
		rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			below = append(below, filter(r))
			return &http.Response{StatusCode: 503, Body: http.NoBody, Request: r}, nil
		})
		tr := middleware.NewTransport(rt, middleware.WithBackoff(0, 0), tracing.With(tt.opts...))
		req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
		above := filter(req)
		resp, _ := tr.RoundTrip(req)
		resp.Body.Close()
		if above != tt.want || len(below) != 3 || below[0] != tt.want || below[2] != tt.want {
			t.Errorf("%s: filter above tank = %v, below on each attempt = %v; want %v everywhere", tt.name, above, below, tt.want)
		}
	}
}
