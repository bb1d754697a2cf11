package middleware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tankhttp/tank/internal/latency"
)

// The randomised state machine: one logical request per seed through
// NewTransport, against an in-memory transport that draws what happens to
// each attempt, all in virtual time (testing/synctest). Every seed checks the
// invariants listed on TestStateMachine.
//
// A third of the seeds hedge (WithHedging, or WithAdaptiveHedging with a
// tracker trained beforehand): the fake transport then serves several
// copies at once. Each call draws its fate from a random stream of its own
// (the seed and the call's number), so a seed replays the same way whatever
// the order in which its goroutines run; think times are whole milliseconds
// plus an offset of a few hundred microseconds that differs from call to
// call, and hedging delays and attempt timeouts are whole milliseconds that
// do not divide one another, so that no two events of a seed fall on the
// same instant (where a select would choose at random), but for the copies
// that the caller's deadline or cancellation cuts at once.
//
//	TANK_SM_ITERS=n   run n seeds (default smDefaultIters, -short 2000)
//	TANK_SM_BASE=n    first seed (default 1)
//	TANK_SM_SEED=n    run seed n alone and log what happened

const smDefaultIters = 10000

// What the fake transport does with one attempt.
const (
	smResp       = iota // reads the request, thinks, answers a status (maybe with Retry-After)
	smRefused           // dial refused: no connection, body closed unread
	smEarlyReset        // reset during the handshake: GetConn, no GotConn, body unread
	smAfterErr          // reads the request (full trace), thinks, then ECONNRESET or io.EOF
	smHostile           // reads the request, then ECONNRESET or io.EOF, firing no trace event at all
	smStall             // reads the request (full trace), never answers: waits for the attempt's context (also: cut while thinking)
	smNilNil            // reads the request (full trace), thinks, then returns (nil, nil)
	smPartial           // reads part of the body (full trace), then ECONNRESET or io.EOF: not processed
	smCtxDone           // the attempt's context was done when it started (never drawn)
	smKinds
)

var smKindNames = [smKinds]string{"resp", "refused", "early-reset", "after-err", "hostile", "stall", "nil-nil", "partial", "ctx-done"}

// Kinds of Retry-After header.
const (
	smRANone    = iota
	smRASecs    // "0" to "3"
	smRANeg     // "-2", "-1", "-30": not delta-seconds (RFC 9110 §10.2.3)
	smRAHuge    // beyond every cap
	smRADate    // an HTTP-date, -2s to +3s from now
	smRAGarbage // "soon", "1.5", ...
	smRAKinds
)

// Methods and their Idempotency-Key.
const (
	smKeyNone = iota
	smKeySet
	smKeyEmpty // "Idempotency-Key:" with an empty value: not a key
)

// Request body kinds.
const (
	smBodyNone    = iota
	smBodyGetBody // a counting ReadCloser with GetBody (and ContentLength)
	smBodyPlain   // a counting ReadCloser without GetBody
)

// smNumberHeader carries Attempt.Number to the fake, set by the AttemptStart
// hook of the seeds that have one.
const smNumberHeader = "X-Sm-Number"

// smCallStream is the second word of each call's random stream.
const smCallStream = 0xca11 << 32

// Mutants of the wrapped transport, for TestStateMachineSelfCheck: each
// breaks an invariant on purpose to prove its check is not vacuous.
type smMutant int

const (
	smMutNone         smMutant = iota
	smMutResend                // sends every request twice, as a transport re-sending behind tank's back
	smMutLeakBody              // never closes the request body
	smMutSlow                  // spends 3s (virtual) before each attempt, ignoring every context
	smMutDoubleClose           // closes the request body a second time
	smMutParallel              // sends a duplicate of every request at the same time, as a transport racing copies behind tank's back
	smMutLeakResp              // loses the Close of every response body it returns
	smMutHookOverlap           // acts as a hook of the request while each attempt is in flight, as a hook run on a copy's goroutine would
	smMutIgnoreCancel          // the server's think time ignores cancellation, as a copy tank forgot to cancel would run on
	smMutSerial                // serves one call at a time, the others queued, as a transport with one connection would
)

// Invariant names (failure categories).
const (
	smVPanic             = "panic"
	smVAttempts          = "more attempts than WithMaxAttempts"
	smVAfterDeadline     = "RoundTrip returned after the caller's deadline"
	smVAfterCancel       = "RoundTrip returned after the caller canceled"
	smVStartAfterDone    = "attempt started after the caller's context ended (deadline or cancel)"
	smVAttemptTimeout    = "stalled attempt outlived WithAttemptTimeout"
	smVBodyClose         = "request body not closed exactly once"
	smVGetBodyClose      = "GetBody body not closed exactly once"
	smVDupProcessed      = "non-replayable request processed more than once"
	smVDupProcessedEmpty = "POST with an empty Idempotency-Key processed more than once"
	smVBodyBytes         = "attempt body differs from the caller's body"
	smVResultShape       = "RoundTrip result is not exactly one of a response and an error"
	smVErrType           = "RoundTrip error is not an *ExhaustedError"
	smVErrAttempts       = "ExhaustedError.Attempts differs from the attempts made"
	smVRespNilBody       = "response returned with a nil Body"
	smVRespClose         = "closing the returned response body failed"
	smVStatusRange       = "status outside 100-599 judged final, not as a 5xx"
	smVClass             = "attempt classified against what happened to it"
	smVDecision          = "verdict or reason inconsistent with what happened"
	smVNotLast           = "returned response is not that of the attempt that ended the request"
	smVRespLeak          = "response body not closed exactly once"
	smVNotDrained        = "retried or losing response body not drained within the drain limit"
	smVKey               = "generated Idempotency-Key missing or not the same on every attempt"
	smVCallerHeader      = "caller's request header changed"
	smVAttemptHeader     = "attempt header wrong"
	smVCallerTrace       = "caller's ClientTrace missed a GotConn"
	smVHooks             = "hooks did not see every attempt exactly once, in order"
	smVSentFalse         = "attempt the server processed reported Sent=false"
	smVWait              = "wait between attempts differs from the Attempt.Sleep tank decided"
	smVSlept             = "Attempt.Slept differs from the waits taken"
	smVRetryAfter        = "Retry-After not applied as documented"
	smVNegRetryAfter     = "negative Retry-After not treated as malformed"
	smVBackoffRange      = "backoff wait outside [0, max]"
	smVInflight          = "more copies in flight at once than 1 + maxHedges"
	smVHedgeForbidden    = "request that may not be hedged had copies in flight at once"
	smVHedgeFlag         = "Attempt.Hedge differs from whether another copy was in flight"
	smVHedgeTiming       = "hedge sent when the rules forbid one, or none sent when they call for one"
	smVHookOverlap       = "hooks of one request ran at the same time"
	smVBudget            = "more retries and hedges than the budget held tokens, or BudgetTokens wrong"
	smVOutcome           = "Outcome differs from the attempts made"
	smVLeftInFlight      = "a copy ran on once the request had ended"
)

// smCall is what the fake saw and did on one attempt.
type smCall struct {
	n          int // the order in which calls reached the fake, from 1
	number     int // Attempt.Number, from smNumberHeader (0 without the AttemptStart hook)
	kind       int
	lat        time.Duration // think time before answering (smResp, smAfterErr, smNilNil)
	overlap    bool          // another call was in flight when this one started
	cut        bool          // the attempt's context ended the call (a stall, or cut while thinking)
	cutBy      string        // what ended that context: "caller", "timeout" (attempt timeout) or "tank"
	status     int           // smResp
	ra         string        // Retry-After sent, when raKind != smRANone
	raKind     int
	nilBody    bool // smResp with a nil Body
	respBody   *smRespBody
	start, end time.Time
	ended      bool // the call has returned
	processed  bool // the server did work for it
	read       []byte
	readFull   bool // the whole body was read (compared with the caller's)
	keys       []string
	attemptHdr []string
	gotConn    bool
}

// smRespBody is a response body that counts Close calls and sees EOF. Tank
// may close it on another goroutine (a hedged request's losers).
type smRespBody struct {
	mu     sync.Mutex
	r      *strings.Reader
	size   int
	eof    bool
	closes int
}

func (b *smRespBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *smRespBody) Close() error {
	b.mu.Lock()
	b.closes++
	b.mu.Unlock()
	return nil
}

// state returns how many times the body was closed and whether it was read
// to its end.
func (b *smRespBody) state() (closes int, eof bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closes, b.eof
}

// smReqBody is a request body that counts Close calls.
type smReqBody struct {
	io.Reader
	mu     sync.Mutex
	closes int
}

func (b *smReqBody) Close() error {
	b.mu.Lock()
	b.closes++
	b.mu.Unlock()
	return nil
}

func (b *smReqBody) closed() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closes
}

// smNoClose hides a response body's Close (smMutLeakResp).
type smNoClose struct{ io.Reader }

func (smNoClose) Close() error { return nil }

// smHold makes the fake hold a call (smMutParallel's duplicate): it closes
// entered, then waits for release or the call's context.
type smHold struct{ entered, release chan struct{} }

type smHoldKey struct{}

type smViolation struct {
	cat, msg string
}

// smEvent is one hook call: 's' AttemptStart, 'e' AttemptEnd, 'r'
// RequestEnd, with the attempt's number.
type smEvent struct {
	kind byte
	n    int
}

