package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/tankhttp/tank/adapters/backoffretry"
	"github.com/tankhttp/tank/middleware"
)

// The hedged fault matrix: every row of the fault matrix again, with
// middleware.WithHedging on top of the row's options, through the two front
// doors that support hedging (the Transport and restyretry.Apply; backoffretry
// refuses the option, TestHedgingBackoffRefused), with hooks on, with two
// settings: 100 µs is below the time a loopback request takes under the
// race detector, so its hedges fire on nearly every row that gets past the
// first attempt's start; 1 ms fires on the slow rows, the TLS handshakes,
// and now and then elsewhere. On the rows where the server or the network
// is slow to answer (hedgeRows), a hedge is required.
//
// A POST without a key must behave exactly as in the unhedged matrix: the
// same attempts, decisions, hits and connections, and no hedge. The other
// kinds race: which copy the server reads first, and whether a loser is
// read before it is cancelled, vary from run to run. Their cells assert the
// invariants instead (see checkHedgedCell). Every cell waits for
// Hooks.RequestEnd, which runs after every copy's AttemptEnd (the losers are
// reaped in the background), then for every connection and every goroutine
// the cell started to be gone.

// hedgeConf is one hedging setting of the matrix.
type hedgeConf struct {
	name  string
	delay time.Duration
	max   int
}

var hedgeConfs = []hedgeConf{
	{"1x1ms", time.Millisecond, 1},
	{"2x100us", 100 * time.Microsecond, 2},
}

// hedgeRows are the rows where every copy of a replayable request waits at
// least 50 ms for its answer or its failure (a stalled server, a hung dial
// or DNS query): 50 times the longest delay of hedgeConfs or more, so a
// hedge must have been sent.
var hedgeRows = map[string]bool{
	"dial_timeout":            true,
	"response_header_timeout": true,
	"attempt_timeout":         true,
	"dns_no_answer_deadline":  true,
	"dial_blocked_deadline":   true,
	"caller_deadline":         true,
}

// hedgeDoors are the front doors that support hedging, with hooks.
func hedgeDoors(t *testing.T) []frontDoor {
	var doors []frontDoor
	for _, name := range []string{"transport", "resty"} {
		i := slices.IndexFunc(frontDoors, func(fd frontDoor) bool { return fd.name == name })
		if i < 0 || frontDoors[i].plain {
			t.Fatalf("no front door %q with hooks", name)
		}
		doors = append(doors, frontDoors[i])
	}
	return doors
}

// hseen is what the hooks saw of one attempt.
type hseen struct {
	seen
	Hedge  bool
	Status int // the response's status; 0: none
}

// hedgeRec records the hooks of one request: every AttemptStart, every
// AttemptEnd, and RequestEnd, which closes done. It notes any hook that
// runs after RequestEnd, and hooks that overlap.
type hedgeRec struct {
	mu      sync.Mutex
	starts  int
	hedges  int // AttemptStart calls with Hedge set
	list    []hseen
	end     *hseen // RequestEnd's attempt
	ends    int    // RequestEnd calls
	late    []string
	busy    atomic.Int32
	overlap atomic.Bool
	done    chan struct{}
}

func newHedgeRec() *hedgeRec { return &hedgeRec{done: make(chan struct{})} }

func hseenOf(a *middleware.Attempt) hseen {
	s := hseen{seen: seen{a.Number, a.Class, a.Verdict, a.Reason, a.Sent, a.Sleep, a.SleepSource, a.RetryAfterErr}, Hedge: a.Hedge}
	if a.Response != nil {
		s.Status = a.Response.StatusCode
	}
	return s
}

func (r *hedgeRec) enter() func() {
	if r.busy.Add(1) != 1 {
		r.overlap.Store(true)
	}
	return func() { r.busy.Add(-1) }
}

