package middleware

// Adversarial tests of hedged requests (hedge.go): each probes a risky area
// and says what breakage it would catch; those that say "before the fix"
// failed on the code they were written against. Everything runs in virtual
// time (testing/synctest) against in-memory transports.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// atkRT gives call i (from 0) to f.
type atkRT struct {
	n atomic.Int32
	f func(i int, req *http.Request) (*http.Response, error)
}

func (r *atkRT) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.f(int(r.n.Add(1)-1), req)
}

// atkBody is a response body that counts what was read of it and whether
// it was closed.
type atkBody struct {
	r      io.Reader
	read   atomic.Int64
	closed atomic.Bool
}

func newAtkBody(s string) *atkBody { return &atkBody{r: strings.NewReader(s)} }

func (b *atkBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func (b *atkBody) Close() error { b.closed.Store(true); return nil }

func atkResp(req *http.Request, status int, body io.ReadCloser) *http.Response {
	if body == nil {
		body = http.NoBody
	}
	return &http.Response{StatusCode: status, Header: http.Header{}, Body: body, Request: req}
}

// atkConn is the body of a 101 Switching Protocols response: the
// connection. Reads block until it is closed (a peer that waits for the
// client to speak first), as net/http's are, whatever the context.
type atkConn struct {
	done    chan struct{}
	once    sync.Once
	closed  atomic.Bool
	written bytes.Buffer
	mu      sync.Mutex
}

func newAtkConn() *atkConn { return &atkConn{done: make(chan struct{})} }

func (c *atkConn) Read(p []byte) (int, error) { <-c.done; return 0, io.EOF }

func (c *atkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.written.Write(p)
}

func (c *atkConn) Close() error {
	c.once.Do(func() { c.closed.Store(true); close(c.done) })
	return nil
}

// stall waits for the copy's context to end, or for release.
func stall(req *http.Request, release <-chan struct{}) error {
	select {
	case <-req.Context().Done():
		return req.Context().Err()
	case <-release:
		return errors.New("released")
	}
}

// ---------------------------------------------------------------------
// Regressions: each failed before its fix.
// ---------------------------------------------------------------------

// TestHedgePanicOnCallerReapsCopies: a panic raised on the caller's goroutine while a hedged
// request has copies in flight (a classifier judging a copy, the
// AttemptStart of a hedge, the winner's AttemptEnd) reaches the caller
// unchanged, and the copies in flight are cancelled and reaped: no
// goroutine, connection, span or response is left behind. Before the fix,
// only a panic in a copy's transport cleaned up; these left a stalled copy
// running for good.
func TestHedgePanicOnCallerReapsCopies(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  Option
	}{
		{"classifier judging the hedge", WithClassifier(func(a *Attempt) Verdict {
			if a.Hedge {
				panic("boom")
			}
			return Pass
		})},
		{"AttemptStart of the hedge", WithHooks(Hooks{AttemptStart: func(_ context.Context, a *Attempt) context.Context {
			if a.Hedge {
				panic("boom")
			}
			return nil
		}})},
		{"AttemptEnd of the winning hedge", WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) {
			if a.Hedge {
				panic("boom")
			}
		}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				var firstCanceled atomic.Bool
				rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
					if i == 0 { // the first copy: a server that never answers
						err := stall(req, release)
						firstCanceled.Store(req.Context().Err() != nil)
						return nil, err
					}
					time.Sleep(5 * time.Millisecond)
					return atkResp(req, 200, nil), nil
				}}, WithHedging(10*time.Millisecond, 1), tc.opt)
				req, _ := http.NewRequest("GET", "http://x/", nil)
				mustPanic(t, "boom", func() { rt.RoundTrip(req) })
				synctest.Wait()
				canceled := firstCanceled.Load()
				close(release) // let the test end either way
				synctest.Wait()
				if !canceled {
					t.Error("the first copy is still in flight after the request ended in a panic: it was never cancelled (nor reaped)")
				}
			})
		})
	}
}

// TestHedgeLoserSwitchingProtocolsClosed: a loser that got a 101 Switching Protocols
// response is closed, not drained: its body is the connection, and no
// context bounds reads from it. Before the fix, the reaper drained it up to
// WithDrainLimit and blocked for good on a peer waiting for the client to
// speak: the connection stayed open and RequestEnd never ran.
func TestHedgeLoserSwitchingProtocolsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		loserConn, winnerConn := newAtkConn(), newAtkConn()
		var requestEnd atomic.Bool
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			if i == 0 {
				// Answered at 15ms, just after the hedge won: the
				// response raced the cancel (net/http returns it then).
				time.Sleep(15 * time.Millisecond)
				return atkResp(req, http.StatusSwitchingProtocols, loserConn), nil
			}
			time.Sleep(2 * time.Millisecond) // the hedge, sent at 10ms, wins at 12ms
			return atkResp(req, http.StatusSwitchingProtocols, winnerConn), nil
		}}, WithHedging(10*time.Millisecond, 1), WithHooks(Hooks{
			RequestEnd: func(context.Context, *Attempt) { requestEnd.Store(true) },
		}))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "echo")
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("got %v, %v; want the hedge's 101", resp, err)
		}
		time.Sleep(time.Second) // the loser answers at 15ms
		synctest.Wait()
		closed, ended := loserConn.closed.Load(), requestEnd.Load()
		loserConn.Close() // unblock the reaper so the test can end
		resp.Body.Close()
		synctest.Wait()
		if !closed || !ended {
			t.Errorf("after the loser's 101 came back: its connection closed %v, RequestEnd ran %v; want true, true (the reaper is stuck draining an upgraded connection)", closed, ended)
		}
	})
}