// smWorld is one seed: the scenario, the fake transport and what it saw.
//
// The copies of a hedged request call the fake at once, and tank's reaper
// runs hooks after RoundTrip has returned: mu guards what they record. The
// checks run with mu held, once the bubble is idle.
type smWorld struct {
	// hold is, by call number, what the Retry-After headers of the copies
	// dropped in that call's round ask of the round's wait.
	hold map[int]smRAHold

	mu   sync.Mutex
	seed uint64
	rng  *rand.Rand // the scenario's and tank's jitter: used on the caller's goroutine only
	mut  smMutant
	log  []smLine
	viol []smViolation

	method         string
	keyMode        int
	nonReplayable  bool
	bodyKind       int
	payload        []byte
	maxAttempts    int
	initial, max   time.Duration
	raCap          time.Duration
	attemptTimeout time.Duration
	bufferLimit    int64
	drainLimit     int64
	autoKey        bool
	attemptHdr     string
	hooks          int  // 0 none, 1 observe, 2 observe and tamper with a.Sleep
	startHook      bool // the observer has an AttemptStart hook that numbers attempts
	callerTrace    bool
	canEnd         bool // a stall will end: deadline, attempt timeout or cancel
	budget         bool
	budgetObj      *Budget
	groups         [3]int
	weights        [smKinds]int
	statuses       []int
	outcome        *Outcome // WithOutcome's, or nil
	outcomeAtEnd   Outcome  // *outcome when RoundTrip returned

	hedgeK     int           // maxHedges; 0: no hedging
	hedgeDelay time.Duration // WithHedging's delay (0 when adaptive)
	adaptive   bool          // WithAdaptiveHedging
	quantile   float64
	training   int           // latencies the adaptive tracker learnt before the request
	firstDelay time.Duration // the delay of the first round: WithHedging's, or the trained quantile
	delayKnown bool          // false: adaptive, and the tracker has too few latencies to hedge
	hedged     bool          // hedging is on and the request may be hedged
	latUnit    time.Duration
	slowPct    int // share of slow think times, in percent

	t0            time.Time
	deadline      time.Time // zero: none
	cancelAt      time.Time // zero: none
	callerCtx     context.Context
	calls         []*smCall
	inflight      int // calls in the fake now
	maxInflight   int
	firedGotConn  atomic.Int64
	callerGotConn atomic.Int64
	inHook        atomic.Int32 // hook calls running now
	recs          []Attempt    // copies, as the first AttemptEnd hook saw them
	events        []smEvent
	reqEnd        Attempt // as RequestEnd saw it
	requestEnds   int
	tampered      int
}

// smLine is a line of a seed's log, formatted only if it is shown.
type smLine struct {
	format string
	args   []any
}

func (w *smWorld) logf(format string, args ...any) {
	w.log = append(w.log, smLine{format, args})
}

// smLog formats a seed's log.
func smLog(lines []smLine) string {
	var b strings.Builder
	for i, l := range lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, l.format, l.args...)
	}
	return b.String()
}

func (w *smWorld) violate(cat, format string, args ...any) {
	w.viol = append(w.viol, smViolation{cat, fmt.Sprintf(format, args...)})
}

// unlocked runs f with w.mu released: the fake blocks only so.
func (w *smWorld) unlocked(f func()) {
	w.mu.Unlock()
	defer w.mu.Lock()
	f()
}

func (w *smWorld) at(t time.Time) time.Duration { return t.Sub(w.t0) }

func smPick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

// hookEnter marks a hook call as running until the returned func is
// called, and reports one that starts while another runs. It yields once,
// to give a concurrent hook call the chance to show.
func (w *smWorld) hookEnter(name string) func() {
	if n := w.inHook.Add(1); n != 1 {
		w.mu.Lock()
		w.violate(smVHookOverlap, "%s began while %d other hook call(s) ran", name, n-1)
		w.mu.Unlock()
	}
	runtime.Gosched()
	return func() { w.inHook.Add(-1) }
}

// fire calls the attempt's client trace as net/http does: GetConn, then
// (conn) GotConn and WroteHeaders.
func (w *smWorld) fire(ctx context.Context, c *smCall, conn bool) {
	tr := httptrace.ContextClientTrace(ctx)
	if tr == nil {
		return
	}
	if tr.GetConn != nil {
		tr.GetConn("api.test:80")
	}
	if !conn {
		return
	}
	if tr.GotConn != nil {
		tr.GotConn(httptrace.GotConnInfo{})
		w.firedGotConn.Add(1)
		c.gotConn = true
	}
	if tr.WroteHeaders != nil {
		tr.WroteHeaders()
	}
}

// readBody reads the attempt's body in full and closes it, as the server
// and net/http would.
func (w *smWorld) readBody(req *http.Request, c *smCall) {
	if req.Body == nil {
		c.readFull = true
		return
	}
	b, err := io.ReadAll(req.Body)
	c.read, c.readFull = b, err == nil
	req.Body.Close()
}

func smCloseBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

func (w *smWorld) draw(rng *rand.Rand) int {
	total := 0
	for _, x := range w.weights {
		total += x
	}
	x := rng.IntN(total)
	k := 0
	for ; x >= w.weights[k]; k++ {
		x -= w.weights[k]
	}
	if k == smStall && !w.canEnd {
		k = smResp
	}
	return k
}

// latency draws the think time of call n: none without a latency unit;
// otherwise fast (under one unit) or slow (one to five units), in whole
// milliseconds, plus 313µs + 17µs·n so that no two calls end together and
// no call ends on a hedging tick.
func (w *smWorld) latency(rng *rand.Rand, n int) time.Duration {
	if w.latUnit == 0 {
		return 0
	}
	u := int(w.latUnit / time.Millisecond)
	ms := rng.IntN(u)
	if rng.IntN(100) < w.slowPct {
		ms += u * (1 + rng.IntN(4))
	}
	return time.Duration(ms)*time.Millisecond + time.Duration(313+17*(n%40))*time.Microsecond
}

// cause says what ended a call's context.
func (w *smWorld) cause(ctx context.Context) string {
	switch {
	case w.callerCtx.Err() != nil:
		return "caller"
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return "timeout"
	}
	return "tank"
}

func (w *smWorld) retryAfter(rng *rand.Rand, c *smCall) {
	c.raKind = rng.IntN(smRAKinds)
	switch c.raKind {
	case smRASecs:
		c.ra = strconv.Itoa(rng.IntN(4))
	case smRANeg:
		c.ra = smPick(rng, "-2", "-1", "-30")
	case smRAHuge:
		c.ra = smPick(rng, "99999999999999999999", "86400000")
	case smRADate:
		c.ra = time.Now().Add(time.Duration(rng.IntN(6)-2) * time.Second).UTC().Format(http.TimeFormat)
	case smRAGarbage:
		c.ra = smPick(rng, "soon", "1.5", "0x10", "", "3 seconds")
	}
}

// smSleep waits d unless ctx ends first; false: ctx ended.
func smSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// RoundTrip is the fake wrapped transport. It may serve several copies of
// a hedged request at once; each call draws its fate from its own stream.
func (w *smWorld) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	w.mu.Lock()
	defer w.mu.Unlock()
	c := &smCall{n: len(w.calls) + 1, start: time.Now(), overlap: w.inflight > 0}
	w.calls = append(w.calls, c)
	w.inflight++
	w.maxInflight = max(w.maxInflight, w.inflight)
	defer func() {
		c.end, c.ended = time.Now(), true
		w.inflight--
		cut := ""
		if c.cutBy != "" {
			cut = " cut by " + c.cutBy
		}
		w.logf("  attempt %d (#%d) %v-%v: %s%s think=%v overlap=%v status=%d ra=%q nilBody=%v processed=%v body=%d/%v key=%q",
			c.n, c.number, w.at(c.start), w.at(c.end), smKindNames[c.kind], cut, c.lat, c.overlap, c.status, c.ra, c.nilBody, c.processed, len(c.read), c.readFull, c.keys)
	}()
	if err := w.callerCtx.Err(); err != nil {
		w.violate(smVStartAfterDone, "attempt %d started at %v; caller's context: %v", c.n, w.at(c.start), err)
	} else if !w.deadline.IsZero() && !c.start.Before(w.deadline) {
		w.violate(smVStartAfterDone, "attempt %d started at %v, deadline %v", c.n, w.at(c.start), w.at(w.deadline))
	}
	c.keys = slices.Clone(req.Header[idempotencyKey])
	if w.attemptHdr != "" {
		c.attemptHdr = slices.Clone(req.Header[w.attemptHdr])
	}
	if v := req.Header.Get(smNumberHeader); v != "" {
		c.number, _ = strconv.Atoi(v)
	}
	if h, ok := ctx.Value(smHoldKey{}).(*smHold); ok {
		close(h.entered)
		w.unlocked(func() {
			select {
			case <-h.release:
			case <-ctx.Done():
			}
		})
	}
	if ctx.Err() != nil {
		c.kind, c.cutBy = smCtxDone, w.cause(ctx)
		smCloseBody(req)
		return nil, ctx.Err()
	}
	rng := rand.New(rand.NewPCG(w.seed, smCallStream|uint64(c.n)))
	c.kind = w.draw(rng)
	lat := w.latency(rng, c.n)
	reset := func() error {
		if rng.IntN(2) == 0 {
			return io.EOF
		}
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	}
	// think waits the call's think time; false: its context ended first,
	// and the call became a stall.
	think := func() bool {
		c.lat = lat
		if lat == 0 {
			return true
		}
		ok := true
		w.unlocked(func() {
			if w.mut == smMutIgnoreCancel {
				time.Sleep(lat)
				return
			}
			ok = smSleep(ctx, lat)
		})
		if !ok {
			c.kind, c.cut, c.cutBy, c.status = smStall, true, w.cause(ctx), 0
		}
		return ok
	}
	switch c.kind {
	case smRefused:
		if rng.IntN(2) == 0 {
			w.fire(ctx, c, false)
		}
		smCloseBody(req)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	case smEarlyReset:
		w.fire(ctx, c, false)
		smCloseBody(req)
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	case smAfterErr:
		w.fire(ctx, c, true)
		w.readBody(req, c)
		c.processed = true
		if !think() {
			return nil, ctx.Err()
		}
		return nil, reset()
	case smHostile:
		w.readBody(req, c)
		c.processed = true
		return nil, reset()
	case smStall:
		w.fire(ctx, c, true)
		w.readBody(req, c)
		c.processed = true
		w.unlocked(func() { <-ctx.Done() })
		c.cut, c.cutBy = true, w.cause(ctx)
		return nil, ctx.Err()
	case smNilNil:
		w.fire(ctx, c, true)
		w.readBody(req, c)
		c.processed = true
		if !think() {
			return nil, ctx.Err()
		}
		return nil, nil
	case smPartial:
		// The connection breaks while the body is sent: the server never
		// saw the whole request. A retry must replay every byte.
		w.fire(ctx, c, true)
		if req.Body != nil {
			n := 0
			if len(w.payload) > 0 {
				n = rng.IntN(len(w.payload))
			}
			c.read, _ = io.ReadAll(io.LimitReader(req.Body, int64(n)))
			req.Body.Close()
		}
		return nil, reset()
	}
	// smResp: the server works on it while it thinks.
	w.fire(ctx, c, true)
	w.readBody(req, c)
	c.processed = true
	if !think() {
		return nil, ctx.Err()
	}
	c.status = w.statuses[rng.IntN(len(w.statuses))]
	c.processed = !defaultAnyStatus.has(c.status)
	if c.status == 429 || c.status == 503 {
		if rng.IntN(10) < 6 {
			w.retryAfter(rng, c)
		}
	} else if rng.IntN(10) == 0 {
		w.retryAfter(rng, c)
	}
	h := http.Header{"X-Sm-Attempt": {strconv.Itoa(c.n)}}
	if c.raKind != smRANone {
		h[retryAfterHeader] = []string{c.ra}
	}
	resp := &http.Response{StatusCode: c.status, Status: fmt.Sprintf("%d %s", c.status, http.StatusText(c.status)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, Request: req}
	if rng.IntN(25) == 0 {
		c.nilBody = true
	} else {
		size := rng.IntN(40)
		c.respBody = &smRespBody{r: strings.NewReader(strings.Repeat("r", size)), size: size}
		resp.Body, resp.ContentLength = c.respBody, int64(size)
	}
	return resp, nil
}