func (r *hedgeRec) hooks() middleware.Hooks {
	return middleware.Hooks{
		AttemptStart: func(_ context.Context, a *middleware.Attempt) context.Context {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.starts++
			if a.Hedge {
				r.hedges++
			}
			if r.ends > 0 {
				r.late = append(r.late, fmt.Sprintf("AttemptStart %d", a.Number))
			}
			return nil
		},
		AttemptEnd: func(_ context.Context, a *middleware.Attempt) {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.list = append(r.list, hseenOf(a))
			if r.ends > 0 {
				r.late = append(r.late, fmt.Sprintf("AttemptEnd %d", a.Number))
			}
		},
		RequestEnd: func(_ context.Context, a *middleware.Attempt) {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.ends++
			if r.ends == 1 {
				s := hseenOf(a)
				r.end = &s
				close(r.done)
			}
		},
	}
}

// wait blocks until RequestEnd has run (bounded by settleTimeout).
func (r *hedgeRec) wait(t testing.TB) {
	t.Helper()
	timer := time.NewTimer(settleTimeout)
	defer timer.Stop()
	select {
	case <-r.done:
	case <-timer.C:
		r.mu.Lock()
		defer r.mu.Unlock()
		t.Fatalf("Hooks.RequestEnd never ran (%d attempts started, ended: %+v)", r.starts, r.list)
	}
}

// get returns what the hooks saw; call it after wait.
func (r *hedgeRec) get() (starts, hedgeStarts int, list []hseen, end hseen) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.starts, r.hedges, append([]hseen(nil), r.list...), *r.end
}

// check asserts what holds of the hooks of every request: each started
// attempt ended once, before RequestEnd, which ran once; no two hooks ran
// at once.
func (r *hedgeRec) check(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ends != 1 {
		t.Errorf("RequestEnd ran %d times; want 1", r.ends)
	}
	if len(r.late) > 0 {
		t.Errorf("hooks after RequestEnd: %v", r.late)
	}
	if r.overlap.Load() {
		t.Error("hooks of one request ran at the same time")
	}
	if r.starts != len(r.list) {
		t.Errorf("AttemptStart ran %d times, AttemptEnd %d", r.starts, len(r.list))
	}
	nums := make([]int, 0, len(r.list))
	for _, a := range r.list {
		nums = append(nums, a.Number)
	}
	slices.Sort(nums)
	for i, n := range nums {
		if n != i+1 {
			t.Errorf("attempt numbers %v; want 1..%d, each once", nums, len(nums))
			break
		}
	}
}

// settleGoroutines waits until the process runs no more goroutines than
// before the cell (base), and fails with every stack when settleTimeout
// passes first. Goroutines of earlier cells may still be ending when base
// is taken; they only make the wait end sooner. goleak, in TestMain, checks
// the whole package once more at the end.
func settleGoroutines(t testing.TB, base int) {
	t.Helper()
	timer := time.NewTimer(settleTimeout)
	defer timer.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > base {
		select {
		case <-tick.C:
		case <-timer.C:
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines after the cell; %d before it:\n%s", runtime.NumGoroutine(), base, buf)
		}
	}
}

// hedgeTally counts what the hedged cells saw, for the log.
type hedgeTally struct {
	cells, hedged, superseded atomic.Int64
}

// TestFaultMatrixHedged runs every row of the fault matrix, for every
// request kind, through the Transport and resty, with each hedging setting.
func TestFaultMatrixHedged(t *testing.T) {
	for name := range hedgeRows {
		if !slices.ContainsFunc(matrix, func(r matrixRow) bool { return r.name == name }) {
			t.Fatalf("hedgeRows names %q, which is not a row of the matrix", name)
		}
	}
	var tally hedgeTally
	for _, row := range matrix {
		for _, m := range methods {
			for _, fd := range hedgeDoors(t) {
				for _, hc := range hedgeConfs {
					t.Run(row.name+"/"+m.name+"/"+fd.name+"/"+hc.name, func(t *testing.T) {
						runHedgedCell(t, row, m, fd, hc, &tally)
					})
				}
			}
		}
	}
	t.Logf("%d cells; %d sent a hedge, %d had a copy superseded", tally.cells.Load(), tally.hedged.Load(), tally.superseded.Load())
}

