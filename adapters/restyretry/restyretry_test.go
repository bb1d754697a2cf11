package restyretry_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-resty/resty/v2"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/internal/testsupport/faultserver"
	"github.com/tankhttp/tank/middleware"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// noWait makes retries immediate, for tests that count rather than time.
var noWait = middleware.WithBackoff(0, 0)

// newClient returns a resty client whose connections are closed when the
// test ends.
func newClient(t *testing.T) *resty.Client {
	c := resty.New()
	t.Cleanup(c.GetClient().CloseIdleConnections)
	return c
}

// statusServer answers each request with the next status of codes (the
// last one repeats) and records what it was sent.
type statusServer struct {
	*httptest.Server
	codes []int

	mu     sync.Mutex
	bodies []string
}

func newStatusServer(t *testing.T, codes ...int) *statusServer {
	s := &statusServer{codes: codes}
	s.Server = httptest.NewServer(s)
	t.Cleanup(s.Close)
	return s
}

func (s *statusServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(b))
	n := len(s.bodies)
	s.mu.Unlock()
	code := s.codes[min(n, len(s.codes))-1]
	w.WriteHeader(code)
	io.WriteString(w, http.StatusText(code))
}

func (s *statusServer) hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bodies)
}

func (s *statusServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

func TestGETThrough503s(t *testing.T) {
	srv := newStatusServer(t, 503, 503, 200)
	c := restyretry.Apply(newClient(t), noWait)
	resp, err := c.R().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 200 || srv.hits() != 3 {
		t.Errorf("status %d after %d hits; want 200 after 3", resp.StatusCode(), srv.hits())
	}
}

func TestProcessedPOSTIsSentOnce(t *testing.T) {
	srv := faultserver.NewRaw(faultserver.ReadRST)
	t.Cleanup(srv.Close)
	c := restyretry.Apply(newClient(t), noWait)
	_, err := c.R().SetBody("order").Post(srv.URL)
	if got := srv.Hits(); got != 1 {
		t.Errorf("server processed the POST %d times; want 1", got)
	}
	var ex *middleware.ExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 1 || !errors.Is(err, middleware.ReasonNotReplayable) {
		t.Errorf("err = %v; want an *ExhaustedError after 1 attempt (%s)", err, middleware.ReasonNotReplayable)
	}
}

func TestPOSTWithIdempotencyKeyIsRetried(t *testing.T) {
	srv := faultserver.NewResetWhen(func(n int) bool { return n == 1 })
	t.Cleanup(srv.Close)
	c := restyretry.Apply(newClient(t), noWait)
	resp, err := c.R().SetHeader("Idempotency-Key", "k1").SetBody("payment").Post(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.String() != "ok" || srv.Hits() != 2 {
		t.Errorf("got %q after %d requests; want \"ok\" after 2", resp.String(), srv.Hits())
	}
}

func TestConnectionRefusedThenUp(t *testing.T) {
	// Reserve a port, then free it: dialing it is refused until the server
	// below starts on it, which happens right after the first dial fails.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "up")
	}))
	t.Cleanup(srv.Close)
	var (
		dials    atomic.Int32
		firstErr error
		d        net.Dialer
	)
	tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, a)
		if dials.Add(1) == 1 {
			firstErr = err
			l, lerr := net.Listen("tcp", addr)
			if lerr != nil {
				return nil, lerr
			}
			srv.Listener.Close()
			srv.Listener = l
			srv.Start()
		}
		return conn, err
	}}
	t.Cleanup(tr.CloseIdleConnections)

	c := restyretry.Apply(resty.New().SetTransport(tr), noWait)
	resp, err := c.R().SetBody("x").Post("http://" + addr)
	if !errors.Is(firstErr, syscall.ECONNREFUSED) {
		t.Fatalf("first dial: %v; want connection refused", firstErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if resp.String() != "up" || dials.Load() != 2 {
		t.Errorf("got %q after %d dials; want \"up\" after 2", resp.String(), dials.Load())
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	for _, tt := range []struct {
		name  string
		value func() string
		want  time.Duration
	}{
		{"seconds", func() string { return "2" }, 2 * time.Second},
		{"http-date", func() string { return time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat) }, 3 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &faultserver.FakeTransport{Answer: func(n int) (*http.Response, error) {
					if n == 1 {
						return faultserver.Response(503, "Retry-After", tt.value()), nil
					}
					return faultserver.Response(200), nil
				}}
				c := restyretry.Apply(resty.New().SetTransport(f))
				resp, err := c.R().Get("http://tank.test/")
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode() != 200 {
					t.Errorf("status %d; want 200", resp.StatusCode())
				}
				if diff := cmp.Diff([]time.Duration{tt.want}, f.Waits()); diff != "" {
					t.Errorf("waits between attempts (-want +got):\n%s", diff)
				}
				if got := f.Closed(); got != 2 {
					t.Errorf("%d response bodies closed; want 2", got)
				}
			})
		})
	}
}

