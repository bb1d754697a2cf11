package middleware

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"time"

	"github.com/tankhttp/tank/internal/frontdoor"
	"github.com/tankhttp/tank/internal/replay"
	"github.com/tankhttp/tank/internal/sendstate"
)

// A run is one logical request under a policy: the engine behind every
// front door. The Transport drives it itself; front doors that own their
// retry loop (adapters/backoffretry) drive it through internal/frontdoor.
//
// Concurrency: a run belongs to one request and is not safe for concurrent
// use; build one per request with policy.newRun.
type run struct {
	p          *policy
	next       http.RoundTripper
	req        *http.Request   // the caller's; never modified
	h          *Hooks          // the policy's hooks, nil when off for this request
	header     http.Header     // headers every attempt sends (req.Header unless tank adds one)
	reqCtx     context.Context // parent of every attempt (after RequestStart)
	replayable bool
	trace      bool // trace the send state of each attempt

	body    io.ReadCloser                 // body for the next attempt
	getBody func() (io.ReadCloser, error) // nil: the body cannot be sent again
	hasBody bool
	outcome *Outcome         // filled in when the request ends, if the caller asked
	rec     *replay.Recorder // records a body without GetBody as it is sent
	paid    bool             // a budget token was drawn for the retry to come
	early   bool             // the caller's context was done before the attempt was handed over
	// endLater: copies of a hedged request are still in flight when it ends;
	// RequestEnd runs once they are reaped (see hedged).
	endLater bool
	// Hedged requests: what the copies still in flight when the request
	// ended are reported as, and the round's Retry-After from dropped
	// copies (hold, or holdTooLong when one asked beyond the cap).
	lostAs      Reason
	hold        time.Duration
	holdTooLong bool

	n        int
	groupN   [3]int
	slept    time.Duration
	waitFrom time.Time // when the wait after the last attempt began
	prevWait time.Duration
	schedule func(int) (time.Duration, bool)

	last       *Attempt
	attemptCtx context.Context    // the last attempt's context
	cancel     context.CancelFunc // the last attempt's timeout, if any
	timeoutCtx context.Context    // the last attempt's timeout context, if any
	resp       *http.Response
	err        error
	done       bool
}

// newRun starts a logical request: req will be sent through next (nil:
// http.DefaultTransport) by calls to Step. newRun takes ownership of
// req.Body, as RoundTrip does.
func (p *policy) newRun(req *http.Request, next http.RoundTripper) *run {
	p.deposit(req)
	r := &run{}
	r.init(p, req, next, p.hooksOn(req))
	r.prepareBody()
	return r
}

// init sets up the request's state. hooksOn is the one answer of
// Hooks.Enabled for this request: it is asked once and carried, so an answer
// that changes between attempts cannot start an attempt's hooks without
// the other's.
func (r *run) init(p *policy, req *http.Request, next http.RoundTripper, hooksOn bool) {
	if next == nil {
		next = http.DefaultTransport
	}
	r.p, r.req, r.next, r.reqCtx, r.header = p, req, next, req.Context(), req.Header
	if r.header == nil {
		// As http.Client does: hooks and the attempt header write to it.
		r.header = http.Header{}
	}
	if p.needsKey(req) {
		r.header = req.Header.Clone()
		if r.header == nil {
			r.header = http.Header{}
		}
		r.header[idempotencyKey] = []string{newKey()}
	}
	r.replayable = p.replayable(req) || hasKey(r.header)
	if hooksOn {
		r.h = &p.hooks
	}
	r.trace = !r.replayable || r.h != nil || len(p.classifiers) > 0 || p.groupCaps != [3]int{}
	if r.h != nil && r.h.RequestStart != nil {
		if c := r.h.RequestStart(r.reqCtx, req); c != nil {
			r.reqCtx = c
		}
	}
	r.attemptCtx = r.reqCtx
}

// prepareBody sets the first attempt's body and how to get it again.
func (r *run) prepareBody() {
	req := r.req
	switch {
	case req.Body == nil || req.Body == http.NoBody:
		r.body = req.Body
	case req.GetBody != nil:
		r.body, r.getBody, r.hasBody = req.Body, req.GetBody, true
	default:
		// Kept as net/http reads it, never read ahead: a body that trickles
		// out is sent under the caller's deadline, as without tank.
		r.hasBody = true
		r.rec = replay.NewRecorder(req.Body, req.ContentLength, r.p.bufferLimit)
		r.body, r.getBody = r.rec.Body(), r.rec.Rewind
	}
}

// Step makes the next attempt and judges it. After a Retry verdict the
// attempt's response has been drained and closed, and the caller should wait
// a.Sleep before the next Step. After a Stop verdict, Result gives the
// outcome.
func (r *run) Step() *Attempt {
	resp, st, err := r.send()
	return r.conclude(resp, err, st)
}

