package middleware

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"time"

	"github.com/tankhttp/tank/internal/jitter"
	"github.com/tankhttp/tank/internal/replay"
	"github.com/tankhttp/tank/internal/retryafter"
	"github.com/tankhttp/tank/internal/sendstate"
)

// A Run is one logical request under a Policy, for front doors that own
// their retry loop (adapters/backoffretry). The Transport uses the same
// machinery internally.
//
// Concurrency: a Run belongs to one request and is not safe for concurrent
// use; build one per request with Policy.NewRun.
type Run struct {
	p          *Policy
	next       http.RoundTripper
	req        *http.Request   // the caller's; never modified
	h          *Hooks          // the policy's hooks, nil when off for this request
	header     http.Header     // headers every attempt sends (req.Header unless tank adds one)
	ctx        context.Context // parent of every attempt (after RequestStart)
	replayable bool
	trace      bool // trace the send state of each attempt

	body    io.ReadCloser                 // body for the next attempt
	getBody func() (io.ReadCloser, error) // nil: the body cannot be sent again
	hasBody bool
	rec     *replay.Recorder // records a body without GetBody as it is sent
	paid    bool             // a budget token was drawn for the retry to come
	early   bool             // the caller's context was done before the attempt was handed over

	n        int
	groupN   [3]int
	slept    time.Duration
	waitFrom time.Time // when the wait after the last attempt began
	prevWait time.Duration
	schedule func(int) (time.Duration, bool)

	last   *Attempt
	actx   context.Context    // the last attempt's context
	cancel context.CancelFunc // the last attempt's timeout, if any
	tctx   context.Context    // the last attempt's timeout context, if any
	resp   *http.Response
	err    error
	done   bool
}

// NewRun starts a logical request: req will be sent through next (nil:
// http.DefaultTransport) by calls to Step. NewRun takes ownership of
// req.Body, as RoundTrip does.
func (p *Policy) NewRun(req *http.Request, next http.RoundTripper) *Run {
	p.deposit(req)
	r := &Run{}
	r.init(p, req, next, p.hooksOn(req))
	r.prepareBody()
	return r
}

// deposit credits the retry budget, if any, with a new logical request.
func (p *Policy) deposit(req *http.Request) {
	if p.budget != nil {
		p.budget.deposit(req, p.now())
	}
}

// init sets up the request's state. hooksOn is the one answer of
// Hooks.Enabled for this request: it is asked once and carried, so an answer
// that changes between attempts cannot start an attempt's hooks without
// the other's.
func (r *Run) init(p *Policy, req *http.Request, next http.RoundTripper, hooksOn bool) {
	if next == nil {
		next = http.DefaultTransport
	}
	r.p, r.req, r.next, r.ctx, r.header = p, req, next, req.Context(), req.Header
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
		if c := r.h.RequestStart(r.ctx, req); c != nil {
			r.ctx = c
		}
	}
	r.actx = r.ctx
}

