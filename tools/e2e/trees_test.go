package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

// checkShapes turns on the assertions of TestSpanTrees; with false the test
// only prints the trees.
const checkShapes = true

// filterModes are the otelhttp setups drawn: without tracing.Filter, then
// with it.
var filterModes = []bool{false, true}

// otelhttpFilter is the filter that makes otelhttp stand aside where tank's
// tracing, configured by opts, records the request.
func otelhttpFilter(opts []tracing.Option) otelhttp.Filter { return tracing.Filter(opts...) }

// Instrumentation scopes, to tell whose span or measurement it is.
const (
	tankScope     = "github.com/tankhttp/tank/tracing"
	otelhttpScope = "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
)

// treeKeys are the attributes a tree line shows, in this order.
var treeKeys = []attribute.Key{
	"http.request.resend_count",
	"http.response.status_code",
	"error.type",
	"tank.attempt.class",
	"tank.attempt.decision",
	"tank.attempt.sleep",
	"tank.request.attempts",
	"tank.request.outcome",
	"tank.request.slept",
}

// hitServer answers by path and records, for every request it receives,
// the span id its traceparent names:
//
//	/flaky  503, 503, then 200
//	/old    307 to /new
//	/new    503 once, then 200
//	/down   always 503
type hitServer struct {
	*httptest.Server
	mu     sync.Mutex
	n      map[string]int
	parent []string // span id from each request's traceparent, or ""
}

func newHitServer(t *testing.T) *hitServer {
	t.Helper()
	s := &hitServer{n: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.n[r.URL.Path]++
		n := s.n[r.URL.Path]
		s.parent = append(s.parent, traceparentSpan(r.Header.Get("Traceparent")))
		s.mu.Unlock()
		switch {
		case r.URL.Path == "/old":
			http.Redirect(w, r, "/new", http.StatusTemporaryRedirect)
		case r.URL.Path == "/flaky" && n <= 2, r.URL.Path == "/new" && n == 1, r.URL.Path == "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *hitServer) parents() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.parent)
}

// traceparentSpan returns the parent span id of a W3C traceparent value.
func traceparentSpan(v string) string {
	if len(v) < 55 {
		return ""
	}
	return v[36:52]
}

// bed is one setup's telemetry: spans kept in memory, metrics read on
// demand, the W3C propagator, and a loopback server.
type bed struct {
	rec    *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	srv    *hitServer
	base   *http.Transport
}

func newBed(t *testing.T) *bed {
	t.Helper()
	b := &bed{rec: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(), base: &http.Transport{}}
	b.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b.rec), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(b.reader))
	b.srv = newHitServer(t)
	t.Cleanup(func() {
		b.base.CloseIdleConnections()
		b.tp.Shutdown(context.Background())
		b.mp.Shutdown(context.Background())
	})
	return b
}

func (b *bed) tracingOpts() []tracing.Option {
	return []tracing.Option{
		tracing.WithTracerProvider(b.tp),
		tracing.WithMeterProvider(b.mp),
		tracing.WithPropagators(propagation.TraceContext{}),
	}
}