// TestHedgeDroppedCopyStalledBodyHoldsNothing: a dropped copy is cancelled before its body is
// drained: a 503 whose body stalls (headers sent, then nothing) must not
// hold back a 200 another copy has already brought. Before the fix, the
// drain ran first, on the caller's goroutine, and the caller waited for
// the stalled body.
func TestHedgeDroppedCopyStalledBodyHoldsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			if i == 0 {
				time.Sleep(15 * time.Millisecond)
				// A 503 whose body stalls until the copy is cancelled
				// (as net/http's does), or for an hour.
				return atkResp(req, 503, &ctxBody{ctx: req.Context(), after: time.Hour}), nil
			}
			time.Sleep(10 * time.Millisecond) // the hedge, sent at 10ms, answers at 20ms
			return atkResp(req, 200, newAtkBody("ok")), nil
		}}, WithHedging(10*time.Millisecond, 1))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		start := time.Now()
		status, _, err := get(t, rt, req)
		if err != nil || status != 200 {
			t.Fatalf("got %d, %v; want the hedge's 200", status, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("the hedge's 200 came back at 20ms, RoundTrip returned after %v: the caller waited for the dropped 503's body", d)
		}
	})
}

// ctxBody blocks reads until ctx ends (then fails as net/http does) or
// after passes (then ends).
type ctxBody struct {
	ctx   context.Context
	after time.Duration
}

func (b *ctxBody) Read([]byte) (int, error) {
	if err := afterOrDone(b.ctx, b.after); err != nil {
		return 0, err
	}
	return 0, io.EOF
}

func (b *ctxBody) Close() error { return nil }

// TestHedgeRetryAfterOfDroppedCopyHonoured: a Retry-After on a copy dropped while another was
// in flight still binds the wait before the next round, as it would
// without hedging. Before the fix it was thrown away, and the next round
// went out after the backoff (1ms here) although the server asked for 2s.
func TestHedgeRetryAfterOfDroppedCopyHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var nextRound time.Time
		start := time.Now()
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			switch i {
			case 0: // the first copy: 503, come back in 2s
				time.Sleep(15 * time.Millisecond)
				r := atkResp(req, 503, nil)
				r.Header.Set("Retry-After", "2")
				return r, nil
			case 1: // the hedge, sent at 10ms: 503 at 20ms, no Retry-After
				time.Sleep(10 * time.Millisecond)
				return atkResp(req, 503, nil), nil
			}
			nextRound = time.Now()
			return atkResp(req, 200, nil), nil
		}}, WithHedging(10*time.Millisecond, 1), WithMaxAttempts(3),
			WithBackoff(time.Millisecond, time.Millisecond), WithJitter(JitterNone))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		if status, _, err := get(t, rt, req); err != nil || status != 200 {
			t.Fatalf("got %d, %v; want the retry's 200", status, err)
		}
		if got, want := nextRound.Sub(start), 15*time.Millisecond+2*time.Second; got < want {
			t.Errorf("the next round was sent %v after the start; the server's Retry-After (2s, at 15ms) asked for no earlier than %v", got, want)
		}
	})
}

// TestHedgeBudgetTokensWhenJudged: Attempt.BudgetTokens is what the bucket holds
// when the attempt is judged, for hedges too. Before the fix, a hedge kept
// the level read when it was paid for: a winning hedge reported a token a
// later hedge had since spent (9, while the bucket held 8).
func TestHedgeBudgetTokensWhenJudged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := NewBudget(1, 0, nil) // burst 10, never refilled
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		ends := map[int]float64{}
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			if i == 1 { // the first hedge, sent at 10ms, answers at 25ms
				time.Sleep(15 * time.Millisecond)
				return atkResp(req, 200, nil), nil
			}
			return nil, stall(req, nil) // the first copy and the second hedge stall
		}}, WithHedging(10*time.Millisecond, 2), WithMaxAttempts(5), WithBudget(b), WithHooks(Hooks{
			AttemptEnd: func(_ context.Context, a *Attempt) {
				mu.Lock()
				ends[a.Number] = a.BudgetTokens
				mu.Unlock()
			},
		}))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		if status, _, err := get(t, rt, req); err != nil || status != 200 {
			t.Fatalf("got %d, %v", status, err)
		}
		level := b.level(req, time.Now())
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if level != 8 {
			t.Fatalf("the bucket holds %v; want 8 (10, less two hedges)", level)
		}
		if ends[2] != level {
			t.Errorf("the winning hedge's AttemptEnd says BudgetTokens %v; the bucket held %v after its decision (its losing siblings say %v and %v)", ends[2], level, ends[1], ends[3])
		}
	})
}

