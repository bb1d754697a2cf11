package restyretry

import (
	"context"
	"errors"
	"net/http"
	"reflect"

	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/internal/frontdoor"
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
		c.OnBeforeRequest(beforeRequest)
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
// the transport Apply found, plus the steps that report tank's attempt
// count in the resty Request and stop resty's retry loop once tank has
// answered.
type transport struct {
	next http.RoundTripper // what the first Apply found: a second Apply wraps it again
	tank *middleware.Transport
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.tank.RoundTrip(req)
	ctx := req.Context()
	if n, ok := ctx.Value(countKey{}).(*count); ok {
		n.record(ctx, err)
	}
	if l, ok := ctx.Value(loopKey{}).(*loop); ok {
		l.stop()
	}
	return resp, err
}

// CloseIdleConnections forwards to tank's Transport, which forwards to the
// wrapped transport.
func (t *transport) CloseIdleConnections() { t.tank.CloseIdleConnections() }

// beforeRequest is the request middleware Apply registers: it gives the
// request its attempt count, then arms the stop of resty's loop.
func beforeRequest(c *resty.Client, r *resty.Request) error {
	armCount(r)
	return armStop(c, r)
}

// giveBackOnSuccess and giveBackOnError are the hooks Apply registers.
func giveBackOnSuccess(_ *resty.Client, resp *resty.Response) {
	if resp != nil {
		giveBack(resp.Request)
	}
}

func giveBackOnError(r *resty.Request, _ error) { giveBack(r) }

// giveBack puts back the request's own context: the one its loop replaced,
// if resty's loop was on, then the one armCount replaced.
func giveBack(r *resty.Request) {
	if r == nil {
		return
	}
	giveBackLoop(r)
	giveBackCount(r)
}

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
// after Apply, armStop and giveBackLoop only look the key up and allocate
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

// giveBackLoop puts back the context of a request whose loop was armed.
func giveBackLoop(r *resty.Request) {
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

// How the attempt count reaches Request.Attempt. resty sets Attempt to 1
// before it sends (its loop, when on, adds one per pass); tank's attempts
// happen inside that one send. So:
//
//   - armCount, in the request middleware, gives the request a context of
//     this package's (count) around its own, with an Outcome of its own
//     (middleware.WithOutcome) unless the context carries one already: a
//     caller's Outcome is used as it is, so tank still fills it in;
//   - the transport reads the Outcome tank filled right after tank answers
//     and writes its Attempts into the request's Attempt, before resty's
//     response middlewares and hooks run;
//   - the OnSuccess and OnError hooks (giveBack) put the request's own
//     context back.
//
// This costs three allocations per request (the count, and WithOutcome's
// context and settings), one when the caller's context carries an Outcome,
// plus resty's copy of the *http.Request (createHTTPRequest's WithContext)
// when the caller set no context of its own (BenchmarkGET: 78 to 82).

type countKey struct{}

// count is one Execute of a resty request, as a context: the context the
// request had when armCount ran, with an Outcome of its own when needed.
// Like loop, it is used on the goroutine that runs Execute only.
type count struct {
	context.Context                 // caller, or middleware.WithOutcome(caller, &out)
	req             *resty.Request  // the request it counts
	caller          context.Context // what giveBackCount restores
	out             middleware.Outcome
	done            bool // Execute finished
}

// Value finds the count under countKey, and delegates every other key.
func (n *count) Value(key any) any {
	if key == (countKey{}) {
		return n
	}
	return n.Context.Value(key)
}

func outcomeOf(ctx context.Context) *middleware.Outcome {
	return frontdoor.OutcomeOf[middleware.Outcome](ctx)
}

// armCount gives r a count, unless it has one for this Execute already
// (resty's loop runs the middlewares again after a request that failed
// before it was sent).
func armCount(r *resty.Request) {
	cur := r.Context()
	outer, _ := cur.Value(countKey{}).(*count)
	if outer != nil && outer.req == r && !outer.done {
		return
	}
	n := &count{Context: cur, req: r, caller: cur}
	// An Outcome of our own unless the caller's context carries one. The
	// Outcome of another request's count (a request sent from a middleware
	// with that request's context) is not ours to fill.
	if o := outcomeOf(cur); o == nil || outer != nil && o == &outer.out {
		n.Context = middleware.WithOutcome(cur, &n.out)
	}
	r.SetContext(n)
}

// record writes the attempts of the round trip that just ended into the
// resty Request, when that round trip was the request's own: its
// *http.Request was built from the count's context (not one sent with that
// context from a middleware), and tank filled the Outcome in (an
// *middleware.OptionError leaves it as it was).
func (n *count) record(ctx context.Context, err error) {
	raw := n.req.RawRequest
	if n.done || raw == nil || raw.Context().Value(countKey{}) != n {
		return
	}
	if _, bad := err.(*middleware.OptionError); bad {
		return
	}
	if o := outcomeOf(ctx); o != nil && o.Attempts > 0 {
		n.req.Attempt = o.Attempts
	}
}

// giveBackCount ends r's count and puts back the context armCount found,
// unless something after armCount derived another from the count's (resty's
// EnableTrace, a later middleware), which resty would have left in place
// too.
func giveBackCount(r *resty.Request) {
	cur := r.Context()
	n, ok := cur.Value(countKey{}).(*count)
	if !ok || n.req != r || n.done {
		return
	}
	n.done = true
	if cur == context.Context(n) {
		r.SetContext(n.caller)
	}
}
