package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-resty/resty/v2"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/tankhttp/tank/adapters/backoffretry"
	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

// jaegerConfig runs Jaeger v2 with in-memory storage, every listener on
// 127.0.0.1, no batch processor (spans are queryable as soon as the OTLP
// request returns) and no self-tracing.
const jaegerConfig = `
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%[1]d
    grpc:
      endpoint: 127.0.0.1:%[2]d
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:%[3]d
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%[4]d
      http:
        endpoint: 127.0.0.1:%[5]d
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startJaeger runs $JAEGER_BIN and returns its query API base URL and its
// OTLP/HTTP host:port. Jaeger is stopped when the test ends.
func startJaeger(t *testing.T) (query, otlp string) {
	t.Helper()
	bin := os.Getenv("JAEGER_BIN")
	if bin == "" {
		t.Skip("JAEGER_BIN is not set; run `bash .ci/run`, or " +
			"`JAEGER_BIN=/var/cache/tank/jaeger-v1.75.0 go -C tools/e2e test ./...` " +
			"(build it with `go -C tools/jaeger tool -n jaeger`)")
	}
	p := freePorts(t, 5)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, p[0], p[1], p[2], p[3], p[4]), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "jaeger.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", "file:"+cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("jaeger log:\n%s", b)
		}
	})

	// Wait for the external process to report healthy: bounded polling.
	start := time.Now()
	health := fmt.Sprintf("http://127.0.0.1:%d/status", p[2])
	for i := 0; ; i++ {
		if resp, err := http.Get(health); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("jaeger exited before it was healthy")
		case <-time.After(50 * time.Millisecond):
		}
		if i == 400 {
			t.Fatalf("jaeger not healthy after %v", time.Since(start))
		}
	}
	t.Logf("jaeger ready in %v", time.Since(start).Round(time.Millisecond))
	return fmt.Sprintf("http://127.0.0.1:%d", p[0]), fmt.Sprintf("127.0.0.1:%d", p[4])
}

// Jaeger's /api/traces JSON; encoding/json matches the field names
// case-insensitively.
type (
	jTag struct {
		Key   string
		Value any
	}
	jRef  struct{ RefType, TraceID, SpanID string }
	jSpan struct {
		TraceID, SpanID, OperationName string
		References                     []jRef
		StartTime                      int64
		Tags                           []jTag
	}
	jTrace struct {
		TraceID string
		Spans   []jSpan
	}
)

func (s jSpan) tag(key string) (any, bool) {
	for _, t := range s.Tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return nil, false
}

// traces polls Jaeger for service's traces until one holds want spans, or
// 100 tries (10s) have failed.
func traces(t *testing.T, query, service string, want int) []jTrace {
	t.Helper()
	u := query + "/api/traces?limit=20&lookback=1h&service=" + url.QueryEscape(service)
	var data []jTrace
	for range 100 {
		var r struct{ Data []jTrace }
		if resp, err := http.Get(u); err == nil {
			if resp.StatusCode == http.StatusOK {
				json.NewDecoder(resp.Body).Decode(&r)
			}
			resp.Body.Close()
		}
		data = r.Data
		if len(data) > 0 && len(data[0].Spans) >= want {
			return data
		}
		time.Sleep(100 * time.Millisecond) // waiting for the external Jaeger process
	}
	t.Fatalf("no trace of %d spans for service %s in Jaeger; got %+v", want, service, data)
	return nil
}

// flaky answers 503, 503, then 200, and records each request's traceparent.
type flaky struct {
	mu     sync.Mutex
	parent []string
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	f.mu.Lock()
	f.parent = append(f.parent, r.Header.Get("Traceparent"))
	n := len(f.parent)
	f.mu.Unlock()
	if n <= 2 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok")
}

// sent returns the traceparent of each request received so far.
func (f *flaky) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.parent)
}

// A frontDoor sends a GET through base with opts and returns its status.
type frontDoor func(t *testing.T, base http.RoundTripper, url string, opts []middleware.Option) int

var frontDoors = []struct {
	name string
	send frontDoor
}{
	{"transport", func(t *testing.T, base http.RoundTripper, url string, opts []middleware.Option) int {
		resp, err := (&http.Client{Transport: middleware.NewTransport(base, opts...)}).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}},
	{"resty", func(t *testing.T, base http.RoundTripper, url string, opts []middleware.Option) int {
		resp, err := restyretry.Apply(resty.New().SetTransport(base), opts...).R().Get(url)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode()
	}},
	{"backoff", func(t *testing.T, base http.RoundTripper, url string, opts []middleware.Option) int {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		op, b := backoffretry.New(req, base, opts...)
		resp, err := backoff.RetryWithData(op, backoff.WithContext(b, req.Context()))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}},
}

// A request answered 503, 503, 200 is one trace in a real Jaeger, through
// every front door: tank's request span and three attempt spans under it,
// with resend counts, error status on the failed attempts, and tank's class
// and sleep attributes.
func TestRetriesInJaeger(t *testing.T) {
	query, otlp := startJaeger(t)
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, fd := range frontDoors {
		t.Run(fd.name, func(t *testing.T) {
			ctx := context.Background()
			service := "tank-e2e-" + fd.name + "-" + run
			exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(otlp), otlptracehttp.WithInsecure())
			if err != nil {
				t.Fatal(err)
			}
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
				sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service))))
			srv := &flaky{}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			base := &http.Transport{}
			defer base.CloseIdleConnections()

			code := fd.send(t, base, hs.URL, []middleware.Option{
				middleware.WithBackoff(20*time.Millisecond, time.Second),
				middleware.WithJitter(middleware.JitterNone),
				tracing.With(tracing.WithTracerProvider(tp), tracing.WithPropagators(propagation.TraceContext{})),
			})
			if err := tp.Shutdown(ctx); err != nil {
				t.Fatalf("exporting to jaeger: %v", err)
			}
			if code != 200 {
				t.Fatalf("status = %d; want 200", code)
			}

			data := traces(t, query, service, 4)
			if len(data) != 1 {
				t.Fatalf("jaeger holds %d traces for the request; want 1", len(data))
			}
			checkTrace(t, data[0], srv.sent())
		})
	}
}

func checkTrace(t *testing.T, tr jTrace, sent []string) {
	t.Helper()
	if len(tr.Spans) != 4 {
		t.Fatalf("trace has %d spans; want 4", len(tr.Spans))
	}
	spans := slices.Clone(tr.Spans)
	slices.SortFunc(spans, func(a, b jSpan) int {
		if len(a.References) != len(b.References) {
			return len(a.References) - len(b.References) // the root first
		}
		return int(a.StartTime - b.StartTime)
	})
	root, attempts := spans[0], spans[1:]
	if root.OperationName != "GET (tank)" || len(root.References) != 0 {
		t.Errorf("root span = %q with %d references; want GET (tank), a root", root.OperationName, len(root.References))
	}
	for key, want := range map[string]any{
		"span.kind": "internal", "tank.request.attempts": 3.0, "tank.request.outcome": "final", "tank.request.slept": 0.06,
	} {
		if got, _ := root.tag(key); got != want {
			t.Errorf("root %s = %v; want %v", key, got, want)
		}
	}
	if got, ok := root.tag("otel.status_code"); ok {
		t.Errorf("root otel.status_code = %v; want unset after a successful retry", got)
	}

	for i, s := range attempts {
		if s.OperationName != "GET" {
			t.Errorf("attempt %d name = %q; want GET", i+1, s.OperationName)
		}
		if len(s.References) != 1 || s.References[0].RefType != "CHILD_OF" || s.References[0].SpanID != root.SpanID {
			t.Errorf("attempt %d references = %+v; want CHILD_OF the root %s", i+1, s.References, root.SpanID)
		}
		if i < len(sent) && len(sent[i]) >= 52 && sent[i][36:52] != s.SpanID {
			t.Errorf("attempt %d sent traceparent %q; want its span id %s", i+1, sent[i], s.SpanID)
		}
		resend, ok := s.tag("http.request.resend_count")
		if i == 0 && ok || i > 0 && resend != float64(i) {
			t.Errorf("attempt %d http.request.resend_count = %v (present %v); want %v", i+1, resend, ok, []string{"absent", "1", "2"}[i])
		}
		failed := i < 2
		st, _ := s.tag("otel.status_code")
		et, _ := s.tag("error.type")
		if failed && (st != "ERROR" || et != "503") || !failed && (st == "ERROR" || et != nil) {
			t.Errorf("attempt %d status %v error.type %v; want ERROR and 503 only on the failed ones", i+1, st, et)
		}
		for key, want := range map[string]any{
			"span.kind":          "client",
			"tank.attempt.class": map[bool]any{true: "unavailable", false: "final"}[failed],
		} {
			if got, _ := s.tag(key); got != want {
				t.Errorf("attempt %d %s = %v; want %v", i+1, key, got, want)
			}
		}
		sleep, ok := s.tag("tank.attempt.sleep")
		if failed && sleep != []float64{0.02, 0.04}[i] || !failed && ok {
			t.Errorf("attempt %d tank.attempt.sleep = %v (present %v); want 0.02, 0.04, absent", i+1, sleep, ok)
		}
		if src, _ := s.tag("tank.attempt.sleep_source"); failed && src != "backoff" {
			t.Errorf("attempt %d tank.attempt.sleep_source = %v; want backoff", i+1, src)
		}
	}
}

// exportTo returns a tracer provider that exports every span to the Jaeger
// at otlp as it ends, as service.
func exportTo(t *testing.T, otlp, service string) *sdktrace.TracerProvider {
	t.Helper()
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpoint(otlp), otlptracehttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service))))
}

// scope returns the instrumentation scope Jaeger recorded for s.
func (s jSpan) scope() string {
	for _, k := range []string{"otel.scope.name", "otel.library.name"} {
		if v, ok := s.tag(k); ok {
			return fmt.Sprint(v)
		}
	}
	return ""
}

// byKind returns the spans of tr whose span.kind is kind, in start order.
func (tr jTrace) byKind(kind string) []jSpan {
	var out []jSpan
	for _, s := range tr.Spans {
		if k, _ := s.tag("span.kind"); k == kind {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b jSpan) int { return int(a.StartTime - b.StartTime) })
	return out
}

// childOf reports whether s's only reference is CHILD_OF parent.
func (s jSpan) childOf(parent jSpan) bool {
	return len(s.References) == 1 && s.References[0].RefType == "CHILD_OF" && s.References[0].SpanID == parent.SpanID
}

// recorder is a loopback server that answers with answer and records each
// request's traceparent.
type recorder struct {
	mu     sync.Mutex
	parent []string
	answer func(w http.ResponseWriter, r *http.Request, n int)
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	rc.mu.Lock()
	rc.parent = append(rc.parent, r.Header.Get("Traceparent"))
	n := len(rc.parent)
	rc.mu.Unlock()
	rc.answer(w, r, n)
}

func (rc *recorder) sent() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.parent)
}

// TestTraceShapesInJaeger reads back from a real Jaeger the traces of the
// setups package tracing gives a shape to:
//
//   - otelhttp inside tank, and otelhttp outside tank, both with
//     otelhttp.WithFilter(tracing.Filter(...)) and the same providers as
//     tank: a GET answered 503, 503, 200 is tank's request span over
//     exactly three CLIENT spans, tank's, with resend counts and the
//     traceparent each server hit received naming its attempt; no otelhttp
//     span; http.client.request.duration measured three times, by tank;
//   - a 307 redirect, then a 503 retried on the new location: one trace,
//     the second hop's request span a child of the first's, resend counts
//     across hops;
//   - a hedged GET whose first copy stalls: two sibling CLIENT spans, the
//     hedge marked, the stalled copy superseded, the winner named on the
//     request span;
//   - a cancel during a wait: the attempt span keeps the planned sleep, the
//     request span says canceled, with the cause and the time slept.
func TestTraceShapesInJaeger(t *testing.T) {
	query, otlp := startJaeger(t)
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	policy := []middleware.Option{
		middleware.WithBackoff(20*time.Millisecond, time.Second),
		middleware.WithJitter(middleware.JitterNone),
	}

	for _, order := range []struct {
		name string
		wrap func(base http.RoundTripper, tank []middleware.Option, oh []otelhttp.Option) http.RoundTripper
	}{
		{"otelhttp-inside-tank", func(base http.RoundTripper, tank []middleware.Option, oh []otelhttp.Option) http.RoundTripper {
			return middleware.NewTransport(otelhttp.NewTransport(base, oh...), tank...)
		}},
		{"otelhttp-outside-tank", func(base http.RoundTripper, tank []middleware.Option, oh []otelhttp.Option) http.RoundTripper {
			return otelhttp.NewTransport(middleware.NewTransport(base, tank...), oh...)
		}},
	} {
		t.Run(order.name+"-filtered", func(t *testing.T) {
			ctx := context.Background()
			service := "tank-e2e-" + order.name + "-" + run
			tp := exportTo(t, otlp, service)
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			defer mp.Shutdown(ctx)
			topts := []tracing.Option{
				tracing.WithTracerProvider(tp), tracing.WithMeterProvider(mp), tracing.WithPropagators(propagation.TraceContext{}),
			}
			oopts := []otelhttp.Option{
				otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(mp), otelhttp.WithPropagators(propagation.TraceContext{}),
				otelhttp.WithFilter(tracing.Filter(topts...)),
			}
			srv := &flaky{}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			base := &http.Transport{}
			defer base.CloseIdleConnections()

			client := &http.Client{Transport: order.wrap(base, append(slices.Clone(policy), tracing.With(topts...)), oopts)}
			if code := getThenExport(t, ctx, client, hs.URL, tp); code != 200 {
				t.Fatalf("status = %d; want 200", code)
			}

			data := traces(t, query, service, 4)
			if len(data) != 1 {
				t.Fatalf("jaeger holds %d traces for the request; want 1", len(data))
			}
			// checkTrace asserts exactly 4 spans: tank's request span and 3
			// CLIENT attempt spans carrying tank.attempt.*, resend counts, and
			// each server hit's parent.
			checkTrace(t, data[0], srv.sent())
			if n := len(data[0].byKind("client")); n != 3 {
				t.Errorf("%d CLIENT spans; want 3, one per physical attempt", n)
			}
			for _, s := range data[0].Spans {
				if sc := s.scope(); sc != "github.com/tankhttp/tank/tracing" {
					t.Errorf("span %q is from %q; want only tank's spans", s.OperationName, sc)
				}
			}
			if got := durationCounts(t, reader); got["github.com/tankhttp/tank/tracing"] != 3 || len(got) != 1 {
				t.Errorf("http.client.request.duration measurements by scope = %v; want 3, all tank's", got)
			}
		})
	}

	t.Run("redirect", func(t *testing.T) {
		ctx := context.Background()
		service := "tank-e2e-redirect-" + run
		tp := exportTo(t, otlp, service)
		srv := &recorder{answer: func(w http.ResponseWriter, r *http.Request, n int) {
			switch {
			case r.URL.Path == "/old":
				http.Redirect(w, r, "/new", http.StatusTemporaryRedirect)
			case n == 2: // the first request to /new
				w.WriteHeader(http.StatusServiceUnavailable)
			default:
				io.WriteString(w, "ok")
			}
		}}
		hs := httptest.NewServer(srv)
		defer hs.Close()
		base := &http.Transport{}
		defer base.CloseIdleConnections()

		client := &http.Client{Transport: middleware.NewTransport(base, append(slices.Clone(policy),
			tracing.With(tracing.WithTracerProvider(tp), tracing.WithPropagators(propagation.TraceContext{})))...)}
		if code := getThenExport(t, ctx, client, hs.URL+"/old", tp); code != 200 {
			t.Fatalf("status = %d; want 200 after a redirect and a retry", code)
		}

		data := traces(t, query, service, 5)
		if len(data) != 1 {
			t.Fatalf("jaeger holds %d traces for the redirect chain; want 1", len(data))
		}
		tr := data[0]
		hops, attempts := tr.byKind("internal"), tr.byKind("client")
		if len(tr.Spans) != 5 || len(hops) != 2 || len(attempts) != 3 {
			t.Fatalf("trace has %d spans, %d INTERNAL and %d CLIENT; want 5: a request span per hop and 3 attempts", len(tr.Spans), len(hops), len(attempts))
		}
		if len(hops[0].References) != 0 || !hops[1].childOf(hops[0]) {
			t.Errorf("hop request spans' references = %+v, %+v; want a root, then CHILD_OF the first hop", hops[0].References, hops[1].References)
		}
		for i, hop := range []int{0, 1, 1} {
			if !attempts[i].childOf(hops[hop]) {
				t.Errorf("attempt %d references = %+v; want CHILD_OF hop %d's request span", i+1, attempts[i].References, hop+1)
			}
		}
		for i, want := range []float64{1, 2} {
			if got, _ := hops[i].tag("tank.request.attempts"); got != want {
				t.Errorf("hop %d tank.request.attempts = %v; want %v", i+1, got, want)
			}
		}
		sent := srv.sent()
		if len(sent) != 3 {
			t.Fatalf("server got %d requests; want 3", len(sent))
		}
		for i, s := range attempts {
			if tp := traceparentSpan(sent[i]); tp != s.SpanID {
				t.Errorf("server hit %d has parent %q; want attempt %d's span %s", i+1, tp, i+1, s.SpanID)
			}
			resend, ok := s.tag("http.request.resend_count")
			if i == 0 && ok || i > 0 && resend != float64(i) {
				t.Errorf("attempt %d http.request.resend_count = %v (present %v); want %s", i+1, resend, ok, resendWant(i))
			}
			if u, _ := s.tag("url.full"); u != hs.URL+[]string{"/old", "/new", "/new"}[i] {
				t.Errorf("attempt %d url.full = %v", i+1, u)
			}
		}
	})

	t.Run("hedge", func(t *testing.T) {
		ctx := context.Background()
		service := "tank-e2e-hedge-" + run
		tp := exportTo(t, otlp, service)
		// Copies may reach the server in any order: the attempt header
		// tells the first (none) from the hedge ("2").
		srv := &recorder{answer: func(w http.ResponseWriter, r *http.Request, n int) {
			if r.Header.Get("X-Attempt") == "" {
				<-r.Context().Done() // the first copy stalls until tank gives it up
				return
			}
			io.WriteString(w, "ok")
		}}
		hs := httptest.NewServer(srv)
		defer hs.Close()
		base := &http.Transport{}
		defer base.CloseIdleConnections()

		ended := make(chan struct{})
		client := &http.Client{Transport: middleware.NewTransport(base, append(slices.Clone(policy),
			middleware.WithHedging(20*time.Millisecond, 1), middleware.WithAttemptHeader("X-Attempt"),
			tracing.With(tracing.WithTracerProvider(tp), tracing.WithPropagators(propagation.TraceContext{})),
			middleware.WithHooks(middleware.Hooks{RequestEnd: func(context.Context, *middleware.Attempt) { close(ended) }}))...)}
		resp, err := client.Get(hs.URL)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		select {
		case <-ended: // the stalled copy is reaped, its span ended, then the request's
		case <-time.After(10 * time.Second):
			t.Fatal("RequestEnd never ran")
		}
		if err := tp.Shutdown(ctx); err != nil {
			t.Fatalf("exporting to jaeger: %v", err)
		}

		data := traces(t, query, service, 3)
		if len(data) != 1 || len(data[0].Spans) != 3 {
			t.Fatalf("jaeger holds %d traces (first with %d spans); want 1 of 3", len(data), len(data[0].Spans))
		}
		reqs, attempts := data[0].byKind("internal"), data[0].byKind("client")
		if len(reqs) != 1 || len(attempts) != 2 {
			t.Fatalf("%d request and %d attempt spans; want 1 and 2 (siblings)", len(reqs), len(attempts))
		}
		sent := srv.sent()
		for i, want := range []map[string]any{
			{"tank.attempt.reason": "superseded", "tank.attempt.decision": "stop"},
			{"tank.attempt.reason": "final", "tank.attempt.hedge": true, "http.request.resend_count": 1.0, "http.response.status_code": 200.0},
		} {
			if !attempts[i].childOf(reqs[0]) {
				t.Errorf("attempt %d is not a child of the request span", i+1)
			}
			for key, v := range want {
				if got, _ := attempts[i].tag(key); got != v {
					t.Errorf("attempt %d %s = %v; want %v", i+1, key, got, v)
				}
			}
			if !slices.ContainsFunc(sent, func(v string) bool { return traceparentSpan(v) == attempts[i].SpanID }) {
				t.Errorf("no server hit has attempt %d's span %s as its parent (hits' traceparents: %q)", i+1, attempts[i].SpanID, sent)
			}
		}
		if len(sent) != 2 {
			t.Errorf("server got %d requests; want 2", len(sent))
		}
		if _, ok := attempts[0].tag("tank.attempt.hedge"); ok {
			t.Error("the first copy is marked as a hedge")
		}
		for key, want := range map[string]any{"tank.request.attempts": 2.0, "tank.request.winner": 2.0, "tank.request.outcome": "final"} {
			if got, _ := reqs[0].tag(key); got != want {
				t.Errorf("request %s = %v; want %v", key, got, want)
			}
		}
	})

	t.Run("cancel-during-wait", func(t *testing.T) {
		ctx := context.Background()
		service := "tank-e2e-cancel-" + run
		tp := exportTo(t, otlp, service)
		srv := &recorder{answer: func(w http.ResponseWriter, r *http.Request, n int) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}}
		hs := httptest.NewServer(srv)
		defer hs.Close()
		base := &http.Transport{}
		defer base.CloseIdleConnections()

		// The caller gives up as soon as tank has decided to wait 20ms.
		rctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		giveUp := middleware.Hooks{AttemptEnd: func(_ context.Context, a *middleware.Attempt) {
			if a.Verdict == middleware.Retry {
				cancel(errors.New("e2e: the caller gave up"))
			}
		}}
		client := &http.Client{Transport: middleware.NewTransport(base, append(slices.Clone(policy), middleware.WithHooks(giveUp),
			tracing.With(tracing.WithTracerProvider(tp), tracing.WithPropagators(propagation.TraceContext{})))...)}
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, hs.URL, nil)
		if resp, err := client.Do(req); !errors.Is(err, middleware.ReasonCanceled) {
			if err == nil {
				resp.Body.Close()
			}
			t.Fatalf("GET = %v; want an error with reason canceled", err)
		}
		if err := tp.Shutdown(ctx); err != nil {
			t.Fatalf("exporting to jaeger: %v", err)
		}

		data := traces(t, query, service, 2)
		if len(data) != 1 || len(data[0].Spans) != 2 {
			t.Fatalf("jaeger holds %d traces (first with %d spans); want 1 of 2 spans", len(data), len(data[0].Spans))
		}
		reqs, attempts := data[0].byKind("internal"), data[0].byKind("client")
		if len(reqs) != 1 || len(attempts) != 1 {
			t.Fatalf("%d request and %d attempt spans; want 1 and 1", len(reqs), len(attempts))
		}
		for key, want := range map[string]any{
			"tank.attempt.sleep": 0.02, "tank.attempt.decision": "retry", "error.type": "503",
		} {
			if got, _ := attempts[0].tag(key); got != want {
				t.Errorf("attempt %s = %v; want %v (the wait planned)", key, got, want)
			}
		}
		for key, want := range map[string]any{
			"tank.request.outcome": "canceled", "error.type": "canceled", "tank.request.attempts": 1.0,
			"otel.status_code": "ERROR", "otel.status_description": "e2e: the caller gave up",
		} {
			if got, _ := reqs[0].tag(key); got != want {
				t.Errorf("request %s = %v; want %v", key, got, want)
			}
		}
		// The cancel came before the wait began: the time slept is what it
		// took tank to notice, far less than the 20ms planned.
		v, _ := reqs[0].tag("tank.request.slept")
		if slept, ok := v.(float64); !ok || slept < 0 || slept >= 0.02 {
			t.Errorf("request tank.request.slept = %v; want the time slept, under the 0.02 planned", v)
		}
	})
}

// getThenExport sends a GET with client, reads and closes the response,
// then shuts tp down so every span is exported to Jaeger before the test
// queries it. It returns the status code.
func getThenExport(t *testing.T, ctx context.Context, client *http.Client, url string, tp *sdktrace.TracerProvider) int {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("exporting to jaeger: %v", err)
	}
	return resp.StatusCode
}
