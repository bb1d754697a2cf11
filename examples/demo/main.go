// Command demo shows tank's decisions against an embedded flaky server.
//
//	go run ./examples/demo
//
// It runs offline: the server listens on 127.0.0.1 and every request goes
// there. Each attempt prints one line: its class, the decision, the reason
// and the sleep that follows it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tankhttp/tank/examples/flaky"
	"github.com/tankhttp/tank/examples/waterfall"
	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// answer is the embedded server's misbehaviour: each path fails in its own
// way; n counts the requests the path really processed, this one included.
func answer(w http.ResponseWriter, r *http.Request, n int) {
	switch r.URL.Path {
	case "/flaky": // 503, 503, then 200
		if n <= 2 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	case "/orders": // processes the order, then the connection dies
		flaky.Reset(w)
	case "/payments": // processes the first payment, then the connection dies; then answers
		if n == 1 {
			flaky.Reset(w)
			return
		}
		io.WriteString(w, "payment accepted (the server deduplicates by Idempotency-Key)")
	case "/throttled": // 429 with Retry-After: 1, then 200
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	case "/maintenance": // 503 asking for 5 seconds
		w.Header().Set("Retry-After", "5")
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	default: // always 503
		http.Error(w, "down", http.StatusServiceUnavailable)
	}
}

func run(out io.Writer) error {
	f := flaky.New(answer)
	srv := httptest.NewServer(f)
	defer srv.Close()

	// A port with nothing listening, for the refused case.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	refused := "http://" + ln.Addr().String() + "/"
	ln.Close()

	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	printer := middleware.Hooks{
		AttemptEnd: func(ctx context.Context, a *middleware.Attempt) {
			sleep := ""
			if a.Sleep > 0 || a.SleepSource != "" {
				sleep = fmt.Sprintf("  sleep=%v (%s)", a.Sleep.Round(time.Millisecond), a.SleepSource)
			}
			fmt.Fprintf(out, "  attempt %d  class=%-13s decision=%-5s reason=%s%s\n",
				a.Number, a.Class, a.Verdict, string(a.Reason), sleep)
			if cancel, ok := ctx.Value(cancelKey{}).(context.CancelCauseFunc); ok && a.Sleep > 0 {
				// The user presses cancel halfway through the wait.
				time.AfterFunc(a.Sleep/2, func() { cancel(errors.New("demo: user pressed cancel")) })
			}
		},
	}
	// Spans go to an in-memory recorder: after each request the demo draws
	// them as a waterfall, what Jaeger would show.
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	client := &http.Client{Transport: middleware.NewTransport(base,
		middleware.WithMaxAttempts(3),
		middleware.WithBackoff(50*time.Millisecond, time.Second),
		middleware.WithHooks(printer),
		tracing.With(tracing.WithTracerProvider(tp)),
	)}
	seen := 0

	type step struct {
		title   string
		method  string
		url     string
		key     string
		timeout time.Duration
		cancel  bool
		path    string
	}
	steps := []step{
		{title: "GET through two 503s", method: "GET", url: srv.URL + "/flaky", path: "/flaky"},
		{title: "POST reset after the server processed it (never sent twice)", method: "POST", url: srv.URL + "/orders", path: "/orders"},
		{title: "POST with an Idempotency-Key, reset once", method: "POST", url: srv.URL + "/payments", key: "pay-42", path: "/payments"},
		{title: "429 with Retry-After: 1", method: "GET", url: srv.URL + "/throttled", path: "/throttled"},
		{title: "503 with Retry-After: 5 and a 2s deadline (returns at once)", method: "GET", url: srv.URL + "/maintenance", timeout: 2 * time.Second, path: "/maintenance"},
		{title: "connection refused", method: "GET", url: refused},
		{title: "cancelled by the caller while waiting", method: "GET", url: srv.URL + "/down", cancel: true, path: "/down"},
	}
	for i, s := range steps {
		fmt.Fprintf(out, "%d. %s %s: %s\n", i+1, s.method, strings.TrimPrefix(s.url, "http://"), s.title)
		before := f.Count(s.path)
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		if s.timeout > 0 {
			var c2 context.CancelFunc
			ctx, c2 = context.WithTimeout(ctx, s.timeout)
			defer c2()
		}
		if s.cancel {
			// Cancel halfway through the first wait.
			ctx = withCancelDuringWait(ctx, cancel)
		}
		var body io.Reader
		if s.method == "POST" {
			body = strings.NewReader(`{"item":"tank","qty":1}`)
		}
		req, err := http.NewRequestWithContext(ctx, s.method, s.url, body)
		if err != nil {
			return err
		}
		if s.key != "" {
			req.Header.Set("Idempotency-Key", s.key)
		}
		start := time.Now()
		resp, err := client.Do(req)
		took := time.Since(start).Round(time.Millisecond)
		switch {
		case err != nil:
			var ex *middleware.ExhaustedError
			if errors.As(err, &ex) {
				fmt.Fprintf(out, "  => error after %d attempt(s), reason %s, in %v: %v\n", ex.Attempts, string(ex.Reason), took, err)
			} else {
				fmt.Fprintf(out, "  => error in %v: %v\n", took, err)
			}
		default:
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Fprintf(out, "  => %s %q in %v\n", resp.Status, strings.TrimSpace(string(b)), took)
		}
		if s.path != "" {
			fmt.Fprintf(out, "  server processed it %d time(s)\n", f.Count(s.path)-before)
		}
		spans := rec.Ended()
		drawWaterfall(out, spans[seen:])
		seen = len(spans)
		fmt.Fprintln(out)
	}
	return nil
}

