package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

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

// BenchmarkClient measures one successful GET on loopback per op:
//
//	bare            net/http alone
//	tank            tank's Transport without hooks
//	tracing-noop    tank with tracing and the otel globals left unset (no SDK)
//	tracing-sdk     tank with tracing on an SDK provider (AlwaysSample,
//	                a discarding processor) and the W3C propagator
//
// otelhttp on the same SDK is measured in tools/e2e (it is not a
// dependency of this module).
func BenchmarkClient(b *testing.B) {
	srv := okServer(b)

	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(discard{}))
	defer tp.Shutdown(context.Background())

	for _, bc := range []struct {
		name string
		wrap func(http.RoundTripper) http.RoundTripper
	}{
		{"bare", func(rt http.RoundTripper) http.RoundTripper { return rt }},
		{"tank", func(rt http.RoundTripper) http.RoundTripper { return middleware.NewTransport(rt) }},
		{"tracing-noop", func(rt http.RoundTripper) http.RoundTripper {
			return middleware.NewTransport(rt, tracing.With())
		}},
		{"tracing-sdk", func(rt http.RoundTripper) http.RoundTripper {
			return middleware.NewTransport(rt, tracing.With(
				tracing.WithTracerProvider(tp), tracing.WithPropagators(propagation.TraceContext{})))
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			base := &http.Transport{MaxIdleConnsPerHost: 4}
			defer base.CloseIdleConnections()
			benchGET(b, bc.wrap(base), srv.URL)
		})
	}
}

// BenchmarkEmptyHooks is tank with hooks that do nothing: the part of
// tracing-noop's cost that the middleware spends because hooks exist.
func BenchmarkEmptyHooks(b *testing.B) {
	srv := okServer(b)
	base := &http.Transport{MaxIdleConnsPerHost: 4}
	defer base.CloseIdleConnections()
	benchGET(b, middleware.NewTransport(base, middleware.WithHooks(middleware.Hooks{
		AttemptStart: func(context.Context, *middleware.Attempt) context.Context { return nil },
	})), srv.URL)
}

// okServer is a loopback server answering "ok", closed when b ends.
func okServer(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	b.Cleanup(srv.Close)
	return srv
}

// benchGET measures one GET of url through rt per op, body read and closed.
func benchGET(b *testing.B, rt http.RoundTripper, url string) {
	client := &http.Client{Transport: rt}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
