package bench

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

// discard is a span processor that drops every span: spans are recorded
// (AlwaysSample) but never exported, the same setup as otelhttp's row.
type discard struct{}

func (discard) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discard) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discard) Shutdown(context.Context) error                  { return nil }
func (discard) ForceFlush(context.Context) error                { return nil }

// tracedLibs: tank with its tracing hooks on a recording SDK provider.
func tracedLibs(base *http.Transport) []struct {
	name string
	do   doer
} {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(discard{}))
	return []struct {
		name string
		do   doer
	}{
		{"tank_traced", stdDoer(&http.Client{Transport: middleware.NewTransport(base, middleware.WithBackoff(0, 0),
			tracing.With(tracing.WithTracerProvider(tp), tracing.WithMeterProvider(noop.NewMeterProvider()),
				tracing.WithPropagators(propagation.TraceContext{})))})},
	}
}