// smMutRT sits between tank and the fake and breaks something on purpose.
type smMutRT struct {
	m    smMutant
	w    *smWorld
	conn chan struct{} // smMutSerial: the one connection, held by the call in the fake
}

func (m smMutRT) RoundTrip(req *http.Request) (*http.Response, error) {
	next := m.w
	// dup returns a copy of req with a body of its own.
	dup := func() *http.Request {
		r2 := req.Clone(req.Context())
		if req.GetBody != nil {
			r2.Body, _ = req.GetBody()
		} else if req.Body != nil {
			r2.Body = http.NoBody
		}
		return r2
	}
	switch m.m {
	case smMutResend:
		r2 := dup()
		if resp, err := next.RoundTrip(req); err == nil && resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return next.RoundTrip(r2)
	case smMutLeakBody:
		if req.Body != nil {
			r2 := *req
			r2.Body = io.NopCloser(req.Body)
			req = &r2
		}
	case smMutSlow:
		time.Sleep(3 * time.Second)
	case smMutDoubleClose:
		resp, err := next.RoundTrip(req)
		smCloseBody(req)
		return resp, err
	case smMutParallel:
		// The duplicate is in flight (held by the fake) while the original
		// is sent.
		h := &smHold{entered: make(chan struct{}), release: make(chan struct{})}
		r2 := dup()
		r2 = r2.WithContext(context.WithValue(req.Context(), smHoldKey{}, h))
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := next.RoundTrip(r2); err == nil && resp != nil && resp.Body != nil {
				resp.Body.Close()
			}
		}()
		<-h.entered
		resp, err := next.RoundTrip(req)
		close(h.release)
		<-done
		return resp, err
	case smMutLeakResp:
		resp, err := next.RoundTrip(req)
		if resp != nil && resp.Body != nil {
			resp.Body = smNoClose{resp.Body}
		}
		return resp, err
	case smMutHookOverlap:
		defer m.w.hookEnter("the transport")()
	case smMutSerial:
		select {
		case m.conn <- struct{}{}:
			defer func() { <-m.conn }()
		case <-req.Context().Done():
			smCloseBody(req)
			return nil, req.Context().Err()
		}
	}
	return next.RoundTrip(req)
}

// smResult is what one seed reports to the test.
type smResult struct {
	viol   []smViolation
	log    []smLine
	tally  map[string]int
	panics bool
}

// smRun runs one seed. It must be called inside a synctest bubble.
func smRun(seed uint64, mut smMutant) (res smResult) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	w := &smWorld{seed: seed, rng: rng, mut: mut, t0: time.Now()}
	tally := map[string]int{}
	res.tally = tally
	defer func() {
		w.mu.Lock()
		res.viol, res.log = slices.Clone(w.viol), slices.Clone(w.log)
		w.mu.Unlock()
	}()

	// The request.
	switch x := rng.IntN(100); {
	case x < 20:
		w.method = http.MethodGet
	case x < 35:
		w.method = http.MethodPut
	case x < 60:
		w.method = http.MethodPost
	case x < 75:
		w.method, w.keyMode = http.MethodPost, smKeySet
	case x < 92:
		w.method = http.MethodPatch
	default:
		w.method, w.keyMode = http.MethodPost, smKeyEmpty
	}
	w.bodyKind = rng.IntN(3)
	if w.bodyKind != smBodyNone {
		w.payload = bytes.Repeat([]byte("p"), rng.IntN(48))
		for i := range w.payload {
			w.payload[i] = byte('a' + rng.IntN(26))
		}
	}

	// The options.
	w.maxAttempts = 1 + rng.IntN(6)
	w.initial = smPick(rng, 0, time.Millisecond, 10*time.Millisecond, 100*time.Millisecond, time.Second)
	w.max = w.initial * smPick[time.Duration](rng, 1, 2, 10)
	if w.initial == 0 {
		w.max = smPick(rng, 0, time.Second)
	}
	jit := Jitter(rng.IntN(3))
	opts := []Option{WithMaxAttempts(w.maxAttempts), WithBackoff(w.initial, w.max), WithJitter(jit)}
	w.raCap = defaultRetryAfterCap
	if rng.IntN(2) == 0 {
		w.raCap = smPick(rng, 0, time.Second, 2*time.Second, 5*time.Second)
		opts = append(opts, WithRetryAfterCap(w.raCap))
	}
	if rng.IntN(10) < 4 {
		// Whole milliseconds that no hedging delay divides: an attempt
		// timeout never ends on a hedging tick.
		w.attemptTimeout = smPick(rng, 50*time.Millisecond, 500*time.Millisecond, 2*time.Second)
		opts = append(opts, WithAttemptTimeout(w.attemptTimeout))
	}
	w.bufferLimit = defaultBufferLimit
	if rng.IntN(10) < 3 {
		w.bufferLimit = smPick[int64](rng, 0, 8, 16, 32)
		opts = append(opts, WithBufferLimit(w.bufferLimit))
	}
	w.drainLimit = defaultDrainLimit
	if rng.IntN(5) == 0 {
		w.drainLimit = smPick[int64](rng, 0, 8, 32)
		opts = append(opts, WithDrainLimit(w.drainLimit))
	}
	var budgetDesc string
	if rng.IntN(5) == 0 {
		ratio, perSec := smPick(rng, 0, 0.1, 0.5), smPick(rng, 0.0, 1)
		b, err := NewBudget(ratio, perSec, nil)
		if err != nil {
			panic(err)
		}
		budgetDesc, w.budget, w.budgetObj = b.String(), true, b
		opts = append(opts, WithBudget(b))
	}
	if rng.IntN(10) == 0 {
		w.groups = [3]int{rng.IntN(3), rng.IntN(3), rng.IntN(3)}
		opts = append(opts, WithGroupAttempts(w.groups[0], w.groups[1], w.groups[2]))
	}
	if rng.IntN(7) == 0 {
		w.autoKey = true
		opts = append(opts, WithIdempotencyKeys(true))
	}
	if rng.IntN(5) == 0 {
		w.attemptHdr = "X-Attempt"
		opts = append(opts, WithAttemptHeader(w.attemptHdr))
	}
	switch x := rng.IntN(10); {
	case x < 5:
	case x < 8:
		w.hooks = 1
	default:
		w.hooks = 2
	}
	if w.hooks > 0 {
		h := Hooks{
			AttemptEnd: func(_ context.Context, a *Attempt) {
				defer w.hookEnter("AttemptEnd")()
				w.mu.Lock()
				defer w.mu.Unlock()
				w.recs = append(w.recs, *a)
				w.events = append(w.events, smEvent{'e', a.Number})
			},
			RequestEnd: func(_ context.Context, a *Attempt) {
				defer w.hookEnter("RequestEnd")()
				w.mu.Lock()
				defer w.mu.Unlock()
				w.requestEnds++
				w.reqEnd = *a
				w.events = append(w.events, smEvent{'r', a.Number})
			},
		}
		if w.startHook = rng.IntN(2) == 0; w.startHook {
			h.AttemptStart = func(_ context.Context, a *Attempt) context.Context {
				defer w.hookEnter("AttemptStart")()
				a.Header.Set(smNumberHeader, strconv.Itoa(a.Number))
				w.mu.Lock()
				defer w.mu.Unlock()
				w.events = append(w.events, smEvent{'s', a.Number})
				return nil
			}
		}
		opts = append(opts, WithHooks(h))
	}
	var tamperDesc string
	if w.hooks == 2 {
		tamper := rng.IntN(4)
		tamperDesc = [...]string{"0", "1h", "-1s", "2x+1ms"}[tamper]
		opts = append(opts, WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) {
			defer w.hookEnter("AttemptEnd (tamper)")()
			if a.Verdict != Retry {
				return
			}
			w.mu.Lock()
			w.tampered++
			w.mu.Unlock()
			switch tamper {
			case 0:
				a.Sleep = 0
			case 1:
				a.Sleep = time.Hour
			case 2:
				a.Sleep = -time.Second
			default:
				a.Sleep = 2*a.Sleep + time.Millisecond
			}
		}}))
	}
	// Hedging, on a third of the seeds: think times in units of the delay
	// (fast: under one; slow: one to five), so that hedges fire.
	var hedgeDesc string
	switch x := rng.IntN(12); {
	case x < 3:
		w.hedgeDelay = smPick(rng, 3*time.Millisecond, 7*time.Millisecond, 13*time.Millisecond, 29*time.Millisecond)
		w.hedgeK = 1 + rng.IntN(3)
		w.latUnit = w.hedgeDelay
		opts = append(opts, WithHedging(w.hedgeDelay, w.hedgeK))
		hedgeDesc = fmt.Sprintf("WithHedging(%v, %d)", w.hedgeDelay, w.hedgeK)
	case x < 4:
		w.adaptive, w.hedgeK = true, 1+rng.IntN(3)
		w.quantile = smPick(rng, 0.5, 0.75, 0.9, 0.95)
		w.latUnit = smPick(rng, 5*time.Millisecond, 10*time.Millisecond, 20*time.Millisecond)
		w.training = smPick(rng, 0, 60, 200)
		opts = append(opts, WithAdaptiveHedging(w.quantile, w.hedgeK))
		hedgeDesc = fmt.Sprintf("WithAdaptiveHedging(%v, %d) trained on %d", w.quantile, w.hedgeK, w.training)
	default:
		if rng.IntN(5) == 0 {
			w.latUnit = 10 * time.Millisecond
		}
	}
	if w.latUnit > 0 {
		w.slowPct = smPick(rng, 20, 50, 80)
	}
	if w.hedgeK > 0 && rng.IntN(3) < 2 {
		// Most hedging seeds send a request that may be hedged: a GET, a PUT
		// or a POST with a key, with no body or one GetBody can produce.
		switch rng.IntN(3) {
		case 0:
			w.method, w.keyMode = http.MethodGet, smKeyNone
		case 1:
			w.method, w.keyMode = http.MethodPut, smKeyNone
		default:
			w.method, w.keyMode = http.MethodPost, smKeySet
		}
		if w.bodyKind == smBodyPlain {
			w.bodyKind = smBodyGetBody
		}
	}
	// WithIdempotencyKeys gives a POST or PATCH without a key (an empty one
	// is none) a key of its own: the server can then deduplicate it.
	w.nonReplayable = (w.method == http.MethodPost || w.method == http.MethodPatch) &&
		w.keyMode != smKeySet && !w.autoKey
	// Only a request safe to send twice, whose body is absent or has
	// GetBody, is hedged.
	w.hedged = w.hedgeK > 0 && !w.nonReplayable && w.bodyKind != smBodyPlain

	// What the fake transport does: a mix drawn per seed.
	w.weights = [smKinds]int{smResp: 10 + rng.IntN(30)}
	for k := smRefused; k <= smPartial; k++ {
		w.weights[k] = rng.IntN(8)
	}
	w.weights[smNilNil] = rng.IntN(2)
	finals := 1 + rng.IntN(10)
	for _, s := range []int{429, 500, 502, 503, 504} {
		for range 1 + rng.IntN(4) {
			w.statuses = append(w.statuses, s)
		}
	}
	for range finals {
		w.statuses = append(w.statuses, 200)
	}
	w.statuses = append(w.statuses, 404)
	if rng.IntN(4) == 0 {
		w.statuses = append(w.statuses, smPick(rng, 999, 600, 0))
	}

	// The caller's context.
	ctx := context.Background()
	if rng.IntN(2) == 0 {
		d := time.Millisecond + time.Duration(rng.Int64N(int64(10*time.Second)))
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
		w.deadline = w.t0.Add(d)
	}
	if rng.IntN(4) == 0 {
		d := time.Millisecond + time.Duration(rng.Int64N(int64(10*time.Second)))
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		timer := time.AfterFunc(d, cancel)
		defer timer.Stop()
		w.cancelAt = w.t0.Add(d)
	}
	if rng.IntN(10) < 3 {
		w.callerTrace = true
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { w.callerGotConn.Add(1) }})
	}
	if rng.IntN(3) == 0 {
		w.outcome = &Outcome{}
		ctx = WithOutcome(ctx, w.outcome)
	}
	w.callerCtx = ctx
	w.canEnd = !w.deadline.IsZero() || !w.cancelAt.IsZero() || w.attemptTimeout > 0

	req, err := http.NewRequestWithContext(ctx, w.method, "http://api.test/sm", nil)
	if err != nil {
		panic(err)
	}
	switch w.keyMode {
	case smKeySet:
		req.Header.Set(idempotencyKey, fmt.Sprintf("key-%d", seed))
	case smKeyEmpty:
		req.Header[idempotencyKey] = []string{""}
	}
	var body *smReqBody
	var getBodies []*smReqBody
	switch w.bodyKind {
	case smBodyGetBody:
		body = &smReqBody{Reader: bytes.NewReader(w.payload)}
		req.Body, req.ContentLength = body, int64(len(w.payload))
		req.GetBody = func() (io.ReadCloser, error) {
			b := &smReqBody{Reader: bytes.NewReader(w.payload)}
			w.mu.Lock()
			getBodies = append(getBodies, b)
			w.mu.Unlock()
			return b, nil
		}
	case smBodyPlain:
		body = &smReqBody{Reader: io.MultiReader(bytes.NewReader(w.payload))}
		req.Body = body
		if rng.IntN(2) == 0 {
			req.ContentLength = int64(len(w.payload))
		}
	}
	headerBefore := req.Header.Clone()

	w.logf("seed %d mutant %d: %s key=%d body=%d(%d bytes, ContentLength %d) attempts=%d backoff=%v..%v jitter=%d raCap=%v attemptTO=%v buffer=%d drain=%d budget=%q groups=%v autoKey=%v attemptHdr=%q hooks=%d startHook=%v tamper=%s deadline=%v cancel=%v callerTrace=%v outcome=%v hedging=%q hedged=%v think=%v/%d%% weights=%v statuses=%v",
		seed, mut, w.method, w.keyMode, w.bodyKind, len(w.payload), req.ContentLength, w.maxAttempts, w.initial, w.max, jit,
		w.raCap, w.attemptTimeout, w.bufferLimit, w.drainLimit, budgetDesc, w.groups, w.autoKey, w.attemptHdr, w.hooks, w.startHook, tamperDesc,
		smRel(w, w.deadline), smRel(w, w.cancelAt), w.callerTrace, w.outcome != nil, hedgeDesc, w.hedged, w.latUnit, w.slowPct, w.weights, w.statuses)

	var next http.RoundTripper = w
	if mut != smMutNone {
		next = smMutRT{m: mut, w: w, conn: make(chan struct{}, 1)}
	}
	tr := NewTransport(next, opts...)
	if tr.p == nil {
		panic(tr.err)
	}
	tr.p.rand = rng.Float64 // jitter from the seed
	w.firstDelay, w.delayKnown = w.hedgeDelay, true
	if w.adaptive {
		// The tracker has seen the host's latencies, from the same mix.
		trng := rand.New(rand.NewPCG(seed, 0x7a1e))
		for i := range w.training {
			tr.p.hedge.latency.Observe(req.URL.Host, w.latency(trng, i))
		}
		w.firstDelay, w.delayKnown = tr.p.hedge.latency.Quantile(req.URL.Host, w.quantile)
		w.logf("  adaptive delay %v (known %v)", w.firstDelay, w.delayKnown)
	}

	var resp *http.Response
	func() {
		defer func() {
			if r := recover(); r != nil {
				res.panics = true
				w.mu.Lock()
				w.violate(smVPanic, "%v\n%s", r, smStack())
				w.mu.Unlock()
			}
		}()
		resp, err = tr.RoundTrip(req)
	}()
	ret := time.Now()
	if res.panics {
		return res
	}
	if w.outcome != nil {
		// Filled in before RoundTrip returns (the race detector minds).
		w.outcomeAtEnd = *w.outcome
	}
	w.mu.Lock()
	w.logf("  returned at %v: resp=%v err=%v", w.at(ret), smStatus(resp), err)
	w.mu.Unlock()

	// The caller reads and closes the response, then every goroutine of
	// the request settles: the copies tank cancelled, its reaper.
	if resp != nil && resp.Body != nil {
		func() {
			defer func() {
				if r := recover(); r != nil {
					w.mu.Lock()
					w.violate(smVRespClose, "reading or closing the body panicked: %v\n%s", r, smStack())
					w.mu.Unlock()
				}
			}()
			io.Copy(io.Discard, resp.Body)
			if err := resp.Body.Close(); err != nil {
				w.mu.Lock()
				w.violate(smVRespClose, "Close() = %v", err)
				w.mu.Unlock()
			}
		}()
	}
	synctest.Wait()

	w.mu.Lock()
	func() {
		defer func() {
			if r := recover(); r != nil {
				w.violate(smVPanic, "the checks panicked: %v\n%s", r, smStack())
			}
		}()
		w.check(req, resp, err, ret, body, getBodies, headerBefore, tally)
	}()
	w.mu.Unlock()
	if mut != smMutNone {
		// A broken transport may still be at work: let it finish, so that
		// the bubble can end.
		time.Sleep(time.Hour)
	}
	return res
}