func runHedgedCell(t *testing.T, row matrixRow, m method, fd frontDoor, hc hedgeConf, tally *hedgeTally) {
	tally.cells.Add(1)
	base := runtime.NumGoroutine()
	tg := row.start(t)
	d := newDialer()
	tr := &http.Transport{DialContext: d.DialContext}
	if tg.setup != nil {
		tg.setup(tr, d)
	}
	rec := newHedgeRec()
	opts := append([]middleware.Option{middleware.WithMaxAttempts(matrixMax), middleware.WithBackoff(0, 0)}, row.opts...)
	opts = append(opts, middleware.WithHedging(hc.delay, hc.max), middleware.WithHooks(rec.hooks()))
	var out middleware.Outcome
	req, body := cellRequest(t, tg, m, fd, func(ctx context.Context) context.Context { return middleware.WithOutcome(ctx, &out) })

	resp, err := fd.do(t, tr, req, opts)
	status := 0
	if resp != nil {
		_, rerr := io.Copy(io.Discard, resp.Body)
		status = resp.StatusCode
		if !errors.Is(rerr, row.bodyErr) {
			t.Errorf("reading the body: %v; want %v", rerr, row.bodyErr)
		}
	}
	// Every copy is reaped whether or not the caller has closed the
	// winner's body: RequestEnd comes after every AttemptEnd.
	rec.wait(t)
	if resp != nil {
		resp.Body.Close()
	}
	// Settle as the unhedged cell does: the client closed every connection
	// it opened (a loser's included), the server finished with every
	// request, the caller's body was closed once; then no goroutine of the
	// cell is left.
	d.closeAll(t, tr)
	if tg.close != nil {
		tg.close()
	}
	body.closedOnce(t)
	settleGoroutines(t, base)
	rec.check(t)

	hits := tg.hits()
	checkServerBodies(t, tg, m)
	if row.errIs != nil && !errors.Is(err, row.errIs) && !(err == nil && m.replayable()) {
		// (A replayable request may end on a response here: checkHedgedCell.)
		t.Errorf("error %v; want one matching %v", err, row.errIs)
	}
	anyMethod := row.anyMethod || row.statuses != nil && slices.Contains([]int{429, 502, 503}, row.statuses[0])
	if !m.replayable() && !anyMethod && hits > 1 {
		t.Fatalf("INVARIANT: the server processed a %s without Idempotency-Key %d times", m.method, hits)
	}

	starts, hedgeStarts, got, end := rec.get()
	hedges, superseded := 0, 0
	for _, a := range got {
		if a.Hedge {
			hedges++
		}
		if a.Reason == middleware.ReasonSuperseded {
			superseded++
		}
	}
	if hedges > 0 {
		tally.hedged.Add(1)
	}
	if superseded > 0 {
		tally.superseded.Add(1)
	}
	if hedgeStarts != hedges {
		t.Errorf("AttemptStart saw %d hedges, AttemptEnd %d", hedgeStarts, hedges)
	}
	if out.Attempts != starts || out.Reason != end.Reason {
		t.Errorf("Outcome = %+v; want %d attempts, %s (RequestEnd's)", out, starts, end.Reason)
	}
	if err != nil {
		var ee *middleware.ExhaustedError
		if errors.As(err, &ee) && ee.Attempts != starts {
			t.Errorf("ExhaustedError.Attempts = %d; %d attempts ran", ee.Attempts, starts)
		}
	}

	if !m.replayable() {
		// Never hedged: the unhedged cell's checks, word for word.
		if hedges > 0 || hedgeStarts > 0 || superseded > 0 {
			t.Fatalf("a %s without Idempotency-Key was hedged: %+v", m.method, got)
		}
		checkConns(t, tg, d, row)
		flat := &attempts{}
		for _, a := range got {
			flat.list = append(flat.list, a.seen)
		}
		if row.statuses != nil {
			checkStatusCell(t, row, m, fd, flat, status, err, hits)
			return
		}
		checkErrorCell(t, row, m, fd, flat, status, err, hits)
		return
	}
	if hedgeRows[row.name] && hedges == 0 {
		t.Errorf("the server or network held every copy for 50 ms or more, yet no hedge was sent (delay %v): %+v", hc.delay, got)
	}
	checkHedgedCell(t, row, m, tg, d, got, end, status, err, hits, hedges)
}