// TestHedgeLoserSupersededAfterWin: Copies that lose to a winner are reported
// superseded even when the caller's context is cancelled before they are
// reaped (http.Client with a Timeout cancels it as soon as the body is
// closed). Before the fix, the reason depended on that timing: canceled
// if the caller's context was done when the loser returned.
func TestHedgeLoserSupersededAfterWin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var mu sync.Mutex
		var loser *Attempt
		tr := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			if i == 0 {
				<-req.Context().Done() // cancelled when the hedge wins ...
				<-release              // ... and slow to return (a dial, say)
				return nil, req.Context().Err()
			}
			time.Sleep(5 * time.Millisecond)
			return atkResp(req, 200, newAtkBody("ok")), nil
		}}, WithHedging(10*time.Millisecond, 1), WithHooks(Hooks{
			AttemptEnd: func(_ context.Context, a *Attempt) {
				if a.Number == 1 {
					mu.Lock()
					c := *a
					loser = &c
					mu.Unlock()
				}
			},
		}))
		client := &http.Client{Transport: tr, Timeout: time.Minute}
		resp, err := client.Get("http://x/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close() // http.Client cancels the request's context here
		close(release)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if loser == nil {
			t.Fatal("the loser's AttemptEnd never ran")
		}
		if loser.Reason != ReasonSuperseded {
			t.Errorf("the loser is reported %s (class %s); want superseded: the request had ended with a winner", loser.Reason, loser.Class)
		}
	})
}

// TestHedgeReaperKeepsItsOwnRequest: the RoundTripper contract lets a caller reuse a
// request once the response body is closed, while cancelled copies may
// still be reaped. The reaper and the hooks it runs work on a private copy
// of the request. Before the fix they used the caller's: hooks reported
// the request's next use, and the race detector saw the caller's write
// against RequestEnd's read.
func TestHedgeReaperKeepsItsOwnRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var mu sync.Mutex
		var seen []string
		record := func(what string, a *Attempt) {
			mu.Lock()
			seen = append(seen, what+" "+a.Request.URL.Path)
			mu.Unlock()
		}
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			if i == 0 {
				<-release // a loser slow to return
				return nil, req.Context().Err()
			}
			time.Sleep(5 * time.Millisecond)
			return atkResp(req, 200, newAtkBody("ok")), nil
		}}, WithHedging(10*time.Millisecond, 1), WithHooks(Hooks{
			AttemptEnd: func(_ context.Context, a *Attempt) { record("end "+strconv.Itoa(a.Number), a) },
			RequestEnd: func(_ context.Context, a *Attempt) { record("request", a) },
		}))
		req, _ := http.NewRequest("GET", "http://x/first", nil)
		if status, _, err := get(t, rt, req); err != nil || status != 200 {
			t.Fatalf("got %d, %v", status, err)
		}
		// The body is closed: the caller may reuse the request.
		req.URL.Path = "/second"
		close(release)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		want := []string{"end 2 /first", "end 1 /first", "request /first"}
		if !slices.Equal(seen, want) {
			t.Errorf("hooks saw %q; want %q (the request as it was sent)", seen, want)
		}
	})
}

// ---------------------------------------------------------------------
// Probes: these pass; each says what it would catch.
// ---------------------------------------------------------------------

// TestHedgeAutoKeySameOnEveryCopy: a POST that WithIdempotencyKeys makes
// hedgeable carries one key on every copy, hedges and later rounds alike,
// with or without AttemptStart hooks and the attempt header; the caller's
// request is not changed. Catches: a key drawn per copy (the server could
// not deduplicate: the POST would be processed twice), a hedge sent
// without the key, the key leaking into the caller's header, or the
// attempt header missing or wrong on hedges.
func TestHedgeAutoKeySameOnEveryCopy(t *testing.T) {
	for _, hooks := range []bool{false, true} {
		t.Run(fmt.Sprintf("hooks=%v", hooks), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var mu sync.Mutex
				var keys, attemptHdr, bodies []string
				rt := &atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
					b, _ := io.ReadAll(req.Body)
					req.Body.Close()
					mu.Lock()
					keys = append(keys, req.Header.Get("Idempotency-Key"))
					attemptHdr = append(attemptHdr, req.Header.Get("X-Attempt"))
					bodies = append(bodies, string(b))
					mu.Unlock()
					if i < 2 { // round 1: the first copy and its hedge fail
						time.Sleep(time.Duration(15+5*i) * time.Millisecond)
						return atkResp(req, 503, nil), nil
					}
					return atkResp(req, 200, nil), nil
				}}
				opts := []Option{WithHedging(10*time.Millisecond, 1), WithIdempotencyKeys(true), WithAttemptHeader("X-Attempt"),
					WithMaxAttempts(3), WithBackoff(time.Millisecond, time.Millisecond)}
				if hooks {
					opts = append(opts, WithHooks(Hooks{AttemptStart: func(_ context.Context, a *Attempt) context.Context {
						a.Header.Set("Traceparent", "x")
						return nil
					}}))
				}
				req, _ := http.NewRequest("POST", "http://x/", strings.NewReader("payload"))
				if status, _, err := get(t, NewTransport(rt, opts...), req); err != nil || status != 200 {
					t.Fatalf("got %d, %v", status, err)
				}
				synctest.Wait()
				mu.Lock()
				defer mu.Unlock()
				if len(keys) != 3 {
					t.Fatalf("%d copies; want 3 (a first copy, a hedge, a retry)", len(keys))
				}
				for i, k := range keys {
					if k == "" || k != keys[0] {
						t.Errorf("copy %d carried Idempotency-Key %q; want the one key %q on every copy", i+1, k, keys[0])
					}
					if bodies[i] != "payload" {
						t.Errorf("copy %d carried body %q", i+1, bodies[i])
					}
				}
				if !slices.Equal(attemptHdr, []string{"", "2", "3"}) {
					t.Errorf("attempt headers %q; want none on the first copy, then 2 and 3", attemptHdr)
				}
				if req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Attempt") != "" || req.Header.Get("Traceparent") != "" {
					t.Errorf("the caller's header was changed: %v", req.Header)
				}
			})
		})
	}
}

