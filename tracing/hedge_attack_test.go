package tracing_test

// Adversarial tests of tracing hedged requests: each probes a risky area
// and says what it would catch; the one that says "before the fix" failed
// on the code it was written against. All run in virtual time
// (testing/synctest) against in-memory transports.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tankhttp/tank/middleware"
	"github.com/tankhttp/tank/tracing"
)

// callRT gives call i (from 0) to f.
type callRT struct {
	n atomic.Int32
	f func(i int, req *http.Request) (*http.Response, error)
}

func (r *callRT) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.f(int(r.n.Add(1)-1), req)
}

func resp(req *http.Request, status int) *http.Response {
	return &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("x")), Request: req}
}

// waitCtx waits for the copy's context to end, or for release (nil: never).
func waitCtx(req *http.Request, release <-chan struct{}) error {
	select {
	case <-req.Context().Done():
		return req.Context().Err()
	case <-release:
		return errors.New("released")
	}
}

// TestHedgeDroppedCopyRecordsNoWait: a hedged copy dropped because another is in
// flight has verdict Retry and no wait of its own: its span carries no
// tank.attempt.sleep or sleep_source, and tank.client.retry.sleep records
// nothing for it. Before the fix it recorded a 0s wait with an empty
// source, which a dashboard of retry waits would count.
func TestHedgeDroppedCopyRecordsNoWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		defer mp.Shutdown(context.Background())
		rec := newRecorder(t)
		tr := middleware.NewTransport(&callRT{f: func(i int, req *http.Request) (*http.Response, error) {
			if i == 0 { // the first copy: 503 at 15ms, dropped (the hedge is in flight)
				time.Sleep(15 * time.Millisecond)
				return resp(req, 503), nil
			}
			time.Sleep(10 * time.Millisecond) // the hedge: 200 at 20ms
			return resp(req, 200), nil
		}}, append(testOptions(rec, tracing.WithMeterProvider(mp)), middleware.WithHedging(10*time.Millisecond, 1))...)
		req, _ := http.NewRequest("GET", "http://x/", nil)
		r, err := tr.RoundTrip(req)
		if err != nil || r.StatusCode != 200 {
			t.Fatal(r, err)
		}
		r.Body.Close()
		synctest.Wait()

		_, attempts := byKind(rec.Ended())
		if len(attempts) != 2 {
			t.Fatalf("%d attempt spans; want 2", len(attempts))
		}
		dropped := attempts[0]
		if v, _ := attr(dropped.Attributes(), "tank.attempt.reason"); v.AsString() != "not_processed" {
			t.Fatalf("the first copy's reason is %q; want it dropped (not_processed)", v.AsString())
		}
		if v, ok := attr(dropped.Attributes(), "tank.attempt.sleep_source"); ok && v.AsString() != "backoff" && v.AsString() != "retry_after" {
			t.Errorf("the dropped copy's span has tank.attempt.sleep_source=%q; the package documents backoff or retry_after (on retries that wait)", v.AsString())
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != "tank.client.retry.sleep" {
					continue
				}
				for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
					src, _ := dp.Attributes.Value("tank.attempt.sleep_source")
					t.Errorf("tank.client.retry.sleep recorded %d wait(s) of %vs total (sleep_source=%q) for a request that never waited", dp.Count, dp.Sum, src.AsString())
				}
			}
		}
	})
}

