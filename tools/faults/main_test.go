package faults

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/tankhttp/tank/middleware"
)

// TestMain fails the package if any test leaves a goroutine behind:
// persistConn loops of an unclosed body, a stalled handler, a server.
//
// Two toxiproxy v2.12.0 goroutines are ignored, by their exact top frame:
// when a terminal toxic (reset_peer, limit_data) closes its stub, the noop
// stub in front of it and the link's reader stay blocked forever on a
// channel send if the upstream sent more data; no toxiproxy API (Stop,
// RemoveToxic, ResetToxics) unblocks them. They are toxiproxy's, never
// tank's or net/http's, so the guard still catches every leak of ours.
func TestMain(m *testing.M) {
	zerolog.SetGlobalLevel(zerolog.Disabled) // toxiproxy's bandwidth toxic logs through the global logger
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"),
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/stream.(*ChanWriter).Write"),
		goleak.Cleanup(func(code int) {
			closeBacklog() // a socket, no goroutine: after the leak check is fine
			os.Exit(code)
		}),
	)
}

// settleTimeout bounds every wait for a connection to close or a handler to
// finish. It is a failure bound, never a measurement: on a healthy run each
// wait ends in microseconds.
const settleTimeout = 10 * time.Second

// waitFor blocks until cond holds, re-checking whenever changed fires and
// every few milliseconds (some state, such as an HTTP/2 connection turning
// idle once a PING is acknowledged, changes without a signal we can see),
// and fails the test when settleTimeout passes first.
func waitFor(t testing.TB, what string, changed <-chan struct{}, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(settleTimeout)
	defer timer.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-changed:
		case <-tick.C:
		case <-timer.C:
			t.Fatalf("%s: still not true after %v", what, settleTimeout)
		}
	}
}

// notify wakes a waitFor without blocking.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// dialer counts the client's connections through http.Transport.DialContext:
// dialed ever, open now, and bytes read from the network.
type dialer struct {
	d       net.Dialer
	dialed  atomic.Int64
	open    atomic.Int64
	read    atomic.Int64
	changed chan struct{}
	// afterWrite, when set, runs after each successful Write with the bytes
	// written (tests use it to hold a writer that has already sent).
	afterWrite func([]byte)
}

func newDialer() *dialer { return &dialer{changed: make(chan struct{}, 1)} }

func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.dialed.Add(1)
	d.open.Add(1)
	return &trackedConn{Conn: c, d: d}, nil
}

type trackedConn struct {
	net.Conn
	d    *dialer
	once sync.Once
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.d.read.Add(int64(n))
	return n, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err == nil && c.d.afterWrite != nil {
		c.d.afterWrite(b[:n])
	}
	return n, err
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.d.open.Add(-1)
		notify(c.d.changed)
	})
	return err
}

// closeAll closes tr's idle connections and waits until the client has no
// connection open: every connection tank or net/http opened was closed or
// returned to the pool, none is held by an unclosed body. It counts
// connections whose dial succeeded; a dial still in progress is
// CloseIdleConnections' to cancel, and goleak's to catch if it does not.
func (d *dialer) closeAll(t testing.TB, tr interface{ CloseIdleConnections() }) {
	t.Helper()
	tr.CloseIdleConnections()
	waitFor(t, "client connections closed", d.changed, func() bool {
		tr.CloseIdleConnections()
		return d.open.Load() == 0
	})
}

// connStates counts a server's connections through http.Server.ConnState.
type connStates struct {
	opened, closed atomic.Int64
	changed        chan struct{}
}

func newConnStates() *connStates { return &connStates{changed: make(chan struct{}, 1)} }

func (c *connStates) hook(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		c.opened.Add(1)
	case http.StateClosed, http.StateHijacked:
		c.closed.Add(1)
	}
	notify(c.changed)
}

// settled waits until the server has closed every connection it accepted,
// so every handler has returned and its counts are final.
func (c *connStates) settled(t testing.TB) {
	t.Helper()
	waitFor(t, "server connections closed", c.changed, func() bool { return c.closed.Load() == c.opened.Load() })
}

// newServer starts a loopback HTTP/1 server with ConnState accounting.
// Cleanup closes it; register anything that unblocks its handlers after
// calling newServer (cleanups run last-in first-out).
func newServer(t testing.TB, h http.Handler) (*httptest.Server, *connStates) {
	cs := newConnStates()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = cs.hook
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, cs
}

// seen is what AttemptEnd reported for one attempt (hooks must not keep the
// *Attempt itself).
type seen struct {
	Number  int
	Class   middleware.Class
	Verdict middleware.Verdict
	Reason  middleware.Reason
	Sent    bool
	Sleep   time.Duration
	Source  middleware.SleepSource
	RAErr   error
}