// TestHedgePerRequestOptions: WithRequestOptions turns hedging on for a
// request of a Transport without it, and off for a request of one with it
// (maxHedges 0, or WithMaxAttempts(1)); a POST without a key stays single
// whatever the request asks. Catches: hedging read from the front door's
// policy instead of the request's, or a POST without a key sent twice.
func TestHedgePerRequestOptions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		base     []Option
		perReq   []Option
		method   string
		body     string
		wantSent int
	}{
		{"on per request", nil, []Option{WithHedging(10*time.Millisecond, 2)}, "GET", "", 3},
		{"off per request", []Option{WithHedging(10*time.Millisecond, 2)}, []Option{WithHedging(10*time.Millisecond, 0)}, "GET", "", 1},
		{"one attempt per request", []Option{WithHedging(10*time.Millisecond, 2)}, []Option{WithMaxAttempts(1)}, "GET", "", 1},
		{"POST without key, on per request", nil, []Option{WithHedging(10*time.Millisecond, 2)}, "POST", "payload", 1},
		{"POST without key, Transport hedges", []Option{WithHedging(time.Millisecond, 5)}, nil, "POST", "payload", 1},
		{"POST, key per request", nil, []Option{WithHedging(10*time.Millisecond, 2), WithIdempotencyKeys(true)}, "POST", "payload", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var sent atomic.Int32
				rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
					sent.Add(1)
					if req.Body != nil {
						io.Copy(io.Discard, req.Body)
						req.Body.Close()
					}
					if err := afterOrDone(req.Context(), 100*time.Millisecond); err != nil {
						return nil, err
					}
					return atkResp(req, 200, nil), nil
				}}, tc.base...)
				ctx := context.Background()
				if tc.perReq != nil {
					ctx = WithRequestOptions(ctx, tc.perReq...)
				}
				var body io.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				req, _ := http.NewRequestWithContext(ctx, tc.method, "http://x/", body)
				if status, _, err := get(t, rt, req); err != nil || status != 200 {
					t.Fatalf("got %d, %v", status, err)
				}
				synctest.Wait()
				if n := int(sent.Load()); n != tc.wantSent {
					t.Errorf("%d copies sent; want %d", n, tc.wantSent)
				}
			})
		})
	}
}

// TestHedgeLoserResponsesDrainedAndClosed: a copy that comes back with a
// response after the winner was chosen (its transport deaf to the
// cancel, or a response racing it) is drained up to WithDrainLimit and
// closed by the reaper, and so is a response returned beside an error;
// RequestEnd runs after the losers' AttemptEnd. Catches: loser bodies left
// open (a leaked connection per hedged request), drained past the limit,
// or hooks out of order.
func TestHedgeLoserResponsesDrainedAndClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		big := strings.Repeat("x", 1000)
		bodies := []*atkBody{newAtkBody(big), newAtkBody(big), newAtkBody("winner"), newAtkBody(big)}
		release := make(chan struct{})
		log := &hookLog{t: t}
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			switch i {
			case 0: // deaf to its cancel; answers 200 later
				<-release
				return atkResp(req, 200, bodies[0]), nil
			case 1: // deaf; answers a response and an error
				<-release
				return atkResp(req, 200, bodies[1]), errors.New("both")
			case 2:
				time.Sleep(5 * time.Millisecond) // sent at 20ms: wins at 25ms
				return atkResp(req, 200, bodies[2]), nil
			}
			return nil, errors.New("unexpected copy")
		}}, WithHedging(10*time.Millisecond, 2), WithDrainLimit(100), WithHooks(log.hooks()))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		if status, body, err := get(t, rt, req); err != nil || status != 200 || body != "winner" {
			t.Fatalf("got %d %q %v; want the second hedge's answer", status, body, err)
		}
		synctest.Wait()
		if got := log.get(); len(got) != 4 || got[3] != "end 3 hedge final" {
			t.Errorf("hooks before the losers return: %q", got)
		}
		close(release)
		synctest.Wait()
		if !bodies[0].closed.Load() || !bodies[1].closed.Load() {
			t.Errorf("loser bodies closed: %v, %v; want both", bodies[0].closed.Load(), bodies[1].closed.Load())
		}
		if n := bodies[0].read.Load(); n > 101 {
			t.Errorf("a loser's body was read for %d bytes; the drain limit is 100", n)
		}
		got := log.get()
		if len(got) != 7 || got[6] != "request 3 final" || !slices.Contains(got, "end 1 superseded") || !slices.Contains(got, "end 2 hedge superseded") {
			t.Errorf("hooks: %q; want both losers superseded, then RequestEnd naming the winner", got)
		}
	})
}