// withCancelDuringWait marks ctx so that, once tank has decided to wait,
// the demo's AttemptEnd hook arranges for it to be cancelled (with a cause)
// halfway through the wait.
func withCancelDuringWait(ctx context.Context, cancel context.CancelCauseFunc) context.Context {
	return context.WithValue(ctx, cancelKey{}, cancel)
}

type cancelKey struct{}

// drawWaterfall renders one request's spans: the request span first, then
// its attempts in order. When the caller gave up during a wait, the last
// attempt's span still says the wait tank planned; the request span says
// the outcome and how long tank really slept, and the drawing shows both.
func drawWaterfall(out io.Writer, spans []sdktrace.ReadOnlySpan) {
	var rows []waterfall.Span
	var slept time.Duration                // tank.request.slept: the time really waited
	for i := len(spans) - 1; i >= 0; i-- { // the request span ends last
		s := spans[i]
		if s.SpanKind() != trace.SpanKindInternal {
			continue
		}
		row := waterfall.Span{Name: s.Name(), Start: s.StartTime(), End: s.EndTime(), Error: s.Status().Code == codes.Error}
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case "tank.request.outcome":
				row.Outcome = kv.Value.AsString()
			case "tank.request.slept":
				slept = seconds(kv.Value.AsFloat64())
			}
		}
		rows = append(rows, row)
		break
	}
	var planned time.Duration // the waits of the attempts before the last
	for _, s := range spans {
		if s.SpanKind() != trace.SpanKindClient {
			continue
		}
		row := waterfall.Span{Name: s.Name(), Depth: 1, Start: s.StartTime(), End: s.EndTime(), Error: s.Status().Code == codes.Error}
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case "tank.attempt.class":
				row.Class = kv.Value.AsString()
			case "tank.attempt.sleep":
				row.Sleep = seconds(kv.Value.AsFloat64())
			case "tank.attempt.sleep_source":
				row.SleepSource = kv.Value.AsString()
			}
		}
		if n := len(rows); n > 1 {
			planned += rows[n-1].Sleep
		}
		rows = append(rows, row)
	}
	if n := len(rows); n > 1 && rows[0].Outcome == string(middleware.ReasonCanceled) && rows[n-1].Sleep > 0 {
		// The caller gave up during the last attempt's wait: what was
		// waited of it is the request's total minus the earlier waits.
		rows[n-1].Cut, rows[n-1].Waited = true, max(slept-planned, 0)
	}
	var b strings.Builder
	waterfall.Render(&b, rows)
	for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		fmt.Fprintln(out, "   ", line)
	}
}

// seconds converts an attribute's seconds to a Duration.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
