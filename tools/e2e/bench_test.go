package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

// discard is a span processor that drops every span: the SDK still builds
// and samples each span, nothing is exported.
type discard struct{}

func (discard) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discard) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discard) Shutdown(context.Context) error                  { return nil }
func (discard) ForceFlush(context.Context) error                { return nil }

// BenchmarkTracedClient compares, in one run, one successful GET on
// loopback per op through:
//
//	bare                     net/http alone
//	tank                     tank's Transport without tracing
//	tank-tracing             tank with tracing: tank's request span plus one attempt span
//	tank-tracing-caller      the same under a caller's span
//	otelhttp                 otelhttp.NewTransport: one span
//	otelhttp-caller          the same under a caller's span
//	tank-otelhttp-filter     tank over otelhttp with tracing.Filter: tank's two spans, otelhttp stands aside
//	otelhttp-filter-tank     otelhttp with tracing.Filter over tank: the same spans
//
// Every traced case uses the same SDK provider (AlwaysSample, a discarding
// processor), the W3C propagator and a no-op meter provider.
func BenchmarkTracedClient(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(discard{}))
	defer tp.Shutdown(context.Background())
	mp := metricnoop.NewMeterProvider()
	prop := propagation.TraceContext{}
	topts := []tracing.Option{tracing.WithTracerProvider(tp), tracing.WithMeterProvider(mp), tracing.WithPropagators(prop)}
	oopts := []otelhttp.Option{otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(mp), otelhttp.WithPropagators(prop)}
	filtered := append(slices.Clone(oopts), otelhttp.WithFilter(tracing.Filter(topts...)))
	callerCtx, caller := tp.Tracer("caller").Start(context.Background(), "caller")
	defer caller.End()

	for _, bc := range []struct {
		name   string
		caller bool // the request's context holds a caller's span
		wrap   func(http.RoundTripper) http.RoundTripper
	}{
		{"bare", false, func(rt http.RoundTripper) http.RoundTripper { return rt }},
		{"tank", false, func(rt http.RoundTripper) http.RoundTripper { return middleware.NewTransport(rt) }},
		{"tank-tracing", false, func(rt http.RoundTripper) http.RoundTripper {
			return middleware.NewTransport(rt, tracing.With(topts...))
		}},
		{"tank-tracing-caller", true, func(rt http.RoundTripper) http.RoundTripper {
			return middleware.NewTransport(rt, tracing.With(topts...))
		}},
		{"otelhttp", false, func(rt http.RoundTripper) http.RoundTripper { return otelhttp.NewTransport(rt, oopts...) }},
		{"otelhttp-caller", true, func(rt http.RoundTripper) http.RoundTripper { return otelhttp.NewTransport(rt, oopts...) }},
		{"tank-otelhttp-filter", false, func(rt http.RoundTripper) http.RoundTripper {
			return middleware.NewTransport(otelhttp.NewTransport(rt, filtered...), tracing.With(topts...))
		}},
		{"otelhttp-filter-tank", false, func(rt http.RoundTripper) http.RoundTripper {
			return otelhttp.NewTransport(middleware.NewTransport(rt, tracing.With(topts...)), filtered...)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			base := &http.Transport{MaxIdleConnsPerHost: 4}
			defer base.CloseIdleConnections()
			client := &http.Client{Transport: bc.wrap(base)}
			ctx := context.Background()
			if bc.caller {
				ctx = callerCtx
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