func smRel(w *smWorld, t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return w.at(t).String()
}

func smStatus(resp *http.Response) string {
	if resp == nil {
		return "nil"
	}
	return strconv.Itoa(resp.StatusCode)
}

// smStack returns the panic's stack from the first frame of the panic on.
func smStack() string {
	s := string(debug.Stack())
	if i := strings.Index(s, "panic("); i >= 0 {
		s = s[i:]
	}
	lines := strings.Split(s, "\n")
	return strings.Join(lines[:min(len(lines), 16)], "\n")
}

// check applies every invariant once RoundTrip has returned at ret, the
// caller has closed the response, and the bubble is idle. w.mu is held.
func (w *smWorld) check(req *http.Request, resp *http.Response, err error, ret time.Time,
	body *smReqBody, getBodies []*smReqBody, headerBefore http.Header, tally map[string]int) {
	calls := w.calls
	last := len(calls)

	// Attempts.
	if last > w.maxAttempts {
		w.violate(smVAttempts, "%d attempts; WithMaxAttempts(%d)", last, w.maxAttempts)
	}

	// Time: never past the deadline or the cancellation.
	if !w.deadline.IsZero() && ret.After(w.deadline) {
		w.violate(smVAfterDeadline, "returned at %v; deadline %v", w.at(ret), w.at(w.deadline))
	}
	if !w.cancelAt.IsZero() && ret.After(w.cancelAt) {
		w.violate(smVAfterCancel, "returned at %v; canceled at %v", w.at(ret), w.at(w.cancelAt))
	}
	for _, c := range calls {
		if c.kind == smStall && w.attemptTimeout > 0 && c.end.Sub(c.start) > w.attemptTimeout {
			w.violate(smVAttemptTimeout, "attempt %d stalled %v; attempt timeout %v", c.n, c.end.Sub(c.start), w.attemptTimeout)
		}
	}

	// Copies: how many at once; none running on once the request ended
	// (losers are cancelled when it ends, and the fake honours that at once).
	maxCopies := 1
	if w.hedged {
		maxCopies += w.hedgeK
	}
	if w.maxInflight > maxCopies {
		cat := smVInflight
		if !w.hedged {
			cat = smVHedgeForbidden
		}
		w.violate(cat, "%d copies in flight at once; at most %d (hedging %d, hedgeable %v)", w.maxInflight, maxCopies, w.hedgeK, w.hedged)
	}
	for _, c := range calls {
		if !c.ended || c.end.After(ret) {
			w.violate(smVLeftInFlight, "attempt %d (%s, started at %v) still in flight or ended later; RoundTrip returned at %v and the caller closed the response", c.n, smKindNames[c.kind], w.at(c.start), w.at(ret))
		}
	}

	// The result.
	var ee *ExhaustedError
	switch {
	case (resp == nil) == (err == nil):
		w.violate(smVResultShape, "RoundTrip = %v, %v", smStatus(resp), err)
	case err != nil && !errors.As(err, &ee):
		w.violate(smVErrType, "error %v (%T)", err, err)
	case ee != nil && ee.Attempts != last:
		w.violate(smVErrAttempts, "ExhaustedError.Attempts = %d; %d attempts made (%v)", ee.Attempts, last, err)
	case ee != nil && last > 0 && w.hooks == 0:
		w.checkEndReason(ee.Reason, ret)
	}
	winner := 0 // the attempt whose response was returned
	if resp != nil {
		got := resp.Header.Get("X-Sm-Attempt")
		winner, _ = strconv.Atoi(got)
		switch {
		case winner < 1 || winner > last:
			w.violate(smVNotLast, "returned the response of attempt %q; %d attempts made", got, last)
			winner = 0
		case !w.hedged && winner != last:
			w.violate(smVNotLast, "returned the response of attempt %q; %d attempts made", got, last)
		case !calls[winner-1].end.Equal(ret):
			w.violate(smVNotLast, "returned the response of attempt %d, which came back at %v; RoundTrip returned at %v", winner, w.at(calls[winner-1].end), w.at(ret))
		}
		if resp.Body == nil {
			w.violate(smVRespNilBody, "status %d", resp.StatusCode)
		}
	}

	// Request bodies: each closed exactly once.
	if body != nil {
		if n := body.closed(); n != 1 {
			w.violate(smVBodyClose, "the caller's body closed %d times", n)
		}
	}
	for i, b := range getBodies {
		if n := b.closed(); n != 1 {
			w.violate(smVGetBodyClose, "GetBody body %d of %d closed %d times", i+1, len(getBodies), n)
		}
	}

	// Response bodies: each closed exactly once, the losers' too; the
	// others than the one returned drained.
	for _, c := range calls {
		if c.respBody == nil {
			continue
		}
		final := c.n == winner
		closes, eof := c.respBody.state()
		if closes != 1 {
			w.violate(smVRespLeak, "attempt %d's %d response body (final %v) closed %d times", c.n, c.status, final, closes)
		}
		if !final && int64(c.respBody.size) <= w.drainLimit && !eof {
			w.violate(smVNotDrained, "attempt %d's %d response body of %d bytes not read to EOF; drain limit %d", c.n, c.status, c.respBody.size, w.drainLimit)
		}
	}

	// Processing: a request that is not replayable is processed at most once
	// (429, 502 and 503 answers say the server did no work).
	processed := 0
	for _, c := range calls {
		if c.processed {
			processed++
		}
	}
	if w.nonReplayable && processed > 1 {
		cat := smVDupProcessed
		if w.keyMode == smKeyEmpty {
			cat = smVDupProcessedEmpty
		}
		w.violate(cat, "%s processed by %d of %d attempts", w.method, processed, last)
	}

	// Body bytes.
	for _, c := range calls {
		if c.readFull && !bytes.Equal(c.read, w.payload) || c.kind == smPartial && !bytes.HasPrefix(w.payload, c.read) {
			w.violate(smVBodyBytes, "attempt %d read %q (in full: %v); caller sent %q", c.n, c.read, c.readFull, w.payload)
		}
	}

	// Headers: the caller's untouched; generated key and attempt header.
	if diff := cmp.Diff(headerBefore, req.Header); diff != "" {
		w.violate(smVCallerHeader, "(-before +after):\n%s", diff)
	}
	if w.autoKey && w.keyMode != smKeySet && (w.method == http.MethodPost || w.method == http.MethodPatch) {
		for _, c := range calls {
			if len(c.keys) != 1 || c.keys[0] == "" || !slices.Equal(c.keys, calls[0].keys) {
				w.violate(smVKey, "attempt %d carried Idempotency-Key %q; attempt 1 %q", c.n, c.keys, calls[0].keys)
			}
		}
	}
	if w.attemptHdr != "" {
		for _, c := range calls {
			want := []string(nil)
			if c.n > 1 {
				want = []string{strconv.Itoa(c.n)}
			}
			if !slices.Equal(c.attemptHdr, want) {
				w.violate(smVAttemptHeader, "attempt %d carried %s %q; want %q", c.n, w.attemptHdr, c.attemptHdr, want)
			}
		}
	}
	if got, fired := w.callerGotConn.Load(), w.firedGotConn.Load(); w.callerTrace && got != fired {
		w.violate(smVCallerTrace, "caller's GotConn ran %d times; the transport fired it %d times", got, fired)
	}

	// Budget: the first attempt is free; every retry and every hedge draws
	// a token, the bucket starts full (burst) and earns perSecond.
	if b := w.budgetObj; b != nil && last > 0 {
		tokens := b.burst + b.perSecond*ret.Sub(w.t0).Seconds()
		if float64(last-1) > tokens+1e-9 {
			w.violate(smVBudget, "%d retries and hedges in %v; the budget (%s) held at most %.3f tokens", last-1, w.at(ret), b, tokens)
		}
	}

	// Outcome.
	if o := &w.outcomeAtEnd; w.outcome != nil {
		switch {
		case o.Attempts != last:
			w.violate(smVOutcome, "Outcome.Attempts = %d; %d attempts made", o.Attempts, last)
		case ee != nil && o.Reason != ee.Reason:
			w.violate(smVOutcome, "Outcome.Reason = %s; the error says %s", o.Reason, ee.Reason)
		case w.hooks > 0 && w.requestEnds == 1 && o.Reason != w.reqEnd.Reason:
			w.violate(smVOutcome, "Outcome.Reason = %s; RequestEnd saw %s", o.Reason, w.reqEnd.Reason)
		}
	}

	w.checkHedgeTiming()
	if w.hooks > 0 {
		w.checkHooks(resp, ee, winner)
	}

	// Tallies, to show the checks are not vacuous.
	tally["iterations"]++
	if last > 1 {
		tally["retried"]++
	}
	if w.nonReplayable && processed == 1 {
		tally["non-replayable processed once"]++
	}
	if w.nonReplayable && processed == 1 && last > 1 {
		tally["non-replayable processed once, retried"]++
	}
	if resp != nil {
		tally["ended on a response"]++
	} else {
		tally["ended on an error"]++
	}
	if !w.cancelAt.IsZero() && !ret.Before(w.cancelAt) {
		tally["canceled during the request"]++
	}
	if !w.deadline.IsZero() && !ret.Before(w.deadline) {
		tally["deadline reached during the request"]++
	}
	reasons := map[Reason]bool{}
	if ee != nil {
		reasons[ee.Reason] = true
	}
	for _, a := range w.recs {
		reasons[a.Reason] = true
	}
	for _, r := range []Reason{ReasonDeadline, ReasonCanceled, ReasonBudget, ReasonRetryAfter, ReasonBodyNotReplayable, ReasonNotReplayable, ReasonSuperseded} {
		if reasons[r] {
			tally["reason "+string(r)]++
		}
	}
	for _, c := range calls {
		tally["outcome "+smKindNames[c.kind]]++
		if c.kind == smStall && c.cutBy == "timeout" {
			tally["attempt timeout ended a stall"]++
		}
	}
	if w.bodyKind == smBodyPlain && int64(len(w.payload)) > w.bufferLimit {
		tally["body over the buffer limit"]++
	}
	if w.tampered > 0 && last > 1 {
		tally["hook changed a.Sleep, then retried"]++
	}
	for _, a := range w.recs {
		if a.Verdict == Retry && a.SleepSource == SleepRetryAfter {
			tally["Retry-After honoured"]++
			break
		}
	}
	if w.outcome != nil {
		tally["outcome checked"]++
	}
	// Hedging.
	if w.hedgeK > 0 && !w.hedged {
		tally["hedging on, request not hedgeable"]++
	}
	hedges, rounds, losers := 0, 0, 0
	for _, c := range calls {
		if c.overlap {
			hedges++
		} else {
			rounds++
		}
		if c.cutBy == "tank" {
			losers++
		}
	}
	if hedges > 0 {
		tally["hedged"]++
		if w.adaptive {
			tally["hedged (adaptive)"]++
		}
		if rounds > 1 {
			tally["hedged, then retried"]++
		}
		if w.budget {
			tally["hedged under a budget"]++
		}
		if w.hooks > 0 {
			tally["hedged, with hooks"]++
		}
	}
	if w.hedged && w.maxInflight == 1+w.hedgeK && w.hedgeK > 1 {
		tally["1+maxHedges copies in flight (maxHedges > 1)"]++
	}
	if winner > 0 && calls[winner-1].overlap {
		tally["a hedge won"]++
	}
	if losers > 0 {
		tally["loser cancelled"]++
	}
	for _, a := range w.recs {
		if a.Verdict == Retry && a.SleepSource == "" {
			tally["copy dropped"]++
			break
		}
	}
}