// TestHedgeCancelAtEveryMoment: the caller's context ends at every
// millisecond of a hedged request's life (before the first copy, during a
// round, exactly when a hedge fires, as a copy answers, during the wait
// between rounds, during the second round) and the invariants hold:
// RoundTrip returns, every copy's context ends, every body handed out is
// closed, AttemptStart and AttemptEnd pair up and match Outcome.Attempts,
// RequestEnd runs once and last, and the budget has paid for exactly the
// hedges sent and the rounds started (a token drawn for a retry the
// caller gave up during the wait is given back). Catches: a hang or leak
// on one of those instants, a missing or doubled hook, a token lost on a
// cut wait or drawn for a hedge never sent.
func TestHedgeCancelAtEveryMoment(t *testing.T) {
	for at := time.Duration(0); at <= 80*time.Millisecond; at += time.Millisecond {
		t.Run(at.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b, _ := NewBudget(0.2, 0, nil) // two tokens, never refilled
				var mu sync.Mutex
				var handed []*atkBody
				var inflight atomic.Int32
				rt := &atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
					inflight.Add(1)
					defer inflight.Add(-1)
					// Round 1: 503 at 12ms (the first copy, dropped), 503 at
					// 25ms (its hedge); a 20ms wait; round 2 from 45ms
					// stalls, and its hedge at 55ms finds the budget empty.
					d := time.Hour
					switch i {
					case 0:
						d = 12 * time.Millisecond
					case 1:
						d = 15 * time.Millisecond
					}
					if err := afterOrDone(req.Context(), d); err != nil {
						return nil, err
					}
					body := newAtkBody("503")
					mu.Lock()
					handed = append(handed, body)
					mu.Unlock()
					return atkResp(req, 503, body), nil
				}}
				var starts, ends, hedges, rounds, requestEnds atomic.Int32
				var endAfterRequestEnd atomic.Bool
				tr := NewTransport(rt, WithHedging(10*time.Millisecond, 1), WithMaxAttempts(4), WithBudget(b),
					WithBackoff(20*time.Millisecond, 20*time.Millisecond), WithJitter(JitterNone),
					WithHooks(Hooks{
						AttemptStart: func(ctx context.Context, a *Attempt) context.Context {
							starts.Add(1)
							if a.Hedge {
								hedges.Add(1)
							} else {
								rounds.Add(1)
							}
							return nil
						},
						AttemptEnd: func(ctx context.Context, a *Attempt) {
							if requestEnds.Load() > 0 {
								endAfterRequestEnd.Store(true)
							}
							ends.Add(1)
						},
						RequestEnd: func(ctx context.Context, a *Attempt) { requestEnds.Add(1) },
					}))
				var out Outcome
				ctx, cancel := context.WithCancel(WithOutcome(context.Background(), &out))
				defer cancel()
				time.AfterFunc(at, cancel)
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://x/", nil)
				resp, err := tr.RoundTrip(req)
				if err == nil {
					// A 503 that arrives as the caller gives up is the
					// outcome, as without hedging (Outcome says canceled).
					resp.Body.Close()
				}
				synctest.Wait()
				if n := inflight.Load(); n != 0 {
					t.Errorf("%d copies still in flight", n)
				}
				mu.Lock()
				for i, b := range handed {
					if !b.closed.Load() {
						t.Errorf("body %d left open", i)
					}
				}
				mu.Unlock()
				if s, e := starts.Load(), ends.Load(); s != e || int(s) != out.Attempts || out.Reason != ReasonCanceled {
					t.Errorf("%d AttemptStart, %d AttemptEnd, Outcome %+v; want all equal, canceled", s, e, out)
				}
				if requestEnds.Load() != 1 || endAfterRequestEnd.Load() {
					t.Errorf("RequestEnd ran %d times (an AttemptEnd after it: %v); want once, last", requestEnds.Load(), endAfterRequestEnd.Load())
				}
				// Full (2) at the start, plus the request's 0.2 (capped).
				if got, want := b.level(req, time.Now()), 2-float64(hedges.Load())-float64(rounds.Load()-1); got != want {
					t.Errorf("budget holds %v after %d hedges and %d rounds; want %v", got, hedges.Load(), rounds.Load(), want)
				}
			})
		})
	}
}