func (b *bed) otelhttpOpts(filter bool) []otelhttp.Option {
	opts := []otelhttp.Option{
		otelhttp.WithTracerProvider(b.tp),
		otelhttp.WithMeterProvider(b.mp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
	}
	if filter {
		opts = append(opts, otelhttp.WithFilter(otelhttpFilter(b.tracingOpts())))
	}
	return opts
}

// tank wraps next in tank's Transport: 3 attempts, a fixed 1ms wait,
// tracing to the bed.
func (b *bed) tank(next http.RoundTripper, extra ...middleware.Option) http.RoundTripper {
	opts := append([]middleware.Option{
		middleware.WithMaxAttempts(3),
		middleware.WithBackoff(time.Millisecond, time.Millisecond),
		middleware.WithJitter(middleware.JitterNone),
		tracing.With(b.tracingOpts()...),
	}, extra...)
	return middleware.NewTransport(next, opts...)
}

// get sends a GET to the bed's server at path with ctx through rt, reads
// the response and returns its status (0 on error) and the error.
func (b *bed) get(t *testing.T, ctx context.Context, rt http.RoundTripper, path string) (int, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// durations returns how many http.client.request.duration measurements
// each instrumentation scope recorded.
func (b *bed) durations(t *testing.T) map[string]uint64 {
	t.Helper()
	return durationCounts(t, b.reader)
}

// durationCounts returns how many http.client.request.duration
// measurements each instrumentation scope recorded in reader.
func durationCounts(t *testing.T, reader *sdkmetric.ManualReader) map[string]uint64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	n := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "http.client.request.duration" {
				for _, dp := range h.DataPoints {
					n[sm.Scope.Name] += dp.Count
				}
			}
		}
	}
	return n
}

// grown is what a setup left: its spans in start order, the span id each
// server hit named as its parent, and the duration measurements by scope.
type grown struct {
	spans     []sdktrace.ReadOnlySpan
	hits      []string
	durations map[string]uint64
}

func (g *grown) total() uint64 {
	var n uint64
	for _, c := range g.durations {
		n += c
	}
	return n
}

// byID returns the span with id, or nil.
func (g *grown) byID(id trace.SpanID) sdktrace.ReadOnlySpan {
	for _, s := range g.spans {
		if s.SpanContext().SpanID() == id {
			return s
		}
	}
	return nil
}

// draw renders the spans as trees: a root per line at the left, children
// indented under their parent in start order, each with its kind, its
// scope, its status when Error, the attributes in treeKeys and the server
// hits that named it as their parent.
func (g *grown) draw() string {
	var b strings.Builder
	var walk func(s sdktrace.ReadOnlySpan, depth int)
	walk = func(s sdktrace.ReadOnlySpan, depth int) {
		scope := s.InstrumentationScope().Name
		switch scope {
		case tankScope:
			scope = "tank"
		case otelhttpScope:
			scope = "otelhttp"
		}
		fmt.Fprintf(&b, "%s%s [%s, %s]", strings.Repeat("    ", depth), s.Name(), s.SpanKind(), scope)
		if st := s.Status(); st.Code == codes.Error {
			fmt.Fprintf(&b, " status=Error")
			if st.Description != "" {
				fmt.Fprintf(&b, "(%q)", st.Description)
			}
		}
		for _, k := range treeKeys {
			if v, ok := attrOf(s, k); ok {
				fmt.Fprintf(&b, " %s=%s", k, v.String())
			}
		}
		for i, h := range g.hits {
			if h == s.SpanContext().SpanID().String() {
				fmt.Fprintf(&b, "  <- parent of server hit %d", i+1)
			}
		}
		b.WriteString("\n")
		for _, c := range g.spans {
			if c.Parent().SpanID() == s.SpanContext().SpanID() && c.Parent().TraceID() == s.SpanContext().TraceID() {
				walk(c, depth+1)
			}
		}
	}
	traces := map[trace.TraceID]bool{}
	for _, s := range g.spans {
		traces[s.SpanContext().TraceID()] = true
		if p := s.Parent(); !p.IsValid() || g.byID(p.SpanID()) == nil {
			walk(s, 0)
		}
	}
	for i, h := range g.hits {
		if h == "" {
			fmt.Fprintf(&b, "server hit %d had no traceparent\n", i+1)
		} else if s := g.byID(mustSpanID(h)); s == nil {
			fmt.Fprintf(&b, "server hit %d names span %s, which is not recorded\n", i+1, h)
		}
	}
	fmt.Fprintf(&b, "%d trace(s), %d span(s); http.client.request.duration: %d measurement(s)", len(traces), len(g.spans), g.total())
	var by []string
	for _, sc := range []string{tankScope, otelhttpScope} {
		if n := g.durations[sc]; n > 0 {
			by = append(by, fmt.Sprintf("%s %d", map[string]string{tankScope: "tank", otelhttpScope: "otelhttp"}[sc], n))
		}
	}
	if len(by) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(by, ", "))
	}
	b.WriteString("\n")
	return b.String()
}

