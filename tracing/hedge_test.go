package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tankhttp/tank/middleware"
)

// A hedged request is one trace: the request span, and a sibling CLIENT
// span for each copy. The hedge is marked; the copy that lost says
// superseded; the request span names the winner.
func TestHedgedSpans(t *testing.T) {
	// Copies may reach the server in any order: the attempt header tells
	// the first (none) from the hedge ("2").
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Attempt") == "" {
			<-r.Context().Done() // the first copy stalls until tank cancels it
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	rec := newRecorder(t)
	ended := make(chan struct{})
	opts := append(testOptions(rec),
		middleware.WithHedging(time.Millisecond, 1), middleware.WithAttemptHeader("X-Attempt"),
		middleware.WithHooks(middleware.Hooks{RequestEnd: func(context.Context, *middleware.Attempt) { close(ended) }}))
	c := newClient(t, opts...)
	resp, err := get(t, c, context.Background(), srv.URL)
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	select {
	case <-ended: // the loser is reaped, then RequestEnd runs
	case <-time.After(10 * time.Second):
		t.Fatal("RequestEnd never ran")
	}

	internal, attempts := byKind(rec.Ended())
	if len(internal) != 1 || len(attempts) != 2 {
		t.Fatalf("%d request spans, %d attempt spans; want 1, 2", len(internal), len(attempts))
	}
	req := internal[0]
	for i, s := range attempts {
		if s.Parent().SpanID() != req.SpanContext().SpanID() || s.SpanContext().TraceID() != req.SpanContext().TraceID() {
			t.Errorf("attempt %d is not a child of the request span", i+1)
		}
		if s.SpanKind() != trace.SpanKindClient {
			t.Errorf("attempt %d: kind %v", i+1, s.SpanKind())
		}
	}
	first, hedge := attempts[0], attempts[1]
	if _, ok := attr(first.Attributes(), "tank.attempt.hedge"); ok {
		t.Error("the first copy is marked as a hedge")
	}
	if v, ok := attr(hedge.Attributes(), "tank.attempt.hedge"); !ok || !v.AsBool() {
		t.Error("the hedge is not marked tank.attempt.hedge=true")
	}
	if v, _ := attr(first.Attributes(), "tank.attempt.reason"); v.AsString() != "superseded" {
		t.Errorf("the first copy's reason = %q; want superseded", v.AsString())
	}
	if v, _ := attr(hedge.Attributes(), "tank.attempt.reason"); v.AsString() != "final" {
		t.Errorf("the hedge's reason = %q; want final", v.AsString())
	}
	if v, _ := attr(hedge.Attributes(), "http.request.resend_count"); v.AsInt64() != 1 {
		t.Errorf("the hedge's resend_count = %d; want 1", v.AsInt64())
	}
	if v, _ := attr(req.Attributes(), "tank.request.attempts"); v.AsInt64() != 2 {
		t.Errorf("tank.request.attempts = %d; want 2", v.AsInt64())
	}
	if v, ok := attr(req.Attributes(), "tank.request.winner"); !ok || v.AsInt64() != 2 {
		t.Errorf("tank.request.winner = %v (%v); want 2", v.AsInt64(), ok)
	}
	if req.EndTime().Before(first.EndTime()) {
		t.Error("the request span ended before the copy that lost")
	}
}
