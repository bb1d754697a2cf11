package restyretry

import (
	"context"
	"errors"
	"net/http"
	"reflect"

	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/middleware"
)

// Apply makes c retry with tank's classifier and policy, configured by opts
// (the options of middleware.NewTransport), and returns c.
//
// It installs a middleware.Transport around the client's current transport
// (http.DefaultTransport when there is none), so a transport the caller set
// keeps doing the work and sees every attempt, and it keeps resty's own
// retry loop from adding attempts of its own, whatever resty retry setters
// are called before or after Apply: tank is the only retry layer.
//
// Apply is idempotent: called again on the same client, it replaces the
// options of the previous call (the last call wins) and wraps the transport
// the first call found, once. Call Apply after configuring TLS and proxies;
// the package documentation explains why.
func Apply(c *resty.Client, opts ...middleware.Option) *resty.Client {
	hc := c.GetClient()
	next := hc.Transport
	if t, ok := next.(*transport); ok {
		next = t.next // Apply again: wrap what the first Apply wrapped
	}
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = &transport{next: next, tank: middleware.NewTransport(next, opts...)}
	c.SetRetryCount(0)
	if !applied(c) {
		c.AddRetryCondition(neverRetry)
		c.OnBeforeRequest(armStop)
		c.OnSuccess(giveBackOnSuccess)
		c.OnError(giveBackOnError)
	}
	return c
}

// ErrRestyLoopStopped is the cause (context.Cause) of the canceled context
// a request carries from the moment tank answers until Execute's OnSuccess
// or OnError hook registered by Apply runs, when resty's own retry loop is
// on (RetryCount > 0). The cancellation is what stops resty's loop; the
// request's own context is given back before Execute returns.
var ErrRestyLoopStopped = errors.New("restyretry: tank made the attempts; resty's own retry loop stops")

// transport is the client's transport after Apply: tank's Transport around
// the transport Apply found, plus the step that stops resty's retry loop
// once tank has answered.
type transport struct {
	next http.RoundTripper // what the first Apply found: a second Apply wraps it again
	tank *middleware.Transport
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.tank.RoundTrip(req)
	if l, ok := req.Context().Value(loopKey{}).(*loop); ok {
		l.stop()
	}
	return resp, err
}

// CloseIdleConnections forwards to tank's Transport, which forwards to the
// wrapped transport.
func (t *transport) CloseIdleConnections() { t.tank.CloseIdleConnections() }

// neverRetry is the retry condition Apply adds. It never asks for a retry,
// and it tells a later Apply that the request middleware and hooks are
// registered already: resty v2 offers no way to list or remove them, and
// resty's Clone copies the retry conditions, middlewares and hooks
// together, so a clone made after Apply has them all and one made before
// has none.
func neverRetry(*resty.Response, error) bool { return false }

func applied(c *resty.Client) bool {
	p := reflect.ValueOf(neverRetry).Pointer()
	for _, f := range c.RetryConditions {
		if f != nil && reflect.ValueOf(f).Pointer() == p {
			return true
		}
	}
	return false
}

// How resty's retry loop is stopped. resty v2 (v2.17.2, request.go Execute
// and retry.go Backoff) runs its loop only when the client's RetryCount is
// above 0, and after every attempt it returns at once, before asking any
// retry condition, when the resty Request's context is done. That context
// is read there from the Request, while the *http.Request that reaches the
// transport was built from it earlier, by resty's createHTTPRequest
// middleware (middleware.go). So:
//
//   - armStop, a request middleware that runs before createHTTPRequest,
//     puts the request's loop into its context when RetryCount > 0;
//   - the transport finds the loop in the *http.Request's context and,
//     once tank has answered, gives the resty Request a canceled child of
//     its context: resty's loop returns tank's result as it is;
//   - the OnSuccess and OnError hooks (giveBack) put the request's context
//     back before Execute returns.
//
// The *http.Request, and so the response body, keeps the context it was
// built with, which is never canceled here. With RetryCount 0, the default
// after Apply, armStop and giveBack only look the key up and allocate
// nothing.

type loopKey struct{}

// loop is one resty request's state while resty's retry loop is on. resty
// runs the request middlewares, the round trip and the hooks of an Execute
// on the goroutine that called it, so loop needs no lock.
type loop struct {
	req    *resty.Request
	caller context.Context // the request's context when armStop ran
	armed  context.Context // caller with the loop in it
	after  context.Context // what giveBack restores, decided by stop
	state  uint8           // stateArmed, then stateStopped, then stateDone
}

const (
	stateArmed   = iota
	stateStopped // tank answered; the resty Request's context is canceled
	stateDone    // Execute finished and the context was given back
)

func armStop(c *resty.Client, r *resty.Request) error {
	if c.RetryCount <= 0 {
		return nil // resty's loop does not run
	}
	cur := r.Context()
	if l, ok := cur.Value(loopKey{}).(*loop); ok && l.req == r && l.state != stateDone {
		return nil // resty's loop runs the middlewares again: armed already
	}
	l := &loop{req: r, caller: cur}
	l.armed = context.WithValue(cur, loopKey{}, l)
	r.SetContext(l.armed)
	return nil
}

// stop cancels the resty Request's context, once. It acts only when the
// request's own *http.Request has been built from the armed context: a
// request that merely inherited that context (one sent from a middleware of
// this request, say) must not stop the loop before resty built this one.
func (l *loop) stop() {
	raw := l.req.RawRequest
	if l.state != stateArmed || raw == nil || raw.Context().Value(loopKey{}) != l {
		return
	}
	l.state = stateStopped
	cur := l.req.Context()
	l.after = l.restore(cur)
	ctx, cancel := context.WithCancelCause(cur)
	cancel(ErrRestyLoopStopped)
	l.req.SetContext(ctx)
}

// restore picks the context to give back: the caller's, unless something
// after armStop (resty's EnableTrace, a later middleware) derived another
// from the armed one, which resty would have left in place too.
func (l *loop) restore(cur context.Context) context.Context {
	if cur == l.armed {
		return l.caller
	}
	return cur
}

func giveBackOnSuccess(_ *resty.Client, resp *resty.Response) {
	if resp != nil {
		giveBack(resp.Request)
	}
}

func giveBackOnError(r *resty.Request, _ error) { giveBack(r) }

// giveBack puts back the context of a request whose loop was armed.
func giveBack(r *resty.Request) {
	if r == nil {
		return
	}
	l, ok := r.Context().Value(loopKey{}).(*loop)
	if !ok || l.req != r || l.state == stateDone {
		return
	}
	if l.state == stateArmed { // tank never answered: the request was not sent
		l.after = l.restore(r.Context())
	}
	l.state = stateDone
	r.SetContext(l.after)
}