// TestHedgeRedirectTracing: http.Client follows a redirect from a hedged
// hop to another hedged hop; hop 1's loser is reaped (its AttemptEnd and
// the hop's RequestEnd run on tank's goroutine) while hop 2's hooks run
// on the caller's. Under -race nothing races; every span ends; the hops
// are one trace (hop 2's request span a child of hop 1's);
// http.request.resend_count counts every copy of both hops (absent, 1, 2,
// 3); each hop names its winner and counts its own two attempts; the
// losers say superseded. Catches: the reaper of one hop sharing state
// with the next hop's hooks, a span never ended, a resend count that
// skips or repeats copies, a winner or attempt count taken from the wrong
// hop.
func TestHedgeRedirectTracing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder(t)
		release1, release2 := make(chan struct{}), make(chan struct{})
		var ended atomic.Int32
		tr := middleware.NewTransport(&callRT{f: func(i int, req *http.Request) (*http.Response, error) {
			switch i {
			case 0: // hop 1's first copy: cancelled when its hedge wins, back during hop 2
				<-req.Context().Done()
				<-release1
				return nil, req.Context().Err()
			case 1: // hop 1's hedge: redirects
				r := resp(req, http.StatusFound)
				r.Header.Set("Location", "/b")
				return r, nil
			case 2: // hop 2's first copy: back after the test lets it
				<-req.Context().Done()
				<-release2
				return nil, req.Context().Err()
			}
			close(release1) // hop 2's hedge: hop 1's reaper runs now
			time.Sleep(time.Millisecond)
			return resp(req, 200), nil
		}}, append(testOptions(rec), middleware.WithHedging(10*time.Millisecond, 1),
			middleware.WithHooks(middleware.Hooks{RequestEnd: func(context.Context, *middleware.Attempt) { ended.Add(1) }}))...)
		c := &http.Client{Transport: tr}
		r, err := c.Get("http://x/a")
		if err != nil || r.StatusCode != 200 {
			t.Fatal(r, err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		close(release2)
		synctest.Wait()
		if ended.Load() != 2 {
			t.Fatalf("RequestEnd ran %d times; want 2", ended.Load())
		}
		internal, attempts := byKind(rec.Ended())
		if len(internal) != 2 || len(attempts) != 4 {
			t.Fatalf("%d request spans, %d attempt spans ended; want 2, 4", len(internal), len(attempts))
		}
		if s := rec.Started(); len(s) != 6 {
			t.Errorf("%d spans started; want 6", len(s))
		}
		hop1, hop2 := internal[0], internal[1]
		if hop2.Parent().SpanID() != hop1.SpanContext().SpanID() || hop2.SpanContext().TraceID() != hop1.SpanContext().TraceID() {
			t.Error("hop 2's request span is not a child of hop 1's")
		}
		for i, s := range attempts {
			hop := hop1
			if i >= 2 {
				hop = hop2
			}
			if s.Parent().SpanID() != hop.SpanContext().SpanID() {
				t.Errorf("attempt %d is not a child of its hop's request span", i+1)
			}
			v, ok := attr(s.Attributes(), "http.request.resend_count")
			if i == 0 && ok || i > 0 && v.AsInt64() != int64(i) {
				t.Errorf("attempt %d: resend_count %v (present %v); want %d", i+1, v.AsInt64(), ok, i)
			}
			reason, _ := attr(s.Attributes(), "tank.attempt.reason")
			if want := map[bool]string{true: "superseded", false: "final"}[i%2 == 0]; reason.AsString() != want {
				t.Errorf("attempt %d: reason %q; want %q", i+1, reason.AsString(), want)
			}
		}
		for i, hop := range internal {
			a, _ := attr(hop.Attributes(), "tank.request.attempts")
			w, _ := attr(hop.Attributes(), "tank.request.winner")
			if a.AsInt64() != 2 || w.AsInt64() != 2 {
				t.Errorf("hop %d: attempts %d, winner %d; want 2, 2", i+1, a.AsInt64(), w.AsInt64())
			}
		}
	})
}

