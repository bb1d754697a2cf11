package middleware

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tankhttp/tank/internal/testsupport/faultserver"
)

// newClientTransport returns an http.Transport that counts its connections,
// and checks when the test ends that none is left open.
func newClientTransport(t *testing.T) (*http.Transport, *faultserver.Dialer) {
	d := &faultserver.Dialer{}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if n := d.WaitClosed(10 * time.Second); n != 0 {
			t.Errorf("%d client connections open after CloseIdleConnections; want 0", n)
		}
	})
	return tr, d
}

func steps(codes ...int) []faultserver.Step {
	s := make([]faultserver.Step, len(codes))
	for i, c := range codes {
		s[i] = faultserver.Step{Status: c, Body: http.StatusText(c)}
	}
	return s
}

func newScripted(t *testing.T, codes ...int) *faultserver.Scripted {
	s := faultserver.NewScripted(steps(codes...)...)
	t.Cleanup(s.Close)
	return s
}

func roundTripAndClose(t *testing.T, rt http.RoundTripper, req *http.Request) (*http.Response, error) {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	if resp != nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// closeCounter is a request body that counts its Close calls.
type closeCounter struct {
	io.Reader
	closes atomic.Int32
}

func (c *closeCounter) Close() error { c.closes.Add(1); return nil }

func bigPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// TestBodyIdenticalOnEveryAttempt: the server receives the same bytes on
// every attempt, whether the body comes with GetBody or must be buffered.
func TestBodyIdenticalOnEveryAttempt(t *testing.T) {
	payload := bigPayload(100 << 10)
	for _, tt := range []struct {
		name string
		body func() io.Reader
	}{
		{"GetBody", func() io.Reader { return bytes.NewReader(payload) }},
		{"plain reader, buffered", func() io.Reader { return io.NopCloser(io.MultiReader(bytes.NewReader(payload))) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScripted(t, 503, 503, 200)
			base, _ := newClientTransport(t)
			req, _ := http.NewRequest(http.MethodPost, srv.URL, tt.body())
			if tt.name == "GetBody" && req.GetBody == nil || tt.name != "GetBody" && req.GetBody != nil {
				t.Fatalf("test setup: GetBody = %v", req.GetBody != nil)
			}
			resp, err := roundTripAndClose(t, NewTransport(base, WithBackoff(0, 0)), req)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("RoundTrip = %v, %v; want 200", resp, err)
			}
			bodies := srv.Bodies()
			if len(bodies) != 3 {
				t.Fatalf("server hits %d; want 3", len(bodies))
			}
			for i, b := range bodies {
				if !bytes.Equal(b, payload) {
					t.Errorf("attempt %d: server got %d bytes; want the %d-byte payload, byte for byte", i+1, len(b), len(payload))
				}
			}
		})
	}
}

// TestConnectionReusedAcrossRetries: retried responses are drained, so four
// 503s and a 200 travel on one connection.
func TestConnectionReusedAcrossRetries(t *testing.T) {
	srv := newScripted(t, 503, 503, 503, 503, 200)
	base, d := newClientTransport(t)
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err := roundTripAndClose(t, NewTransport(base, WithBackoff(0, 0), WithMaxAttempts(5)), req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("RoundTrip = %v, %v; want 200", resp, err)
	}
	if srv.Hits() != 5 {
		t.Errorf("server hits %d; want 5", srv.Hits())
	}
	if srv.Conns() != 1 || d.Dialed() != 1 {
		t.Errorf("server saw %d connections, client dialed %d; want 1 and 1 (retried bodies drained)", srv.Conns(), d.Dialed())
	}
}