// prepareBody sets the first attempt's body and how to get it again.
func (r *Run) prepareBody() {
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
func (r *Run) Step() *Attempt {
	resp, err, st := r.send()
	return r.judge(resp, err, st)
}

// send makes one attempt.
func (r *Run) send() (*http.Response, error, *sendstate.State) {
	r.n++
	p := r.p
	ctx := r.ctx
	var a *Attempt
	if r.h != nil || len(p.classifiers) > 0 {
		a = &Attempt{Request: r.req, Header: r.header, Number: r.n, Slept: r.slept, Replayable: r.replayable, BudgetTokens: -1}
		if r.h != nil && r.h.AttemptStart != nil {
			a.Header = r.header.Clone()
			ctx = a.startHook(r.h.AttemptStart, ctx)
		}
	}
	r.last = a
	r.paid = false
	var st *sendstate.State
	if r.trace {
		st = sendstate.Get()
		ctx = sendstate.With(ctx, st)
	}
	r.actx = ctx
	if p.attemptTO > 0 {
		ctx, r.cancel = context.WithTimeout(ctx, p.attemptTO)
		r.tctx = ctx
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
	return resp, err, st
}

// judge classifies the attempt, decides, and applies the decision.
// st is nil when the send state was not traced.
func (r *Run) judge(resp *http.Response, err error, st *sendstate.State) *Attempt {
	p := r.p
	a := r.last
	if a == nil {
		a = &Attempt{Request: r.req, Header: r.header, Number: r.n, Slept: r.slept, Replayable: r.replayable, BudgetTokens: -1}
		r.last = a
	}
	a.Response, a.Err = resp, err
	r.resp, r.err = resp, err
	if st != nil {
		defer sendstate.Put(st)
	}

	// The send state is evidence only if the transport reported on the
	// attempt; without it, only the error value can prove "not sent".
	known := st != nil && st.Observed()
	switch {
	case r.req.Context().Err() != nil && (err != nil || p.mayRetryStatus(resp.StatusCode)):
		a.Class = ClassCanceled
	case err == nil:
		a.Class = p.statusClass(resp.StatusCode)
	default:
		a.Class = classifyErr(err, r.sent(st), known)
	}
	g := a.Class.group()
	switch {
	case err == nil:
		a.Sent = true
	case known:
		a.Sent = r.sent(st) && g != groupNotSent
	case g == groupCanceled:
		// net/http reports nothing for a request whose context was done
		// before it was handed over: it returns at once.
		a.Sent = !r.early
	default:
		a.Sent = g == groupSent || g == groupCanceled
	}
	if i := capIndex(g); i >= 0 {
		r.groupN[i]++
	}

	a.Verdict, a.Reason = r.decide(a, g)
	if a.Verdict == Retry {
		r.schedule1(a)
	}
	if a.Verdict == Retry && r.hasBody {
		r.rewind(a)
	}
	if p.budget != nil && a.BudgetTokens < 0 {
		a.BudgetTokens = p.budget.level(r.req, p.now())
	}
	if r.h != nil && r.h.AttemptEnd != nil {
		a.endHook(r.h.AttemptEnd, r.actx)
	}
	if a.Verdict == Retry {
		r.discard()
		r.slept += a.Sleep
		r.waitFrom = p.now()
		return a
	}
	r.finish()
	return a
}

// sent reports whether the attempt may have reached the server. HTTP/2
// reports WroteHeaders from its writer goroutine, and returns without
// waiting for it when the attempt's context ends: an attempt cut by its own
// timeout after a connection was obtained may be on the wire, so it counts
// as sent. (The caller's cancellation stops retries whatever the state.)
func (r *Run) sent(st *sendstate.State) bool {
	if st == nil {
		return false
	}
	return st.Sent() || (st.Conn() && r.tctx != nil && r.tctx.Err() != nil)
}

// decide applies the classifiers, then the default rules.
func (r *Run) decide(a *Attempt, g group) (Verdict, Reason) {
	if g == groupCanceled {
		return Stop, ReasonCanceled
	}
	for _, c := range r.p.classifiers {
		if v := a.classify(c); v == Retry || v == Stop {
			return v, ReasonClassifier
		}
	}
	switch g {
	case groupNotSent:
		if a.Class == ClassRefusedStream {
			return Retry, ReasonNotProcessed
		}
		return Retry, ReasonNotSent
	case groupPermanent:
		return Stop, ReasonPermanent
	case groupStatusAny:
		return Retry, ReasonNotProcessed
	case groupSent, groupStatusReplayable:
		if r.replayable {
			return Retry, ReasonReplayable
		}
		return Stop, ReasonNotReplayable
	}
	return Stop, ReasonFinal
}

func capIndex(g group) int {
	switch g {
	case groupNotSent:
		return 0
	case groupSent:
		return 1
	case groupStatusAny, groupStatusReplayable:
		return 2
	}
	return -1
}

// schedule1 turns a Retry verdict into a wait, or into a Stop when a cap,
// the Retry-After cap or the caller's deadline forbids another attempt.
func (r *Run) schedule1(a *Attempt) {
	p := r.p
	stop := func(reason Reason) { a.Verdict, a.Reason, a.Sleep, a.SleepSource = Stop, reason, 0, "" }
	if r.n >= p.maxAttempts {
		stop(ReasonAttempts)
		return
	}
	if i := capIndex(a.Class.group()); i >= 0 && p.groupCaps[i] > 0 && r.groupN[i] >= p.groupCaps[i] {
		stop(ReasonAttempts)
		return
	}
	if r.hasBody && (r.getBody == nil || r.rec != nil && !r.rec.Replayable()) {
		stop(ReasonBodyNotReplayable)
		return
	}
	d, src, ok := r.retryAfter(a)
	if !ok {
		stop(ReasonRetryAfter)
		return
	}
	if src == "" {
		if d, ok = r.backoff(); !ok {
			stop(ReasonAttempts)
			return
		}
		src = SleepBackoff
	}
	if dl, has := r.req.Context().Deadline(); has && !p.now().Add(d).Before(dl) {
		stop(ReasonDeadline)
		return
	}
	if p.budget != nil {
		left, ok := p.budget.withdraw(r.req, p.now())
		a.BudgetTokens = left
		if !ok {
			stop(ReasonBudget)
			return
		}
		r.paid = true
	}
	a.Sleep, a.SleepSource = d, src
	if src == SleepRetryAfter {
		r.prevWait = d // decorrelated jitter builds on the wait actually taken
	}
}

// sameMap reports whether two headers are the same map.
func sameMap(a, b http.Header) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// newKey returns a random 128-bit Idempotency-Key in hex.
func newKey() string {
	var b [16]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// retryAfter reads a Retry-After header on 429 and 503. ok is false when the
// server asks for more than the cap. src is "" when there is no usable header.
func (r *Run) retryAfter(a *Attempt) (d time.Duration, src string, ok bool) {
	resp := a.Response
	if resp == nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return 0, "", true
	}
	v, has := resp.Header[retryAfterHeader]
	if !has || len(v) == 0 {
		return 0, "", true
	}
	d, err := retryafter.Parse(v[0], r.p.now())
	if err != nil {
		a.RetryAfterErr = err
		return 0, "", true
	}
	if d > r.p.retryAfter {
		return 0, "", false
	}
	return d, SleepRetryAfter, true
}

// backoff gives the wait after the current attempt from the schedule.
func (r *Run) backoff() (time.Duration, bool) {
	p := r.p
	if p.schedule != nil {
		if r.schedule == nil {
			r.schedule = p.schedule()
		}
		d, ok := r.schedule(r.n)
		if d < 0 {
			d = 0
		}
		return d, ok
	}
	var d time.Duration
	switch p.jitter {
	case JitterFull:
		d = jitter.Full(r.n, p.initial, p.max, p.rand())
	case JitterDecorrelated:
		d = jitter.Decorrelated(r.prevWait, p.initial, p.max, p.rand())
	default:
		d = jitter.Exponential(r.n, p.initial, p.max)
	}
	r.prevWait = d
	return d, true
}

// rewind gets the body for the next attempt. If it cannot, the attempt's
// verdict becomes Stop and its outcome is kept for the caller.
func (r *Run) rewind(a *Attempt) {
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
func (r *Run) refund(a *Attempt) {
	if r.paid {
		r.paid = false
		a.BudgetTokens = r.p.budget.refund(r.req, r.p.now())
	}
}

// discard throws away a retried attempt's response so its connection can
// be reused.
func (r *Run) discard() {
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
func (r *Run) finish() {
	if r.done {
		return
	}
	r.done = true
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
	if r.h != nil && r.h.RequestEnd != nil {
		r.last.endHook(r.h.RequestEnd, r.ctx)
	}
}

// Result returns the outcome once a Step has said Stop (or Wait failed):
// the last response with a nil error when the request ended on a response,
// else an *ExhaustedError.
func (r *Run) Result() (*http.Response, error) {
	if r.resp != nil {
		return r.resp, nil
	}
	a := r.last
	e := &ExhaustedError{Attempts: r.n, Reason: a.Reason, Err: r.err}
	if a.Reason == ReasonCanceled {
		e.cause = context.Cause(r.req.Context())
		if r.err != nil && errors.Is(r.err, e.cause) {
			e.cause = nil
		}
	}
	return nil, e
}

// Wait sleeps d unless the caller's context ends first; then it ends the
// request (Result reports ReasonCanceled) and returns false.
func (r *Run) Wait(d time.Duration) bool {
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
	a := r.last
	if a.Verdict == Retry {
		// The wait was cut: count what was slept, not what was planned.
		slept := min(max(r.p.now().Sub(r.waitFrom), 0), a.Sleep)
		r.slept += slept - a.Sleep
		a.Sleep = slept
	}
	a.Verdict, a.Reason = Stop, ReasonCanceled
	r.refund(a)
	r.finish()
	return false
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
