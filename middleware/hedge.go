package middleware

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/tankhttp/tank/internal/latency"
	"github.com/tankhttp/tank/internal/replay"
	"github.com/tankhttp/tank/internal/sendstate"
)

// hedging is the setting of WithHedging or WithAdaptiveHedging.
type hedging struct {
	max      int           // extra copies in flight at most
	delay    time.Duration // fixed delay; 0 when adaptive
	quantile float64       // adaptive: hedge past this quantile of latency
	latency  *latency.Tracker
}

// delayFor returns how long a copy of req may wait for its response
// headers before another is sent; false: do not hedge (yet).
func (h *hedging) delayFor(req *http.Request) (time.Duration, bool) {
	if h.latency == nil {
		return h.delay, true
	}
	return h.latency.Quantile(hostKey(req), h.quantile)
}

// observe records how long a first copy of req waited for its response
// headers (or, cut short because another copy won, how long it had waited:
// a lower bound that lies past the delay, so the quantile stays honest).
func (h *hedging) observe(req *http.Request, d time.Duration) {
	if h.latency != nil {
		h.latency.Observe(hostKey(req), d)
	}
}

// hedgeable reports whether req may be hedged: it is safe to send twice
// (or will be, with the key WithIdempotencyKeys adds), and its body, if
// any, can be produced again for copies sent at the same time.
func (p *policy) hedgeable(req *http.Request) bool {
	return (p.replayable(req) || p.needsKey(req)) &&
		(req.Body == nil || req.Body == http.NoBody || req.GetBody != nil)
}

// maxBuffered bounds the result buffer of a hedged request, whatever
// maxHedges and WithMaxAttempts allow.
const maxBuffered = 16

// A hedgeCopy is one copy of a hedged request.
type hedgeCopy struct {
	a          *Attempt
	req        *http.Request      // what is sent
	ctx        context.Context    // the attempt's context, as AttemptStart returned it
	cancel     context.CancelFunc // cancels the copy (and ends its attempt timeout)
	timeoutCtx context.Context    // the copy's WithAttemptTimeout context, or nil
	st         *sendstate.State
	early      bool
	start      time.Time
	resp       *http.Response
	err        error
	panicked   any // what the wrapped transport panicked with, if it did
}

// hedged runs a hedged request: rounds of copies. A round starts with one
// copy; while no copy of the round has ended the request, another copy is
// sent each time the delay passes, up to the hedging's maximum in flight,
// the attempt cap and what the budget pays for. A copy whose verdict is
// Stop ends the request and the others are cancelled. One whose verdict is
// Retry is dropped while others are in flight, and no more hedges are sent
// in its round (a failure is for the retry rules, with their waits and
// Retry-After, to answer); when it is the last, the request waits as
// without hedging and starts a new round.
//
// Hooks run on the caller's goroutine until the request ends; the copies
// still in flight then are reaped on a goroutine of their own, which runs
// their AttemptEnd and then RequestEnd. Hooks of one request never run at
// the same time.
func (r *run) hedged() (*http.Response, error) {
	// Room for the copies that can be in flight at once, within reason: a
	// copy finding it full waits for the loop or the reaper to take it.
	results := make(chan *hedgeCopy, 1+min(r.p.hedge.max, r.p.maxAttempts-1, maxBuffered))
	var inflight []*hedgeCopy
	returned := false
	defer func() {
		if !returned {
			// A panic (in the transport of a copy, a hook, a classifier) is
			// on its way to the caller, as without hedging. The copies in
			// flight are cancelled and reaped; RequestEnd does not run.
			for _, x := range inflight {
				x.cancel()
			}
			if n := len(inflight); n > 0 {
				r.endLater, r.lostAs = true, ReasonSuperseded
				go r.reap(results, n)
			}
		}
	}()
	for {
		r.hold, r.holdTooLong = 0, false
		c, err := r.launch(false)
		if err != nil {
			// The body could not be produced for the new round: the
			// previous attempt stands, with its verdict turned to Stop.
			returned = true
			return r.Result()
		}
		inflight = append(inflight, r.start(c, results))
		a, done := r.round(results, &inflight)
		if done {
			returned = true
			resp, err := r.Result()
			if len(inflight) > 0 {
				go r.reap(results, len(inflight))
			}
			return resp, err
		}
		if !r.Wait(a.Sleep) {
			returned = true
			return r.Result()
		}
	}
}

