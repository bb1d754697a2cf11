package middleware

import (
	"net/http"

	"github.com/tankhttp/tank/internal/sendstate"
)

// Transport is an http.RoundTripper that retries what is safe to retry.
// Build it with NewTransport.
//
// Concurrency: a Transport is safe for concurrent use; its Policy is
// immutable and each request's state lives in its own RoundTrip call.
type Transport struct {
	next http.RoundTripper
	p    *Policy
	err  error
}

// NewTransport wraps next (nil: http.DefaultTransport) with tank's
// classifier and policy. Options given invalid values do not panic: every
// RoundTrip then fails with the *OptionError (after closing the request
// body), so the mistake shows on the first request. Use NewPolicy to check
// options up front.
func NewTransport(next http.RoundTripper, opts ...Option) *Transport {
	if next == nil {
		next = http.DefaultTransport
	}
	p, err := NewPolicy(opts...)
	return &Transport{next: next, p: p, err: err}
}

// RoundTrip implements http.RoundTripper. It never modifies req and closes
// req.Body exactly once. When retries end on a response, that response is
// returned with a nil error; otherwise the error is an *ExhaustedError.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, t.err
	}
	p := t.p
	p.deposit(req)
	if p.plain(req) {
		// The success path: no Run, no timer, no body wrapper. A replayable
		// request needs nothing more; any other gets its send state traced
		// (a pooled State, plus the context and request copy that carry it).
		var st *sendstate.State
		areq := req
		if !p.replayable(req) {
			st = sendstate.Get()
			areq = req.WithContext(sendstate.With(req.Context(), st))
			areq.GetBody = nil // net/http must not re-send it behind our back
		}
		resp, err := t.next.RoundTrip(areq)
		if err == nil && !p.mayRetryStatus(resp.StatusCode) {
			if st != nil {
				sendstate.Put(st)
			}
			return resp, nil
		}
		r := &Run{}
		r.init(p, req, t.next)
		r.getBody, r.hasBody = req.GetBody, req.GetBody != nil
		r.n = 1
		return r.loop(r.judge(resp, err, st))
	}
	r := &Run{}
	r.init(p, req, t.next)
	r.prepareBody()
	return r.loop(r.Step())
}

// loop repeats attempts until one is judged Stop.
func (r *Run) loop(a *Attempt) (*http.Response, error) {
	for a.Verdict == Retry {
		if !r.Wait(a.Sleep) {
			break
		}
		a = r.Step()
	}
	return r.Result()
}

// plain reports whether req's first attempt needs nothing from tank but
// (for a request that is not replayable) its send state: no observers, no
// per-attempt bound, no group caps, and a body net/http can produce again.
func (p *Policy) plain(req *http.Request) bool {
	return !p.hooksOn(req) && len(p.classifiers) == 0 && p.attemptTO == 0 && p.groupCaps == [3]int{} &&
		!p.needsKey(req) &&
		(req.Body == nil || req.Body == http.NoBody || req.GetBody != nil)
}

// CloseIdleConnections forwards to the wrapped transport.
func (t *Transport) CloseIdleConnections() {
	type closeIdler interface{ CloseIdleConnections() }
	if c, ok := t.next.(closeIdler); ok {
		c.CloseIdleConnections()
	}
}
