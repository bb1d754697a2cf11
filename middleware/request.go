package middleware

import (
	"context"
	"net/http"
	"time"

	"github.com/tankhttp/tank/internal/frontdoor"
)

// requestKey is the context key of a request's own settings.
type requestKey struct{}

// requestSettings is what WithRequestOptions and WithOutcome put in a
// context. It is immutable once in a context: each call makes a new one.
type requestSettings struct {
	opts    []Option
	outcome *Outcome
}

func settingsOf(ctx context.Context) *requestSettings {
	s, _ := ctx.Value(requestKey{}).(*requestSettings)
	return s
}

// outcomeOf returns the Outcome WithOutcome put in ctx last, or nil. Front
// doors outside this package read it through internal/frontdoor.
func outcomeOf(ctx context.Context) *Outcome {
	if s := settingsOf(ctx); s != nil {
		return s.outcome
	}
	return nil
}

func init() { frontdoor.RegisterOutcome(outcomeOf) }

func withSettings(ctx context.Context, change func(*requestSettings)) context.Context {
	var s requestSettings
	if old := settingsOf(ctx); old != nil {
		s = *old
	}
	change(&s)
	return context.WithValue(ctx, requestKey{}, &s)
}

// WithRequestOptions returns a context whose requests follow opts on top
// of the front door's own options: a setting given here overrides the front
// door's (WithMaxAttempts(5) raises the cap as well as lowers it;
// WithMaxAttempts(1) turns retries off for the request), and classifiers
// and hooks given here run after the front door's. Every front door honours
// it: the Transport, resty through R().SetContext(ctx), and backoffretry.New
// through the request's context. Calls add up: the options of a later call
// come after those of an earlier one.
//
// An invalid option fails the requests made with the context, before
// anything is sent, with the *OptionError.
//
//	ctx := middleware.WithRequestOptions(ctx, middleware.WithMaxAttempts(1))
//	resp, err := client.Do(req.WithContext(ctx)) // a health check: no retries
func WithRequestOptions(ctx context.Context, opts ...Option) context.Context {
	return withSettings(ctx, func(s *requestSettings) {
		s.opts = append(s.opts[:len(s.opts):len(s.opts)], opts...)
	})
}

// An Outcome says how a request ended. WithOutcome has tank fill one in.
type Outcome struct {
	// Attempts counts the attempts made, the first included.
	Attempts int
	// Reason says why the request ended: ReasonFinal when it ended on a
	// response tank did not retry (a success among them).
	Reason Reason
	// Slept is the time waited between attempts.
	Slept time.Duration
}

// WithOutcome returns a context that makes tank fill o in when a request
// made with it ends, successful or not, through any front door (resty and
// backoffretry pass the request's context on). Use one Outcome per
// request: requests running at once must not share one.
//
//	var out middleware.Outcome
//	resp, err := client.Do(req.WithContext(middleware.WithOutcome(ctx, &out)))
//	log.Printf("%d attempts (%s)", out.Attempts, out.Reason)
func WithOutcome(ctx context.Context, o *Outcome) context.Context {
	return withSettings(ctx, func(s *requestSettings) { s.outcome = o })
}

// forRequest returns the policy for req: p, or p with req's own options on
// top, and the Outcome to fill in, if any.
func (p *policy) forRequest(req *http.Request) (*policy, *Outcome, error) {
	s := settingsOf(req.Context())
	if s == nil {
		return p, nil, nil
	}
	if len(s.opts) == 0 {
		return p, s.outcome, nil
	}
	q, err := p.with(s.opts)
	return q, s.outcome, err
}

// fill records the end of a request into o.
func (o *Outcome) fill(attempts int, reason Reason, slept time.Duration) {
	if o != nil {
		*o = Outcome{Attempts: attempts, Reason: reason, Slept: slept}
	}
}