func mustSpanID(s string) trace.SpanID {
	id, _ := trace.SpanIDFromHex(s)
	return id
}

func attrOf(s sdktrace.ReadOnlySpan, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// A treeSetup sends requests through one arrangement of tank and otelhttp
// and, when check is set, asserts the span tree it leaves.
type treeSetup struct {
	name  string
	send  func(t *testing.T, b *bed)
	check func(t *testing.T, g *grown)
}

// TestSpanTrees prints, with -v, the span tree each setup leaves in
// memory: tank and otelhttp in both orders with and without
// tracing.Filter, a redirect, a request under a caller's span, and a
// cancel during a wait; with the count of http.client.request.duration
// measurements. It asserts the shapes package tracing documents for the
// setups that have one, and only prints the others.
func TestSpanTrees(t *testing.T) {
	var setups []treeSetup
	for _, filter := range filterModes {
		with := map[bool]string{false: "no filter", true: "tracing.Filter"}[filter]
		var check func(*testing.T, *grown)
		if filter {
			check = checkOneSpanPerAttempt
		}
		setups = append(setups,
			treeSetup{
				name: "(1" + map[bool]string{false: "a", true: "b"}[filter] + ") tank outside otelhttp, " + with,
				send: func(t *testing.T, b *bed) {
					b.get(t, context.Background(), b.tank(otelhttp.NewTransport(b.base, b.otelhttpOpts(filter)...)), "/flaky")
				},
				check: check,
			},
			treeSetup{
				name: "(1" + map[bool]string{false: "c", true: "d"}[filter] + ") otelhttp outside tank, " + with,
				send: func(t *testing.T, b *bed) {
					b.get(t, context.Background(), otelhttp.NewTransport(b.tank(b.base), b.otelhttpOpts(filter)...), "/flaky")
				},
				check: check,
			})
	}
	slices.SortStableFunc(setups, func(a, b treeSetup) int { return strings.Compare(a.name[:4], b.name[:4]) })
	setups = append(setups,
		treeSetup{
			name: "(2) redirect 307 then a 503 retry on the new location, no caller span",
			send: func(t *testing.T, b *bed) {
				if code, err := b.get(t, context.Background(), b.tank(b.base), "/old"); code != 200 {
					t.Errorf("GET /old = %d, %v; want 200", code, err)
				}
			},
			check: checkRedirect,
		},
		treeSetup{
			name: "(3) under a caller's span, 503, 503, 200",
			send: func(t *testing.T, b *bed) {
				ctx, caller := b.tp.Tracer("caller").Start(context.Background(), "caller")
				b.get(t, ctx, b.tank(b.base), "/flaky")
				caller.End()
			},
			check: checkUnderCaller,
		},
		treeSetup{
			name:  "(4) cancel during a planned 300ms wait, 50ms into it (fake clock)",
			send:  sendCancelDuringWait,
			check: checkCancel,
		})

	for _, s := range setups {
		t.Run(strings.Trim(strings.Fields(s.name)[0], "()"), func(t *testing.T) {
			b := newBed(t)
			s.send(t, b)
			g := &grown{spans: b.rec.Ended(), hits: b.srv.parents(), durations: b.durations(t)}
			slices.SortStableFunc(g.spans, func(x, y sdktrace.ReadOnlySpan) int { return x.StartTime().Compare(y.StartTime()) })
			t.Logf("%s\n%s", s.name, g.draw())
			if checkShapes && s.check != nil {
				s.check(t, g)
			}
		})
	}
}

// sendCancelDuringWait sends a GET that an in-memory transport answers 503,
// and gives up 50ms into the 300ms wait tank plans after it; the clock is
// synctest's, so the numbers are exact.
func sendCancelDuringWait(t *testing.T, b *bed) {
	synctest.Test(t, func(t *testing.T) {
		rt := roundTrip(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 503, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
		})
		tr := middleware.NewTransport(rt,
			middleware.WithBackoff(300*time.Millisecond, 300*time.Millisecond),
			middleware.WithJitter(middleware.JitterNone),
			tracing.With(b.tracingOpts()...))
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		time.AfterFunc(50*time.Millisecond, func() { cancel(errors.New("the caller gave up")) })
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/down", nil)
		if _, err := tr.RoundTrip(req); !errors.Is(err, middleware.ReasonCanceled) {
			t.Errorf("RoundTrip error = %v; want ReasonCanceled", err)
		}
	})
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// kindSpans returns g's spans of kind in start order.
func (g *grown) kindSpans(kind trace.SpanKind) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range g.spans {
		if s.SpanKind() == kind {
			out = append(out, s)
		}
	}
	return out
}