// TestRequestBodyClosedOnce checks the RoundTripper contract on every path.
func TestRequestBodyClosedOnce(t *testing.T) {
	refused := "http://" + faultserver.RefusedAddr()
	for _, tt := range []struct {
		name    string
		codes   []int // scripted server; nil: refused address
		getBody bool
		opts    []Option
	}{
		{name: "success", codes: []int{200}},
		{name: "success/GetBody", codes: []int{200}, getBody: true},
		{name: "retry", codes: []int{503, 200}},
		{name: "retry/GetBody", codes: []int{503, 200}, getBody: true},
		{name: "retries exhausted", codes: []int{503}},
		{name: "refused"},
		{name: "refused/GetBody", getBody: true},
		{name: "over buffer limit", codes: []int{503}, opts: []Option{WithBufferLimit(3)}},
		{name: "invalid option", codes: []int{200}, opts: []Option{WithMaxAttempts(0)}},
		{name: "hooks", codes: []int{503, 200}, opts: []Option{WithHooks(Hooks{AttemptEnd: func(context.Context, *Attempt) {}})}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := refused
			if tt.codes != nil {
				u = newScripted(t, tt.codes...).URL
			}
			base, _ := newClientTransport(t)
			body := &closeCounter{Reader: strings.NewReader("payload")}
			req, _ := http.NewRequest(http.MethodPost, u, body)
			req.ContentLength = 7
			var getBodies []*closeCounter
			if tt.getBody {
				req.GetBody = func() (io.ReadCloser, error) {
					b := &closeCounter{Reader: strings.NewReader("payload")}
					getBodies = append(getBodies, b)
					return b, nil
				}
			}
			opts := append([]Option{WithBackoff(0, 0)}, tt.opts...)
			roundTripAndClose(t, NewTransport(base, opts...), req)
			if n := body.closes.Load(); n != 1 {
				t.Errorf("request body closed %d times; want exactly 1", n)
			}
			for i, b := range getBodies {
				if n := b.closes.Load(); n != 1 {
					t.Errorf("GetBody body %d closed %d times; want exactly 1", i+1, n)
				}
			}
		})
	}
}

// TestInvalidOptionFailsEveryRoundTrip: NewTransport does not panic on a bad
// option; RoundTrip reports it.
func TestInvalidOptionFailsEveryRoundTrip(t *testing.T) {
	srv := newScripted(t, 200)
	tr := NewTransport(nil, WithMaxAttempts(0))
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	_, err := tr.RoundTrip(req)
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Option != "WithMaxAttempts" {
		t.Fatalf("RoundTrip error %v; want *OptionError for WithMaxAttempts", err)
	}
	if srv.Hits() != 0 {
		t.Errorf("server hits %d; want 0", srv.Hits())
	}
}

// TestCallerRequestUnmodified: hooks that change headers, attempt headers
// and generated idempotency keys never reach the caller's request.
func TestCallerRequestUnmodified(t *testing.T) {
	srv := newScripted(t, 503, 503, 200)
	base, _ := newClientTransport(t)
	type ctxKey struct{}
	ctx := context.WithValue(context.Background(), ctxKey{}, "caller")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/path?q=1", strings.NewReader("payload"))
	req.Header.Set("X-Caller", "yes")

	body, getBody, header, u := req.Body, req.GetBody, req.Header, req.URL
	headerCopy, urlCopy := req.Header.Clone(), *req.URL
	tr := NewTransport(base, WithBackoff(0, 0), WithAttemptHeader("X-Attempt"), WithIdempotencyKeys(true),
		WithHooks(Hooks{AttemptStart: func(ctx context.Context, a *Attempt) context.Context {
			a.Header.Set("X-Hook", "added")
			a.Header.Del("X-Caller")
			return context.WithValue(ctx, ctxKey{}, "hook")
		}}))
	resp, err := roundTripAndClose(t, tr, req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("RoundTrip = %v, %v; want 200", resp, err)
	}
	if req.Body != body || reflect.ValueOf(req.GetBody).Pointer() != reflect.ValueOf(getBody).Pointer() {
		t.Error("req.Body or req.GetBody replaced")
	}
	if req.Context() != ctx {
		t.Error("req.Context() replaced")
	}
	if req.URL != u || *req.URL != urlCopy {
		t.Errorf("req.URL changed to %v; want %v", req.URL, &urlCopy)
	}
	if !sameMap(req.Header, header) {
		t.Error("req.Header replaced by another map")
	}
	if diff := cmp.Diff(headerCopy, req.Header); diff != "" {
		t.Errorf("req.Header changed (-before +after):\n%s", diff)
	}
	if req.Method != http.MethodPost || resp.Request == nil {
		t.Errorf("req.Method %q", req.Method)
	}
	if srv.Hits() != 3 {
		t.Errorf("server hits %d; want 3", srv.Hits())
	}
}