// TestHedgeSpansAtEveryCancel: the caller's context ends at every
// millisecond of a hedged request with retry rounds (before the first
// copy, as a hedge fires, as a copy answers, during the wait between
// rounds); whatever the instant, every span started is ended, there is
// one request span and it ends after every attempt span, its attempt
// count matches the attempt spans, each attempt span is its child and
// the hedge attribute marks exactly the copies sent beside another.
// Catches: a span left open by the reaper or by a cut wait, a request span
// ended before a loser's, a summary that miscounts.
func TestHedgeSpansAtEveryCancel(t *testing.T) {
	for at := time.Duration(0); at <= 60*time.Millisecond; at += time.Millisecond {
		t.Run(at.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := newRecorder(t)
				tr := middleware.NewTransport(&callRT{f: func(i int, req *http.Request) (*http.Response, error) {
					// Round 1: 503s at 12ms and 25ms; round 2 (from 26ms): stalls.
					d := []time.Duration{12 * time.Millisecond, 15 * time.Millisecond}
					if i >= len(d) {
						return nil, waitCtx(req, nil)
					}
					tm := time.NewTimer(d[i])
					defer tm.Stop()
					select {
					case <-tm.C:
						return resp(req, 503), nil
					case <-req.Context().Done():
						return nil, req.Context().Err()
					}
				}}, append(testOptions(rec), middleware.WithHedging(10*time.Millisecond, 1), middleware.WithMaxAttempts(4))...)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				time.AfterFunc(at, cancel)
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://x/", nil)
				if r, err := tr.RoundTrip(req); err == nil {
					r.Body.Close()
				}
				synctest.Wait()
				started, ended := rec.Started(), rec.Ended()
				if len(started) != len(ended) {
					t.Fatalf("%d spans started, %d ended", len(started), len(ended))
				}
				internal, attempts := byKind(ended)
				if len(internal) != 1 {
					t.Fatalf("%d request spans; want 1", len(internal))
				}
				req0 := internal[0]
				n, _ := attr(req0.Attributes(), "tank.request.attempts")
				if int(n.AsInt64()) != len(attempts) {
					t.Errorf("tank.request.attempts %d; %d attempt spans", n.AsInt64(), len(attempts))
				}
				for i, s := range attempts {
					if s.Parent().SpanID() != req0.SpanContext().SpanID() {
						t.Errorf("attempt %d is not a child of the request span", i+1)
					}
					if s.EndTime().After(req0.EndTime()) {
						t.Errorf("attempt %d ended after the request span", i+1)
					}
					_, hedge := attr(s.Attributes(), "tank.attempt.hedge")
					if want := i == 1 || i == 3; hedge != want {
						t.Errorf("attempt %d: hedge attribute %v; want %v", i+1, hedge, want)
					}
				}
			})
		})
	}
}

// TestHedgeConcurrentTracedRequests: many hedged, traced requests at once
// through one Transport (one tracing.Hooks): each request is its own
// trace, with its own request span holding exactly its own attempt spans.
// Catches, under -race: per-request tracing state shared across requests
// or across a request's copy goroutines and its reaper.
func TestHedgeConcurrentTracedRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder(t)
		const requests = 40
		tr := middleware.NewTransport(&callRT{f: func(i int, req *http.Request) (*http.Response, error) {
			d := time.Duration(1+i%7) * 4 * time.Millisecond
			tm := time.NewTimer(d)
			defer tm.Stop()
			select {
			case <-tm.C:
				return resp(req, []int{200, 503}[i%2]), nil
			case <-req.Context().Done():
				return nil, req.Context().Err()
			}
		}}, append(testOptions(rec), middleware.WithHedging(5*time.Millisecond, 2), middleware.WithMaxAttempts(6))...)
		var wg sync.WaitGroup
		for k := range requests {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://h%d/", k%3), nil)
				if r, err := tr.RoundTrip(req); err == nil {
					io.Copy(io.Discard, r.Body)
					r.Body.Close()
				}
			}()
		}
		wg.Wait()
		synctest.Wait()
		internal, attempts := byKind(rec.Ended())
		if len(internal) != requests {
			t.Fatalf("%d request spans; want %d", len(internal), requests)
		}
		if s := rec.Started(); len(s) != len(rec.Ended()) {
			t.Errorf("%d spans started, %d ended", len(s), len(rec.Ended()))
		}
		children := map[trace.SpanID]int{}
		for _, s := range attempts {
			children[s.Parent().SpanID()]++
		}
		byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
		for _, s := range internal {
			byID[s.SpanContext().SpanID()] = s
			n, _ := attr(s.Attributes(), "tank.request.attempts")
			if int(n.AsInt64()) != children[s.SpanContext().SpanID()] {
				t.Errorf("a request span says %d attempts and has %d attempt spans", n.AsInt64(), children[s.SpanContext().SpanID()])
			}
		}
		for id := range children {
			if _, ok := byID[id]; !ok {
				t.Errorf("attempt spans under a parent that is no request span")
			}
		}
	})
}
