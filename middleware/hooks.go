package middleware

import (
	"context"
	"net/http"
)

// Hooks observe a request's attempts. Every field is optional. Like
// httptrace.ClientTrace, Hooks are plain data: new fields may be added.
//
// Hooks run on the goroutine of the request; they must be safe to call from
// many requests at once. The hooks of one request never run at the same
// time. With WithHedging, the AttemptEnd of copies cancelled because
// another copy ended the request, and then RequestEnd, run on a goroutine
// of tank's once those copies have returned, possibly after RoundTrip has.
type Hooks struct {
	// Enabled, when set, is asked once per request, before anything else,
	// whether the other hooks want to see it; the answer holds for the whole
	// request, retries included. false lets the request take the Transport's success
	// path, as if there were no hooks (tracing says false when no
	// OpenTelemetry SDK is installed). nil means always.
	Enabled func(req *http.Request) bool
	// RequestStart runs once per logical request, before the first attempt.
	// The context it returns (nil: unchanged) is the parent of every attempt.
	RequestStart func(ctx context.Context, req *http.Request) context.Context
	// AttemptStart runs before each attempt; a.Header may be changed. The
	// context it returns (nil: unchanged) is the attempt's context.
	AttemptStart func(ctx context.Context, a *Attempt) context.Context
	// AttemptEnd runs once the attempt is judged, before any wait. ctx is
	// the context AttemptStart returned.
	AttemptEnd func(ctx context.Context, a *Attempt)
	// RequestEnd runs once with the last attempt, when the request is over,
	// after every AttemptEnd. For a hedged request the last attempt is the
	// copy that ended it, which need not be the highest numbered.
	// ctx is the context RequestStart returned.
	RequestEnd func(ctx context.Context, last *Attempt)
}

// startHook runs an AttemptStart hook. Only a.Header survives it: the hook
// may add to the private copy, or replace it.
func (a *Attempt) startHook(ctx context.Context, f func(context.Context, *Attempt) context.Context) context.Context {
	saved := *a
	if c := f(ctx, a); c != nil {
		ctx = c
	}
	h := a.Header
	*a = saved
	if h != nil {
		a.Header = h
	}
	return ctx
}

// endHook runs an AttemptEnd or RequestEnd hook and undoes what it wrote.
func (a *Attempt) endHook(ctx context.Context, f func(context.Context, *Attempt)) {
	saved := *a
	f(ctx, a)
	*a = saved
}

// classify runs a classifier and undoes what it wrote.
func (a *Attempt) classify(c Classifier) Verdict {
	saved := *a
	v := c(a)
	*a = saved
	return v
}

func (h *Hooks) empty() bool {
	return h.RequestStart == nil && h.AttemptStart == nil && h.AttemptEnd == nil && h.RequestEnd == nil
}

// join returns hooks that call h's then g's.
func (h Hooks) join(g Hooks) Hooks {
	return Hooks{
		RequestStart: joinCtx(h.RequestStart, g.RequestStart),
		AttemptStart: joinStart(h.AttemptStart, g.AttemptStart),
		AttemptEnd:   joinEnd(h.AttemptEnd, g.AttemptEnd),
		RequestEnd:   joinEnd(h.RequestEnd, g.RequestEnd),
		Enabled:      joinEnabled(h, g),
	}
}

// joinEnabled: joined hooks see a request when either side wants it.
func joinEnabled(h, g Hooks) func(*http.Request) bool {
	switch {
	case h.empty():
		return g.Enabled
	case g.empty():
		return h.Enabled
	case h.Enabled == nil || g.Enabled == nil:
		return nil
	}
	return func(r *http.Request) bool { return h.Enabled(r) || g.Enabled(r) }
}

func joinCtx[T any](f, g func(context.Context, T) context.Context) func(context.Context, T) context.Context {
	if f == nil {
		return g
	}
	if g == nil {
		return f
	}
	return func(ctx context.Context, v T) context.Context {
		if c := f(ctx, v); c != nil {
			ctx = c
		}
		if c := g(ctx, v); c != nil {
			ctx = c
		}
		return ctx
	}
}

// joinStart joins AttemptStart hooks: each sees the attempt as tank made
// it, plus the headers earlier hooks set.
func joinStart(f, g func(context.Context, *Attempt) context.Context) func(context.Context, *Attempt) context.Context {
	if f == nil {
		return g
	}
	if g == nil {
		return f
	}
	return func(ctx context.Context, a *Attempt) context.Context {
		ctx = a.startHook(ctx, f)
		return a.startHook(ctx, g)
	}
}

// joinEnd joins AttemptEnd or RequestEnd hooks: each sees the attempt as
// tank judged it.
func joinEnd(f, g func(context.Context, *Attempt)) func(context.Context, *Attempt) {
	if f == nil {
		return g
	}
	if g == nil {
		return f
	}
	return func(ctx context.Context, a *Attempt) { a.endHook(ctx, f); a.endHook(ctx, g) }
}
