package tracing

import (
	"context"
	"net/http"
	"reflect"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tankhttp/tank/middleware"
)

// The span kinds as start options, made once: converting one to the
// option interface on every span would cost an allocation.
var (
	internalKind = trace.WithSpanKind(trace.SpanKindInternal)
	clientKind   = trace.WithSpanKind(trace.SpanKindClient)
)

// scope names the tracer and meter.
const scope = "github.com/tankhttp/tank/tracing"

// tank's attribute keys; doc.go lists them.
const (
	keyClass       = attribute.Key("tank.attempt.class")
	keyDecision    = attribute.Key("tank.attempt.decision")
	keyReason      = attribute.Key("tank.attempt.reason")
	keySleep       = attribute.Key("tank.attempt.sleep")
	keySleepSource = attribute.Key("tank.attempt.sleep_source")
	keyBudget      = attribute.Key("tank.attempt.budget_tokens")
	keyAttempts    = attribute.Key("tank.request.attempts")
	keyOutcome     = attribute.Key("tank.request.outcome")
	keySlept       = attribute.Key("tank.request.slept")
	keyHedge       = attribute.Key("tank.attempt.hedge")
	keyWinner      = attribute.Key("tank.request.winner")
)

// hooks holds what every request shares: the tracer, the instruments and
// the options. It is immutable after newHooks.
type hooks struct {
	tracer      trace.Tracer
	noTracer    bool                 // the provider is the API's no-op
	unsetGlobal trace.TracerProvider // see newHooks
	prop        propagation.TextMapPropagator
	requestSpan bool

	duration metric.Float64Histogram // http.client.request.duration
	attempts metric.Int64Counter     // tank.client.attempts
	sleeps   metric.Float64Histogram // tank.client.retry.sleep
}