// smRounds splits the calls into rounds: a call made while no other was
// in flight begins one; the others are its hedges.
func smRounds(calls []*smCall) [][]*smCall {
	var rounds [][]*smCall
	for _, c := range calls {
		if !c.overlap || len(rounds) == 0 {
			rounds = append(rounds, nil)
		}
		rounds[len(rounds)-1] = append(rounds[len(rounds)-1], c)
	}
	return rounds
}

// checkHedgeTiming checks when hedges were sent, without a budget
// (docs/design.md, Hedging, Rounds): in a round begun at s0, at every tick
// s0 + m·delay until a copy of the round comes back, a hedge is sent if
// and only if at most maxHedges copies are in flight and fewer than
// WithMaxAttempts attempts have been made; once that many have, no more.
// Once a copy has come back, none (it ended the round or the request, or
// it failed and was dropped, which stops the round's hedges). No hedge is
// sent at any other time. With adaptive hedging, the delay is known for
// the first round only (the request's own latencies teach the tracker),
// and an untrained tracker (under 50 latencies) never hedges.
func (w *smWorld) checkHedgeTiming() {
	if !w.hedged || w.budget {
		return
	}
	d := w.firstDelay
	for ri, round := range smRounds(w.calls) {
		if w.adaptive && ri > 0 && w.delayKnown {
			break
		}
		if !w.delayKnown {
			if len(round) > 1 {
				w.violate(smVHedgeTiming, "attempt %d hedged at %v; the adaptive tracker had %d latencies before the request, under the %d it needs", round[1].n, w.at(round[1].start), w.training, latency.MinSamples)
			}
			continue
		}
		s0 := round[0].start
		answered := round[0].end // when the first copy of the round came back
		for _, c := range round {
			if c.end.Before(answered) {
				answered = c.end
			}
		}
		var want, got []time.Duration
		// A hedge that fails at once comes back at the tick that sent it:
		// the ticks after it are the first to send none.
		for t := s0.Add(d); !t.After(answered); t = t.Add(d) {
			made := 0
			for _, c := range w.calls {
				if c.start.Before(t) {
					made++
				}
			}
			if made >= w.maxAttempts {
				break
			}
			inflight := 0
			for _, c := range round {
				if c.start.Before(t) && c.end.After(t) {
					inflight++
				}
			}
			if inflight <= w.hedgeK {
				want = append(want, w.at(t))
			}
		}
		for _, c := range round[1:] {
			got = append(got, w.at(c.start))
		}
		if !slices.Equal(want, got) {
			w.violate(smVHedgeTiming, "round of attempts %d-%d, begun at %v, first copy back at %v (delay %v, maxHedges %d, %d attempts at most): hedges sent at %v; the rules call for %v",
				round[0].n, round[len(round)-1].n, w.at(s0), w.at(answered), d, w.hedgeK, w.maxAttempts, got, want)
		}
	}
}