// send makes one attempt.
func (r *run) send() (*http.Response, *sendstate.State, error) {
	r.n++
	p := r.p
	ctx := r.reqCtx
	var a *Attempt
	if r.h != nil || len(p.classifiers) > 0 {
		a = &Attempt{Request: r.req, Header: r.header, Number: r.n, Slept: r.slept, Replayable: r.replayable, BudgetTokens: -1}
		if r.h != nil && r.h.AttemptStart != nil {
			a.Header = r.header.Clone()
			ctx = a.startHook(ctx, r.h.AttemptStart)
		}
	}
	r.last = a
	r.paid = false
	var st *sendstate.State
	if r.trace {
		st = sendstate.Get()
		ctx = sendstate.With(ctx, st)
	}
	r.attemptCtx = ctx
	if p.attemptTimeout > 0 {
		ctx, r.cancel = context.WithTimeout(ctx, p.attemptTimeout)
		r.timeoutCtx = ctx
	}
	hdr := r.header
	if a != nil {
		hdr = a.Header
	}
	if p.attemptHdr != "" && r.n > 1 {
		if a == nil || r.h == nil || r.h.AttemptStart == nil {
			hdr = hdr.Clone()
		}
		hdr[p.attemptHdr] = []string{strconv.Itoa(r.n)}
	}
	areq := r.req
	if ctx != r.req.Context() || r.body != r.req.Body || len(hdr) != len(r.req.Header) || !sameMap(hdr, r.req.Header) || !r.replayable {
		areq = r.req.WithContext(ctx)
		areq.Body = r.body
		areq.Header = hdr
		if !r.replayable {
			// Without GetBody, net/http cannot re-send a request that is not
			// replayable on its own (HTTP/2 would after PROTOCOL_ERROR);
			// tank judges every re-send itself.
			areq.GetBody = nil
		}
	}
	r.body = nil
	r.early = a != nil && r.req.Context().Err() != nil
	resp, err := r.next.RoundTrip(areq)
	resp, err = checked(r.next, resp, err)
	return resp, st, err
}

// conclude classifies the attempt, decides, and applies the decision.
// st is nil when the send state was not traced.
func (r *run) conclude(resp *http.Response, err error, st *sendstate.State) *Attempt {
	a := r.last
	if a == nil {
		a = &Attempt{Request: r.req, Header: r.header, Number: r.n, Slept: r.slept, Replayable: r.replayable, BudgetTokens: -1}
		r.last = a
	}
	r.resp, r.err = resp, err
	g := r.assess(a, resp, err, st, r.early, r.timeoutCtx)
	a.Verdict, a.Reason = r.decide(a, g)
	if !r.settle(a) {
		r.finish()
	}
	return a
}

// settle applies the verdict of a, the attempt that ends its round: after
// Retry, the caps, deadline and budget may still turn it to Stop; if not,
// the next attempt's body is fetched, a's response thrown away and its wait
// counted, and settle returns true. AttemptEnd runs in between, with the
// decision final.
func (r *run) settle(a *Attempt) bool {
	if a.Verdict == Retry {
		r.scheduleRetry(a)
	}
	if a.Verdict == Retry && r.hasBody {
		r.rewind(a)
	}
	r.report(a, r.attemptCtx)
	if a.Verdict != Retry {
		return false
	}
	r.discard()
	r.slept += a.Sleep
	r.waitFrom = r.p.now()
	return true
}

// report gives a judged attempt the budget's level, unless its decision
// already did, and runs AttemptEnd with the attempt's context ctx.
func (r *run) report(a *Attempt, ctx context.Context) {
	if r.p.budget != nil && a.BudgetTokens < 0 {
		a.BudgetTokens = r.p.budget.level(r.req, r.p.now())
	}
	if r.h != nil && r.h.AttemptEnd != nil {
		a.endHook(ctx, r.h.AttemptEnd)
	}
}

// assess records what happened on attempt a (its response or error, class
// and send state) and returns the class's group. early and timeoutCtx are
// the attempt's: whether the caller's context was done before it was
// handed over, and its WithAttemptTimeout context (nil without one). st is
// nil when the send state was not traced; assess returns it to its pool.
func (r *run) assess(a *Attempt, resp *http.Response, err error, st *sendstate.State, early bool, timeoutCtx context.Context) group {
	a.Response, a.Err = resp, err
	if st != nil {
		defer sendstate.Put(st)
	}
	// The send state is evidence only if the transport reported on the
	// attempt; without it, only the error value can prove "not sent".
	known := st != nil && st.Observed()
	sent := wasSent(st, timeoutCtx)
	switch {
	case r.req.Context().Err() != nil && (err != nil || r.p.mayRetryStatus(resp.StatusCode)):
		a.Class = ClassCanceled
	case err == nil:
		a.Class = r.p.statusClass(resp.StatusCode)
	default:
		a.Class = classifyErr(err, sent, known)
	}
	g := a.Class.group()
	switch {
	case err == nil:
		a.Sent = true
	case known:
		a.Sent = sent && g != groupNotSent
	case g == groupCanceled:
		// net/http reports nothing for a request whose context was done
		// before it was handed over: it returns at once.
		a.Sent = !early
	default:
		a.Sent = g == groupSent || g == groupCanceled
	}
	if i := capIndex(g); i >= 0 {
		r.groupN[i]++
	}
	return g
}