func newHooks(c *config) *hooks {
	h := &hooks{
		tracer:      c.tp.Tracer(scope, trace.WithSchemaURL(semconv.SchemaURL)),
		prop:        c.prop,
		requestSpan: c.requestSpan,
	}
	switch {
	case isNoop(c.tp):
		h.noTracer = true
	case c.globalTP && isUnsetGlobal(c.tp):
		// No SDK is installed yet. The placeholder will forward to the one
		// the program installs later, and otel.GetTracerProvider then
		// returns that one: until it does, requests need no tracing work.
		h.unsetGlobal = c.tp
	}
	m := c.mp.Meter(scope, metric.WithSchemaURL(semconv.SchemaURL))
	var err error
	h.duration, err = m.Float64Histogram("http.client.request.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP client requests."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	handle(err)
	h.attempts, err = m.Int64Counter("tank.client.attempts",
		metric.WithUnit("{attempt}"),
		metric.WithDescription("Attempts of HTTP client requests, by tank class and decision."))
	handle(err)
	h.sleeps, err = m.Float64Histogram("tank.client.retry.sleep",
		metric.WithUnit("s"),
		metric.WithDescription("Waits tank scheduled between attempts."),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
	handle(err)
	return h
}

// handle reports an instrument that could not be created; the instrument
// the API returned alongside still works as a no-op.
func handle(err error) {
	if err != nil {
		otel.Handle(err)
	}
}

// request is one logical request's state. It is also the context that
// RequestStart returns (its parent plus itself as a value), which saves a
// context allocation. The middleware never runs two hooks of one request
// at the same time, so it needs no lock; the attempt goroutines of a hedged
// request read only what never changes (its Context).
type request struct {
	context.Context
	span    trace.Span // tank's INTERNAL span, or nil
	attempt trace.Span // the span of the attempt in flight (the first copy, when hedged)
	start   time.Time  // that attempt's start, when metrics are on

	attempts int  // attempts started
	hedged   bool // a hedge was sent

	method string // http.request.method
	name   string // attempt span name
	server serverAttrs
	resent int                    // physical requests sent before this one's: earlier redirect hops and attempts
	buf    [10]attribute.KeyValue // scratch space for attribute lists
}

type requestKey struct{}

func (r *request) Value(key any) any {
	if key == (requestKey{}) {
		return r
	}
	return r.Context.Value(key)
}

func fromContext(ctx context.Context) *request {
	r, _ := ctx.Value(requestKey{}).(*request)
	return r
}

// hedgeAttempt is the state of a hedge (an extra copy in flight beside
// the request's attempt), and the context of its attempt.
type hedgeAttempt struct {
	context.Context
	span  trace.Span
	start time.Time
}

type hedgeKey struct{}

func (c *hedgeAttempt) Value(key any) any {
	if key == (hedgeKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func (h *hooks) metricsOn(ctx context.Context) bool {
	return h.duration.Enabled(ctx) || h.attempts.Enabled(ctx) || h.sleeps.Enabled(ctx)
}

// idle reports, without allocating, that nothing would record a request
// in ctx: no SDK (yet), no span in ctx, no metric enabled.
func (h *hooks) idle(ctx context.Context) bool {
	if !h.noTracer && (h.unsetGlobal == nil || otel.GetTracerProvider() != h.unsetGlobal) {
		return false
	}
	return !trace.SpanContextFromContext(ctx).IsValid() && !h.metricsOn(ctx)
}

// isNoop reports whether tp is the trace API's no-op provider.
func isNoop(tp trace.TracerProvider) bool {
	_, ok := tp.(noop.TracerProvider)
	return ok
}

// isUnsetGlobal reports whether tp is the otel global provider's
// placeholder, which otel.GetTracerProvider returns until
// otel.SetTracerProvider is called. Its type is internal to otel, so it is
// recognised by name; if otel renames it, tank only loses this shortcut.
func isUnsetGlobal(tp trace.TracerProvider) bool {
	t := reflect.TypeOf(tp)
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global" &&
		t.Elem().Name() == "tracerProvider"
}

// previousHop returns the state of the request that led to req when req
// follows a redirect: http.Client sets req.Response to the response that
// redirected, and that response's Request is the attempt tank sent, whose
// context holds the hop's state.
func previousHop(req *http.Request) *request {
	if req.Response == nil || req.Response.Request == nil {
		return nil
	}
	return fromContext(req.Response.Request.Context())
}

func (h *hooks) requestStart(ctx context.Context, req *http.Request) context.Context {
	if h.idle(ctx) {
		return nil
	}
	method, original := methodOf(req.Method)
	prev := previousHop(req)
	if prev != nil && prev.span != nil && !trace.SpanContextFromContext(ctx).IsValid() {
		// A redirect with no caller span: continue the first hop's trace.
		ctx = trace.ContextWithSpanContext(ctx, prev.span.SpanContext())
	}
	var span trace.Span
	if h.requestSpan {
		var sctx context.Context
		sctx, span = h.tracer.Start(ctx, requestSpanName(method), internalKind)
		if !span.IsRecording() && !span.SpanContext().IsValid() && !h.metricsOn(ctx) {
			// Nothing records this request (no SDK installed): leave the
			// context alone, and the attempt hooks find no state and return
			// at once.
			span.End()
			return nil
		}
		ctx = sctx
	}
	r := &request{Context: ctx, span: span, method: method, name: method, server: serverOf(req.URL)}
	if prev != nil {
		r.resent = prev.resent
	}
	if method == semconv.HTTPRequestMethodOther.Value.AsString() {
		r.name = "HTTP"
	}
	if span != nil && span.IsRecording() {
		span.SetAttributes(r.server.append(r.buf[:0], method, original)...)
	}
	return r
}

func (h *hooks) attemptStart(ctx context.Context, a *middleware.Attempt) context.Context {
	r := fromContext(ctx)
	if r == nil {
		return nil
	}
	_, original := methodOf(a.Request.Method)
	attrs := r.server.append(r.buf[:0], r.method, original)
	if r.resent > 0 {
		// Retries and redirects both count (HTTP semantic conventions).
		attrs = append(attrs, semconv.HTTPRequestResendCount(r.resent))
	}
	r.resent++
	r.attempts++
	if a.Hedge {
		attrs = append(attrs, keyHedge.Bool(true))
		r.hedged = true
	}
	ctx, span := h.tracer.Start(ctx, r.name, clientKind, trace.WithAttributes(attrs...))
	var start time.Time
	if h.duration.Enabled(ctx) {
		start = time.Now()
	}
	if a.Hedge {
		ctx = &hedgeAttempt{Context: ctx, span: span, start: start}
	} else {
		r.attempt, r.start = span, start
	}
	h.prop.Inject(ctx, headerCarrier(a.Header))
	return ctx
}

// headerCarrier is propagation.HeaderCarrier without the cost of
// canonicalising the W3C header names on every attempt.
type headerCarrier http.Header

func (c headerCarrier) Get(key string) string { return http.Header(c).Get(key) }

func (c headerCarrier) Set(key, value string) {
	switch key {
	case "traceparent":
		key = "Traceparent"
	case "tracestate":
		key = "Tracestate"
	case "baggage":
		key = "Baggage"
	default:
		key = http.CanonicalHeaderKey(key)
	}
	c[key] = []string{value}
}

func (c headerCarrier) Keys() []string { return propagation.HeaderCarrier(c).Keys() }

// errorType is the attempt's error.type: the status code for a response of
// 400 or more, tank's class for a transport error, else "".
func errorType(a *middleware.Attempt) string {
	switch {
	case a.Response != nil:
		if a.Response.StatusCode >= 400 {
			return strconv.Itoa(a.Response.StatusCode)
		}
		return ""
	case a.Err != nil:
		return string(a.Class)
	}
	return ""
}

func (h *hooks) attemptEnd(ctx context.Context, a *middleware.Attempt) {
	r := fromContext(ctx)
	if r == nil {
		return
	}
	span, start := r.attempt, r.start
	if c, _ := ctx.Value(hedgeKey{}).(*hedgeAttempt); c != nil {
		span, start = c.span, c.start
	} else {
		r.attempt = nil
	}
	if span == nil {
		return
	}
	etype := errorType(a)
	if span.IsRecording() {
		attrs := r.buf[:0]
		if a.Response != nil {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(a.Response.StatusCode))
		}
		if etype != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(etype))
		}
		attrs = append(attrs,
			keyClass.String(string(a.Class)),
			keyDecision.String(a.Verdict.String()),
			keyReason.String(string(a.Reason)))
		if a.Verdict == middleware.Retry && a.SleepSource != "" {
			// A hedged copy dropped while another is in flight is a retry
			// with no wait of its own: no source, nothing recorded.
			attrs = append(attrs, keySleep.Float64(a.Sleep.Seconds()), keySleepSource.String(string(a.SleepSource)))
		}
		if a.BudgetTokens >= 0 {
			attrs = append(attrs, keyBudget.Float64(a.BudgetTokens))
		}
		span.SetAttributes(attrs...)
		if etype != "" {
			span.SetStatus(codes.Error, statusDescription(a))
		}
	}
	span.End()

	if !start.IsZero() {
		attrs := r.server.metricAttrs(r.buf[:0], r.method)
		if a.Response != nil {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(a.Response.StatusCode))
		}
		if etype != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(etype))
		}
		h.duration.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(attrs...))
	}
	if h.attempts.Enabled(ctx) {
		h.attempts.Add(ctx, 1, metric.WithAttributes(
			keyClass.String(string(a.Class)),
			keyDecision.String(a.Verdict.String())))
	}
	if a.Verdict == middleware.Retry && a.SleepSource != "" && h.sleeps.Enabled(ctx) {
		h.sleeps.Record(ctx, a.Sleep.Seconds(), metric.WithAttributes(keySleepSource.String(string(a.SleepSource))))
	}
}