// checkEndReason checks, without hooks, the reason of the error that
// ended the request against the attempt that ended it: the last one, or
// with hedging one that came back when RoundTrip returned and that tank
// did not cancel.
func (w *smWorld) checkEndReason(reason Reason, ret time.Time) {
	calls := w.calls
	if !w.hedged {
		c := calls[len(calls)-1]
		w.checkDecision(c, Attempt{Number: c.n, Verdict: Stop, Reason: reason})
		return
	}
	if reason == ReasonCanceled && w.callerCtx.Err() != nil {
		return
	}
	if w.hold == nil {
		// Without hooks, the copies dropped in a round are those back
		// before the request ended: their Retry-After may have stopped it.
		w.hold = map[int]smRAHold{}
		for _, round := range smRounds(calls) {
			var h smRAHold
			for _, c := range round {
				if _, tooLong, _ := w.retryAfterOf(c); tooLong && c.end.Before(ret) {
					h.tooLong = true
				}
			}
			for _, c := range round {
				w.hold[c.n] = h
			}
		}
	}
	problem := "no attempt came back when RoundTrip returned"
	for _, c := range calls {
		if !c.end.Equal(ret) || c.cutBy == "tank" {
			continue
		}
		if p := w.decisionProblem(c, Attempt{Number: c.n, Verdict: Stop, Reason: reason}); p == "" {
			return
		} else {
			problem = p
		}
	}
	w.violate(smVDecision, "the request ended with reason %s, which fits no attempt that ended it: %s", reason, problem)
}

// checkHooks checks what the hooks saw against what the fake did.
func (w *smWorld) checkHooks(resp *http.Response, ee *ExhaustedError, winner int) {
	calls := w.calls
	byN := make(map[int]Attempt, len(w.recs))
	endAt := map[int]int{} // the position of each attempt's AttemptEnd among the hook calls
	for i, e := range w.events {
		if e.kind == 'e' {
			endAt[e.n] = i
		}
	}
	for _, a := range w.recs {
		if _, dup := byN[a.Number]; dup {
			w.violate(smVHooks, "AttemptEnd ran twice for attempt %d", a.Number)
		}
		byN[a.Number] = a
	}
	if len(w.recs) != len(calls) || len(byN) != len(calls) || w.requestEnds != 1 {
		w.violate(smVHooks, "AttemptEnd ran %d times (for %d attempts), RequestEnd %d times; %d attempts made", len(w.recs), len(byN), w.requestEnds, len(calls))
		return
	}
	for n := 1; n <= len(calls); n++ {
		if _, ok := byN[n]; !ok {
			w.violate(smVHooks, "no AttemptEnd for attempt %d; %d attempts made", n, len(calls))
			return
		}
	}
	if e := w.events[len(w.events)-1]; e.kind != 'r' {
		w.violate(smVHooks, "RequestEnd ran before the AttemptEnd of attempt %d", e.n)
	}
	if w.startHook {
		starts := map[int]int{}
		for _, e := range w.events {
			switch e.kind {
			case 's':
				starts[e.n]++
			case 'e':
				if starts[e.n] != 1 {
					w.violate(smVHooks, "AttemptEnd of attempt %d ran after %d AttemptStarts for it", e.n, starts[e.n])
				}
			}
		}
		if len(starts) != len(calls) {
			w.violate(smVHooks, "AttemptStart ran for %d attempts; %d made", len(starts), len(calls))
		}
		for _, c := range calls {
			if c.number != c.n {
				w.violate(smVHooks, "call %d to the transport carried attempt %d", c.n, c.number)
			}
		}
	}
	win := w.reqEnd.Number // the attempt that ended the request
	if win < 1 || win > len(calls) {
		w.violate(smVHooks, "RequestEnd saw attempt %d; %d attempts made", win, len(calls))
		return
	}
	if winner != 0 && winner != win {
		w.violate(smVNotLast, "returned the response of attempt %d; RequestEnd saw attempt %d", winner, win)
	}
	if ee != nil && w.reqEnd.Reason != ee.Reason {
		w.violate(smVHooks, "RequestEnd saw reason %s; RoundTrip's error says %s", w.reqEnd.Reason, ee.Reason)
	}

	w.hold = map[int]smRAHold{}
	for _, round := range smRounds(calls) {
		var h smRAHold
		for _, c := range round {
			if a := byN[c.n]; a.Verdict == Retry && a.SleepSource == "" { // dropped
				want, tooLong, ok := w.retryAfterOf(c)
				h.tooLong = h.tooLong || tooLong
				if ok && !tooLong {
					h.d = max(h.d, want)
				}
			}
		}
		for _, c := range round {
			w.hold[c.n] = h
		}
	}

	for _, c := range calls {
		a := byN[c.n]
		if c.processed && !a.Sent {
			w.violate(smVSentFalse, "attempt %d (%s) processed by the server; Attempt.Sent=false, class %s, verdict %s (%s)", c.n, smKindNames[c.kind], a.Class, a.Verdict, a.Reason)
		}
		w.checkClass(c, a)
		w.checkDecision(c, a)
		if a.Replayable == w.nonReplayable {
			w.violate(smVDecision, "attempt %d: Attempt.Replayable = %v for a %s with key mode %d, WithIdempotencyKeys(%v)", c.n, a.Replayable, w.method, w.keyMode, w.autoKey)
		}
		if a.Hedge != c.overlap {
			cat := smVHedgeFlag
			if !w.hedged {
				cat = smVHedgeForbidden
			}
			w.violate(cat, "attempt %d: Attempt.Hedge = %v; sent while another copy was in flight: %v (hedgeable %v)", c.n, a.Hedge, c.overlap, w.hedged)
		}
		if w.budget && a.BudgetTokens < 0 || !w.budget && a.BudgetTokens != -1 {
			w.violate(smVBudget, "attempt %d: BudgetTokens = %v (budget %v)", c.n, a.BudgetTokens, w.budget)
		}
	}

	// Each round is ended by one attempt: judged Retry with a wait (the
	// next round follows), or the one that ended the request. The others
	// of the round were dropped (Retry, no wait) or cancelled when the
	// request ended (Stop: superseded, or canceled by the caller).
	rounds := smRounds(calls)
	slept := time.Duration(0) // waited before the round
	for ri, round := range rounds {
		ender := 0
		for _, c := range round {
			if a := byN[c.n]; a.Verdict == Retry && a.SleepSource != "" || c.n == win {
				if ender != 0 {
					w.violate(smVDecision, "attempts %d and %d both ended their round", ender, c.n)
				}
				ender = c.n
			}
		}
		if ender == 0 {
			w.violate(smVDecision, "no attempt of %d-%d ended their round: neither retried with a wait nor seen by RequestEnd", round[0].n, round[len(round)-1].n)
			return
		}
		for _, c := range round {
			a := byN[c.n]
			if a.Slept != slept {
				w.violate(smVSlept, "attempt %d: Attempt.Slept = %v; tank waited %v before it", c.n, a.Slept, slept)
			}
			switch {
			case c.n == ender:
				for _, o := range round {
					if o != c && endAt[o.n] > endAt[c.n] && byN[o.n].Verdict != Stop {
						w.violate(smVDecision, "attempt %d ended its round (%s, %s) before attempt %d was judged", c.n, a.Verdict, a.Reason, o.n)
					}
				}
				if ri+1 < len(rounds) {
					next := rounds[ri+1][0]
					if a.Verdict != Retry || c.n == win {
						w.violate(smVHooks, "attempt %d judged %s (%s), RequestEnd %v, yet attempt %d was made after it", c.n, a.Verdict, a.Reason, c.n == win, next.n)
					} else if gap := next.start.Sub(c.end); gap != a.Sleep {
						w.violate(smVWait, "waited %v after attempt %d; tank decided a.Sleep = %v (%s)", gap, c.n, a.Sleep, a.SleepSource)
					}
				} else if c.n != win {
					w.violate(smVHooks, "attempt %d judged %s (%s) and no attempt followed, yet RequestEnd saw attempt %d", c.n, a.Verdict, a.Reason, win)
				}
				w.checkWait(c, a)
			case a.Verdict == Retry:
				// Dropped: another copy carried on.
				alive := false
				for _, o := range round {
					if o != c && !o.start.After(c.end) && endAt[o.n] > endAt[c.n] {
						alive = true
					}
				}
				if !w.hedged || !alive || a.Sleep != 0 {
					w.violate(smVDecision, "attempt %d judged Retry with no wait (%v) at %v, as a dropped copy; hedgeable %v, another copy in flight %v", c.n, a.Sleep, w.at(c.end), w.hedged, alive)
				}
			default:
				// Cancelled when the request ended.
				if wc := calls[win-1]; !w.hedged || a.Reason != ReasonSuperseded && a.Reason != ReasonCanceled || !c.end.Equal(wc.end) || endAt[c.n] < endAt[win] {
					w.violate(smVDecision, "attempt %d judged %s (%s) at %v: neither the one that ended the request (attempt %d, at %v) nor a copy cancelled then", c.n, a.Verdict, a.Reason, w.at(c.end), win, w.at(wc.end))
				}
			}
		}
		if a := byN[ender]; a.Verdict == Retry {
			slept += a.Sleep
		}
	}
}

// smRAHold is what the copies dropped in a round asked of its wait through
// Retry-After: at least d, or no retry at all (tooLong: beyond the cap).
type smRAHold struct {
	d       time.Duration
	tooLong bool
}

// retryAfterOf returns the wait c's Retry-After asks for, whether it is
// beyond the cap, and whether c carried a usable one at all.
func (w *smWorld) retryAfterOf(c *smCall) (want time.Duration, tooLong, ok bool) {
	if c.kind != smResp || c.status != 429 && c.status != 503 {
		return 0, false, false
	}
	switch c.raKind {
	case smRASecs:
		n, _ := strconv.Atoi(c.ra)
		want = time.Duration(n) * time.Second
	case smRADate:
		at, _ := http.ParseTime(c.ra)
		want = max(at.Sub(c.end), 0)
	case smRAHuge:
		return 0, true, true
	default:
		return 0, false, false
	}
	return want, want > w.raCap, true
}