// checkConns is the unhedged cell's connection check: one connection per
// dial, never more than one per attempt.
func checkConns(t *testing.T, tg target, d *dialer, row matrixRow) {
	t.Helper()
	if tg.conns == nil {
		return
	}
	accepted, dialed := tg.conns(), int(d.dialed.Load())
	if accepted > matrixMax || accepted < dialed || (accepted != dialed && !row.dialRace) {
		t.Errorf("server accepted %d connections; the client dialed %d (at most %d attempts)", accepted, dialed, matrixMax)
	}
}

// checkHedgedCell checks a hedged cell of a replayable request. Which copy
// the server reads first, which copy is judged first, and whether a losing
// copy was read, dialed or even accepted before its cancel vary from run to
// run, so the exact attempt list of the unhedged cell does not hold. What
// must hold:
//
//   - at most matrixMax attempts, each judged (a class, a verdict, a
//     reason), none slept (zero backoff, Retry-After 0 or past);
//   - a superseded copy only beside a hedge;
//   - every other copy but the last was dropped or retried for its class's
//     retry reason, or, when the caller gave up, ended canceled too;
//   - the last (RequestEnd's) attempt ended the request as the decision
//     table says for its class after that many attempts: a retryable
//     failure ends only at the cap, so every row retried to the cap
//     unhedged still makes exactly matrixMax attempts;
//   - the error, the Outcome and the response all say what that attempt
//     says, and a status row returns the status the unhedged cell returns
//     (the request ends on a retryable status only at the cap, once every
//     copy was answered, so the server answered the script through);
//   - the server processed at most one request per attempt, and at least
//     every attempt that was answered, or failed in a way that proves the
//     server read it;
//   - at most one connection per attempt, dialed and accepted.
func checkHedgedCell(t *testing.T, row matrixRow, m method, tg target, d *dialer, got []hseen, end hseen, status int, err error, hits, hedges int) {
	t.Helper()
	n := len(got)
	if n < 1 || n > matrixMax {
		t.Fatalf("%d attempts; want 1 to %d: %+v", n, matrixMax, got)
	}
	i := slices.IndexFunc(got, func(a hseen) bool { return a.Number == end.Number })
	if i < 0 {
		t.Fatalf("RequestEnd saw attempt %+v; AttemptEnd saw %+v", end, got)
	}
	cut := false
	if got[i] != end {
		// The caller gave up in the wait after a retried attempt:
		// RequestEnd sees that attempt as the last, Stop, canceled, with the
		// time it actually waited (Attempt.Sleep). Nothing else may differ.
		a := got[i]
		a.Verdict, a.Reason, a.Sleep = end.Verdict, end.Reason, end.Sleep
		if got[i].Verdict != middleware.Retry || end.Verdict != middleware.Stop || end.Reason != middleware.ReasonCanceled || a != end {
			t.Fatalf("RequestEnd saw attempt %+v; AttemptEnd saw %+v", end, got)
		}
		got[i], cut = end, true
	}
	canceled := end.Reason == middleware.ReasonCanceled
	noStop := row
	noStop.stopRetry = ""
	processed := 0 // attempts the server must have read
	for _, a := range got {
		if a.Class == "" || a.Reason == "" || (a.Verdict != middleware.Retry && a.Verdict != middleware.Stop) {
			t.Errorf("attempt %d not judged: %+v", a.Number, a)
		}
		if a.Sleep != 0 {
			t.Errorf("attempt %d sleep %v; want 0 (zero backoff, Retry-After now)", a.Number, a.Sleep)
		}
		if a.Hedge && a.Number == 1 {
			t.Error("attempt 1 is marked a hedge")
		}
		if a.Reason == middleware.ReasonSuperseded {
			if hedges == 0 {
				t.Errorf("attempt %d superseded, yet no hedge was sent", a.Number)
			}
			continue
		}
		if row.statuses != nil {
			if a.Status == 0 || !slices.Contains(row.statuses, a.Status) || a.Class != statusClass(a.Status) {
				t.Errorf("attempt %d: status %d, class %s; want one of %v, classed by the table", a.Number, a.Status, a.Class, row.statuses)
			}
		} else if !slices.Contains(row.classes, a.Class) {
			t.Errorf("attempt %d class %s; want one of %v", a.Number, a.Class, row.classes)
		}
		if a.Status != 0 || row.processed && a.Class != middleware.ClassCanceled {
			processed++
		}
		if s, known := sentClass(a.Class); row.sent == sentNo && a.Sent || row.sent == sentByClass && known && a.Sent != s {
			t.Errorf("attempt %d (%s) Sent = %v", a.Number, a.Class, a.Sent)
		}
		if a.Number == end.Number {
			continue
		}
		switch {
		case a.Verdict == middleware.Retry:
			if v, r := expectVerdict(a.Class, m, 1, noStop); v != middleware.Retry || a.Reason != r {
				t.Errorf("attempt %d (%s) retried for %s; the table says %v/%s", a.Number, a.Class, a.Reason, v, r)
			}
		case canceled && a.Reason == middleware.ReasonCanceled:
			// The caller gave up: every copy in flight sees it.
		default:
			t.Errorf("attempt %d (%s) stopped (%s), yet attempt %d ended the request (%s)", a.Number, a.Class, a.Reason, end.Number, end.Reason)
		}
	}
	if end.Verdict != middleware.Stop || end.Reason == middleware.ReasonSuperseded {
		t.Errorf("the last attempt %+v; want the one that ended the request", end)
	}
	if v, r := expectVerdict(end.Class, m, n, row); !cut && (v != middleware.Stop || r != end.Reason) {
		t.Errorf("ended by attempt %d (%s) with %s after %d attempts; the table says %v/%s", end.Number, end.Class, end.Reason, n, v, r)
	}
	if hits > n || hits < processed {
		t.Errorf("server hits %d; want %d to %d (%d attempts)", hits, processed, n, n)
	}
	if row.processed && hits == 0 {
		t.Error("server hits 0; every copy of the row is read")
	}
	if tg.conns != nil {
		// A loser's dial may complete after its cancel (net/http pools
		// the connection) or not be accepted before the server closes: at
		// most one connection per attempt on either side.
		if accepted, dialed := tg.conns(), int(d.dialed.Load()); accepted > n || dialed > n {
			t.Errorf("server accepted %d connections, the client dialed %d; %d attempts", accepted, dialed, n)
		}
	}

	if row.statuses != nil {
		if err != nil {
			t.Fatalf("error %v; want a response", err)
		}
		if status != end.Status {
			t.Errorf("status %d; the last attempt had %d", status, end.Status)
		}
		// The unhedged run's final status.
		k := 1
		for ; k < matrixMax; k++ {
			c := statusClass(row.statuses[min(k, len(row.statuses))-1])
			if v, _ := expectVerdict(c, m, k, row); v == middleware.Stop {
				break
			}
		}
		if w := row.statuses[min(k, len(row.statuses))-1]; status != w {
			t.Errorf("status %d; want %d, as unhedged", status, w)
		}
		return
	}
	if err == nil {
		if end.Class == middleware.ClassCanceled && end.Status != 0 && status == end.Status && row.errIs != nil {
			// A copy answered with a retryable status (caller_cancel_on_retry's
			// 503) while the server, reading another copy, cancelled the
			// caller's context: judged canceled, the response it carries is
			// returned, as an unhedged attempt answered as its caller gives
			// up would be.
			return
		}
		t.Fatalf("response %d; want an error (attempts %+v, RequestEnd %+v)", status, got, end)
	}
	if row.errIs != nil && !errors.Is(err, row.errIs) {
		t.Errorf("error %v; want one matching %v", err, row.errIs)
	}
	var ee *middleware.ExhaustedError
	if !errors.As(err, &ee) {
		t.Fatalf("error %v (%T); want one unwrapping to *middleware.ExhaustedError", err, err)
	}
	if ee.Err == nil {
		t.Error("ExhaustedError.Err is nil; want the last attempt's error")
	}
	if ee.Reason != end.Reason || !errors.Is(err, ee.Reason) {
		t.Errorf("error reason %s; want the last attempt's %s", ee.Reason, end.Reason)
	}
	if r, k := expectRun(row.classes[0], m, row); len(row.classes) == 1 && k == matrixMax && (n != k || ee.Reason != r) {
		t.Errorf("gave up after %d attempts with %s; unhedged: %d, %s", n, ee.Reason, k, r)
	}
}

