package middleware

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestJitterThroughPolicy drives the wait schedule with a fixed random
// draw (the policy's rand seam) and checks each jitter's waits.
func TestJitterThroughPolicy(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct {
		j    Jitter
		want []time.Duration
	}{
		{JitterFull, []time.Duration{50 * ms, 100 * ms, 200 * ms}},
		{JitterNone, []time.Duration{100 * ms, 200 * ms, 400 * ms}},
		// [initial, 3·prev): 100+0.5·(300-100), 100+0.5·(600-100), then 3·350 > 1s: 100+0.5·(1000-100).
		{JitterDecorrelated, []time.Duration{200 * ms, 350 * ms, 550 * ms}},
	} {
		p, err := newPolicy(WithMaxAttempts(4), WithBackoff(100*ms, time.Second), WithJitter(tt.j))
		if err != nil {
			t.Fatal(err)
		}
		p.rand = func() float64 { return 0.5 }
		req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
		r := p.newRun(req, &fakeRT{status: 503})
		var got []time.Duration
		for range 10 {
			a := r.Step()
			if a.Verdict != Retry {
				break
			}
			got = append(got, a.Sleep)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("jitter %d waits (-want +got):\n%s", tt.j, diff)
		}
		if resp, err := r.Result(); err != nil || resp.StatusCode != 503 {
			t.Errorf("Result() = %v, %v; want the last 503", resp, err)
		}
	}
}

// TestRetryAfterHTTPDate: an HTTP-date Retry-After is a wait until then,
// measured with the policy's clock.
func TestRetryAfterHTTPDate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		rt := &fakeRT{status: 503, retryAfter: start.Add(9 * time.Second).UTC().Format(http.TimeFormat)}
		tr := NewTransport(rt, WithMaxAttempts(2))
		req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		// The date has one-second resolution; synctest's clock starts on a second.
		if el := time.Since(start); el != 9*time.Second {
			t.Errorf("waited %v of fake time; want 9s", el)
		}
	})
}

// TestRetriesOverHTTP2: over HTTP/2 (where net/http needs GetBody to send
// a body twice) a buffered POST body is replayed byte for byte on one
// connection.
func TestRetriesOverHTTP2(t *testing.T) {
	payload := bigPayload(50 << 10)
	var (
		mu     sync.Mutex
		bodies [][]byte
		protos []string
		conns  atomic.Int32
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		bodies = append(bodies, b)
		protos = append(protos, r.Proto)
		if len(bodies) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	base := srv.Client().Transport.(*http.Transport)
	defer base.CloseIdleConnections()
	base.ForceAttemptHTTP2 = true

	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL, io.NopCloser(bytes.NewReader(payload)))
	resp, err := NewTransport(base, WithBackoff(0, 0)).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if resp.StatusCode != http.StatusCreated || len(bodies) != 3 {
		t.Fatalf("status %d after %d hits; want 201 after 3", resp.StatusCode, len(bodies))
	}
	for i, b := range bodies {
		if protos[i] != "HTTP/2.0" || !bytes.Equal(b, payload) {
			t.Errorf("hit %d: %s, %d bytes; want HTTP/2.0 and the %d-byte payload", i+1, protos[i], len(b), len(payload))
		}
	}
	if conns.Load() != 1 {
		t.Errorf("server saw %d connections; want 1 (HTTP/2 streams share it)", conns.Load())
	}
}

// TestWithSchedule: a caller's schedule gives the waits, is built once per
// request, and ends retrying by returning false.
func TestWithSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		built := 0
		sched := WithSchedule(func() func(int) (time.Duration, bool) {
			built++
			return func(n int) (time.Duration, bool) {
				switch n {
				case 1:
					return -time.Second, true // negative: no wait
				case 2:
					return 3 * time.Second, true
				}
				return 0, false
			}
		})
		rt := &fakeRT{status: 503}
		var reasons []Reason
		tr := NewTransport(rt, sched, WithMaxAttempts(10),
			WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { reasons = append(reasons, a.Reason) }}))
		for i := 0; i < 2; i++ {
			reasons = nil
			start := time.Now()
			req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil || resp.StatusCode != 503 {
				t.Fatalf("RoundTrip = %v, %v; want the 503", resp, err)
			}
			if el := time.Since(start); el != 3*time.Second {
				t.Errorf("took %v of fake time; want 3s (0, then 3s)", el)
			}
			want := []Reason{ReasonNotProcessed, ReasonNotProcessed, ReasonAttempts}
			if diff := cmp.Diff(want, reasons); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
		}
		if built != 2 || rt.calls != 6 {
			t.Errorf("schedule built %d times for %d attempts; want 2 (once per request) and 6", built, rt.calls)
		}
	})
}