func TestRetryAfterBeyondDeadlineReturnsAtOnce(t *testing.T) {
	for _, tt := range []struct {
		name string
		send func(c *resty.Client) (*resty.Response, error)
	}{
		{"context", func(c *resty.Client) (*resty.Response, error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return c.R().SetContext(ctx).Get("http://tank.test/")
		}},
		{"SetTimeout", func(c *resty.Client) (*resty.Response, error) {
			return c.SetTimeout(time.Second).R().Get("http://tank.test/")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &faultserver.FakeTransport{Answer: func(int) (*http.Response, error) { return faultserver.Response(503, "Retry-After", "5"), nil }}
				c := restyretry.Apply(resty.New().SetTransport(f))
				start := time.Now()
				resp, err := tt.send(c)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode() != 503 || len(f.Waits()) != 0 || time.Since(start) != 0 {
					t.Errorf("status %d after %d retries and %v; want 503 at once", resp.StatusCode(), len(f.Waits()), time.Since(start))
				}
			})
		})
	}
}

func TestCancelDuringWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &faultserver.FakeTransport{Answer: func(int) (*http.Response, error) { return faultserver.Response(503), nil }}
		c := restyretry.Apply(resty.New().SetTransport(f),
			middleware.WithBackoff(10*time.Second, 10*time.Second), middleware.WithJitter(middleware.JitterNone))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		start := time.Now()
		_, err := c.R().SetContext(ctx).Get("http://tank.test/")
		if !errors.Is(err, context.Canceled) || !errors.Is(err, middleware.ReasonCanceled) {
			t.Errorf("err = %v; want context.Canceled and %s", err, middleware.ReasonCanceled)
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("returned after %v; want 1s, when canceled", got)
		}
		if got := f.Attempts(); got != 1 {
			t.Errorf("%d attempts; want 1", got)
		}
		if got := f.Closed(); got != 1 {
			t.Errorf("%d response bodies closed; want 1", got)
		}
	})
}

// onlyReader hides every method but Read, so neither resty nor net/http
// can seek or copy it cheaply.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestBodyReplayedByteForByte(t *testing.T) {
	big := make([]byte, 100<<10)
	rand.Read(big)
	type order struct {
		ID    int    `json:"id"`
		Items string `json:"items"`
	}
	js, _ := json.Marshal(order{7, "tea"})
	for _, tt := range []struct {
		name string
		body func() any
		want string
	}{
		{"bytes", func() any { return []byte("raw bytes") }, "raw bytes"},
		{"string", func() any { return "a string" }, "a string"},
		{"json", func() any { return order{7, "tea"} }, string(js)},
		{"reader", func() any { return onlyReader{bytes.NewReader(big)} }, string(big)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newStatusServer(t, 503, 200)
			c := restyretry.Apply(newClient(t), noWait)
			r := c.R().SetBody(tt.body())
			if tt.name == "json" {
				r.SetHeader("Content-Type", "application/json")
			}
			resp, err := r.Post(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 200 {
				t.Fatalf("status %d; want 200", resp.StatusCode())
			}
			if tt.name == "reader" && resp.Request.RawRequest.GetBody == nil {
				t.Error("resty sent a non-seekable reader without GetBody; doc.go says it buffers it and sets one")
			}
			got := srv.received()
			if len(got) != 2 || got[0] != tt.want || got[1] != tt.want {
				t.Errorf("server received %d bodies of lengths %v; want 2 of %d bytes, equal to the body", len(got), lens(got), len(tt.want))
			}
		})
	}
}

func lens(s []string) []int {
	var n []int
	for _, v := range s {
		n = append(n, len(v))
	}
	return n
}

