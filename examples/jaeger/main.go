// Command jaeger sends retried requests through tank with tracing on and
// exports the spans to Jaeger (or any OTLP/HTTP collector), so you can see
// each attempt, its class and the waits between attempts.
//
//	go -C examples/jaeger run .
//
// It exports to $OTEL_EXPORTER_OTLP_ENDPOINT (default
// http://localhost:4318), for example a Jaeger started with
//
//	docker run --rm -p 16686:16686 -p 4318:4318 jaegertracing/jaeger:2.13.0
//
// or without Docker, from the repository root:
//
//	"$(go -C tools/jaeger tool -n jaeger)"
//
// then open http://localhost:16686 and look for the service
// tank-example-jaeger. The requests go to an embedded flaky server on
// 127.0.0.1 (and the first connection is refused on purpose), so nothing
// but the export leaves the program. It also prints each trace as a
// waterfall, so you can see what Jaeger will show.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/tankhttp/tank/examples/flaky"
	"github.com/tankhttp/tank/examples/waterfall"
	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

const service = "tank-example-jaeger"

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "jaeger example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	var opts []otlptracehttp.Option
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		opts = append(opts, otlptracehttp.WithEndpointURL("http://localhost:4318/v1/traces"))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return err
	}
	local := tracetest.NewSpanRecorder() // for the waterfall printed here
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSpanProcessor(local),
		sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service))),
	)

	srv := httptest.NewServer(flaky.New(answer))
	defer srv.Close()
	base := &http.Transport{DialContext: refuseFirst(srv.Listener.Addr().String())}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: middleware.NewTransport(base,
		middleware.WithMaxAttempts(5),
		middleware.WithBackoff(200*time.Millisecond, 2*time.Second),
		tracing.With(tracing.WithTracerProvider(tp), tracing.WithPropagators(propagation.TraceContext{})),
	)}

	for _, path := range []string{"/items", "/orders/7"} {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			fmt.Fprintf(out, "GET %s: %v\n", path, err)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Fprintf(out, "GET %s: %s\n", path, resp.Status)
	}

	err = tp.Shutdown(ctx) // flushes the batch to the collector
	printTraces(out, local.Ended())
	if err != nil {
		return fmt.Errorf("exporting spans (is a collector listening? see the package doc): %w", err)
	}
	fmt.Fprintf(out, "\nexported; in Jaeger's UI (http://localhost:16686 by default) search for the service %s\n", service)
	return nil
}

// answer answers, per path: 503; 503 with Retry-After: 1; then 200.
func answer(w http.ResponseWriter, _ *http.Request, n int) {
	switch n {
	case 1:
		w.WriteHeader(http.StatusServiceUnavailable)
	case 2:
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		io.WriteString(w, "ok\n")
	}
}

// refuseFirst dials addr, except that its first dial goes to a loopback
// port nothing listens on, so the first attempt is refused.
func refuseFirst(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	var dialed atomic.Bool
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		if !dialed.Swap(true) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			closed := ln.Addr().String()
			ln.Close()
			return d.DialContext(ctx, network, closed)
		}
		return d.DialContext(ctx, network, addr)
	}
}

// printTraces prints each trace as a waterfall.
func printTraces(out io.Writer, spans []sdktrace.ReadOnlySpan) {
	byTrace := map[trace.TraceID][]sdktrace.ReadOnlySpan{}
	var order []trace.TraceID
	for _, s := range spans {
		id := s.SpanContext().TraceID()
		if byTrace[id] == nil {
			order = append(order, id)
		}
		byTrace[id] = append(byTrace[id], s)
	}
	for _, id := range order {
		ss := byTrace[id]
		slices.SortFunc(ss, func(a, b sdktrace.ReadOnlySpan) int {
			if d := depth(a) - depth(b); a.StartTime().Equal(b.StartTime()) && d != 0 {
				return d
			}
			return a.StartTime().Compare(b.StartTime())
		})
		var rows []waterfall.Span
		for _, s := range ss {
			row := waterfall.Span{
				Name: s.Name(), Depth: depth(s), Start: s.StartTime(), End: s.EndTime(),
				Error: s.Status().Code == codes.Error,
			}
			for _, kv := range s.Attributes() {
				switch kv.Key {
				case "tank.attempt.class":
					row.Class = kv.Value.AsString()
				case "tank.attempt.sleep":
					row.Sleep = time.Duration(kv.Value.AsFloat64() * float64(time.Second))
				case "tank.attempt.sleep_source":
					row.SleepSource = kv.Value.AsString()
				case "http.response.status_code":
					row.Name += " " + kv.Value.String()
				}
			}
			rows = append(rows, row)
		}
		fmt.Fprintf(out, "\ntrace %s\n", id)
		waterfall.Render(out, rows)
	}
}

// depth is 0 for a root span and 1 for the attempts under it.
func depth(s sdktrace.ReadOnlySpan) int {
	if s.Parent().IsValid() {
		return 1
	}
	return 0
}
