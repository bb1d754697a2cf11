package faults

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tankhttp/tank/middleware"
)

// TestEndlessErrorBody: a 503 whose body never ends. tank drains at most
// 64 KiB of each retried response, then closes it (and so its connection);
// the final 503 is returned for the caller to close. Memory stays flat: the
// client reads a bounded number of bytes, and every server write loop ends
// because the client hung up, never because it hit its own cap.
func TestEndlessErrorBody(t *testing.T) {
	const (
		chunk     = 32 << 10
		serverCap = 64 << 20 // the "endless" body, bounded
		drain     = 64 << 10 // tank's default drain limit
	)
	var (
		written  atomic.Int64
		capped   atomic.Int64 // handlers that wrote serverCap bytes: the client kept reading
		handlers atomic.Int64
		stop     = make(chan struct{})
		buf      = make([]byte, chunk)
		stopOnce sync.Once
		stopAll  = func() { stopOnce.Do(func() { close(stop) }) }
	)
	srv, states := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		for n := 0; n < serverCap; n += chunk {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w.Write(buf); err != nil {
				return
			}
			written.Add(chunk)
			w.(http.Flusher).Flush()
		}
		capped.Add(1)
	}))
	t.Cleanup(stopAll) // runs before srv.Close

	d := newDialer()
	var rec attempts
	tr := middleware.NewTransport(&http.Transport{DialContext: d.DialContext},
		middleware.WithBackoff(0, 0), middleware.WithHooks(rec.hooks()))
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip error = %v; want the last 503", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status = %d; want 503", resp.StatusCode)
	}
	resp.Body.Close() // the caller closes the final response unread
	checkAttempts(t, rec.get(), 3, middleware.ClassUnavailable, middleware.ReasonAttempts)

	d.closeAll(t, tr)
	states.settled(t) // every handler returned: their write loops ended
	stopAll()

	// Per retried response: the header bufio (4 KiB) plus the drain plus chunk
	// framing and read-ahead; the final one was closed unread.
	if limit := int64(3 * (drain + 32<<10)); d.read.Load() > limit {
		t.Errorf("client read %d bytes over 3 attempts; want at most %d (bounded drain)", d.read.Load(), limit)
	}
	if capped.Load() != 0 {
		t.Errorf("%d server write loops reached %d bytes: the client kept reading an endless body", capped.Load(), serverCap)
	}
	if got := d.dialed.Load(); got != 3 || handlers.Load() != 3 {
		t.Errorf("dialed %d, handlers %d; want 3 and 3 (an undrained connection is closed, not reused)", got, handlers.Load())
	}
	t.Logf("client read %d bytes; server wrote %d bytes before the client hung up", d.read.Load(), written.Load())
}

// fakeRT is an in-memory RoundTripper for synctest bubbles: it answers with
// the statuses and Retry-After values given, then 200.
type fakeRT struct {
	retryAfter string
	fails      int
	calls      int
}

func (f *fakeRT) RoundTrip(req *http.Request) (*http.Response, error) {
	f.calls++
	if req.Body != nil {
		req.Body.Close()
	}
	resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: req}
	if f.calls <= f.fails {
		resp.StatusCode = http.StatusServiceUnavailable
		resp.Header.Set("Retry-After", f.retryAfter)
		resp.Body = io.NopCloser(strings.NewReader("busy"))
	}
	return resp, nil
}

// TestHostileRetryAfter runs the whole request in a synctest bubble with a
// fake RoundTripper, so every wait is exact fake time: a hostile
// Retry-After never makes tank sleep long.
func TestHostileRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		give      string
		wantN     int
		wantCode  int
		wantWait  time.Duration
		reason    middleware.Reason
		raErr     bool
		sleepFrom middleware.SleepSource
	}{
		// Far beyond the 30s cap (and beyond time.Duration): the 503 is
		// returned at once, nothing slept.
		{give: "99999999999", wantN: 1, wantCode: 503, wantWait: 0, reason: middleware.ReasonRetryAfter},
		// Negative is malformed (delta-seconds is digits only): the backoff
		// decides, as for garbage, and the server cannot force a retry
		// with no wait.
		{give: "-5", wantN: 3, wantCode: 200, wantWait: 300 * time.Millisecond, reason: middleware.ReasonFinal, raErr: true, sleepFrom: ""},
		// Garbage falls back to the backoff (100ms, 200ms without jitter) and
		// is reported as ErrRetryAfter.
		{give: "soon, maybe", wantN: 3, wantCode: 200, wantWait: 300 * time.Millisecond, reason: middleware.ReasonFinal, raErr: true, sleepFrom: ""},
		// A sane value is honoured exactly: 2s twice.
		{give: "2", wantN: 3, wantCode: 200, wantWait: 4 * time.Second, reason: middleware.ReasonFinal, sleepFrom: middleware.SleepRetryAfter},
	} {
		t.Run(tt.give, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeRT{retryAfter: tt.give, fails: 2}
				var rec attempts
				tr := middleware.NewTransport(f, middleware.WithJitter(middleware.JitterNone), middleware.WithHooks(rec.hooks()))
				req, _ := http.NewRequest(http.MethodGet, "http://fake.test/", nil)
				start := time.Now()
				resp, err := tr.RoundTrip(req)
				elapsed := time.Since(start)
				if err != nil {
					t.Fatalf("RoundTrip error = %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.wantCode || f.calls != tt.wantN {
					t.Errorf("status %d after %d calls; want %d after %d", resp.StatusCode, f.calls, tt.wantCode, tt.wantN)
				}
				if elapsed != tt.wantWait {
					t.Errorf("fake time elapsed = %v; want exactly %v", elapsed, tt.wantWait)
				}
				got := rec.get()
				if last := got[len(got)-1]; last.Reason != tt.reason {
					t.Errorf("last reason = %q; want %q", last.Reason, tt.reason)
				}
				for _, a := range got[:len(got)-1] {
					if tt.raErr != errors.Is(a.RAErr, middleware.ErrRetryAfter) {
						t.Errorf("attempt %d RetryAfterErr = %v; want ErrRetryAfter: %v", a.Number, a.RAErr, tt.raErr)
					}
				}
			})
		})
	}
}