func TestUntrustedCertificateNotRetried(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake error is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)

	c := restyretry.Apply(newClient(t), noWait)
	_, err := c.R().Get(srv.URL)
	if !errors.Is(err, middleware.ReasonPermanent) {
		t.Errorf("err = %v; want %s", err, middleware.ReasonPermanent)
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("server saw %d connections; want 1", got)
	}
}

// countRT counts the round trips that reach it.
type countRT struct {
	next http.RoundTripper
	n    atomic.Int32
}

func (c *countRT) RoundTrip(req *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(req)
}

func TestUserTransportKept(t *testing.T) {
	srv := newStatusServer(t, 503, 503, 200)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	rt := &countRT{next: tr}
	c := restyretry.Apply(resty.New().SetTransport(rt), noWait)
	resp, err := c.R().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 200 || rt.n.Load() != 3 || srv.hits() != 3 {
		t.Errorf("status %d; user transport saw %d attempts, server %d; want 200, 3, 3", resp.StatusCode(), rt.n.Load(), srv.hits())
	}
}

// errRT fails every round trip after a connection could have been used.
type errRT struct{ n atomic.Int32 }

var errBroken = errors.New("broken pipe (fake)")

func (e *errRT) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	e.n.Add(1)
	return nil, errBroken
}

// TestRetrySettersAfterApply checks that resty's own retry loop stays off
// when a user turns it on after Apply: tank makes its 3 attempts, resty adds
// none (it would make 4 calls of 3 attempts each).
func TestRetrySettersAfterApply(t *testing.T) {
	t.Run("status", func(t *testing.T) {
		srv := newStatusServer(t, 503)
		c := restyretry.Apply(newClient(t), noWait).SetRetryCount(3).SetRetryWaitTime(0)
		resp, err := c.R().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 503 || srv.hits() != 3 {
			t.Errorf("status %d after %d hits; want 503 after 3", resp.StatusCode(), srv.hits())
		}
	})
	t.Run("error", func(t *testing.T) {
		rt := &errRT{}
		c := restyretry.Apply(resty.New().SetTransport(rt), noWait).SetRetryCount(3).SetRetryWaitTime(0)
		_, err := c.R().Get("http://tank.test/")
		if !errors.Is(err, errBroken) || !errors.Is(err, middleware.ReasonAttempts) {
			t.Errorf("err = %v; want the last error and %s", err, middleware.ReasonAttempts)
		}
		if got := rt.n.Load(); got != 3 {
			t.Errorf("%d attempts; want 3", got)
		}
	})
}

// TestTransportSettersAfterApply pins down resty v2's behaviour that doc.go
// describes: setters that edit resty's *http.Transport do nothing once
// Apply has wrapped it, while the *http.Transport kept from before Apply
// can still be configured, and tank uses it.
func TestTransportSettersAfterApply(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the first handshake fails on purpose
	t.Cleanup(srv.Close)
	var logged bytes.Buffer
	c := newClient(t).SetLogger(bufLogger{&logged})
	tr, err := c.Transport()
	if err != nil {
		t.Fatal(err)
	}
	restyretry.Apply(c, noWait)
	applied := c.GetClient().Transport

	c.SetTLSClientConfig(srv.Client().Transport.(*http.Transport).TLSClientConfig)
	if !strings.Contains(logged.String(), "not an *http.Transport") {
		t.Errorf("resty logged %q; want its type-assertion error", logged.String())
	}
	if c.GetClient().Transport != applied {
		t.Errorf("transport is %T after SetTLSClientConfig; want Apply's, unchanged", c.GetClient().Transport)
	}
	if _, err := c.R().Get(srv.URL); !errors.Is(err, middleware.ReasonPermanent) {
		t.Errorf("GET after SetTLSClientConfig: err = %v; want %s (the setter did nothing)", err, middleware.ReasonPermanent)
	}

	tr.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	resp, err := c.R().Get(srv.URL)
	if err != nil || resp.String() != "secure" {
		t.Errorf("GET after configuring the kept transport = %q, %v; want \"secure\"", resp.String(), err)
	}
}

type bufLogger struct{ w io.Writer }

func (l bufLogger) Errorf(format string, v ...any) { fmt.Fprintf(l.w, format, v...) }
func (l bufLogger) Warnf(string, ...any)           {}
func (l bufLogger) Debugf(string, ...any)          {}
