package middleware

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/tankhttp/tank/internal/sendstate"
)

// Transport is an http.RoundTripper that retries what is safe to retry.
// Build it with NewTransport. The zero Transport is usable: it wraps
// http.DefaultTransport with the default policy.
//
// tank distrusts the transport it wraps, as net/http's Client does: a nil
// response with a nil error becomes an error (ErrNilResponse), a response
// with a nil Body gets http.NoBody, and a response returned beside an error
// is closed and ignored. A panic in the wrapped transport, a hook or a
// classifier is not recovered: it reaches the caller unchanged, as it would
// without tank.
//
// Concurrency: a Transport is safe for concurrent use; its Policy is
// immutable and each request's state lives in its own RoundTrip call.
type Transport struct {
	next http.RoundTripper
	p    *Policy
	err  error
}

// ErrNilResponse is returned (wrapped, with the transport's type) when the
// wrapped RoundTripper returns neither a response nor an error. The request
// may have been sent, so tank retries it only if it is replayable.
var ErrNilResponse = errors.New("tank: wrapped RoundTripper returned a nil *http.Response and a nil error")

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

// defaultPolicy serves the zero Transport.
var defaultPolicy = sync.OnceValue(func() *Policy {
	p, _ := NewPolicy()
	return p
})

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
	p, next := t.p, t.next
	if p == nil {
		p = defaultPolicy()
	}
	if next == nil {
		next = http.DefaultTransport
	}
	p.deposit(req)
	// Asked once: the answer holds for every attempt of this request.
	on := p.hooksOn(req)
	if p.plain(req, on) {
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
		resp, err := next.RoundTrip(areq)
		resp, err = checked(next, resp, err)
		if err == nil && !p.mayRetryStatus(resp.StatusCode) {
			if st != nil {
				sendstate.Put(st)
			}
			return resp, nil
		}
		r := &Run{}
		r.init(p, req, next, on)
		r.getBody, r.hasBody = req.GetBody, req.GetBody != nil
		r.n = 1
		return r.loop(r.judge(resp, err, st))
	}
	r := &Run{}
	r.init(p, req, next, on)
	r.prepareBody()
	return r.loop(r.Step())
}

// checked holds the wrapped transport to the RoundTripper contract, as
// net/http's Client does (and otelhttp for a nil Body), so that a
// neighbour's bug becomes an error rather than a panic or a leak.
func checked(next http.RoundTripper, resp *http.Response, err error) (*http.Response, error) {
	switch {
	case err != nil:
		if resp != nil && resp.Body != nil {
			// The contract allows one or the other; net/http's Client
			// ignores such a response. Close it so its connection is freed.
			resp.Body.Close()
		}
		return nil, err
	case resp == nil:
		return nil, fmt.Errorf("%w (%T)", ErrNilResponse, next)
	case resp.Body == nil:
		resp.Body = http.NoBody
	}
	return resp, nil
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
func (p *Policy) plain(req *http.Request, hooksOn bool) bool {
	return !hooksOn && len(p.classifiers) == 0 && p.attemptTO == 0 && p.groupCaps == [3]int{} &&
		!p.needsKey(req) &&
		(req.Body == nil || req.Body == http.NoBody || req.GetBody != nil)
}

// CloseIdleConnections forwards to the wrapped transport.
func (t *Transport) CloseIdleConnections() {
	type closeIdler interface{ CloseIdleConnections() }
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	if c, ok := next.(closeIdler); ok {
		c.CloseIdleConnections()
	}
}