// checkWait checks the wait tank chose after an attempt that ended its
// round (or the request): the backoff, or the Retry-After as documented,
// and at least what the round's dropped copies asked for.
func (w *smWorld) checkWait(c *smCall, a Attempt) {
	h := w.hold[c.n]
	if h.tooLong {
		// A copy dropped in the round asked beyond the cap: no retry,
		// whatever this attempt's own header says.
		if a.Verdict == Retry {
			w.violate(smVRetryAfter, "attempt %d: a copy dropped in its round asked for a Retry-After beyond the cap %v, yet retried after %v", c.n, w.raCap, a.Sleep)
		}
		return
	}
	throttled := c.kind == smResp && (c.status == 429 || c.status == 503) && c.raKind != smRANone
	if own, tooLong, ok := w.retryAfterOf(c); h.d > 0 && a.Verdict == Retry && (!ok || !tooLong && own < h.d) {
		// The dropped copies' Retry-After is the longest wait asked: it is
		// the wait, unless the backoff drew a longer one.
		fromHold := a.SleepSource == SleepRetryAfter && a.Sleep == h.d
		fromBackoff := !ok && a.SleepSource == SleepBackoff && a.Sleep >= h.d && a.Sleep <= w.max
		if !fromHold && !fromBackoff {
			w.violate(smVRetryAfter, "attempt %d: copies dropped in its round asked for %v (Retry-After); waited %v from %q", c.n, h.d, a.Sleep, a.SleepSource)
		}
		return
	}
	if !throttled {
		if a.Verdict == Retry && (a.SleepSource != SleepBackoff || a.Sleep < 0 || a.Sleep > w.max) {
			w.violate(smVBackoffRange, "attempt %d (%s %d, Retry-After %q): wait %v from %q; want backoff in [0, %v]", c.n, smKindNames[c.kind], c.status, c.ra, a.Sleep, a.SleepSource, w.max)
		}
		return
	}
	switch c.raKind {
	case smRASecs, smRADate:
		var want time.Duration
		if c.raKind == smRASecs {
			n, _ := strconv.Atoi(c.ra)
			want = time.Duration(n) * time.Second
		} else {
			at, _ := http.ParseTime(c.ra)
			want = max(at.Sub(c.end), 0)
		}
		switch {
		case want > w.raCap && a.Verdict == Retry:
			w.violate(smVRetryAfter, "attempt %d: %d Retry-After %q (%v) above the cap %v, yet retried after %v", c.n, c.status, c.ra, want, w.raCap, a.Sleep)
		case want <= w.raCap && a.Verdict == Retry && (a.Sleep != want || a.SleepSource != SleepRetryAfter):
			w.violate(smVRetryAfter, "attempt %d: %d Retry-After %q; waited %v from %q, want %v from %q", c.n, c.status, c.ra, a.Sleep, a.SleepSource, want, SleepRetryAfter)
		}
	case smRAHuge:
		if a.Verdict == Retry {
			w.violate(smVRetryAfter, "attempt %d: %d Retry-After %q above the cap %v, yet retried after %v", c.n, c.status, c.ra, w.raCap, a.Sleep)
		}
	case smRANeg, smRAGarbage:
		// Malformed: reported, and the backoff decides. (The header is
		// read only once the caps let a retry through.)
		cat := smVRetryAfter
		if c.raKind == smRANeg {
			cat = smVNegRetryAfter
		}
		if a.Verdict == Retry && !errors.Is(a.RetryAfterErr, ErrRetryAfter) {
			w.violate(cat, "attempt %d: %d Retry-After %q: RetryAfterErr = %v; want ErrRetryAfter", c.n, c.status, c.ra, a.RetryAfterErr)
		}
		if a.Verdict == Retry && (a.SleepSource != SleepBackoff || a.Sleep < 0 || a.Sleep > w.max) {
			w.violate(cat, "attempt %d: %d Retry-After %q: waited %v from %q; want backoff in [0, %v]", c.n, c.status, c.ra, a.Sleep, a.SleepSource, w.max)
		}
		if a.Reason == ReasonRetryAfter {
			w.violate(cat, "attempt %d: %d Retry-After %q: stopped with %s", c.n, c.status, c.ra, a.Reason)
		}
	}
}

// checkDecision checks a judged attempt's verdict and reason against what
// happened to it and what the scenario allows: a retry only for an attempt
// that may be retried, and a stop only for a reason that holds.
func (w *smWorld) checkDecision(c *smCall, a Attempt) {
	if p := w.decisionProblem(c, a); p != "" {
		w.violate(smVDecision, "%s", p)
	}
}

// decisionProblem is checkDecision's verdict: "" when the decision holds.
func (w *smWorld) decisionProblem(c *smCall, a Attempt) string {
	const (
		always     = iota // not sent, or the server did no work (429, 502, 503)
		replayable        // may have been processed: retried only if replayable
		never             // a final answer
	)
	retry := replayable
	switch c.kind {
	case smResp:
		switch {
		case c.status == 429 || c.status == 502 || c.status == 503:
			retry = always
		case c.status >= 100 && c.status <= 599 && (c.status < 500 || c.status == 501):
			retry = never
		}
	case smRefused, smEarlyReset:
		retry = always
	}
	if a.Verdict == Retry {
		if retry == never || retry == replayable && w.nonReplayable {
			return fmt.Sprintf("attempt %d (%s, status %d) of a %s retried (%s); it may not be", c.n, smKindNames[c.kind], c.status, w.method, a.Reason)
		}
		return ""
	}
	ok := false
	switch a.Reason {
	case ReasonCanceled:
		ok = w.callerCtx.Err() != nil
	case ReasonFinal:
		ok = retry == never
	case ReasonNotReplayable:
		ok = retry == replayable && w.nonReplayable
	case ReasonAttempts:
		// With hedging, every copy counts: the cap may be reached by the
		// copies of a round.
		ok = a.Number >= w.maxAttempts || w.groups != [3]int{} || w.hedged && len(w.calls) >= w.maxAttempts
	case ReasonDeadline:
		ok = !w.deadline.IsZero()
	case ReasonBudget:
		ok = w.budget
	case ReasonRetryAfter:
		ok = (c.status == 429 || c.status == 503) && (c.raKind == smRASecs || c.raKind == smRAHuge || c.raKind == smRADate) ||
			w.hold[c.n].tooLong // a copy dropped in its round asked beyond the cap
	case ReasonBodyNotReplayable:
		ok = w.bodyKind == smBodyPlain && int64(len(w.payload)) > w.bufferLimit
	case ReasonSuperseded:
		ok = w.hedged
	}
	if !ok {
		return fmt.Sprintf("attempt %d (%s, status %d, Retry-After %q) of a %s stopped with reason %s", c.n, smKindNames[c.kind], c.status, c.ra, w.method, a.Reason)
	}
	return ""
}

// checkClass checks the class tank gave an attempt against what happened
// to it. The caller's done context makes any retryable outcome canceled,
// and a copy cancelled when another ended the request is canceled too.
func (w *smWorld) checkClass(c *smCall, a Attempt) {
	var want []Class
	switch c.kind {
	case smResp:
		switch {
		case c.status < 100 || c.status > 599:
			// RFC 9110 §15: an invalid status is treated as a 5xx.
			if a.Class == ClassFinal || a.Reason == ReasonFinal {
				w.violate(smVStatusRange, "attempt %d: status %d judged %s (%s); want it treated as a 5xx", c.n, c.status, a.Class, a.Reason)
			}
			return
		case c.status == 429:
			want = []Class{ClassThrottled}
		case c.status == 502 || c.status == 503:
			want = []Class{ClassUnavailable}
		case c.status >= 500 && c.status != 501:
			want = []Class{ClassServerError}
		default:
			want = []Class{ClassFinal}
		}
	case smRefused:
		want = []Class{ClassRefused}
	case smEarlyReset:
		want = []Class{ClassConnect, ClassReset} // ClassReset: not traced
	case smAfterErr, smHostile, smNilNil, smPartial:
		want = []Class{ClassReset, ClassEOF, ClassTransport, ClassProtocol}
	case smStall:
		want = []Class{ClassTimeout}
	case smCtxDone:
		want = []Class{ClassTimeout, ClassCanceled}
	}
	if a.Class == ClassCanceled && w.callerCtx.Err() != nil {
		return
	}
	if a.Class == ClassCanceled && a.Err != nil && a.Reason == ReasonSuperseded && w.hedged {
		return
	}
	if !slices.Contains(want, a.Class) {
		w.violate(smVClass, "attempt %d (%s, status %d): class %s; want one of %v", c.n, smKindNames[c.kind], c.status, a.Class, want)
	}
}

func smSeeds(t *testing.T) (seeds []uint64, verbose bool) {
	if s := os.Getenv("TANK_SM_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TANK_SM_SEED=%q: %v", s, err)
		}
		return []uint64{n}, true
	}
	iters := smDefaultIters
	if testing.Short() {
		iters = 2000
	}
	if s := os.Getenv("TANK_SM_ITERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("TANK_SM_ITERS=%q: want a positive number", s)
		}
		iters = n
	}
	base := uint64(1)
	if s := os.Getenv("TANK_SM_BASE"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TANK_SM_BASE=%q: %v", s, err)
		}
		base = n
	}
	for i := range iters {
		seeds = append(seeds, base+uint64(i))
	}
	return seeds, false
}

// smFailures groups violations by invariant.
type smFailures struct {
	byCat map[string]*smFailure
}

type smFailure struct {
	seeds []uint64
	first string // the first seed's message and log
}

func (f *smFailures) add(seed uint64, res smResult) {
	if f.byCat == nil {
		f.byCat = map[string]*smFailure{}
	}
	seen := map[string]bool{}
	for _, v := range res.viol {
		if seen[v.cat] {
			continue
		}
		seen[v.cat] = true
		e := f.byCat[v.cat]
		if e == nil {
			e = &smFailure{first: fmt.Sprintf("seed %d: %s\n%s", seed, v.msg, smLog(res.log))}
			f.byCat[v.cat] = e
		}
		e.seeds = append(e.seeds, seed)
	}
}

func (f *smFailures) report(t *testing.T, runs int) {
	t.Helper()
	cats := make([]string, 0, len(f.byCat))
	for c := range f.byCat {
		cats = append(cats, c)
	}
	slices.Sort(cats)
	for _, c := range cats {
		e := f.byCat[c]
		t.Errorf("%s: %d of %d seeds, first %v (rerun one with TANK_SM_SEED=n)\n%s", c, len(e.seeds), runs, e.seeds[:min(len(e.seeds), 8)], e.first)
	}
}