// round waits for the copies of one round, sending hedges as the delay
// passes. It returns the attempt that ended the round, and true when it
// also ended the request; the copies then still in flight have been
// cancelled.
func (r *run) round(results chan *hedgeCopy, inflight *[]*hedgeCopy) (*Attempt, bool) {
	p, h := r.p, r.p.hedge
	var (
		t    *time.Timer
		tick <-chan time.Time // nil: no more hedges this round
	)
	delay, ok := h.delayFor(r.req)
	wait := delay // until the next hedge may be sent
	if ok && r.n < p.maxAttempts {
		t = time.NewTimer(delay)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			outcome := hedgeNone
			if r.req.Context().Err() == nil {
				var c *hedgeCopy
				if c, outcome = r.hedge(); outcome == hedgeSent {
					*inflight = append(*inflight, r.start(c, results))
				}
			}
			switch {
			case outcome == hedgeUnpaid && wait < time.Hour:
				// Other requests' deposits may pay for a hedge later: ask
				// again after twice the wait, so an empty bucket is asked
				// a few times per round, not polled.
				wait *= 2
				t.Reset(wait)
			case outcome == hedgeSent && len(*inflight) <= h.max && r.n < p.maxAttempts:
				wait = delay
				t.Reset(wait)
			default:
				// No more hedges this round: none can be sent (no body,
				// the caller gave up), or no more may be (the copies in
				// flight are all there may be, the attempt cap is
				// reached). A timer firing for nothing would only spin.
				tick = nil
			}
		case c := <-results:
			a, end, done := r.judgeCopy(c, inflight)
			if end {
				return a, done
			}
			// A copy failed: hedges are for slowness, failures for the
			// retry rules. The copies in flight carry on; no more are sent.
			tick = nil
		}
	}
}

// What became of a hedge when its delay passed.
const (
	hedgeNone   = iota // none sent: the caller gave up, or the body cannot be had
	hedgeSent          // sent
	hedgeUnpaid        // none sent: the budget could not pay for it
)

// hedge prepares a hedge, paying for it from the budget.
func (r *run) hedge() (*hedgeCopy, int) {
	p := r.p
	if p.budget != nil {
		if _, ok := p.budget.withdraw(r.req, p.now()); !ok {
			return nil, hedgeUnpaid
		}
	}
	c, err := r.launch(true)
	if err != nil {
		if p.budget != nil {
			p.budget.refund(r.req, p.now())
		}
		return nil, hedgeNone
	}
	return c, hedgeSent
}

// launch prepares the next copy: its attempt, body, context and request.
// It fails only when the body cannot be produced again; for a round's first
// copy the last attempt then becomes Stop (ReasonBodyNotReplayable).
func (r *run) launch(hedge bool) (*hedgeCopy, error) {
	p := r.p
	body := r.body
	r.body = nil
	if !r.hasBody {
		body = r.req.Body // nil or http.NoBody, the same for every copy
	} else if body == nil {
		b, err := r.getBody()
		if err != nil {
			if !hedge && r.last != nil {
				a := r.last
				a.Verdict, a.Reason, a.Sleep, a.SleepSource = Stop, ReasonBodyNotReplayable, 0, ""
				r.err = errors.Join(r.err, &BodyError{Err: err})
				r.finish()
			}
			return nil, err
		}
		body = b
	}
	r.n++
	a := &Attempt{Request: r.req, Header: r.header, Number: r.n, Slept: r.slept, Replayable: true, Hedge: hedge, BudgetTokens: -1}
	ctx := r.reqCtx
	if r.h != nil && r.h.AttemptStart != nil {
		a.Header = r.header.Clone()
		ctx = a.startHook(ctx, r.h.AttemptStart)
	}
	c := &hedgeCopy{a: a, early: r.req.Context().Err() != nil}
	if r.trace {
		c.st = sendstate.Get()
		ctx = sendstate.With(ctx, c.st)
	}
	c.ctx = ctx
	ctx, c.cancel = context.WithCancel(ctx)
	if p.attemptTimeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, p.attemptTimeout)
		c.timeoutCtx = ctx
		cancel := c.cancel
		c.cancel = func() { stop(); cancel() }
	}
	hdr := a.Header
	if p.attemptHdr != "" && r.n > 1 {
		if r.h == nil || r.h.AttemptStart == nil {
			hdr = hdr.Clone()
		}
		hdr[p.attemptHdr] = []string{strconv.Itoa(r.n)}
	}
	req := r.req.WithContext(ctx)
	req.Body, req.Header = body, hdr
	c.req = req
	return c, nil
}

