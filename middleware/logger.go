package middleware

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
)

// WithLogger logs tank's decisions to l: one record per retry (INFO, "tank:
// retrying"), one when a request ends on a give-up (WARN, "tank: gave up":
// any ending but a final response, the caller's cancellation included), and
// one when a request succeeds after retries (INFO, "tank: succeeded after
// retries", or "tank: succeeded on a hedge" when a hedge answered first). A
// request answered at its first attempt logs nothing at INFO or above.
//
// Records carry stable keys with plain values: attempt (a number), class
// and reason (their labels), hedge (true, on a copy sent by WithHedging),
// sleep (a duration, retries only), status (the
// response's code) or error (the transport error's text), method, and url
// without userinfo or query. The request's context is passed on to the
// handler.
//
// It adds hooks, so it composes with WithHooks and tracing. When l's handler
// is not enabled at WARN for a request's context, the hooks stand aside and
// the request costs what it costs without a logger. A nil l is an
// *OptionError. Default: no logging.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(p *policy) error {
		if l == nil {
			return &OptionError{"WithLogger", nil, "must not be nil"}
		}
		lg := logger{l}
		p.hooks = p.hooks.join(Hooks{
			Enabled:    lg.enabled,
			AttemptEnd: lg.attemptEnd,
			RequestEnd: lg.requestEnd,
		})
		return nil
	})
}

type logger struct{ l *slog.Logger }

func (lg logger) enabled(req *http.Request) bool {
	return lg.l.Enabled(req.Context(), slog.LevelWarn)
}

func (lg logger) attemptEnd(ctx context.Context, a *Attempt) {
	if a.Verdict != Retry || !lg.l.Enabled(ctx, slog.LevelInfo) {
		return
	}
	lg.log(ctx, slog.LevelInfo, "tank: retrying", a, slog.Duration("sleep", a.Sleep))
}

func (lg logger) requestEnd(ctx context.Context, a *Attempt) {
	switch {
	case a.Reason != ReasonFinal:
		lg.log(ctx, slog.LevelWarn, "tank: gave up", a)
	case a.Hedge && lg.l.Enabled(ctx, slog.LevelInfo):
		lg.log(ctx, slog.LevelInfo, "tank: succeeded on a hedge", a)
	case a.Number > 1 && lg.l.Enabled(ctx, slog.LevelInfo):
		lg.log(ctx, slog.LevelInfo, "tank: succeeded after retries", a)
	}
}

func (lg logger) log(ctx context.Context, level slog.Level, msg string, a *Attempt, extra ...slog.Attr) {
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.Int("attempt", a.Number),
		slog.String("class", string(a.Class)),
		slog.String("reason", string(a.Reason)))
	attrs = append(attrs, extra...)
	if a.Hedge {
		attrs = append(attrs, slog.Bool("hedge", true))
	}
	switch {
	case a.Response != nil:
		attrs = append(attrs, slog.Int("status", a.Response.StatusCode))
	case a.Err != nil:
		attrs = append(attrs, slog.String("error", a.Err.Error()))
	}
	method := a.Request.Method
	if method == "" {
		method = http.MethodGet
	}
	attrs = append(attrs, slog.String("method", method), slog.String("url", logURL(a.Request.URL)))
	lg.l.LogAttrs(ctx, level, msg, attrs...)
}

// logURL is u without userinfo, query or fragment.
func logURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath, Opaque: u.Opaque}
	return v.String()
}