// checkAttempts asserts that attempts are tank's CLIENT spans with
// resend_count absent, 1, 2, ..., and that the i-th server hit named the
// i-th attempt as its parent.
func checkAttempts(t *testing.T, g *grown, attempts []sdktrace.ReadOnlySpan) {
	t.Helper()
	for i, s := range attempts {
		if sc := s.InstrumentationScope().Name; sc != tankScope {
			t.Errorf("CLIENT span %d is from %s; want tank's", i+1, sc)
		}
		if _, ok := attrOf(s, "tank.attempt.class"); !ok {
			t.Errorf("CLIENT span %d has no tank.attempt.class", i+1)
		}
		v, ok := attrOf(s, "http.request.resend_count")
		if i == 0 && ok || i > 0 && (!ok || v.AsInt64() != int64(i)) {
			t.Errorf("CLIENT span %d resend_count = %s (present %v); want %s", i+1, v.String(), ok, resendWant(i))
		}
	}
	if len(g.hits) != len(attempts) {
		t.Errorf("server got %d requests; want %d", len(g.hits), len(attempts))
		return
	}
	for i, h := range g.hits {
		if id := attempts[i].SpanContext().SpanID().String(); h != id {
			t.Errorf("server hit %d has parent %q; want attempt %d's span %s", i+1, h, i+1, id)
		}
	}
}

func resendWant(i int) string {
	if i == 0 {
		return "absent"
	}
	return fmt.Sprint(i)
}

// checkOneSpanPerAttempt: with tracing.Filter, in either order, the trace
// is tank's request span over exactly one CLIENT span per physical
// attempt, otelhttp records nothing, and the duration metric counts each
// attempt once.
func checkOneSpanPerAttempt(t *testing.T, g *grown) {
	t.Helper()
	internal, attempts := g.kindSpans(trace.SpanKindInternal), g.kindSpans(trace.SpanKindClient)
	if len(g.spans) != 4 || len(internal) != 1 || len(attempts) != 3 {
		t.Fatalf("%d spans, %d INTERNAL and %d CLIENT; want 4: tank's request span and 3 attempts", len(g.spans), len(internal), len(attempts))
	}
	if internal[0].Name() != "GET (tank)" || internal[0].Parent().IsValid() {
		t.Errorf("request span %q with parent %v; want the root GET (tank)", internal[0].Name(), internal[0].Parent().SpanID())
	}
	for i, s := range attempts {
		if s.Parent().SpanID() != internal[0].SpanContext().SpanID() {
			t.Errorf("attempt %d's parent is %s; want tank's request span", i+1, s.Parent().SpanID())
		}
	}
	checkAttempts(t, g, attempts)
	if g.total() != 3 || g.durations[tankScope] != 3 {
		t.Errorf("http.client.request.duration measurements = %v; want 3, all tank's", g.durations)
	}
}

