package tracing_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

// A server that is unavailable twice, then answers: the trace holds tank's
// request span and one span per attempt, with its resend count, class and
// wait.
func Example() {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())

	base := &http.Transport{}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: middleware.NewTransport(base,
		middleware.WithBackoff(10*time.Millisecond, time.Second),
		middleware.WithJitter(middleware.JitterNone),
		tracing.With(
			tracing.WithTracerProvider(tp),
			tracing.WithPropagators(propagation.TraceContext{}),
		),
	)}
	resp, err := client.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()

	for _, s := range spans.Ended() {
		fmt.Printf("%-10s %-8s", s.Name(), s.SpanKind())
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case "http.response.status_code", "http.request.resend_count",
				"tank.attempt.class", "tank.attempt.sleep", "tank.request.attempts", "tank.request.slept":
				fmt.Printf(" %s=%s", kv.Key, kv.Value.String())
			}
		}
		fmt.Println()
	}
	// Output:
	// GET        client   http.response.status_code=503 tank.attempt.class=unavailable tank.attempt.sleep=0.01
	// GET        client   http.request.resend_count=1 http.response.status_code=503 tank.attempt.class=unavailable tank.attempt.sleep=0.02
	// GET        client   http.request.resend_count=2 http.response.status_code=200 tank.attempt.class=final
	// GET (tank) internal tank.request.attempts=3 tank.request.slept=0.03
}