// TestHedgeWinnerSwitchingProtocolsStaysWritable: a hedged request whose
// winner is a 101 Switching Protocols keeps the connection writable (the
// hedged path always wraps the final body to release the copy's context).
// Catches: the wrapper dropping io.Writer, so the upgraded connection
// could not be written through tank.
func TestHedgeWinnerSwitchingProtocolsStaysWritable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn := newAtkConn()
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			if i == 0 {
				return nil, stall(req, nil)
			}
			return atkResp(req, http.StatusSwitchingProtocols, conn), nil
		}}, WithHedging(10*time.Millisecond, 1))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("got %v, %v", resp, err)
		}
		w, ok := resp.Body.(io.ReadWriteCloser)
		if !ok {
			t.Fatalf("the 101 body is %T; want an io.ReadWriteCloser", resp.Body)
		}
		io.WriteString(w, "ping")
		w.Close()
		synctest.Wait()
		conn.mu.Lock()
		defer conn.mu.Unlock()
		if conn.written.String() != "ping" || !conn.closed.Load() {
			t.Errorf("the connection got %q, closed %v", conn.written.String(), conn.closed.Load())
		}
	})
}

// TestHedgeClassifierVerdictsOnCopies: a classifier's Stop on a copy's 503
// ends the request with that copy at once (the copy in flight is
// superseded); its Retry on a copy's 200 while another copy is in flight
// drops it (body closed) and the other copy wins. Catches: classifier
// verdicts ignored for hedges, or a dropped copy's body left open.
func TestHedgeClassifierVerdictsOnCopies(t *testing.T) {
	t.Run("Stop on the hedge", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			log := &hookLog{t: t}
			rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
				if i == 0 {
					return nil, stall(req, nil)
				}
				return atkResp(req, 503, nil), nil
			}}, WithHedging(10*time.Millisecond, 1), WithHooks(log.hooks()),
				WithClassifier(func(a *Attempt) Verdict {
					if a.Response != nil && a.Response.StatusCode == 503 {
						return Stop
					}
					return Pass
				}))
			req, _ := http.NewRequest("GET", "http://x/", nil)
			if status, _, err := get(t, rt, req); err != nil || status != 503 {
				t.Fatalf("got %d, %v; want the hedge's 503, stopped by the classifier", status, err)
			}
			synctest.Wait()
			want := []string{"start 1", "start 2 hedge", "end 2 hedge classifier", "end 1 superseded", "request 2 classifier"}
			if got := log.get(); !slices.Equal(got, want) {
				t.Errorf("hooks %q; want %q", got, want)
			}
		})
	})
	t.Run("Retry on a 200", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dropped := newAtkBody("dropped")
			rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
				if i == 0 {
					time.Sleep(30 * time.Millisecond)
					return atkResp(req, 200, newAtkBody("first")), nil
				}
				time.Sleep(time.Millisecond)
				r := atkResp(req, 200, dropped)
				r.Header.Set("X-Bad", "1")
				return r, nil
			}}, WithHedging(10*time.Millisecond, 1), WithClassifier(func(a *Attempt) Verdict {
				if a.Response != nil && a.Response.Header.Get("X-Bad") != "" {
					return Retry
				}
				return Pass
			}))
			req, _ := http.NewRequest("GET", "http://x/", nil)
			if status, body, err := get(t, rt, req); err != nil || status != 200 || body != "first" {
				t.Fatalf("got %d %q %v; want the first copy's 200", status, body, err)
			}
			if !dropped.closed.Load() {
				t.Error("the dropped copy's body was not closed")
			}
		})
	})
}

// TestHedgeAttemptTimeoutPerCopy: with WithAttemptTimeout, each copy has
// its own timeout from its own start; a copy that times out while another
// is in flight is dropped, the last one's timeout ends the round, and the
// next round's copy wins. Catches: one timeout shared by the copies (the
// hedge cut at the first copy's deadline) or a timed-out copy ending the
// request.
func TestHedgeAttemptTimeoutPerCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var cut []time.Duration
		start := time.Now()
		log := &hookLog{t: t}
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			if i < 2 {
				err := stall(req, nil)
				mu.Lock()
				cut = append(cut, time.Since(start))
				mu.Unlock()
				return nil, err
			}
			return atkResp(req, 200, newAtkBody("ok")), nil
		}}, WithHedging(10*time.Millisecond, 1), WithAttemptTimeout(15*time.Millisecond), WithMaxAttempts(3),
			WithBackoff(time.Millisecond, time.Millisecond), WithJitter(JitterNone), WithHooks(log.hooks()))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		if status, body, err := get(t, rt, req); err != nil || status != 200 || body != "ok" {
			t.Fatalf("got %d %q %v", status, body, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(cut, []time.Duration{15 * time.Millisecond, 25 * time.Millisecond}) {
			t.Errorf("copies cut at %v; want 15ms and 25ms (each its own 15ms)", cut)
		}
		want := []string{"start 1", "start 2 hedge", "end 1 replayable", "end 2 hedge replayable", "start 3", "end 3 final", "request 3 final"}
		if got := log.get(); !slices.Equal(got, want) {
			t.Errorf("hooks %q; want %q", got, want)
		}
	})
}