// TestThousandsOfHeaders: a server answering with 5,000 headers (~200 KiB)
// to a client whose MaxResponseHeaderBytes is 64 KiB. net/http refuses the
// response; tank retries a GET a bounded 3 times (3 connections, 3 hits)
// and stops a POST after one. The error names net/http's limit.
func TestThousandsOfHeaders(t *testing.T) {
	for _, m := range methods {
		t.Run(m.name, func(t *testing.T) {
			h := newHits()
			srv, states := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				h.add(r.Method)
				for i := range 5000 {
					w.Header().Set("X-Hostile-"+strconv.Itoa(i), strings.Repeat("v", 20))
				}
				w.WriteHeader(http.StatusOK)
			}))
			d := newDialer()
			var rec attempts
			tr := middleware.NewTransport(&http.Transport{DialContext: d.DialContext, MaxResponseHeaderBytes: 64 << 10},
				middleware.WithBackoff(0, 0), middleware.WithHooks(rec.hooks()))
			resp, err := tr.RoundTrip(m.newRequest(t, context.Background(), srv.URL))
			if resp != nil {
				resp.Body.Close()
				t.Fatalf("RoundTrip = %d; want an error", resp.StatusCode)
			}
			wantN, reason := 1, middleware.ReasonNotReplayable
			if m.replayable() {
				wantN, reason = 3, middleware.ReasonAttempts
			}
			exhausted(t, err, wantN, reason)
			if !strings.Contains(err.Error(), "server response headers exceeded") {
				t.Errorf("err = %v; want net/http's header limit error", err)
			}
			// net/http wraps it as "transport connection broken": protocol.
			checkAttempts(t, rec.get(), wantN, middleware.ClassProtocol, reason)
			d.closeAll(t, tr)
			states.settled(t)
			if h.total() != wantN || d.dialed.Load() != int64(wantN) {
				t.Errorf("server hits %d, client dials %d; want %d each", h.total(), d.dialed.Load(), wantN)
			}
		})
	}
}

// stallServer accepts connections, reads each request in full, counts it,
// and never answers until the test ends.
func stallServer(t *testing.T) (addr string, received *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	received = new(atomic.Int64)
	release := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				if _, err := io.Copy(io.Discard, req.Body); err != nil {
					return
				}
				received.Add(1)
				<-release
			}()
		}
	}()
	t.Cleanup(func() {
		close(release)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), received
}

// TestNeverAnswers: a server that accepts, reads and never answers. Each
// attempt is bounded by WithAttemptTimeout, the whole request by the
// caller's deadline; both end in a clear *middleware.ExhaustedError.
func TestNeverAnswers(t *testing.T) {
	for _, m := range methods {
		t.Run("attempt_timeout/"+m.name, func(t *testing.T) {
			addr, received := stallServer(t)
			d := newDialer()
			var rec attempts
			tr := middleware.NewTransport(&http.Transport{DialContext: d.DialContext},
				middleware.WithBackoff(0, 0), middleware.WithHooks(rec.hooks()),
				middleware.WithAttemptTimeout(200*time.Millisecond))
			resp, err := tr.RoundTrip(m.newRequest(t, context.Background(), "http://"+addr+"/"))
			if resp != nil {
				resp.Body.Close()
				t.Fatalf("RoundTrip = %d; want an error", resp.StatusCode)
			}
			wantN, reason := 1, middleware.ReasonNotReplayable
			if m.replayable() {
				wantN, reason = 3, middleware.ReasonAttempts
			}
			exhausted(t, err, wantN, reason)
			if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "tank: gave up after") {
				t.Errorf("err = %q; want a middleware give-up error wrapping the attempt's deadline", err)
			}
			checkAttempts(t, rec.get(), wantN, middleware.ClassTimeout, reason)
			d.closeAll(t, tr)
			if n := received.Load(); n > int64(wantN) || (!m.replayable() && n > 1) {
				t.Errorf("server received %d; want at most %d", n, wantN)
			}
		})
	}
	t.Run("caller_deadline/POST", func(t *testing.T) {
		addr, received := stallServer(t)
		d := newDialer()
		tr := middleware.NewTransport(&http.Transport{DialContext: d.DialContext}, middleware.WithBackoff(0, 0))
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		resp, err := tr.RoundTrip(methods[2].newRequest(t, ctx, "http://"+addr+"/"))
		if resp != nil {
			resp.Body.Close()
			t.Fatalf("RoundTrip = %d; want an error", resp.StatusCode)
		}
		exhausted(t, err, 1, middleware.ReasonCanceled)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v; want it to wrap context.DeadlineExceeded", err)
		}
		d.closeAll(t, tr)
		if n := received.Load(); n > 1 {
			t.Errorf("server received the POST %d times; want at most 1", n)
		}
	})
}