// stallFirst is a server that holds the first request it reads (after
// reading it in full) until the client lets go or hold passes, then
// answers "slow"; it answers every later request "fast" at once. gone is
// closed when the first request's handler saw the client let go.
type stallFirst struct {
	hits   *hits
	mu     sync.Mutex
	bodies []string
	gone   chan struct{}
}

// copyHeader carries the attempt number on copies after the first
// (WithAttemptHeader), so that stallFirst knows a request's first copy.
const copyHeader = "X-Attempt"

func newStallFirst(t *testing.T, hold time.Duration) (*stallFirst, string, *connStates) {
	s := &stallFirst{hits: newHits(), gone: make(chan struct{})}
	srv, states := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.bodies = append(s.bodies, string(b))
		// Copies may reach the server in any order: the attempt header
		// tells the first (none) from the hedges.
		first := r.Header.Get(copyHeader) == ""
		s.mu.Unlock()
		s.hits.add(r.Method)
		if !first {
			io.WriteString(w, "fast")
			return
		}
		timer := time.NewTimer(hold) // the fault: a slow server
		defer timer.Stop()
		select {
		case <-r.Context().Done():
			close(s.gone)
		case <-timer.C:
			io.WriteString(w, "slow")
		}
	}))
	return s, srv.URL, states
}