// TestHooksOrderAndHeaderCopy: RequestStart, then AttemptStart/AttemptEnd
// per attempt, then RequestEnd once; a header a hook adds reaches the server
// but not the caller's request.
func TestHooksOrderAndHeaderCopy(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	srvHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.Header.Get("X-Attempt-Hook"))
		if len(seen) < 3 {
			w.WriteHeader(503)
		}
	})
	srv := newHandlerServer(t, srvHandler)
	base, _ := newClientTransport(t)
	var events []string
	tr := NewTransport(base, WithBackoff(0, 0), WithHooks(Hooks{
		RequestStart: func(ctx context.Context, req *http.Request) context.Context {
			events = append(events, "RequestStart")
			return nil
		},
		AttemptStart: func(ctx context.Context, a *Attempt) context.Context {
			events = append(events, "AttemptStart")
			a.Header.Set("X-Attempt-Hook", string(rune('0'+a.Number)))
			return nil
		},
		AttemptEnd: func(ctx context.Context, a *Attempt) {
			events = append(events, "AttemptEnd:"+string(a.Class))
		},
		RequestEnd: func(ctx context.Context, last *Attempt) {
			events = append(events, "RequestEnd")
		},
	}))
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	if _, err := roundTripAndClose(t, tr, req); err != nil {
		t.Fatal(err)
	}
	want := []string{"RequestStart",
		"AttemptStart", "AttemptEnd:unavailable",
		"AttemptStart", "AttemptEnd:unavailable",
		"AttemptStart", "AttemptEnd:final",
		"RequestEnd"}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("hook events (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"1", "2", "3"}, seen); diff != "" {
		t.Errorf("server saw X-Attempt-Hook (-want +got):\n%s", diff)
	}
	if v := req.Header.Get("X-Attempt-Hook"); v != "" {
		t.Errorf("caller's req.Header gained X-Attempt-Hook=%q", v)
	}
}

// TestUntrustedCertificateNotRetried: one connection attempt, ClassTLS,
// ReasonPermanent, for a method that would otherwise be retried.
func TestUntrustedCertificateNotRetried(t *testing.T) {
	srv := faultserver.NewScriptedTLS(steps(200)...)
	defer srv.Close()
	base, d := newClientTransport(t)
	var classes []Class
	tr := NewTransport(base, WithBackoff(0, 0), WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) {
		classes = append(classes, a.Class)
	}}))
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	_, err := tr.RoundTrip(req)
	var ee *ExhaustedError
	if !errors.As(err, &ee) || ee.Reason != ReasonPermanent || ee.Attempts != 1 {
		t.Fatalf("RoundTrip error %v; want *ExhaustedError after 1 attempt, ReasonPermanent", err)
	}
	if len(classes) != 1 || classes[0] != ClassTLS {
		t.Errorf("classes %v; want [tls]", classes)
	}
	if srv.Conns() != 1 || d.Dialed() != 1 || srv.Hits() != 0 {
		t.Errorf("server connections %d, client dials %d, hits %d; want 1, 1, 0", srv.Conns(), d.Dialed(), srv.Hits())
	}
}

// TestBodyOverBufferLimitSentOnce: a body without GetBody larger than the
// buffer limit reaches the server whole, once, and is not retried.
func TestBodyOverBufferLimitSentOnce(t *testing.T) {
	payload := bigPayload(4096)
	srv := newScripted(t, 503, 200)
	base, _ := newClientTransport(t)
	var reasons []Reason
	tr := NewTransport(base, WithBackoff(0, 0), WithBufferLimit(1024), WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) {
		reasons = append(reasons, a.Reason)
	}}))
	req, _ := http.NewRequest(http.MethodPut, srv.URL, io.NopCloser(bytes.NewReader(payload)))
	resp, err := roundTripAndClose(t, tr, req)
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("RoundTrip = %v, %v; want the 503 back", resp, err)
	}
	if diff := cmp.Diff([]Reason{ReasonBodyNotReplayable}, reasons); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	bodies := srv.Bodies()
	if len(bodies) != 1 || !bytes.Equal(bodies[0], payload) {
		t.Errorf("server got %d requests; want 1 carrying all %d bytes", len(bodies), len(payload))
	}
}

// TestGetBodyFailureKeepsLastResponse: when the body cannot be produced for
// a retry, the last response is returned (and the server hit once); after a
// transport error, the error says why.
func TestGetBodyFailureKeepsLastResponse(t *testing.T) {
	errGone := errors.New("body gone")
	newReq := func(u string) *http.Request {
		req, _ := http.NewRequest(http.MethodPut, u, strings.NewReader("payload"))
		req.GetBody = func() (io.ReadCloser, error) { return nil, errGone }
		return req
	}
	t.Run("response", func(t *testing.T) {
		srv := newScripted(t, 503, 200)
		base, _ := newClientTransport(t)
		resp, err := roundTripAndClose(t, NewTransport(base, WithBackoff(0, 0)), newReq(srv.URL))
		if err != nil || resp.StatusCode != 503 {
			t.Fatalf("RoundTrip = %v, %v; want the 503", resp, err)
		}
		if srv.Hits() != 1 {
			t.Errorf("server hits %d; want 1", srv.Hits())
		}
	})
	t.Run("error", func(t *testing.T) {
		base, _ := newClientTransport(t)
		_, err := NewTransport(base, WithBackoff(0, 0)).RoundTrip(newReq("http://" + faultserver.RefusedAddr()))
		var be *BodyError
		if !errors.As(err, &be) || !errors.Is(err, errGone) || !errors.Is(err, ReasonBodyNotReplayable) {
			t.Fatalf("RoundTrip error %v; want a *BodyError wrapping the GetBody error and ReasonBodyNotReplayable", err)
		}
	})
}

