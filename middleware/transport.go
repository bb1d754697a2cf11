package middleware

import (
	"net/http"

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
// Concurrency: a Transport is safe for concurrent use; its rules are fixed
// when it is built and each request's state lives in its own RoundTrip call.
type Transport struct {
	next http.RoundTripper
	p    *policy
	err  error
}

// NewTransport wraps next (nil: http.DefaultTransport) with tank's
// classifier and policy. Options given invalid values do not panic: every
// RoundTrip then fails with the *OptionError (after closing the request
// body), so the mistake shows on the first request.
func NewTransport(next http.RoundTripper, opts ...Option) *Transport {
	if next == nil {
		next = http.DefaultTransport
	}
	p, err := newPolicy(opts...)
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
	p, next := t.p, t.next
	if p == nil {
		p = defaultPolicy()
	}
	if next == nil {
		next = http.DefaultTransport
	}
	p, out, err := p.forRequest(req)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	p.deposit(req)
	// Asked once: the answer holds for every attempt of this request.
	on := p.hooksOn(req)
	if p.hedge != nil && p.hedgeable(req) {
		r := &run{outcome: out}
		// The copies, the hooks and the reaping of cancelled copies work on
		// a private copy of req: the caller may reuse req once it has closed
		// the response body, and reaping can outlast that.
		r.init(p, req.Clone(req.Context()), next, on)
		r.prepareBody()
		return r.hedged()
	}
	if p.fastPath(req, on) {
		// The success path: no run, no timer, no body wrapper. A replayable
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
			out.fill(1, ReasonFinal, 0)
			return resp, nil
		}
		r := &run{outcome: out}
		r.init(p, req, next, on)
		r.getBody, r.hasBody = req.GetBody, req.GetBody != nil
		r.n = 1
		return r.loop(r.conclude(resp, err, st))
	}
	r := &run{outcome: out}
	r.init(p, req, next, on)
	r.prepareBody()
	return r.loop(r.Step())
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