// TestHedgeStalledFirstCopy: the server holds the first copy and answers
// the next at once. A replayable request is hedged, the hedge wins, and
// the first copy is superseded and its connection closed; a POST without
// a key is not hedged: it waits for its one copy, as without hedging.
func TestHedgeStalledFirstCopy(t *testing.T) {
	const delay = 5 * time.Millisecond
	for _, m := range methods {
		for _, fd := range hedgeDoors(t) {
			t.Run(m.name+"/"+fd.name, func(t *testing.T) {
				base := runtime.NumGoroutine()
				// A replayable request's first copy is held until the client
				// lets go (hold is only a failure bound); a POST's for 20
				// times the delay, then answered.
				hold := settleTimeout
				if !m.replayable() {
					hold = 20 * delay
				}
				s, url, states := newStallFirst(t, hold)
				d := newDialer()
				tr := &http.Transport{DialContext: d.DialContext}
				rec := newHedgeRec()
				req := m.newRequest(t, context.Background(), url)
				var body *closeCounter
				if fd.ownsBody {
					body = countCloses(req)
				}
				start := time.Now()
				resp, err := fd.do(t, tr, req, []middleware.Option{
					middleware.WithHedging(delay, 1), middleware.WithMaxAttempts(matrixMax), middleware.WithHooks(rec.hooks()),
					middleware.WithAttemptHeader(copyHeader),
				})
				if err != nil {
					t.Fatal(err)
				}
				took := time.Since(start)
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				rec.wait(t)
				_, _, got, end := rec.get()

				if !m.replayable() {
					resp.Body.Close()
					want := []hseen{{seen: seen{Number: 1, Class: middleware.ClassFinal, Verdict: middleware.Stop, Reason: middleware.ReasonFinal, Sent: true}, Status: 200}}
					if string(b) != "slow" || !slices.Equal(got, want) || end != want[0] {
						t.Errorf("got %q, attempts %+v, RequestEnd %+v; want the first copy's \"slow\", one attempt, no hedge", b, got, end)
					}
					if took < hold {
						t.Errorf("answered after %v; the server held the only copy %v", took, hold)
					}
					if n := s.hits.total(); n != 1 {
						t.Errorf("server hits %d; want 1", n)
					}
				} else {
					// The winner: the hedge, answered while the first copy
					// is still held. The loser's handler sees the client let
					// go (its connection closed, without CloseIdleConnections),
					// while the winner's body is still open.
					waitFor(t, "the first copy's handler released", s.gone, func() bool {
						select {
						case <-s.gone:
							return true
						default:
							return false
						}
					})
					waitFor(t, "the first copy's connection closed at the server", states.changed, func() bool { return states.closed.Load() >= 1 })
					resp.Body.Close()
					if string(b) != "fast" || len(got) != 2 {
						t.Fatalf("got %q after %d attempts (%+v); want the hedge's \"fast\" after 2", b, len(got), got)
					}
					slices.SortFunc(got, func(a, b hseen) int { return a.Number - b.Number })
					first, hedge := got[0], got[1]
					if first.Hedge || first.Reason != middleware.ReasonSuperseded {
						t.Errorf("first copy %+v; want no hedge, superseded", first)
					}
					wantHedge := hseen{seen: seen{Number: 2, Class: middleware.ClassFinal, Verdict: middleware.Stop, Reason: middleware.ReasonFinal, Sent: true}, Hedge: true, Status: 200}
					if hedge != wantHedge || end != wantHedge {
						t.Errorf("hedge %+v, RequestEnd %+v; want %+v", hedge, end, wantHedge)
					}
					if n := s.hits.total(); n != 2 {
						t.Errorf("server hits %d; want 2", n)
					}
				}
				d.closeAll(t, tr)
				if n := d.dialed.Load(); int(n) != len(got) {
					t.Errorf("%d connections dialed; want one per copy, %d", n, len(got))
				}
				// The server's own Close would end a held handler; here
				// every connection must already have been closed by the
				// client.
				states.settled(t)
				body.closedOnce(t)
				rec.check(t)
				s.mu.Lock()
				for i, b := range s.bodies {
					if want := map[bool]string{true: "", false: payload}[m.method == http.MethodGet]; b != want {
						t.Errorf("copy %d carried %q; want %q", i+1, b, want)
					}
				}
				s.mu.Unlock()
				// The server's goroutines end with its cleanup; the client's
				// must be gone already: count all but the server's accept
				// loop.
				settleGoroutines(t, base+1)
			})
		}
	}
}

// TestHedgingBackoffRefused: backoffretry runs one operation at a time and
// cannot hedge; it refuses the option before anything is sent.
func TestHedgingBackoffRefused(t *testing.T) {
	h := newHits()
	srv, _ := newServer(t, processingHandler(h))
	req, err := http.NewRequest(http.MethodPut, srv.URL, bytes.NewReader([]byte(payload)))
	if err != nil {
		t.Fatal(err)
	}
	body := countCloses(req)
	op, b := backoffretry.New(req, srv.Client().Transport, middleware.WithHedging(time.Millisecond, 1))
	resp, err := backoff.RetryWithData(op, backoff.WithContext(b, req.Context()))
	var oe *middleware.OptionError
	if resp != nil || !errors.As(err, &oe) {
		t.Fatalf("response %v, error %v (%T); want a *middleware.OptionError", resp, err, err)
	}
	body.closedOnce(t)
	if n := h.total(); n != 0 {
		t.Errorf("server hits %d; want 0", n)
	}
}