// TestHedgeGroupAttempts: WithGroupAttempts counts every copy judged: a
// status cap of 2 is reached by a first copy's 503 (dropped) and its
// hedge's 503, and the request stops there rather than start a round.
// Catches: group caps ignored by hedged rounds.
func TestHedgeGroupAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out Outcome
		var sent atomic.Int32
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			sent.Add(1)
			time.Sleep(time.Duration(15+5*i) * time.Millisecond)
			return atkResp(req, 503, nil), nil
		}}, WithHedging(10*time.Millisecond, 1), WithMaxAttempts(10), WithGroupAttempts(0, 0, 2), WithBackoff(0, 0))
		req, _ := http.NewRequestWithContext(WithOutcome(context.Background(), &out), "GET", "http://x/", nil)
		if status, _, err := get(t, rt, req); err != nil || status != 503 {
			t.Fatalf("got %d, %v; want the last 503", status, err)
		}
		synctest.Wait()
		if sent.Load() != 2 || out.Attempts != 2 || out.Reason != ReasonAttempts {
			t.Errorf("%d copies, Outcome %+v; want 2, attempts_exhausted", sent.Load(), out)
		}
	})
}

// TestHedgeBodiesAcrossRounds: every copy of a hedged PUT, in every
// round, carries the whole body from a reader of its own, and the caller's
// body is closed exactly once. Catches: a body shared by copies (torn
// bodies at the server), a retry round sent with an empty body, or the
// caller's body closed twice or never.
func TestHedgeBodiesAcrossRounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		payload := strings.Repeat("0123456789", 500)
		var mu sync.Mutex
		var got []string
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			b, _ := io.ReadAll(req.Body)
			req.Body.Close()
			mu.Lock()
			got = append(got, string(b))
			mu.Unlock()
			if i < 4 {
				time.Sleep(time.Duration(25+i) * time.Millisecond)
				return atkResp(req, 502, nil), nil
			}
			return atkResp(req, 200, nil), nil
		}}, WithHedging(10*time.Millisecond, 1), WithMaxAttempts(5), WithBackoff(time.Millisecond, time.Millisecond))
		req, _ := http.NewRequest("PUT", "http://x/", strings.NewReader(payload))
		cc := &closeCounter{Reader: req.Body}
		req.Body = cc
		if status, _, err := get(t, rt, req); err != nil || status != 200 {
			t.Fatalf("got %d, %v", status, err)
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 5 {
			t.Fatalf("%d copies; want 5 (two rounds of two, then one)", len(got))
		}
		for i, b := range got {
			if b != payload {
				t.Errorf("copy %d carried %d bytes; want %d", i+1, len(b), len(payload))
			}
		}
		if n := cc.closes.Load(); n != 1 {
			t.Errorf("the caller's body was closed %d times; want 1", n)
		}
	})
}

// TestHedgeBlockingHookWithFullBuffer: more copies in flight than the
// result buffer holds (maxBuffered), all answering while the caller's
// goroutine is held in a slow AttemptStart: nothing deadlocks, every copy
// is judged, and every body is closed. Catches: a reaper or a loop that
// waits for fewer results than copies sent, or a copy blocked for ever on
// a full buffer.
func TestHedgeBlockingHookWithFullBuffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hedges = 24
		var mu sync.Mutex
		var bodies []*atkBody
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			time.Sleep(50 * time.Millisecond)
			b := newAtkBody("x")
			mu.Lock()
			bodies = append(bodies, b)
			mu.Unlock()
			if i == hedges {
				return atkResp(req, 200, b), nil
			}
			return atkResp(req, 503, b), nil
		}}, WithHedging(time.Millisecond, hedges), WithMaxAttempts(hedges+1), WithHooks(Hooks{
			AttemptStart: func(_ context.Context, a *Attempt) context.Context {
				if a.Number == hedges+1 {
					time.Sleep(time.Second) // every earlier copy answers meanwhile
				}
				return nil
			},
		}))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		if status, _, err := get(t, rt, req); err != nil || status != 200 {
			t.Fatalf("got %d, %v; want the last copy's 200", status, err)
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(bodies) != hedges+1 {
			t.Fatalf("%d copies answered; want %d", len(bodies), hedges+1)
		}
		for i, b := range bodies {
			if !b.closed.Load() {
				t.Errorf("body %d left open", i)
			}
		}
	})
}

// TestHedgeLoserPanicBecomesError: a copy whose transport panics after
// the request ended is reported by the reaper with the panic as its error
// (docs/design.md, Panics), and RequestEnd still runs. Catches: a panic on the
// reaping goroutine (it would end the program), or RequestEnd skipped.
func TestHedgeLoserPanicBecomesError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &hookLog{t: t}
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			if i == 0 {
				<-req.Context().Done()
				panic("late boom")
			}
			return atkResp(req, 200, nil), nil
		}}, WithHedging(10*time.Millisecond, 1), WithHooks(log.hooks()))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		if status, _, err := get(t, rt, req); err != nil || status != 200 {
			t.Fatalf("got %d, %v", status, err)
		}
		synctest.Wait()
		want := []string{"start 1", "start 2 hedge", "end 2 hedge final", "end 1 superseded", "request 2 final"}
		if got := log.get(); !slices.Equal(got, want) {
			t.Errorf("hooks %q; want %q", got, want)
		}
		if len(log.ends) == 2 && (log.ends[1].Err == nil || !strings.Contains(log.ends[1].Err.Error(), "late boom")) {
			t.Errorf("the loser's error is %v; want the panic", log.ends[1].Err)
		}
	})
}