// checkRedirect: the two hops are one trace, the second hop's request span
// a child of the first's, and resend_count counts across hops.
func checkRedirect(t *testing.T, g *grown) {
	t.Helper()
	internal, attempts := g.kindSpans(trace.SpanKindInternal), g.kindSpans(trace.SpanKindClient)
	if len(internal) != 2 || len(attempts) != 3 {
		t.Fatalf("%d request and %d attempt spans; want 2 (one per hop) and 3", len(internal), len(attempts))
	}
	for _, s := range g.spans {
		if s.SpanContext().TraceID() != internal[0].SpanContext().TraceID() {
			t.Errorf("span %q is in another trace than the first hop's", s.Name())
		}
	}
	if internal[0].Parent().IsValid() || internal[1].Parent().SpanID() != internal[0].SpanContext().SpanID() {
		t.Errorf("hop request spans' parents = %v, %v; want none, then the first hop's", internal[0].Parent().SpanID(), internal[1].Parent().SpanID())
	}
	for i, hop := range []int{0, 1, 1} {
		if attempts[i].Parent().SpanID() != internal[hop].SpanContext().SpanID() {
			t.Errorf("attempt %d is not under hop %d's request span", i+1, hop+1)
		}
	}
	checkAttempts(t, g, attempts)
}

// checkUnderCaller: tank's request span, with its summary, sits under the
// caller's span, and the attempts under it.
func checkUnderCaller(t *testing.T, g *grown) {
	t.Helper()
	internal, attempts := g.kindSpans(trace.SpanKindInternal), g.kindSpans(trace.SpanKindClient)
	if len(internal) != 2 || len(attempts) != 3 {
		t.Fatalf("%d INTERNAL and %d CLIENT spans; want 2 (caller, tank) and 3", len(internal), len(attempts))
	}
	caller, req := internal[0], internal[1]
	if caller.Name() != "caller" || req.Name() != "GET (tank)" || req.Parent().SpanID() != caller.SpanContext().SpanID() {
		t.Errorf("INTERNAL spans %q, %q (parent %s); want caller, then GET (tank) under it", caller.Name(), req.Name(), req.Parent().SpanID())
	}
	for k, want := range map[attribute.Key]string{"tank.request.attempts": "3", "tank.request.outcome": "final", "tank.request.slept": "0.002"} {
		if v, _ := attrOf(req, k); v.String() != want {
			t.Errorf("request span %s = %q; want %q", k, v.String(), want)
		}
	}
	for i, s := range attempts {
		if s.Parent().SpanID() != req.SpanContext().SpanID() {
			t.Errorf("attempt %d's parent is %s; want tank's request span", i+1, s.Parent().SpanID())
		}
	}
	checkAttempts(t, g, attempts)
}

// checkCancel: the attempt keeps the wait planned; the request span says
// canceled, with the cause, and the time actually slept.
func checkCancel(t *testing.T, g *grown) {
	t.Helper()
	internal, attempts := g.kindSpans(trace.SpanKindInternal), g.kindSpans(trace.SpanKindClient)
	if len(internal) != 1 || len(attempts) != 1 {
		t.Fatalf("%d request and %d attempt spans; want 1 and 1", len(internal), len(attempts))
	}
	for k, want := range map[attribute.Key]string{"tank.attempt.sleep": "0.3", "tank.attempt.decision": "retry", "error.type": "503"} {
		if v, _ := attrOf(attempts[0], k); v.String() != want {
			t.Errorf("attempt span %s = %q; want %q", k, v.String(), want)
		}
	}
	req := internal[0]
	for k, want := range map[attribute.Key]string{"tank.request.outcome": "canceled", "error.type": "canceled", "tank.request.slept": "0.05", "tank.request.attempts": "1"} {
		if v, _ := attrOf(req, k); v.String() != want {
			t.Errorf("request span %s = %q; want %q", k, v.String(), want)
		}
	}
	if st := req.Status(); st.Code != codes.Error || st.Description != "the caller gave up" {
		t.Errorf("request span status = %v %q; want Error with the cancel's cause", st.Code, st.Description)
	}
}
