package tracing

import (
	"net/http"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

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

// WithRequestSpan sets whether tank opens an INTERNAL span for each logical
// request, the parent of its attempts and the holder of the request's
// summary (tank.request.*), under the caller's span when there is one. With
// false, attempts are children of the caller's span, or, when there is
// none, root spans of separate traces, and no summary is recorded.
// Default true.
func WithRequestSpan(on bool) Option {
	return optionFunc(func(c *config) { c.requestSpan = on })
}

// Hooks returns middleware hooks that trace and measure every attempt, as
// the package documentation describes. Instruments are created once per
// call; build the hooks once and share them.
func Hooks(opts ...Option) middleware.Hooks {
	h := build(opts)
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

// Filter returns a filter for otelhttp's WithFilter option that makes an
// otelhttp Transport stand aside wherever tank's tracing, configured by the
// same opts, records the request, so that each physical attempt is one
// CLIENT span (tank's, with http.request.resend_count and tank.attempt.*),
// the server's parent is that span, and http.client.request.duration is
// recorded once per attempt. It works on either side of tank:
//
//	// otelhttp inside tank: each attempt passes otelhttp untraced
//	tank := middleware.NewTransport(otelhttp.NewTransport(base, otelhttp.WithFilter(tracing.Filter())), tracing.With())
//	// otelhttp outside tank: the logical request passes otelhttp untraced
//	client := otelhttp.NewTransport(middleware.NewTransport(base, tracing.With()), otelhttp.WithFilter(tracing.Filter()))
//
// The filter returns true (otelhttp traces as usual) for requests tank
// does not trace: with no SDK installed, say.
func Filter(opts ...Option) func(*http.Request) bool {
	h := build(opts)
	return func(r *http.Request) bool { return !h.traced(r.Context()) }
}

func build(opts []Option) *hooks {
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
	return newHooks(&c)
}

// With is middleware.WithHooks(Hooks(opts...)): the option that adds
// tracing to a Transport or a front door.
//
//	t := middleware.NewTransport(nil, tracing.With())
func With(opts ...Option) middleware.Option {
	return middleware.WithHooks(Hooks(opts...))
}