// sameMap reports whether two headers are the same map.
func sameMap(a, b http.Header) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// newKey returns a random 128-bit Idempotency-Key in hex.
func newKey() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// rewind gets the body for the next attempt. If it cannot, the attempt's
// verdict becomes Stop and its outcome is kept for the caller.
func (r *run) rewind(a *Attempt) {
	b, err := r.getBody()
	if err != nil {
		a.Verdict, a.Reason, a.Sleep, a.SleepSource = Stop, ReasonBodyNotReplayable, 0, ""
		r.refund(a)
		if r.err != nil {
			r.err = errors.Join(r.err, &BodyError{Err: err})
		}
		return
	}
	r.body = b
}

// refund returns the budget token drawn for a retry that will not be made.
func (r *run) refund(a *Attempt) {
	if r.paid {
		r.paid = false
		a.BudgetTokens = r.p.budget.refund(r.req, r.p.now())
	}
}

// discard throws away a retried attempt's response so its connection can
// be reused.
func (r *run) discard() {
	if r.resp != nil {
		replay.Discard(r.resp.Body, r.p.drainLimit)
		r.resp = nil
	}
	if r.cancel != nil {
		r.cancel()
		r.cancel = nil
	}
}

// finish ends the logical request.
func (r *run) finish() {
	if r.done {
		return
	}
	r.done = true
	if r.last != nil {
		r.outcome.fill(r.n, r.last.Reason, r.slept)
	}
	if r.rec != nil {
		r.rec.Finish()
	}
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	if r.cancel != nil {
		if r.resp != nil {
			cb := cancelBody{ReadCloser: r.resp.Body, cancel: r.cancel}
			if rw, ok := r.resp.Body.(io.ReadWriteCloser); ok {
				// A 101 Switching Protocols body is the connection: keep it writable.
				r.resp.Body = &cancelRWBody{cb, rw}
			} else {
				r.resp.Body = &cb
			}
		} else {
			r.cancel()
		}
		r.cancel = nil
	}
	if r.h != nil && r.h.RequestEnd != nil && r.last != nil && !r.endLater {
		r.last.endHook(r.reqCtx, r.h.RequestEnd)
	}
}

// Result returns the outcome once a Step has said Stop (or Wait failed):
// the last response with a nil error when the request ended on a response,
// else an *ExhaustedError.
func (r *run) Result() (*http.Response, error) {
	if r.resp != nil {
		return r.resp, nil
	}
	reason := ReasonCanceled // no attempt made: only a cancel ends a run so
	if r.last != nil {
		reason = r.last.Reason
	}
	e := &ExhaustedError{Attempts: r.n, Reason: reason, Err: r.err}
	if reason == ReasonCanceled {
		e.cause = context.Cause(r.req.Context())
		if r.err != nil && errors.Is(r.err, e.cause) {
			e.cause = nil
		}
	}
	return nil, e
}

// Wait sleeps d unless the caller's context ends first; then it ends the
// request (Result reports ReasonCanceled) and returns false.
func (r *run) Wait(d time.Duration) bool {
	ctx := r.req.Context()
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	if ctx.Err() == nil {
		return true
	}
	if a := r.last; a != nil {
		r.cut(a)
	}
	r.finish()
	return false
}

// cut ends a request during the wait after attempt a, which becomes the
// last: Stop, ReasonCanceled, and Sleep the time actually waited.
func (r *run) cut(a *Attempt) {
	if a.Verdict == Retry {
		// The wait was cut: count what was slept, not what was planned.
		slept := min(max(r.p.now().Sub(r.waitFrom), 0), a.Sleep)
		r.slept += slept - a.Sleep
		a.Sleep = slept
	}
	a.Verdict, a.Reason = Stop, ReasonCanceled
	r.refund(a)
}

// cancelBody releases a final response's attempt timeout when its body is
// closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

// cancelRWBody is a cancelBody over a writable body (protocol switch).
type cancelRWBody struct {
	cancelBody
	w io.Writer
}

func (b *cancelRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
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
func (r *run) loop(a *Attempt) (*http.Response, error) {
	for a.Verdict == Retry {
		if !r.Wait(a.Sleep) {
			break
		}
		a = r.Step()
	}
	return r.Result()
}

// errNoHedging: a front door that owns its retry loop runs one attempt at
// a time, so it cannot send copies side by side.
var errNoHedging = &OptionError{"WithHedging", "backoffretry", "a front door that runs one attempt at a time cannot hedge: use the Transport or restyretry"}

// The engine, for front doors that own their retry loop.
func init() {
	frontdoor.Register(func(req *http.Request, next http.RoundTripper, opts ...Option) (frontdoor.Run[*Attempt], error) {
		p, err := newPolicy(opts...)
		var out *Outcome
		if err == nil {
			p, out, err = p.forRequest(req)
		}
		if err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
		if p.hedge != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, errNoHedging
		}
		r := p.newRun(req, next)
		r.outcome = out
		return r, nil
	})
}