// attempts records every attempt of the requests made through its hooks.
type attempts struct {
	mu   sync.Mutex
	list []seen
}

func (r *attempts) hooks() middleware.Hooks {
	return middleware.Hooks{AttemptEnd: func(_ context.Context, a *middleware.Attempt) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.list = append(r.list, seen{a.Number, a.Class, a.Verdict, a.Reason, a.Sent, a.Sleep, a.SleepSource, a.RetryAfterErr})
	}}
}

func (r *attempts) get() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.list...)
}

// checkAttempts asserts n attempts, each of class c, every one but the last
// retried, and the last stopped with reason last.
func checkAttempts(t testing.TB, got []seen, n int, c middleware.Class, last middleware.Reason) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("attempts = %d (%+v); want %d", len(got), got, n)
	}
	for i, a := range got {
		if a.Class != c {
			t.Errorf("attempt %d class = %q; want %q", i+1, a.Class, c)
		}
		wantV := middleware.Retry
		if i == n-1 {
			wantV = middleware.Stop
		}
		if a.Verdict != wantV {
			t.Errorf("attempt %d verdict = %v; want %v", i+1, a.Verdict, wantV)
		}
	}
	if r := got[n-1].Reason; r != last {
		t.Errorf("last attempt reason = %q; want %q", r, last)
	}
}

// exhausted asserts that err is a *middleware.ExhaustedError after n attempts
// that stopped for reason.
func exhausted(t testing.TB, err error, n int, reason middleware.Reason) *middleware.ExhaustedError {
	t.Helper()
	var ee *middleware.ExhaustedError
	if !errors.As(err, &ee) {
		t.Fatalf("err = %v (%T); want *middleware.ExhaustedError", err, err)
	}
	if ee.Attempts != n || ee.Reason != reason || !errors.Is(err, reason) {
		t.Errorf("ExhaustedError = {Attempts: %d, Reason: %q}; want {%d, %q} (%v)", ee.Attempts, ee.Reason, n, reason, err)
	}
	return ee
}

// method is one kind of request of the matrix.
type method struct {
	name   string
	method string
	key    bool // carries an Idempotency-Key
}

// replayable reports whether tank may send the request twice.
func (m method) replayable() bool { return m.method != http.MethodPost || m.key }

var methods = []method{
	{"GET", http.MethodGet, false},
	{"PUT", http.MethodPut, false},
	{"POST", http.MethodPost, false},
	{"POST+key", http.MethodPost, true},
}

const payload = `{"amount": 5, "to": "alice"}`

// newRequest builds m's request for url; bodies are strings.Readers, so
// GetBody is set, as for most real callers.
func (m method) newRequest(t testing.TB, ctx context.Context, url string) *http.Request {
	t.Helper()
	var req *http.Request
	var err error
	if m.method == http.MethodGet {
		req, err = http.NewRequestWithContext(ctx, m.method, url, nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, m.method, url, strings.NewReader(payload))
	}
	if err != nil {
		t.Fatal(err)
	}
	if m.key {
		req.Header.Set("Idempotency-Key", "k-1")
	}
	return req
}

// hits counts requests a handler processed (read in full), per method.
type hits struct {
	mu      sync.Mutex
	n       map[string]int
	changed chan struct{}
}

func newHits() *hits { return &hits{n: map[string]int{}, changed: make(chan struct{}, 1)} }

func (h *hits) add(method string) {
	h.mu.Lock()
	h.n[method]++
	h.mu.Unlock()
	notify(h.changed)
}

func (h *hits) total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := 0
	for _, n := range h.n {
		t += n
	}
	return t
}

// closeCounter counts Close calls on a request body: the RoundTripper
// contract wants exactly one, on every path.
type closeCounter struct {
	io.ReadCloser
	n       atomic.Int64
	changed chan struct{}
}

func countCloses(req *http.Request) *closeCounter {
	if req.Body == nil {
		return nil
	}
	c := &closeCounter{ReadCloser: req.Body, changed: make(chan struct{}, 1)}
	req.Body = c
	return c
}

func (c *closeCounter) Close() error {
	c.n.Add(1)
	notify(c.changed)
	return c.ReadCloser.Close()
}

// closedOnce waits (bounded: net/http may close from its write goroutine
// after RoundTrip returns) for the first Close, then checks there was one.
func (c *closeCounter) closedOnce(t testing.TB) {
	t.Helper()
	if c == nil {
		return
	}
	waitFor(t, "request body closed", c.changed, func() bool { return c.n.Load() > 0 })
	if n := c.n.Load(); n != 1 {
		t.Errorf("request body closed %d times; want exactly 1", n)
	}
}