// TestGroupAttempts: per-group caps stop a group early while the total
// cap still allows more.
func TestGroupAttempts(t *testing.T) {
	t.Run("status", func(t *testing.T) {
		srv := newScripted(t, 503)
		base, _ := newClientTransport(t)
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		resp, err := roundTripAndClose(t, NewTransport(base, WithBackoff(0, 0), WithMaxAttempts(5), WithGroupAttempts(0, 0, 2)), req)
		if err != nil || resp.StatusCode != 503 || srv.Hits() != 2 {
			t.Fatalf("RoundTrip = %v, %v with %d hits; want the 503 after 2 hits", resp, err, srv.Hits())
		}
	})
	t.Run("not sent", func(t *testing.T) {
		base, _ := newClientTransport(t)
		req, _ := http.NewRequest(http.MethodGet, "http://"+faultserver.RefusedAddr(), nil)
		_, err := NewTransport(base, WithBackoff(0, 0), WithMaxAttempts(5), WithGroupAttempts(3, 0, 0)).RoundTrip(req)
		var ee *ExhaustedError
		if !errors.As(err, &ee) || ee.Attempts != 3 || ee.Reason != ReasonAttempts {
			t.Fatalf("RoundTrip error %v; want exhausted after 3 attempts", err)
		}
	})
	t.Run("sent", func(t *testing.T) {
		s := faultserver.NewRaw(faultserver.ReadRST)
		defer s.Close()
		base, _ := newClientTransport(t)
		req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
		_, err := NewTransport(base, WithBackoff(0, 0), WithMaxAttempts(5), WithGroupAttempts(0, 2, 0)).RoundTrip(req)
		var ee *ExhaustedError
		if !errors.As(err, &ee) || ee.Attempts != 2 || s.Hits() != 2 {
			t.Fatalf("RoundTrip error %v, %d hits; want exhausted after 2 attempts and 2 hits", err, s.Hits())
		}
	})
}

// TestClassifierChain: classifiers run in order, the first verdict other
// than Pass wins, and the default rules come last.
func TestClassifierChain(t *testing.T) {
	srv := newScripted(t, 404, 404, 200)
	base, _ := newClientTransport(t)
	var calls []string
	pass := func(a *Attempt) Verdict { calls = append(calls, "pass"); return Pass }
	retry404 := func(a *Attempt) Verdict {
		calls = append(calls, "retry404")
		if a.Response != nil && a.Response.StatusCode == 404 {
			return Retry
		}
		return Pass
	}
	stopAll := func(a *Attempt) Verdict { calls = append(calls, "stopAll"); return Stop }
	var reasons []Reason
	tr := NewTransport(base, WithBackoff(0, 0),
		WithClassifier(pass), WithClassifier(retry404), WithClassifier(stopAll),
		WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { reasons = append(reasons, a.Reason) }}))
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x"))
	resp, err := roundTripAndClose(t, tr, req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("RoundTrip = %v, %v; want 200 after two retried 404s", resp, err)
	}
	wantCalls := []string{"pass", "retry404", "pass", "retry404", "pass", "retry404", "stopAll"}
	if diff := cmp.Diff(wantCalls, calls); diff != "" {
		t.Errorf("classifier calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Reason{ReasonClassifier, ReasonClassifier, ReasonClassifier}, reasons); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
}

// TestClassifierCannotOverrideCancellation: a done context stops the
// request even when a classifier asks for a retry.
func TestClassifierCannotOverrideCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := newHandlerServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cancel()
		w.WriteHeader(503)
	}))
	base, _ := newClientTransport(t)
	called := 0
	tr := NewTransport(base, WithBackoff(0, 0), WithMaxAttempts(5), WithClassifier(func(*Attempt) Verdict { called++; return Retry }))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := roundTripAndClose(t, tr, req)
	var ee *ExhaustedError
	if err == nil {
		// net/http may have the 503 in hand before it sees the cancel.
		if resp.StatusCode != 503 {
			t.Fatalf("status %d; want 503", resp.StatusCode)
		}
	} else if !errors.As(err, &ee) || ee.Reason != ReasonCanceled || !errors.Is(err, context.Canceled) {
		t.Fatalf("RoundTrip error %v; want *ExhaustedError, ReasonCanceled, context.Canceled", err)
	}
	if called != 0 {
		t.Errorf("classifier called %d times for a canceled request; want 0", called)
	}
	if srv.hits.Load() != 1 {
		t.Errorf("server hits %d; want 1", srv.hits.Load())
	}
}