// TestHedgeRetryAfterOnLastCopyHonoured: when the last copy in flight
// answers 503 with Retry-After, the next round waits for it. Catches:
// hedged rounds sleeping the backoff instead of the server's wait.
func TestHedgeRetryAfterOnLastCopyHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var next time.Time
		start := time.Now()
		rt := NewTransport(&atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			switch i {
			case 0:
				time.Sleep(15 * time.Millisecond)
				return atkResp(req, 503, nil), nil
			case 1:
				time.Sleep(10 * time.Millisecond)
				r := atkResp(req, 503, nil)
				r.Header.Set("Retry-After", "2")
				return r, nil
			}
			next = time.Now()
			return atkResp(req, 200, nil), nil
		}}, WithHedging(10*time.Millisecond, 1), WithMaxAttempts(3),
			WithBackoff(time.Millisecond, time.Millisecond), WithJitter(JitterNone))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		if status, _, err := get(t, rt, req); err != nil || status != 200 {
			t.Fatalf("got %d, %v", status, err)
		}
		if d := next.Sub(start); d != 20*time.Millisecond+2*time.Second {
			t.Errorf("next round at %v; want 2.02s (the last copy's 503 at 20ms, then Retry-After 2s)", d)
		}
	})
}

// TestHedgeManyRequestsShareAdaptiveOption: many requests at once, to
// many hosts, through two Transports given the same WithAdaptiveHedging
// Option and one budget: under -race nothing races, every request gets its
// answer, every body is closed, each host is learnt separately, and
// trained hosts are hedged. Catches: shared per-request state in the
// hedging setting or the tracker, a lost update, a leak under load.
func TestHedgeManyRequestsShareAdaptiveOption(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hosts, perHost = 12, 60
		opt := WithAdaptiveHedging(0.9, 2)
		b, _ := NewBudget(0.2, 10, nil)
		var mu sync.Mutex
		var bodies []*atkBody
		var calls atomic.Int32
		rt := &atkRT{f: func(i int, req *http.Request) (*http.Response, error) {
			calls.Add(1)
			// Host h answers in h+1 ms, but for the first copy of every
			// seventh request from the fourth on, which stalls for an hour.
			h, _ := strconv.Atoi(strings.TrimPrefix(req.URL.Host, "h"))
			d := time.Duration(h+1) * time.Millisecond
			if n, _ := strconv.Atoi(req.Header.Get("X-Round")); n%7 == 3 && req.Header.Get("X-Attempt") == "" {
				d = time.Hour
			}
			if err := afterOrDone(req.Context(), d); err != nil {
				return nil, err
			}
			body := newAtkBody("ok")
			mu.Lock()
			bodies = append(bodies, body)
			mu.Unlock()
			return atkResp(req, 200, body), nil
		}}
		hdr := WithAttemptHeader("X-Attempt")
		trs := []http.RoundTripper{NewTransport(rt, opt, WithBudget(b), hdr), NewTransport(rt, opt, WithBudget(b), hdr, WithMaxAttempts(4))}
		var wg sync.WaitGroup
		var failed atomic.Int32
		for round := range perHost {
			for h := range hosts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequest("GET", fmt.Sprintf("http://h%d/", h), nil)
					req.Header.Set("X-Round", strconv.Itoa(round))
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
					defer cancel()
					resp, err := trs[(round+h)%2].RoundTrip(req.WithContext(ctx))
					if err != nil {
						failed.Add(1)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}()
			}
			time.Sleep(100 * time.Millisecond)
		}
		wg.Wait()
		synctest.Wait()
		if failed.Load() != 0 {
			t.Errorf("%d requests failed", failed.Load())
		}
		p, _ := newPolicy(opt)
		if n := p.hedge.latency.Len(); n != hosts {
			t.Errorf("the tracker holds %d hosts; want %d", n, hosts)
		}
		for h := range hosts {
			d, ok := p.hedge.latency.Quantile(fmt.Sprintf("h%d", h), 0.5)
			want := time.Duration(h+1) * time.Millisecond
			if !ok || d < want || d > want+want/5+50*time.Microsecond {
				t.Errorf("host h%d: median %v, %v; want about %v", h, d, ok, want)
			}
		}
		// Each host has learnt from its 51 fast first copies by round 59,
		// whose stalled first copy is hedged.
		if calls.Load() < hosts*perHost+hosts {
			t.Errorf("%d calls for %d requests; want a hedge at least for each host's last stalled request", calls.Load(), hosts*perHost)
		}
		mu.Lock()
		defer mu.Unlock()
		for i, b := range bodies {
			if !b.closed.Load() {
				t.Errorf("body %d left open", i)
			}
		}
	})
}
