package tracing_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

// Hooks built while no SDK is installed cost nothing per request, and
// start tracing once the program installs a provider. The otel globals can
// be set only once per process, so the test runs in a child process.
func TestGlobalsInstalledLater(t *testing.T) {
	if os.Getenv("TANK_TRACING_GLOBALS_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGlobalsInstalledLater$", "-test.count=1")
		cmd.Env = append(os.Environ(), "TANK_TRACING_GLOBALS_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child test failed: %v\n%s", err, out)
		}
		return
	}

	opt := tracing.With() // the globals are still unset here
	h := tracing.Hooks()
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
	if ctx := h.RequestStart(req.Context(), req); ctx != nil {
		t.Errorf("RequestStart returned a new context with no SDK; want nil (unchanged)")
	}
	if n := testing.AllocsPerRun(100, func() { h.RequestStart(req.Context(), req) }); n != 0 {
		t.Errorf("RequestStart allocates %v times with no SDK; want 0", n)
	}

	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	defer tp.Shutdown(context.Background())
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})

	srv := newServer(t, 503, 200)
	c := newClient(t, opt, middleware.WithBackoff(0, 0))
	get(t, c, context.Background(), srv.URL)
	internal, attempts := byKind(sr.Ended())
	if len(internal) != 1 || len(attempts) != 2 {
		t.Errorf("after otel.SetTracerProvider: %d request and %d attempt spans; want 1 and 2", len(internal), len(attempts))
	}
	for i, h := range srv.headers() {
		if h == "" {
			t.Errorf("attempt %d sent no traceparent after otel.SetTextMapPropagator", i+1)
		}
	}
}

// TestGlobalsInstalledMidRequest: a program installs its SDK while a first
// request is in flight and answered 503. That request stays untraced to
// its end (Hooks.Enabled is asked once per request); the next one is
// traced. Before, the retry ran AttemptEnd without AttemptStart and
// crashed the process.
func TestGlobalsInstalledMidRequest(t *testing.T) {
	if os.Getenv("TANK_TRACING_GLOBALS_CHILD") != "2" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGlobalsInstalledMidRequest$", "-test.count=1")
		cmd.Env = append(os.Environ(), "TANK_TRACING_GLOBALS_CHILD=2")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child test failed: %v\n%s", err, out)
		}
		return
	}

	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	defer tp.Shutdown(context.Background())
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			otel.SetTracerProvider(tp) // between the first attempt and its retry
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	c := newClient(t, tracing.With(), middleware.WithBackoff(0, 0))
	if resp, err := get(t, c, context.Background(), srv.URL); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v, %v; want 200", resp, err)
	}
	if n := len(sr.Ended()); n != 0 {
		t.Errorf("first request (started with no SDK): %d spans; want 0", n)
	}
	get(t, c, context.Background(), srv.URL)
	internal, attempts := byKind(sr.Ended())
	if len(internal) != 1 || len(attempts) != 1 {
		t.Errorf("second request: %d request and %d attempt spans; want 1 and 1", len(internal), len(attempts))
	}
}