type handlerServer struct {
	URL  string
	hits atomic.Int32
}

// newHandlerServer runs h on a loopback httptest server and counts hits.
func newHandlerServer(t *testing.T, h http.Handler) *handlerServer {
	hs := &handlerServer{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		hs.hits.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	hs.URL = s.URL
	return hs
}

// TestNilRequestHeader: a request without a Header map (http.Client fills
// one in; a RoundTripper may be called without) does not panic when hooks
// or the attempt header write headers.
func TestNilRequestHeader(t *testing.T) {
	u, _ := url.Parse("http://api.test/")
	rt := &fakeRT{status: 503}
	tr := NewTransport(rt, WithBackoff(0, 0), WithAttemptHeader("X-Attempt"),
		WithHooks(Hooks{AttemptStart: func(ctx context.Context, a *Attempt) context.Context {
			a.Header.Set("Traceparent", "00-x")
			return nil
		}}))
	req := &http.Request{Method: http.MethodGet, URL: u}
	resp, err := tr.RoundTrip(req)
	if err != nil || resp.StatusCode != 503 || rt.calls != 3 {
		t.Fatalf("RoundTrip = %v, %v after %d attempts; want the 503 after 3", resp, err, rt.calls)
	}
	if req.Header != nil {
		t.Errorf("caller's req.Header = %v; want it left nil", req.Header)
	}
}

// TestConcurrentRequestsShareTransport: one Transport serves many
// goroutines; each request is retried on its own (the server answers 503
// to first attempts only, told apart by the attempt header).
func TestConcurrentRequestsShareTransport(t *testing.T) {
	srv := newHandlerServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Attempt") == "" {
			w.WriteHeader(503)
		}
	}))
	base, _ := newClientTransport(t)
	var ends atomic.Int32
	tr := NewTransport(base, WithBackoff(0, 0), WithAttemptHeader("X-Attempt"),
		WithHooks(Hooks{RequestEnd: func(context.Context, *Attempt) { ends.Add(1) }}))
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x"))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					errs <- err
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- errors.New(resp.Status)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := srv.hits.Load(); got != 2*workers*each {
		t.Errorf("server hits %d; want %d (two per request)", got, 2*workers*each)
	}
	if ends.Load() != workers*each {
		t.Errorf("RequestEnd ran %d times; want %d", ends.Load(), workers*each)
	}
}

// TestNonReplayableHidesGetBody: net/http re-sends a request by itself when
// it has GetBody (HTTP/2 even after PROTOCOL_ERROR), so every attempt of a
// request that is not replayable reaches the base transport without it;
// replayable ones keep it. The caller's request keeps its GetBody.
func TestNonReplayableHidesGetBody(t *testing.T) {
	for _, tt := range []struct {
		name    string
		key     bool
		hooks   bool
		wantGet bool
	}{
		{"POST/plain", false, false, false},
		{"POST/hooks", false, true, false},
		{"POST+key/plain", true, false, true},
		{"POST+key/hooks", true, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var hasGetBody []bool
			rt := rtFunc(func(req *http.Request) (*http.Response, error) {
				hasGetBody = append(hasGetBody, req.GetBody != nil)
				req.Body.Close()
				return &http.Response{StatusCode: 503, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
			})
			opts := []Option{WithBackoff(0, 0)}
			if tt.hooks {
				opts = append(opts, WithHooks(Hooks{AttemptEnd: func(context.Context, *Attempt) {}}))
			}
			req, _ := http.NewRequest(http.MethodPost, "http://api.test/", strings.NewReader("x"))
			if tt.key {
				req.Header.Set("Idempotency-Key", "k")
			}
			if _, err := NewTransport(rt, opts...).RoundTrip(req); err != nil {
				t.Fatal(err)
			}
			if len(hasGetBody) != 3 {
				t.Fatalf("%d attempts; want 3 (503 is retried for any method)", len(hasGetBody))
			}
			for i, got := range hasGetBody {
				if got != tt.wantGet {
					t.Errorf("attempt %d: base transport saw GetBody = %v; want %v", i+1, got, tt.wantGet)
				}
			}
			if req.GetBody == nil {
				t.Error("the caller's req.GetBody was cleared")
			}
		})
	}
}