// start sends copy c on a goroutine of its own; it reports on results.
func (r *run) start(c *hedgeCopy, results chan<- *hedgeCopy) *hedgeCopy {
	req := c.req
	c.start = r.p.now()
	next := r.next
	go func() {
		defer func() {
			if v := recover(); v != nil {
				c.panicked, c.resp, c.err = v, nil, fmt.Errorf("tank: the wrapped transport (%T) panicked: %v", next, v)
				results <- c
			}
		}()
		resp, err := next.RoundTrip(req)
		c.resp, c.err = checked(next, resp, err)
		results <- c
	}()
	return c
}

// judgeCopy judges a copy that has returned. end reports that the round is
// over, done that the request is.
func (r *run) judgeCopy(c *hedgeCopy, inflight *[]*hedgeCopy) (a *Attempt, end, done bool) {
	p, h := r.p, r.p.hedge
	*inflight = slices.DeleteFunc(*inflight, func(x *hedgeCopy) bool { return x == c })
	if c.panicked != nil {
		// As without hedging, the panic reaches the caller unchanged
		// (hedged cancels and reaps the other copies on its way out).
		c.cancel()
		panic(c.panicked)
	}
	a = c.a
	g := r.assess(a, c.resp, c.err, c.st, c.early, c.timeoutCtx)
	now := p.now()
	if !a.Hedge && c.resp != nil {
		h.observe(r.req, now.Sub(c.start))
	}
	a.Verdict, a.Reason = r.decide(a, g)
	r.last, r.attemptCtx, r.resp, r.err, r.cancel = a, c.ctx, c.resp, c.err, c.cancel
	if a.Verdict == Retry && len(*inflight) > 0 {
		// Dropped: the copies in flight carry on. A Retry-After it
		// carries still binds the wait before the next round.
		r.holdRetryAfter(a)
		r.endCopy(c)
		r.resp, r.cancel = nil, nil
		return a, false, false
	}
	if r.settle(a) {
		return a, true, false
	}
	// a ends the request: the copies still in flight lose, canceled if a
	// is the caller's cancellation, superseded otherwise.
	r.lostAs = ReasonSuperseded
	if a.Reason == ReasonCanceled {
		r.lostAs = ReasonCanceled
	}
	for _, x := range *inflight {
		x.cancel()
		if !x.a.Hedge {
			// Cut short: it had waited at least this long.
			h.observe(r.req, now.Sub(x.start))
		}
	}
	r.endLater = len(*inflight) > 0
	r.finish()
	return a, true, true
}

// holdRetryAfter keeps what a dropped copy's Retry-After asks for: the
// wait before the next round is at least the longest asked in the round,
// and one beyond the cap stops retrying, as it would without hedging.
func (r *run) holdRetryAfter(a *Attempt) {
	d, src, ok := r.retryAfter(a)
	switch {
	case !ok:
		r.holdTooLong = true
	case src != "":
		r.hold = max(r.hold, d)
	}
}

// endCopy ends a copy that does not end the request: its budget level and
// AttemptEnd are reported, its response thrown away, its context released.
func (r *run) endCopy(c *hedgeCopy) {
	r.report(c.a, c.ctx)
	// Cancelled first: a body that stalls must not hold the request (or
	// the reaper) back. A protocol switch's body is the connection: close
	// it; reading it could block for good.
	c.cancel()
	if c.resp != nil {
		if _, raw := c.resp.Body.(io.Writer); raw || c.resp.StatusCode == http.StatusSwitchingProtocols {
			c.resp.Body.Close()
		} else {
			replay.Discard(c.resp.Body, r.p.drainLimit)
		}
	}
}

// reap waits for the n copies still in flight when the request ended,
// which were cancelled: each is reported as superseded (canceled when the
// caller gave up) and its response thrown away; then RequestEnd runs. A
// copy whose transport panicked is reported with the panic as its error:
// there is no caller left to raise it to. RequestEnd does not run when the
// request itself ended in a panic (as without hedging).
func (r *run) reap(results <-chan *hedgeCopy, n int) {
	for range n {
		c := <-results
		a := c.a
		if c.err == nil && c.resp == nil {
			c.err = ErrNilResponse // not reached: checked or recover set one
		}
		r.assess(a, c.resp, c.err, c.st, c.early, c.timeoutCtx)
		if c.err != nil {
			a.Class = ClassCanceled
		}
		a.Verdict, a.Reason = Stop, r.lostAs
		a.BudgetTokens = -1 // the level when it ends, not when it was paid for
		r.endCopy(c)
	}
	if r.h != nil && r.h.RequestEnd != nil && r.last != nil && r.done {
		r.last.endHook(r.reqCtx, r.h.RequestEnd)
	}
}