// statusDescription is the span status message: the transport error's
// text, or nothing when the status code says it all.
func statusDescription(a *middleware.Attempt) string {
	if a.Response == nil && a.Err != nil {
		return a.Err.Error()
	}
	return ""
}

func (h *hooks) requestEnd(ctx context.Context, last *middleware.Attempt) {
	r := fromContext(ctx)
	if r == nil || r.span == nil {
		return
	}
	if r.span.IsRecording() && last != nil {
		// last.Sleep is zero after a final attempt, and the time actually
		// waited when the caller gave up during a wait.
		attrs := append(r.buf[:0],
			keyAttempts.Int(r.attempts),
			keyOutcome.String(string(last.Reason)),
			keySlept.Float64((last.Slept + last.Sleep).Seconds()))
		if r.hedged {
			// Which copy ended the request: its span has the same number.
			attrs = append(attrs, keyWinner.Int(last.Number))
		}
		etype, desc := errorType(last), statusDescription(last)
		if last.Reason == middleware.ReasonCanceled {
			// The caller ended the request, whatever the last attempt got.
			etype = string(middleware.ClassCanceled)
			if cause := context.Cause(ctx); cause != nil {
				desc = cause.Error()
			}
		}
		if etype != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(etype))
		}
		r.span.SetAttributes(attrs...)
		if etype != "" {
			r.span.SetStatus(codes.Error, desc)
		}
	}
	r.span.End()
}

// traced reports whether ctx is the context of an attempt tank records
// as a CLIENT span, or of a request tank's hooks will trace.
func (h *hooks) traced(ctx context.Context) bool {
	// An attempt's context carries the request's state; reading whether
	// an attempt is in flight would race with a hedged request's hooks.
	return fromContext(ctx) != nil || !h.idle(ctx)
}
