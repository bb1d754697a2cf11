package tracing

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"net/http"

	"github.com/tankhttp/tank/middleware"
)

// An Option configures Hooks. Options are applied in order; for a setting
// given twice the last wins.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	tp          trace.TracerProvider
	mp          metric.MeterProvider
	prop        propagation.TextMapPropagator
	requestSpan bool
	globalTP    bool // tp is otel.GetTracerProvider()
}

// WithTracerProvider sets where spans go. nil means the default: the global
// provider (otel.GetTracerProvider), resolved when Hooks is called.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tp = tp })
}

// WithMeterProvider sets where metrics go. nil means the default: the
// global provider (otel.GetMeterProvider), resolved when Hooks is called.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.mp = mp })
}

// WithPropagators sets how each attempt's span context is written into its
// request headers. nil means the default: the global propagator
// (otel.GetTextMapPropagator), resolved when Hooks is called. The global
// propagator does nothing until the program sets one, for example with
// otel.SetTextMapPropagator(propagation.TraceContext{}).
func WithPropagators(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) { c.prop = p })
}

// WithRequestSpan sets whether tank opens an INTERNAL span for the logical
// request when the caller's context carries no span, so that all attempts
// of a request share one trace. With false, such attempts are root spans of
// separate traces. Attempts under a caller's span are its children either
// way. Default true.
func WithRequestSpan(on bool) Option {
	return optionFunc(func(c *config) { c.requestSpan = on })
}

// Hooks returns middleware hooks that trace and measure every attempt, as
// the package documentation describes. Instruments are created once per
// call; build the hooks once and share them.
func Hooks(opts ...Option) middleware.Hooks {
	c := config{requestSpan: true}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.tp == nil {
		c.tp, c.globalTP = otel.GetTracerProvider(), true
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = otel.GetTextMapPropagator()
	}
	h := newHooks(&c)
	return middleware.Hooks{
		// With nothing to record (no SDK, no span in the request's context,
		// no metric enabled), the request takes the Transport's success path.
		Enabled:      func(req *http.Request) bool { return !h.idle(req.Context()) },
		RequestStart: h.requestStart,
		AttemptStart: h.attemptStart,
		AttemptEnd:   h.attemptEnd,
		RequestEnd:   h.requestEnd,
	}
}

// With is middleware.WithHooks(Hooks(opts...)): the option that adds
// tracing to a Transport or a front door.
//
//	t := middleware.NewTransport(nil, tracing.With())
func With(opts ...Option) middleware.Option {
	return middleware.WithHooks(Hooks(opts...))
}
