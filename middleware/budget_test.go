package middleware

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestBudgetAllowsRatioOfRequests(t *testing.T) {
	b, err := NewBudget(0.2, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "http://api.test/", nil)
	now := time.Unix(1000, 0)
	// A new bucket starts full (burst = max(1, 0+10·0.2) = 2 tokens).
	retries := 0
	for i := 0; i < 100; i++ {
		b.deposit(req, now)
		for {
			if _, ok := b.withdraw(req, now); !ok {
				break
			}
			retries++
		}
	}
	// 2 banked + 100 deposits of 0.2 = 22, give or take float rounding.
	if retries < 21 || retries > 22 {
		t.Fatalf("100 requests paid for %d retries; want 21-22 (20%% plus the 2-token burst)", retries)
	}
}

func TestBudgetReservePerSecondAndBurstCap(t *testing.T) {
	b, _ := NewBudget(0, 5, nil)
	req := httptest.NewRequest("GET", "http://api.test/", nil)
	now := time.Unix(1000, 0)
	drain := func() (n int) {
		for ; n < 1000; n++ {
			if _, ok := b.withdraw(req, now); !ok {
				return n
			}
		}
		return n
	}
	if got := drain(); got != 5 {
		t.Fatalf("fresh bucket paid %d retries; want the 5-token burst", got)
	}
	now = now.Add(time.Second)
	if got := drain(); got != 5 {
		t.Fatalf("after 1s paid %d retries; want 5 (the reserve)", got)
	}
	now = now.Add(time.Hour)
	if got := drain(); got != 5 {
		t.Fatalf("after an idle hour paid %d retries; want the burst cap 5, not a banked storm", got)
	}
}

func TestBudgetKeysAreSeparate(t *testing.T) {
	b, _ := NewBudget(0, 1, nil)
	a := httptest.NewRequest("GET", "http://a.test/", nil)
	c := httptest.NewRequest("GET", "http://c.test/", nil)
	now := time.Unix(1000, 0)
	if _, ok := b.withdraw(a, now); !ok {
		t.Fatal("first retry to a.test refused")
	}
	if _, ok := b.withdraw(a, now); ok {
		t.Fatal("second retry to a.test allowed; its bucket should be empty")
	}
	if _, ok := b.withdraw(c, now); !ok {
		t.Fatal("c.test's retry refused because a.test spent its own budget")
	}
}

func TestNewBudgetRejectsBadValues(t *testing.T) {
	for _, tt := range []struct{ ratio, perSecond float64 }{
		{-0.1, 1}, {1.1, 1}, {math.NaN(), 1}, {0.2, -1}, {0.2, math.Inf(1)}, {0.2, math.NaN()},
	} {
		_, err := NewBudget(tt.ratio, tt.perSecond, nil)
		var oe *OptionError
		if !errors.As(err, &oe) {
			t.Errorf("NewBudget(%v, %v) = %v; want *OptionError", tt.ratio, tt.perSecond, err)
		}
	}
}

// budgetFakeRT answers every request with status and counts calls.
type budgetFakeRT struct {
	status int
	calls  int
}

func (f *budgetFakeRT) RoundTrip(req *http.Request) (*http.Response, error) {
	f.calls++
	return &http.Response{StatusCode: f.status, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// TestBudgetStopsRetriesThroughTransport: once the budget is spent, the
// attempt says ReasonBudget and the server sees no more retries.
func TestBudgetStopsRetriesThroughTransport(t *testing.T) {
	b, _ := NewBudget(0, 0, nil) // burst 1: exactly one retry in total
	rt := &budgetFakeRT{status: 503}
	var reasons []Reason
	var tokens []float64
	tr := NewTransport(rt, WithBudget(b), WithBackoff(0, 0), WithMaxAttempts(5),
		WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) {
			reasons = append(reasons, a.Reason)
			tokens = append(tokens, a.BudgetTokens)
		}}))
	for i := 0; i < 2; i++ {
		req := httptest.NewRequest("GET", "http://api.test/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil || resp.StatusCode != 503 {
			t.Fatalf("request %d: %v, %v; want the 503 back", i, resp, err)
		}
	}
	if rt.calls != 3 {
		t.Errorf("server saw %d attempts; want 3 (1+1 retry, then 1 with no budget left)", rt.calls)
	}
	want := []Reason{ReasonNotProcessed, ReasonBudget, ReasonBudget}
	if len(reasons) != len(want) {
		t.Fatalf("reasons %v; want %v", reasons, want)
	}
	for i := range want {
		if reasons[i] != want[i] {
			t.Errorf("attempt %d reason %s; want %s", i, reasons[i], want[i])
		}
	}
	if tokens[0] != 0 {
		t.Errorf("tokens after the paid retry = %v; want 0", tokens[0])
	}
}

// TestBudgetRefundsRetryNotMade: a retry the budget paid for but that could
// not be made (GetBody failed) gives its token back.
func TestBudgetRefundsRetryNotMade(t *testing.T) {
	b, _ := NewBudget(0, 0, nil) // one token in all
	rt := &budgetFakeRT{status: 503}
	tr := NewTransport(rt, WithBudget(b), WithBackoff(0, 0))
	req := httptest.NewRequest("PUT", "http://api.test/", strings.NewReader("x"))
	req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("gone") }
	resp, err := tr.RoundTrip(req)
	if err != nil || resp.StatusCode != 503 || rt.calls != 1 {
		t.Fatalf("got %v, %v after %d calls; want the 503 after 1 attempt", resp, err, rt.calls)
	}
	if _, ok := b.withdraw(req, time.Now()); !ok {
		t.Error("the token paid for the retry that was never made was not refunded")
	}
}

