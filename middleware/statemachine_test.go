package middleware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The randomised state machine: one logical request per seed through
// NewTransport, against an in-memory transport that draws what happens to
// each attempt, all in virtual time (testing/synctest). Every seed checks the
// invariants listed on TestStateMachine.
//
//	TANK_SM_ITERS=n   run n seeds (default smDefaultIters, -short 2000)
//	TANK_SM_BASE=n    first seed (default 1)
//	TANK_SM_SEED=n    run seed n alone and log what happened

const smDefaultIters = 10000

// What the fake transport does with one attempt.
const (
	smResp       = iota // reads the request, answers a status (maybe with Retry-After)
	smRefused           // dial refused: no connection, body closed unread
	smEarlyReset        // reset during the handshake: GetConn, no GotConn, body unread
	smAfterErr          // reads the request (full trace), then ECONNRESET or io.EOF
	smHostile           // reads the request, then ECONNRESET or io.EOF, firing no trace event at all
	smStall             // reads the request (full trace), never answers: waits for the attempt's context
	smNilNil            // reads the request (full trace), then returns (nil, nil)
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

// Mutants of the wrapped transport, for TestStateMachineSelfCheck: each
// breaks an invariant on purpose to prove its check is not vacuous.
type smMutant int

const (
	smMutNone        smMutant = iota
	smMutResend               // sends every request twice, as a transport re-sending behind tank's back
	smMutLeakBody             // never closes the request body
	smMutSlow                 // spends 3s (virtual) before each attempt, ignoring every context
	smMutDoubleClose          // closes the request body a second time
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
	smVNotLast           = "returned response is not the last attempt's"
	smVRespLeak          = "response body not closed exactly once"
	smVNotDrained        = "retried response body not drained within the drain limit"
	smVKey               = "generated Idempotency-Key missing or not the same on every attempt"
	smVCallerHeader      = "caller's request header changed"
	smVAttemptHeader     = "attempt header wrong"
	smVCallerTrace       = "caller's ClientTrace missed a GotConn"
	smVHooks             = "hooks did not see every attempt exactly once"
	smVSentFalse         = "attempt the server processed reported Sent=false"
	smVWait              = "wait between attempts differs from the Attempt.Sleep tank decided"
	smVSlept             = "Attempt.Slept differs from the waits taken"
	smVRetryAfter        = "Retry-After not applied as documented"
	smVNegRetryAfter     = "negative Retry-After not treated as malformed"
	smVBackoffRange      = "backoff wait outside [0, max]"
)

// smCall is what the fake saw and did on one attempt.
type smCall struct {
	n          int
	kind       int
	status     int    // smResp
	ra         string // Retry-After sent, when raKind != smRANone
	raKind     int
	nilBody    bool // smResp with a nil Body
	respBody   *smRespBody
	start, end time.Time
	processed  bool // the server did work for it
	read       []byte
	readFull   bool // the whole body was read (compared with the caller's)
	keys       []string
	attemptHdr []string
	gotConn    bool
}

// smRespBody is a response body that counts Close calls and sees EOF.
type smRespBody struct {
	r      *strings.Reader
	size   int
	eof    bool
	closes int
}

func (b *smRespBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *smRespBody) Close() error { b.closes++; return nil }

// smReqBody is a request body that counts Close calls.
type smReqBody struct {
	io.Reader
	closes int
}

func (b *smReqBody) Close() error { b.closes++; return nil }

type smViolation struct {
	cat, msg string
}

// smWorld is one seed: the scenario, the fake transport and what it saw.
type smWorld struct {
	seed uint64
	rng  *rand.Rand
	mut  smMutant
	log  []string
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
	hooks          int // 0 none, 1 observe, 2 observe and tamper with a.Sleep
	callerTrace    bool
	canEnd         bool // a stall will end: deadline, attempt timeout or cancel
	budget         bool
	groups         [3]int
	weights        [smKinds]int
	statuses       []int

	t0            time.Time
	deadline      time.Time // zero: none
	cancelAt      time.Time // zero: none
	callerCtx     context.Context
	calls         []*smCall
	firedGotConn  int
	callerGotConn int
	recs          []Attempt // copies, as the first AttemptEnd hook saw them
	requestEnds   int
	tampered      int
}

func (w *smWorld) logf(format string, args ...any) {
	w.log = append(w.log, fmt.Sprintf(format, args...))
}

func (w *smWorld) violate(cat, format string, args ...any) {
	w.viol = append(w.viol, smViolation{cat, fmt.Sprintf(format, args...)})
}

func (w *smWorld) at(t time.Time) time.Duration { return t.Sub(w.t0) }

func smPick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

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
		w.firedGotConn++
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

func (w *smWorld) draw() int {
	total := 0
	for _, x := range w.weights {
		total += x
	}
	x := w.rng.IntN(total)
	k := 0
	for ; x >= w.weights[k]; k++ {
		x -= w.weights[k]
	}
	if k == smStall && !w.canEnd {
		k = smResp
	}
	return k
}

func (w *smWorld) retryAfter(c *smCall) {
	c.raKind = w.rng.IntN(smRAKinds)
	switch c.raKind {
	case smRASecs:
		c.ra = strconv.Itoa(w.rng.IntN(4))
	case smRANeg:
		c.ra = smPick(w.rng, "-2", "-1", "-30")
	case smRAHuge:
		c.ra = smPick(w.rng, "99999999999999999999", "86400000")
	case smRADate:
		c.ra = time.Now().Add(time.Duration(w.rng.IntN(6)-2) * time.Second).UTC().Format(http.TimeFormat)
	case smRAGarbage:
		c.ra = smPick(w.rng, "soon", "1.5", "0x10", "", "3 seconds")
	}
}

// RoundTrip is the fake wrapped transport.
func (w *smWorld) RoundTrip(req *http.Request) (*http.Response, error) {
	c := &smCall{n: len(w.calls) + 1, start: time.Now()}
	w.calls = append(w.calls, c)
	defer func() {
		c.end = time.Now()
		w.logf("  attempt %d %v-%v: %s status=%d ra=%q nilBody=%v processed=%v body=%d/%v key=%q",
			c.n, w.at(c.start), w.at(c.end), smKindNames[c.kind], c.status, c.ra, c.nilBody, c.processed, len(c.read), c.readFull, c.keys)
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
	ctx := req.Context()
	if ctx.Err() != nil {
		c.kind = smCtxDone
		smCloseBody(req)
		return nil, ctx.Err()
	}
	c.kind = w.draw()
	reset := func() error {
		if w.rng.IntN(2) == 0 {
			return io.EOF
		}
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	}
	switch c.kind {
	case smRefused:
		if w.rng.IntN(2) == 0 {
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
		return nil, reset()
	case smHostile:
		w.readBody(req, c)
		c.processed = true
		return nil, reset()
	case smStall:
		w.fire(ctx, c, true)
		w.readBody(req, c)
		c.processed = true
		<-ctx.Done()
		return nil, ctx.Err()
	case smNilNil:
		w.fire(ctx, c, true)
		w.readBody(req, c)
		c.processed = true
		return nil, nil
	case smPartial:
		// The connection breaks while the body is sent: the server never
		// saw the whole request. A retry must replay every byte.
		w.fire(ctx, c, true)
		if req.Body != nil {
			n := 0
			if len(w.payload) > 0 {
				n = w.rng.IntN(len(w.payload))
			}
			c.read, _ = io.ReadAll(io.LimitReader(req.Body, int64(n)))
			req.Body.Close()
		}
		return nil, reset()
	}
	// smResp
	w.fire(ctx, c, true)
	w.readBody(req, c)
	c.status = w.statuses[w.rng.IntN(len(w.statuses))]
	c.processed = !defaultAnyStatus.has(c.status)
	if c.status == 429 || c.status == 503 {
		if w.rng.IntN(10) < 6 {
			w.retryAfter(c)
		}
	} else if w.rng.IntN(10) == 0 {
		w.retryAfter(c)
	}
	h := http.Header{"X-Sm-Attempt": {strconv.Itoa(c.n)}}
	if c.raKind != smRANone {
		h[retryAfterHeader] = []string{c.ra}
	}
	resp := &http.Response{StatusCode: c.status, Status: fmt.Sprintf("%d %s", c.status, http.StatusText(c.status)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, Request: req}
	if w.rng.IntN(25) == 0 {
		c.nilBody = true
	} else {
		size := w.rng.IntN(40)
		c.respBody = &smRespBody{r: strings.NewReader(strings.Repeat("r", size)), size: size}
		resp.Body, resp.ContentLength = c.respBody, int64(size)
	}
	return resp, nil
}

// smMutRT sits between tank and the fake and breaks something on purpose.
type smMutRT struct {
	m    smMutant
	next http.RoundTripper
}

func (m smMutRT) RoundTrip(req *http.Request) (*http.Response, error) {
	switch m.m {
	case smMutResend:
		r2 := req.Clone(req.Context())
		if req.GetBody != nil {
			r2.Body, _ = req.GetBody()
		} else if req.Body != nil {
			r2.Body = http.NoBody
		}
		if resp, err := m.next.RoundTrip(req); err == nil && resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return m.next.RoundTrip(r2)
	case smMutLeakBody:
		if req.Body != nil {
			r2 := *req
			r2.Body = io.NopCloser(req.Body)
			req = &r2
		}
	case smMutSlow:
		time.Sleep(3 * time.Second)
	case smMutDoubleClose:
		resp, err := m.next.RoundTrip(req)
		smCloseBody(req)
		return resp, err
	}
	return m.next.RoundTrip(req)
}

// smResult is what one seed reports to the test.
type smResult struct {
	viol   []smViolation
	log    []string
	tally  map[string]int
	panics bool
}

// smRun runs one seed. It must be called inside a synctest bubble.
func smRun(seed uint64, mut smMutant) (res smResult) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	w := &smWorld{seed: seed, rng: rng, mut: mut, t0: time.Now()}
	tally := map[string]int{}
	res.tally = tally
	defer func() { res.viol, res.log = w.viol, w.log }()

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
		budgetDesc, w.budget = b.String(), true
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
		opts = append(opts, WithHooks(Hooks{
			AttemptEnd: func(_ context.Context, a *Attempt) { w.recs = append(w.recs, *a) },
			RequestEnd: func(context.Context, *Attempt) { w.requestEnds++ },
		}))
	}
	var tamperDesc string
	if w.hooks == 2 {
		tamper := rng.IntN(4)
		tamperDesc = [...]string{"0", "1h", "-1s", "2x+1ms"}[tamper]
		opts = append(opts, WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) {
			if a.Verdict != Retry {
				return
			}
			w.tampered++
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
	// WithIdempotencyKeys gives a POST or PATCH without a key (an empty one
	// is none) a key of its own: the server can then deduplicate it.
	w.nonReplayable = (w.method == http.MethodPost || w.method == http.MethodPatch) &&
		w.keyMode != smKeySet && !w.autoKey

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
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { w.callerGotConn++ }})
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
			getBodies = append(getBodies, b)
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

	w.logf("seed %d mutant %d: %s key=%d body=%d(%d bytes, ContentLength %d) attempts=%d backoff=%v..%v jitter=%d raCap=%v attemptTO=%v buffer=%d drain=%d budget=%q groups=%v autoKey=%v attemptHdr=%q hooks=%d tamper=%s deadline=%v cancel=%v callerTrace=%v weights=%v statuses=%v",
		seed, mut, w.method, w.keyMode, w.bodyKind, len(w.payload), req.ContentLength, w.maxAttempts, w.initial, w.max, jit,
		w.raCap, w.attemptTimeout, w.bufferLimit, w.drainLimit, budgetDesc, w.groups, w.autoKey, w.attemptHdr, w.hooks, tamperDesc,
		smRel(w, w.deadline), smRel(w, w.cancelAt), w.callerTrace, w.weights, w.statuses)

	var next http.RoundTripper = w
	if mut != smMutNone {
		next = smMutRT{m: mut, next: w}
	}
	tr := NewTransport(next, opts...)
	if tr.p == nil {
		panic(tr.err)
	}
	tr.p.rand = rng.Float64 // jitter from the seed

	var resp *http.Response
	func() {
		defer func() {
			if r := recover(); r != nil {
				res.panics = true
				w.violate(smVPanic, "%v\n%s", r, smStack())
			}
		}()
		resp, err = tr.RoundTrip(req)
	}()
	ret := time.Now()
	if res.panics {
		return res
	}
	w.logf("  returned at %v: resp=%v err=%v", w.at(ret), smStatus(resp), err)
	func() {
		defer func() {
			if r := recover(); r != nil {
				w.violate(smVPanic, "the checks panicked: %v\n%s", r, smStack())
			}
		}()
		w.check(req, resp, err, ret, body, getBodies, headerBefore, tally)
	}()
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

// check applies every invariant once RoundTrip has returned at ret.
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
		w.checkDecision(calls[last-1], Attempt{Number: last, Verdict: Stop, Reason: ee.Reason})
	}
	if resp != nil {
		if got := resp.Header.Get("X-Sm-Attempt"); got != strconv.Itoa(last) {
			w.violate(smVNotLast, "returned the response of attempt %q; %d attempts made", got, last)
		}
		if resp.Body == nil {
			w.violate(smVRespNilBody, "status %d", resp.StatusCode)
		} else {
			func() {
				defer func() {
					if r := recover(); r != nil {
						w.violate(smVRespClose, "reading or closing the body panicked: %v\n%s", r, smStack())
					}
				}()
				io.Copy(io.Discard, resp.Body)
				if err := resp.Body.Close(); err != nil {
					w.violate(smVRespClose, "Close() = %v", err)
				}
			}()
		}
	}

	// Request bodies: each closed exactly once.
	if body != nil && body.closes != 1 {
		w.violate(smVBodyClose, "the caller's body closed %d times", body.closes)
	}
	for i, b := range getBodies {
		if b.closes != 1 {
			w.violate(smVGetBodyClose, "GetBody body %d of %d closed %d times", i+1, len(getBodies), b.closes)
		}
	}

	// Response bodies: each closed exactly once; retried ones drained.
	for _, c := range calls {
		if c.respBody == nil {
			continue
		}
		final := resp != nil && c.n == last
		if c.respBody.closes != 1 {
			w.violate(smVRespLeak, "attempt %d's %d response body (final %v) closed %d times", c.n, c.status, final, c.respBody.closes)
		}
		if !final && int64(c.respBody.size) <= w.drainLimit && !c.respBody.eof {
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
	if w.callerTrace && w.callerGotConn != w.firedGotConn {
		w.violate(smVCallerTrace, "caller's GotConn ran %d times; the transport fired it %d times", w.callerGotConn, w.firedGotConn)
	}

	if w.hooks > 0 {
		w.checkHooks()
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
	for _, r := range []Reason{ReasonDeadline, ReasonCanceled, ReasonBudget, ReasonRetryAfter, ReasonBodyNotReplayable, ReasonNotReplayable} {
		if reasons[r] {
			tally["reason "+string(r)]++
		}
	}
	for _, c := range calls {
		tally["outcome "+smKindNames[c.kind]]++
		if c.kind == smStall && w.attemptTimeout > 0 && w.callerCtx.Err() == nil {
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
}

// checkHooks checks what the hooks saw against what the fake did.
func (w *smWorld) checkHooks() {
	calls := w.calls
	if len(w.recs) != len(calls) || w.requestEnds != 1 {
		w.violate(smVHooks, "AttemptEnd ran %d times, RequestEnd %d times; %d attempts made", len(w.recs), w.requestEnds, len(calls))
		return
	}
	var slept time.Duration
	for i, a := range w.recs {
		c := calls[i]
		if a.Number != c.n {
			w.violate(smVHooks, "AttemptEnd %d saw Attempt.Number %d", i+1, a.Number)
		}
		if c.processed && !a.Sent {
			w.violate(smVSentFalse, "attempt %d (%s) processed by the server; Attempt.Sent=false, class %s, verdict %s (%s)", c.n, smKindNames[c.kind], a.Class, a.Verdict, a.Reason)
		}
		w.checkClass(c, a)
		w.checkDecision(c, a)
		if a.Replayable == w.nonReplayable {
			w.violate(smVDecision, "attempt %d: Attempt.Replayable = %v for a %s with key mode %d, WithIdempotencyKeys(%v)", c.n, a.Replayable, w.method, w.keyMode, w.autoKey)
		}
		if a.Slept != slept {
			w.violate(smVSlept, "attempt %d: Attempt.Slept = %v; tank waited %v before it", c.n, a.Slept, slept)
		}
		if i+1 < len(calls) {
			if a.Verdict != Retry {
				w.violate(smVHooks, "attempt %d judged %s (%s), yet attempt %d was made", c.n, a.Verdict, a.Reason, c.n+1)
			}
			if gap := calls[i+1].start.Sub(c.end); gap != a.Sleep {
				w.violate(smVWait, "waited %v after attempt %d; tank decided a.Sleep = %v (%s)", gap, c.n, a.Sleep, a.SleepSource)
			}
			slept += a.Sleep
		}

		// The wait tank chose.
		throttled := c.kind == smResp && (c.status == 429 || c.status == 503) && c.raKind != smRANone
		if !throttled {
			if a.Verdict == Retry && (a.SleepSource != SleepBackoff || a.Sleep < 0 || a.Sleep > w.max) {
				w.violate(smVBackoffRange, "attempt %d (%s %d, Retry-After %q): wait %v from %q; want backoff in [0, %v]", c.n, smKindNames[c.kind], c.status, c.ra, a.Sleep, a.SleepSource, w.max)
			}
			continue
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
}

// checkDecision checks a judged attempt's verdict and reason against what
// happened to it and what the scenario allows: a retry only for an attempt
// that may be retried, and a stop only for a reason that holds.
func (w *smWorld) checkDecision(c *smCall, a Attempt) {
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
			w.violate(smVDecision, "attempt %d (%s, status %d) of a %s retried (%s); it may not be", c.n, smKindNames[c.kind], c.status, w.method, a.Reason)
		}
		return
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
		ok = a.Number >= w.maxAttempts || w.groups != [3]int{}
	case ReasonDeadline:
		ok = !w.deadline.IsZero()
	case ReasonBudget:
		ok = w.budget
	case ReasonRetryAfter:
		ok = (c.status == 429 || c.status == 503) && (c.raKind == smRASecs || c.raKind == smRAHuge || c.raKind == smRADate)
	case ReasonBodyNotReplayable:
		ok = w.bodyKind == smBodyPlain && int64(len(w.payload)) > w.bufferLimit
	}
	if !ok {
		w.violate(smVDecision, "attempt %d (%s, status %d, Retry-After %q) of a %s stopped with reason %s", c.n, smKindNames[c.kind], c.status, c.ra, w.method, a.Reason)
	}
}

// checkClass checks the class tank gave an attempt against what happened
// to it. The caller's done context makes any retryable outcome canceled.
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
			e = &smFailure{first: fmt.Sprintf("seed %d: %s\n%s", seed, v.msg, strings.Join(res.log, "\n"))}
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
// change a.Sleep), a caller deadline and a cancellation at a random virtual
// time. The wrapped transport draws each attempt's fate: a response
// 200/404/429/500/502/503/504 (sometimes 999, 600 or 0) with or without
// Retry-After (seconds, negative, huge, HTTP-date, garbage) and sometimes a
// nil Body; a refused dial; a reset before a connection; a reset or EOF
// after the server read the request, traced or from a transport that fires
// no httptrace event; a stall until the attempt's context ends; (nil, nil).
//
// Every seed checks: attempts <= WithMaxAttempts; RoundTrip never returns
// after the deadline or the cancellation, and no attempt starts after
// either; the request body and every GetBody body are closed exactly once;
// a request that is not replayable is processed at most once; every attempt
// sends the caller's bytes; the result is a response (non-nil Body, status
// 100-599, the last attempt's) or an *ExhaustedError counting the attempts;
// every response body is closed once and a retried one drained; the caller's
// header is untouched; with hooks, every attempt is seen once, a processed
// attempt is Sent, the wait taken is the a.Sleep tank decided (even when a
// later hook changes it), Slept adds up, and Retry-After is applied as
// documented. Goroutines left in a bubble fail synctest.Test.
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
			t.Logf("%s", strings.Join(res.log, "\n"))
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
		"Retry-After honoured",
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
		{"resend", smMutResend, []string{smVDupProcessed, smVAttempts, smVBodyBytes}},
		{"leak body", smMutLeakBody, []string{smVBodyClose}},
		{"slow", smMutSlow, []string{smVAfterDeadline, smVAfterCancel, smVStartAfterDone, smVWait}},
		{"double close", smMutDoubleClose, []string{smVBodyClose, smVGetBodyClose}},
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
		})
	}
}