// TestStateMachine sends one logical request per seed through NewTransport,
// choosing at random the method (GET, PUT, POST, POST with an
// Idempotency-Key, PATCH, POST with an empty Idempotency-Key), the body
// (none, with GetBody, a plain reader, sometimes over WithBufferLimit), the
// options (attempts, backoff, jitter, Retry-After cap, attempt timeout,
// budget, group caps, generated keys, attempt header, hooks that observe or
// change a.Sleep, WithOutcome, and on a third of the seeds WithHedging or
// WithAdaptiveHedging), a caller deadline and a cancellation at a random
// virtual time. The wrapped transport draws each attempt's fate: a response
// 200/404/429/500/502/503/504 (sometimes 999, 600 or 0) with or without
// Retry-After (seconds, negative, huge, HTTP-date, garbage) and sometimes a
// nil Body; a refused dial; a reset before a connection; a reset or EOF
// after the server read the request, traced or from a transport that fires
// no httptrace event; a stall until the attempt's context ends; (nil, nil);
// and, on hedging seeds and some others, a think time before answering,
// which the attempt's context cuts short.
//
// Every seed checks: attempts <= WithMaxAttempts; RoundTrip never returns
// after the deadline or the cancellation, and no attempt starts after
// either; the request body and every GetBody body are closed exactly once;
// a request that is not replayable is processed at most once; every attempt
// sends the caller's bytes; the result is a response (non-nil Body, status
// 100-599, that of the attempt that ended the request, which came back when
// RoundTrip returned) or an *ExhaustedError counting the attempts; every
// response body is closed once, and every one but the returned one drained,
// the hedging losers' included, by the time the caller has closed its
// response and the bubble is idle; no copy runs on after that; the caller's
// header is untouched; retries and hedges stay within the budget's tokens;
// Outcome.Attempts counts the calls the transport saw. With hooks: every
// attempt is seen once, AttemptStart before AttemptEnd, RequestEnd once and
// last, no two hook calls at the same time; a processed attempt is Sent;
// the wait taken is the a.Sleep tank decided (even when a later hook
// changes it), Slept adds up, Retry-After is applied as documented, and
// BudgetTokens is never negative.
//
// Hedging: a request that may not be hedged (not replayable, or a body
// without GetBody) never has two copies in flight nor an Attempt.Hedge; a
// hedged one has at most 1 + maxHedges in flight, Attempt.Hedge marks
// exactly the copies sent while another was in flight, each round is ended
// by one attempt (a retry with its wait, or the one that ended the
// request), the others of the round being dropped (Retry, no wait, while
// another copy carried on) or cancelled when the request ended
// (ReasonSuperseded); and with WithHedging and no budget, hedges go out at
// exactly the ticks the rules call for, none after a copy came back.
// Goroutines left in a bubble fail synctest.Test.
func TestStateMachine(t *testing.T) {
	seeds, verbose := smSeeds(t)
	var fails smFailures
	tally := map[string]int{}
	start := time.Now()
	for _, seed := range seeds {
		var res smResult
		synctest.Test(t, func(t *testing.T) { res = smRun(seed, smMutNone) })
		for k, v := range res.tally {
			tally[k] += v
		}
		fails.add(seed, res)
		if verbose {
			t.Logf("%s", smLog(res.log))
			for _, v := range res.viol {
				t.Logf("VIOLATION %s: %s", v.cat, v.msg)
			}
		}
	}
	keys := make([]string, 0, len(tally))
	for k := range tally {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %-42s %d", k, tally[k])
	}
	t.Logf("%d seeds from %d in %v:%s", len(seeds), seeds[0], time.Since(start).Round(time.Millisecond), b.String())
	fails.report(t, len(seeds))
	if len(seeds) < 1000 {
		return
	}
	for _, k := range []string{
		"retried", "non-replayable processed once", "non-replayable processed once, retried",
		"ended on a response", "ended on an error",
		"canceled during the request", "deadline reached during the request",
		"reason " + string(ReasonDeadline), "reason " + string(ReasonCanceled), "reason " + string(ReasonBudget),
		"reason " + string(ReasonRetryAfter), "reason " + string(ReasonBodyNotReplayable), "reason " + string(ReasonNotReplayable),
		"outcome resp", "outcome refused", "outcome early-reset", "outcome after-err", "outcome hostile",
		"outcome stall", "outcome nil-nil", "outcome partial",
		"attempt timeout ended a stall", "body over the buffer limit", "hook changed a.Sleep, then retried",
		"Retry-After honoured", "outcome checked",
		"hedging on, request not hedgeable", "hedged", "hedged (adaptive)", "hedged, then retried",
		"hedged under a budget", "hedged, with hooks", "1+maxHedges copies in flight (maxHedges > 1)",
		"a hedge won", "loser cancelled", "copy dropped", "reason " + string(ReasonSuperseded),
	} {
		if tally[k] == 0 {
			t.Errorf("no seed exercised %q: the checks on it are vacuous", k)
		}
	}
}

// TestStateMachineSelfCheck proves the checks can fail: each mutant of the
// wrapped transport breaks one invariant, and the state machine must report
// it within a few hundred seeds.
func TestStateMachineSelfCheck(t *testing.T) {
	for _, tt := range []struct {
		name string
		mut  smMutant
		want []string
	}{
		{"resend", smMutResend, []string{smVDupProcessed, smVAttempts, smVBodyBytes, smVOutcome, smVBudget, smVHooks}},
		{"leak body", smMutLeakBody, []string{smVBodyClose}},
		{"slow", smMutSlow, []string{smVAfterDeadline, smVAfterCancel, smVStartAfterDone, smVWait, smVHedgeTiming}},
		{"double close", smMutDoubleClose, []string{smVBodyClose, smVGetBodyClose}},
		{"parallel", smMutParallel, []string{smVHedgeForbidden, smVInflight}},
		{"leak response", smMutLeakResp, []string{smVRespLeak}},
		{"hook overlap", smMutHookOverlap, []string{smVHookOverlap}},
		{"ignore cancel", smMutIgnoreCancel, []string{smVLeftInFlight}},
		{"one connection", smMutSerial, []string{smVHedgeFlag}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var fails smFailures
			for seed := uint64(1); seed <= 300; seed++ {
				var res smResult
				synctest.Test(t, func(t *testing.T) { res = smRun(seed, tt.mut) })
				fails.add(seed, res)
			}
			for _, cat := range tt.want {
				if fails.byCat[cat] == nil {
					t.Errorf("mutant %q: no seed reported %q", tt.name, cat)
				}
			}
			cats := make([]string, 0, len(fails.byCat))
			for cat, f := range fails.byCat {
				cats = append(cats, fmt.Sprintf("%s (%d)", cat, len(f.seeds)))
			}
			slices.Sort(cats)
			t.Logf("mutant %q tripped: %s", tt.name, strings.Join(cats, "; "))
		})
	}
}

// smOKTransport answers 200 at once.
type smOKTransport struct{}

func (smOKTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// hugeMaxHedgesProblems returns what goes wrong with a hedged GET sent under
// WithHedging(time.Second, math.MaxInt) and under WithHedging(time.Second,
// 1<<20), or "" when nothing does.
func hugeMaxHedgesProblems() string {
	send := func(k int) (problem string) {
		defer func() {
			if r := recover(); r != nil {
				problem = fmt.Sprintf("WithHedging(time.Second, %d): RoundTrip panicked: %v", k, r)
			}
		}()
		req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
		resp, err := NewTransport(smOKTransport{}, WithHedging(time.Second, k)).RoundTrip(req)
		if err != nil {
			return fmt.Sprintf("WithHedging(time.Second, %d): RoundTrip error %v", k, err)
		}
		resp.Body.Close()
		return ""
	}
	var problems []string
	if p := send(math.MaxInt); p != "" {
		problems = append(problems, p)
	}
	const k = 1 << 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if p := send(k); p != "" {
		problems = append(problems, p)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		problems = append(problems, fmt.Sprintf("WithHedging(time.Second, %d): one GET that made one attempt allocated %d MiB", k, grew>>20))
	}
	return strings.Join(problems, "; ")
}

// TestHedgeHugeMaxHedges: maxHedges may be any number >= 0, and what a
// request allocates must not grow with it. It once did: a channel of
// maxHedges+1 slots per hedged request, so math.MaxInt panicked ("makechan:
// size out of range"), 1<<20 allocated 8 MiB for a GET that made one
// attempt, and 1<<32 ended the program. The buffer is now bounded by
// WithMaxAttempts and a small constant.
func TestHedgeHugeMaxHedges(t *testing.T) {
	if p := hugeMaxHedgesProblems(); p != "" {
		t.Error(p)
	}
}

// smThink answers 200 after d, or the context's error if it ends first.
type smThink struct{ d time.Duration }

func (th smThink) RoundTrip(req *http.Request) (*http.Response, error) {
	if !smSleep(req.Context(), th.d) {
		return nil, req.Context().Err()
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// smSchedEvents counts the scheduler's samples of goroutines made to run
// (runtime/metrics /sched/latencies): a count, not a time.
func smSchedEvents() uint64 {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	var n uint64
	for _, c := range s[0].Value.Float64Histogram().Counts {
		n += c
	}
	return n
}

// TestHedgeNoTicksWhileFull: once no hedge can follow in a round (1 +
// maxHedges copies in flight, the attempt cap reached, a hedge refused or a
// copy dropped), the round's timer stops. FuzzOptions found it running on
// (its input is kept as testdata/fuzz/FuzzOptions/2f3eb014151b75f8): the
// caller's goroutine woke every delay for as long as the copies took, so
// WithHedging(1ns, 1) burned a CPU core (measured outside this test: 302ms
// of CPU for a 300ms request). Here, WithHedging(100ns, 1) and copies that
// take 2ms: one hedge at 100ns, then nothing to do; the scheduler saw the
// caller's goroutine run about 20,000 times before the fix (a quarter of
// them sampled), a handful after.
func TestHedgeNoTicksWhileFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := NewTransport(smThink{2 * time.Millisecond}, WithHedging(100*time.Nanosecond, 1))
		req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
		before := smSchedEvents()
		resp, err := tr.RoundTrip(req)
		events := smSchedEvents() - before
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		synctest.Wait()
		// One hedge, two copies back, the reaping: a handful of wake-ups,
		// of which the scheduler samples a quarter.
		if events > 200 {
			t.Errorf("WithHedging(100ns, 1), copies that answer after 2ms (one hedge, then the round is full): the scheduler sampled %d goroutine wake-ups during the request; a handful expected", events)
		}
	})
}