// TestBudgetForgetsHosts: a client that talks to many hosts keeps buckets
// only for those with recent retries, and never more than maxBuckets.
func TestBudgetForgetsHosts(t *testing.T) {
	b, _ := NewBudget(0.2, 10, nil)
	now := time.Unix(1000, 0)
	for i := 0; i < 50_000; i++ {
		req := httptest.NewRequest("GET", "http://h"+strconv.Itoa(i)+".test/", nil)
		b.deposit(req, now)
		if i%2 == 0 {
			b.withdraw(req, now) // half the hosts have spent a token
		}
		now = now.Add(time.Millisecond)
		if n := b.size(); n > maxBuckets {
			t.Fatalf("after %d hosts the budget keeps %d buckets; want at most %d", i+1, n, maxBuckets)
		}
	}
	// A bucket that has filled up again is forgotten: it is a new one.
	now = now.Add(time.Hour)
	b.deposit(httptest.NewRequest("GET", "http://last.test/", nil), now)
	for i := 0; i < 2*minSweep; i++ {
		b.deposit(httptest.NewRequest("GET", "http://fresh"+strconv.Itoa(i)+".test/", nil), now)
	}
	if n := b.size(); n > 2*minSweep+1 {
		t.Errorf("an hour later, %d buckets kept; want only the %d new hosts' (every old one is full again)", n, 2*minSweep+1)
	}
}

// TestBudgetForgettingKeepsDecisions: forgetting a full bucket changes
// nothing for its host: it is refused and allowed exactly as before.
func TestBudgetForgettingKeepsDecisions(t *testing.T) {
	run := func(others int) []bool {
		b, _ := NewBudget(0.1, 1, nil)
		req := httptest.NewRequest("GET", "http://api.test/", nil)
		now := time.Unix(1000, 0)
		var got []bool
		for i := 0; i < 200; i++ {
			b.deposit(req, now)
			_, ok := b.withdraw(req, now)
			got = append(got, ok)
			for j := 0; j < others; j++ { // traffic to other hosts forces sweeps
				b.deposit(httptest.NewRequest("GET", "http://o"+strconv.Itoa(i*others+j)+".test/", nil), now)
			}
			now = now.Add(300 * time.Millisecond)
		}
		return got
	}
	alone, crowded := run(0), run(50)
	for i := range alone {
		if alone[i] != crowded[i] {
			t.Fatalf("retry %d: allowed %v alone, %v among many hosts; want the same", i+1, alone[i], crowded[i])
		}
	}
}

// TestBudgetRefundsCancelDuringWait: the token drawn for a retry is given
// back when the caller gives up during the wait, through the Transport and
// through a run's Wait (the backoff front door's path).
func TestBudgetRefundsCancelDuringWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := NewBudget(0, 0, nil) // one token in all
		rt := &budgetFakeRT{status: 503}
		tr := NewTransport(rt, WithBudget(b), WithBackoff(time.Hour, time.Hour), WithJitter(JitterNone))
		ctx, cancel := context.WithCancel(context.Background())
		req := httptest.NewRequest("GET", "http://api.test/", nil).WithContext(ctx)
		done := make(chan error)
		go func() { _, err := tr.RoundTrip(req); done <- err }()
		synctest.Wait() // the retry is paid for and tank waits
		cancel()
		if err := <-done; !errors.Is(err, ReasonCanceled) {
			t.Fatalf("RoundTrip error = %v; want ReasonCanceled", err)
		}
		if _, ok := b.withdraw(req, time.Now()); !ok {
			t.Error("the token of the retry cut by the cancel was not refunded")
		}
	})
}

// TestBudgetTokensOnEveryAttempt: with a budget, every attempt reports the
// bucket's level, the final one included; without one, -1.
func TestBudgetTokensOnEveryAttempt(t *testing.T) {
	b, _ := NewBudget(0.2, 0, nil)
	for _, tt := range []struct {
		opt  Option
		want []float64
	}{
		{WithBudget(b), []float64{1, 0, 0}}, // a full bucket of 2, a retry each: 1, 0; the final attempt sees 0
		{WithBudget(nil), []float64{-1, -1, -1}},
	} {
		var got []float64
		h := Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { got = append(got, a.BudgetTokens) }}
		rt := &budgetFakeRT{status: 503}
		tr := NewTransport(rt, tt.opt, WithBackoff(0, 0), WithHooks(h))
		resp, _ := tr.RoundTrip(httptest.NewRequest("GET", "http://api.test/", nil))
		resp.Body.Close()
		if len(got) != 3 {
			t.Fatalf("%d attempts; want 3", len(got))
		}
		for i := range got {
			if math.Abs(got[i]-tt.want[i]) > 1e-9 {
				t.Errorf("attempt %d: BudgetTokens = %v; want %v", i+1, got[i], tt.want[i])
			}
		}
	}
}
