package faults

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tankhttp/tank/internal/testsupport/faultserver"
	"github.com/tankhttp/tank/middleware"
)

// The fault matrix: every failure net/http reports to a RoundTripper (the
// classes of docs/design.md), sent as GET, PUT, POST and POST with an
// Idempotency-Key through every front door, over loopback.
// (http.Client.Timeout is the Client's own deadline, set above any
// RoundTripper: the caller_deadline row stands for it.) Each cell asserts
// each attempt's class and decision,
// the attempts made, and the requests the server processed; and the
// invariant behind them all: a request that is not replayable is processed
// at most once, unless the server answered 429, 502 or 503 (the server, or
// the gateway in front of it, says it did no work).

// matrixMax is the attempt cap of every cell.
const matrixMax = 3

// target is a cell's server, seen from the test.
type target struct {
	url   string
	hits  func() int // requests the server read in full
	conns func() int // connections the server accepted; nil: no server to count
	// bodies, when set, gives the body of every request the server read.
	bodies func() [][]byte
	// close, when set, stops the server: hits, conns and bodies are final
	// once it returns. It may be called again (it is also a cleanup).
	close func()
	// ctx is the caller's context (nil: context.Background()).
	ctx context.Context
	// setup adjusts the client's http.Transport and dialer.
	setup func(base *http.Transport, d *dialer)
	// prepare adjusts the request before it is sent.
	prepare func(req *http.Request)
}

// sentness is what a row knows of Attempt.Sent.
type sentness uint8

const (
	sentByClass sentness = iota // the class tells (sentClass)
	sentNo                      // no attempt of the row reached the server
	sentYes                     // every attempt of the row did
)

type matrixRow struct {
	name  string
	start func(t *testing.T) target
	opts  []middleware.Option
	// classes an attempt may end in: more than one where the kernel races
	// (a server closing before it reads may show as EOF or as a reset).
	classes []middleware.Class
	sent    sentness
	// processed: the server reads every attempt in full.
	processed bool
	// anyMethod: the server answered 429, 502 or 503 before the row's
	// fault, so a non-replayable request may reach it again.
	anyMethod bool
	// statuses, for scripted servers: the status of attempt i (the last
	// repeats). The response is returned, never an error.
	statuses []int
	// bodyErr: reading the returned body ends in this error (nil: none).
	bodyErr error
	// stopRetry, when set, is the reason the policy refuses the first retry
	// the rules ask for (Retry-After beyond its cap, past the deadline).
	stopRetry middleware.Reason
	// source is the SleepSource of every retried attempt ("" unchecked);
	// raErr: each retried attempt carried a Retry-After tank could not parse
	// (the last attempt's header is not read: no wait follows it).
	source middleware.SleepSource
	raErr  bool
	// errIs: the error must match it with errors.Is.
	errIs error
	// dialRace: the server may accept a connection whose dial then fails.
	dialRace bool
}

var errShutdown = errors.New("shutdown requested")

var matrix = []matrixRow{
	// Never sent, transient: retried for any method.
	{name: "refused", start: refusedTarget, classes: []middleware.Class{middleware.ClassRefused}},
	{name: "dns_temporary", start: dnsTarget(faultserver.RcodeServFail), classes: []middleware.Class{middleware.ClassConnect}},
	{name: "dial_timeout", start: fullBacklog(50 * time.Millisecond), classes: []middleware.Class{middleware.ClassConnect}},
	{name: "tls_handshake_reset", start: rawFault(faultserver.TLSReset), classes: []middleware.Class{middleware.ClassConnect}},
	// The handshake ends in io.EOF, the very value a written and then
	// unanswered request ends in: only the send state tells them apart.
	{name: "tls_handshake_close", start: rawFault(faultserver.TLSClose), classes: []middleware.Class{middleware.ClassConnect}},

	// Never sent, permanent: stop at once.
	{name: "dns_not_found", start: dnsTarget(faultserver.RcodeNXDomain), classes: []middleware.Class{middleware.ClassDNS}},
	{name: "tls_untrusted_cert", start: scripted(true), classes: []middleware.Class{middleware.ClassTLS}, sent: sentNo},
	{name: "tls_name_mismatch", start: nameMismatch, classes: []middleware.Class{middleware.ClassTLS}, sent: sentNo},
	{name: "tls_not_tls", start: rawFault(faultserver.NotTLS), classes: []middleware.Class{middleware.ClassTLS}, sent: sentNo},
	{name: "https_to_http", start: httpsToHTTP, classes: []middleware.Class{middleware.ClassTLS}, sent: sentNo},
	{name: "unsupported_scheme", start: unsupportedScheme, classes: []middleware.Class{middleware.ClassInvalid}},
	{name: "invalid_header", start: invalidHeader, classes: []middleware.Class{middleware.ClassInvalid}},
	// TLS 1.3: the client finishes its side of the handshake and writes the
	// request before the server's "certificate required" alert arrives; the
	// server's close may reset the connection before the alert is read.
	// Either way nothing was processed; a reset counts as maybe processed.
	// (Now and then the alert lands inside the client's handshake: then the
	// attempt is not sent. Sent is left to the class here.)
	{name: "tls_client_cert_required", start: clientCertRequired,
		classes: []middleware.Class{middleware.ClassTLS, middleware.ClassReset}},
	{name: "canceled_before_send", start: canceledBefore, classes: []middleware.Class{middleware.ClassCanceled},
		sent: sentNo, errIs: context.Canceled},

	// Sent, no response: retried only when replayable. The server closes
	// before reading: the client may see its FIN, the RST its unread data
	// causes, or (FIN first) "server closed idle connection".
	{name: "accept_close", start: rawFault(faultserver.AcceptClose),
		classes: []middleware.Class{middleware.ClassEOF, middleware.ClassReset, middleware.ClassConnect}},
	// Its reset may even reach the client before connect(2) returns: the
	// dial fails (connect), after the server accepted.
	{name: "close_before_read", start: rawFault(faultserver.CloseRST), dialRace: true,
		classes: []middleware.Class{middleware.ClassEOF, middleware.ClassReset, middleware.ClassConnect}},
	{name: "read_then_reset", start: rawFault(faultserver.ReadRST), classes: []middleware.Class{middleware.ClassReset}, processed: true},
	{name: "read_then_fin", start: rawFault(faultserver.ReadFIN), classes: []middleware.Class{middleware.ClassEOF}, processed: true},
	{name: "malformed_status", start: rawFault(faultserver.Garbage), classes: []middleware.Class{middleware.ClassProtocol}, processed: true},
	{name: "bad_status_code", start: replyWith("HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"),
		classes: []middleware.Class{middleware.ClassProtocol}, processed: true},
	{name: "duplicate_content_length", start: replyWith("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
		classes: []middleware.Class{middleware.ClassProtocol}, processed: true},
	{name: "response_header_timeout", start: headerTimeout, classes: []middleware.Class{middleware.ClassTimeout}, processed: true},
	{name: "attempt_timeout", start: rawFault(faultserver.Stall), classes: []middleware.Class{middleware.ClassTimeout}, processed: true,
		opts: []middleware.Option{middleware.WithAttemptTimeout(100 * time.Millisecond)}},
	// A broken body is the caller's to read: the 200 is returned, not retried.
	{name: "partial_body", start: rawFault(faultserver.PartialBody), statuses: []int{200}, bodyErr: io.ErrUnexpectedEOF},

	// The caller gives up while the server holds the processed request.
	{name: "caller_cancel", start: cancelAfterHit(false, 0), classes: []middleware.Class{middleware.ClassCanceled},
		sent: sentYes, processed: true, errIs: context.Canceled},
	{name: "caller_cancel_cause", start: cancelAfterHit(true, 0), classes: []middleware.Class{middleware.ClassCanceled},
		sent: sentYes, processed: true, errIs: errShutdown},
	// A 503 first (retried for any method), then the cancel, on the retry.
	{name: "caller_cancel_on_retry", start: cancelAfterHit(false, http.StatusServiceUnavailable),
		classes: []middleware.Class{middleware.ClassUnavailable, middleware.ClassCanceled},
		sent:    sentYes, processed: true, anyMethod: true, errIs: context.Canceled},
	// The caller's deadline passes before a connection exists.
	{name: "dns_no_answer_deadline", start: withDeadline(50*time.Millisecond, dnsTarget(faultserver.NoAnswer)),
		classes: []middleware.Class{middleware.ClassCanceled}, sent: sentNo, errIs: context.DeadlineExceeded},
	{name: "dial_blocked_deadline", start: withDeadline(50*time.Millisecond, fullBacklog(0)),
		classes: []middleware.Class{middleware.ClassCanceled}, sent: sentNo, errIs: context.DeadlineExceeded},
	// The deadline passes while the server holds the request it read.
	{name: "caller_deadline", start: withDeadline(100*time.Millisecond, rawFault(faultserver.Stall)),
		classes: []middleware.Class{middleware.ClassCanceled}, sent: sentYes, processed: true, errIs: context.DeadlineExceeded},

	// Statuses, without Retry-After.
	{name: "429", start: scripted(false, step(429, "")), statuses: []int{429}, source: middleware.SleepBackoff},
	{name: "502", start: scripted(false, step(502, "")), statuses: []int{502}},
	{name: "503", start: scripted(false, step(503, "")), statuses: []int{503}},
	{name: "504", start: scripted(false, step(504, "")), statuses: []int{504}},
	{name: "500", start: scripted(false, step(500, "")), statuses: []int{500}},
	{name: "501", start: scripted(false, step(501, "")), statuses: []int{501}},
	{name: "404", start: scripted(false, step(404, "")), statuses: []int{404}},
	{name: "200", start: scripted(false, step(200, "")), statuses: []int{200}},
	{name: "503_503_200", start: scripted(false, step(503, ""), step(503, ""), step(200, "")), statuses: []int{503, 503, 200}},
	{name: "500_200", start: scripted(false, step(500, ""), step(200, "")), statuses: []int{500, 200}},

	// Statuses with Retry-After, in seconds or as an HTTP-date. tank reads
	// it on 429 and 503 only, like urllib3 and go-retryablehttp (RFC 9110
	// §10.2.3 names 503 and redirects, RFC 6585 names 429); on other
	// statuses its backoff decides. A value of 0 or a date in the past
	// means "now", so no cell sleeps; the waits themselves are checked in
	// virtual time (middleware's synctest tests, TestHostileRetryAfter).
	{name: "429_retry_after_0", start: scripted(false, step(429, "0"), step(200, "")), statuses: []int{429, 200},
		source: middleware.SleepRetryAfter},
	{name: "429_retry_after_date", start: scripted(false, step(429, pastDate)), statuses: []int{429},
		source: middleware.SleepRetryAfter},
	{name: "503_retry_after_0", start: scripted(false, step(503, "0")), statuses: []int{503},
		source: middleware.SleepRetryAfter},
	{name: "503_retry_after_date", start: scripted(false, step(503, pastDate), step(200, "")), statuses: []int{503, 200},
		source: middleware.SleepRetryAfter},
	{name: "502_retry_after_ignored", start: scripted(false, step(502, "0"), step(200, "")), statuses: []int{502, 200},
		source: middleware.SleepBackoff},
	{name: "504_retry_after_ignored", start: scripted(false, step(504, pastDate)), statuses: []int{504},
		source: middleware.SleepBackoff},
	{name: "500_retry_after_ignored", start: scripted(false, step(500, "0"), step(200, "")), statuses: []int{500, 200},
		source: middleware.SleepBackoff},
	{name: "501_retry_after_ignored", start: scripted(false, step(501, "0")), statuses: []int{501}},
	{name: "404_retry_after_ignored", start: scripted(false, step(404, "0")), statuses: []int{404}},
	// A Retry-After beyond the cap (30 s by default): the 503 is returned
	// at once rather than held; the caller sees how long the server asked.
	{name: "503_retry_after_beyond_cap", start: scripted(false, step(503, "3600")), statuses: []int{503},
		stopRetry: middleware.ReasonRetryAfter},
	// A Retry-After that ends after the caller's deadline: returned at once.
	{name: "429_retry_after_past_deadline", start: withDeadline(10*time.Second, scripted(false, step(429, "20"))), statuses: []int{429},
		stopRetry: middleware.ReasonDeadline},
	// A Retry-After tank cannot parse: noted on each retried attempt, and
	// the backoff decides.
	{name: "503_retry_after_garbage", start: scripted(false, step(503, "soon")), statuses: []int{503},
		source: middleware.SleepBackoff, raErr: true},
}

// pastDate is an HTTP-date in the past: retry now.
const pastDate = "Sun, 06 Nov 1994 08:49:37 GMT"

func step(code int, retryAfter string) faultserver.Step {
	return faultserver.Step{Status: code, RetryAfter: retryAfter, Body: http.StatusText(code)}
}

func refusedTarget(*testing.T) target {
	return target{url: "http://" + faultserver.RefusedAddr(), hits: noHits}
}

func noHits() int { return 0 }

func rawFault(f faultserver.Fault) func(t *testing.T) target {
	return func(t *testing.T) target {
		s := faultserver.NewRaw(f)
		t.Cleanup(s.Close)
		return target{url: s.URL, hits: s.Hits, conns: s.Conns, close: s.Close}
	}
}

func replyWith(resp string) func(t *testing.T) target {
	return func(t *testing.T) target {
		s := faultserver.NewReply(resp)
		t.Cleanup(s.Close)
		return target{url: s.URL, hits: s.Hits, conns: s.Conns, close: s.Close}
	}
}

// scripted starts a scripted server (the last step repeats; none: 200).
func scripted(tls bool, steps ...faultserver.Step) func(t *testing.T) target {
	return func(t *testing.T) target {
		newServer := faultserver.NewScripted
		if tls {
			newServer = faultserver.NewScriptedTLS
		}
		s := newServer(steps...)
		t.Cleanup(s.Close)
		return target{url: s.URL, hits: s.Hits, conns: s.Conns, bodies: s.Bodies, close: s.Close}
	}
}

// dnsTarget names a host that only a loopback DNS server answering rcode
// knows about.
func dnsTarget(rcode int) func(t *testing.T) target {
	return func(t *testing.T) target {
		s := faultserver.NewDNS(rcode)
		t.Cleanup(s.Close)
		return target{url: "http://api.nosuch.test/", hits: noHits,
			setup: func(_ *http.Transport, d *dialer) { d.d.Resolver = s.Resolver() },
			close: func() {
				select {
				case <-s.Asked():
				case <-time.After(settleTimeout): // a failure bound
					t.Error("the resolver never asked the loopback DNS server")
				}
				s.Close()
			}}
	}
}

// The full-backlog listener is shared by every cell that needs one: filling
// its accept queue costs a dial timeout. TestMain closes it.
var (
	backlogOnce sync.Once
	backlog     *faultserver.FullBacklog
	backlogErr  error
)

// fullBacklog dials a listener whose accept queue is full: the SYN is
// dropped, and the dial lasts until the dialer's timeout (0: none, the
// caller's context ends it).
func fullBacklog(dialTimeout time.Duration) func(t *testing.T) target {
	return func(t *testing.T) target {
		backlogOnce.Do(func() { backlog, backlogErr = faultserver.NewFullBacklog() })
		if errors.Is(backlogErr, errors.ErrUnsupported) {
			t.Skip(backlogErr)
		}
		if backlogErr != nil {
			t.Fatal(backlogErr)
		}
		return target{url: "http://" + backlog.Addr + "/", hits: noHits,
			setup: func(_ *http.Transport, d *dialer) { d.d.Timeout = dialTimeout }}
	}
}

// closeBacklog closes the shared full-backlog listener, if one was made.
func closeBacklog() {
	if backlog != nil {
		backlog.Close()
	}
}

// clientCertRequired is a TLS server the client trusts that demands a
// client certificate the client does not have.
func clientCertRequired(t *testing.T) target {
	h := newHits()
	cs := newConnStates()
	srv := httptest.NewUnstartedServer(processingHandler(h))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.Config.ConnState = cs.hook
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return target{url: srv.URL, hits: h.total, conns: func() int { return int(cs.opened.Load()) }, close: srv.Close,
		setup: func(base *http.Transport, _ *dialer) { base.TLSClientConfig = &tls.Config{RootCAs: pool} }}
}

// nameMismatch trusts the server's certificate but expects another name.
func nameMismatch(t *testing.T) target {
	s := faultserver.NewScriptedTLS()
	t.Cleanup(s.Close)
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	return target{url: s.URL, hits: s.Hits, conns: s.Conns, bodies: s.Bodies, close: s.Close,
		setup: func(base *http.Transport, _ *dialer) {
			base.TLSClientConfig = &tls.Config{RootCAs: pool, ServerName: "wrong.name.test"}
		}}
}

func httpsToHTTP(t *testing.T) target {
	tg := scripted(false)(t)
	tg.url = "https" + strings.TrimPrefix(tg.url, "http")
	return tg
}

func unsupportedScheme(*testing.T) target {
	return target{url: "ftp://127.0.0.1/", hits: noHits}
}

// invalidHeader sends a header value net/http refuses to write.
func invalidHeader(t *testing.T) target {
	tg := scripted(false)(t)
	tg.prepare = func(req *http.Request) { req.Header["X-Bad"] = []string{"a\r\nInjected: 1"} }
	return tg
}

func canceledBefore(t *testing.T) target {
	tg := scripted(false)(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tg.ctx = ctx
	return tg
}

func headerTimeout(t *testing.T) target {
	tg := rawFault(faultserver.Stall)(t)
	tg.setup = func(base *http.Transport, _ *dialer) { base.ResponseHeaderTimeout = 100 * time.Millisecond }
	return tg
}

// cancelAfterHit: the server answers first (when not 0) to the first
// request; then it reads a request in full, cancels the caller's context
// (with errShutdown as the cause when cause is set) and holds the
// connection until the client lets go.
func cancelAfterHit(cause bool, first int) func(t *testing.T) target {
	return func(t *testing.T) target {
		var cancel func()
		ctx := context.Background()
		if cause {
			c, cancelCause := context.WithCancelCause(ctx)
			ctx, cancel = c, func() { cancelCause(errShutdown) }
		} else {
			ctx, cancel = context.WithCancel(ctx)
		}
		t.Cleanup(cancel)
		h := newHits()
		srv, states := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
			h.add(r.Method)
			if first != 0 && h.total() == 1 {
				w.WriteHeader(first)
				return
			}
			cancel()
			<-r.Context().Done()
		}))
		return target{url: srv.URL, hits: h.total, conns: func() int { return int(states.opened.Load()) },
			ctx: ctx, close: func() { srv.Close(); states.settled(t) }}
	}
}

func withDeadline(d time.Duration, start func(t *testing.T) target) func(t *testing.T) target {
	return func(t *testing.T) target {
		tg := start(t)
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		tg.ctx = ctx
		return tg
	}
}

// TestFaultMatrix runs every row for every method kind through every front
// door.
func TestFaultMatrix(t *testing.T) {
	for _, row := range matrix {
		for _, m := range methods {
			for _, fd := range frontDoors {
				t.Run(row.name+"/"+m.name+"/"+fd.name, func(t *testing.T) { runMatrixCell(t, row, m, fd) })
			}
		}
	}
}

// cellRequest makes a cell's request: kind m to tg, under tg's context
// (changed by wrap, when given). body counts the closes of the request's
// body when fd hands tank the caller's body; it is nil otherwise.
func cellRequest(t *testing.T, tg target, m method, fd frontDoor, wrap func(context.Context) context.Context) (req *http.Request, body *closeCounter) {
	ctx := tg.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if wrap != nil {
		ctx = wrap(ctx)
	}
	req = m.newRequest(t, ctx, tg.url)
	if tg.prepare != nil {
		tg.prepare(req)
	}
	if fd.ownsBody {
		body = countCloses(req)
	}
	return req, body
}

// checkServerBodies checks that the server read the whole payload in every
// request it read (nothing for a GET).
func checkServerBodies(t *testing.T, tg target, m method) {
	t.Helper()
	if tg.bodies == nil {
		return
	}
	want := payload
	if m.method == http.MethodGet {
		want = ""
	}
	for i, b := range tg.bodies() {
		if string(b) != want {
			t.Errorf("hit %d: server read body %q; want %q", i+1, b, want)
		}
	}
}

func runMatrixCell(t *testing.T, row matrixRow, m method, fd frontDoor) {
	tg := row.start(t)
	d := newDialer()
	base := &http.Transport{DialContext: d.DialContext}
	if tg.setup != nil {
		tg.setup(base, d)
	}
	var rec attempts
	opts := append([]middleware.Option{middleware.WithMaxAttempts(matrixMax), middleware.WithBackoff(0, 0)}, row.opts...)
	if !fd.plain {
		opts = append(opts, middleware.WithHooks(rec.hooks()))
	}
	req, body := cellRequest(t, tg, m, fd, nil)

	resp, err := fd.do(t, base, req, opts)
	status := 0
	if resp != nil {
		_, rerr := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
		if !errors.Is(rerr, row.bodyErr) {
			t.Errorf("reading the body: %v; want %v", rerr, row.bodyErr)
		}
	}
	// Settle: the client closed every connection it opened, the server
	// finished with every request (its counts are final), and only then is
	// the caller's body checked for a single Close.
	d.closeAll(t, base)
	if tg.close != nil {
		tg.close()
	}
	body.closedOnce(t)
	hits := tg.hits()
	checkServerBodies(t, tg, m)
	if tg.conns != nil {
		// Connections: one per dial, never more than one per attempt.
		accepted, dialed := tg.conns(), int(d.dialed.Load())
		if accepted > matrixMax || accepted < dialed || (accepted != dialed && !row.dialRace) {
			t.Errorf("server accepted %d connections; the client dialed %d (at most %d attempts)", accepted, dialed, matrixMax)
		}
	}
	if row.errIs != nil && !errors.Is(err, row.errIs) {
		t.Errorf("error %v; want one matching %v", err, row.errIs)
	}

	// The invariant.
	anyMethod := row.anyMethod || row.statuses != nil && slices.Contains([]int{429, 502, 503}, row.statuses[0])
	if !m.replayable() && !anyMethod && hits > 1 {
		t.Fatalf("INVARIANT: the server processed a %s without Idempotency-Key %d times", m.method, hits)
	}

	if row.statuses != nil {
		checkStatusCell(t, row, m, fd, &rec, status, err, hits)
		return
	}
	checkErrorCell(t, row, m, fd, &rec, status, err, hits)
}

// checkStatusCell: the server is scripted, so the whole run is determined.
func checkStatusCell(t *testing.T, row matrixRow, m method, fd frontDoor, rec *attempts, status int, err error, hits int) {
	t.Helper()
	var want []seen
	for n := 1; n <= matrixMax; n++ {
		c := statusClass(row.statuses[min(n, len(row.statuses))-1])
		v, r := expectVerdict(c, m, n, row)
		want = append(want, seen{Number: n, Class: c, Verdict: v, Reason: r, Sent: true})
		if v == middleware.Stop {
			break
		}
	}
	if err != nil {
		t.Fatalf("error %v; want the last response", err)
	}
	if w := row.statuses[min(len(want), len(row.statuses))-1]; status != w {
		t.Errorf("status %d; want %d", status, w)
	}
	if hits != len(want) {
		t.Errorf("server hits %d; want %d", hits, len(want))
	}
	if fd.plain {
		return
	}
	got := rec.get()
	for i := range got {
		a := &got[i]
		if a.Verdict == middleware.Retry && row.raErr != (a.RAErr != nil) {
			t.Errorf("attempt %d RetryAfterErr %v; want set: %v", a.Number, a.RAErr, row.raErr)
		}
		if a.Verdict == middleware.Retry && row.source != "" && a.Source != row.source {
			t.Errorf("attempt %d slept by %q; want %q", a.Number, a.Source, row.source)
		}
		if a.Sleep != 0 {
			t.Errorf("attempt %d sleep %v; want 0 (zero backoff, Retry-After now)", a.Number, a.Sleep)
		}
		a.Sleep, a.Source, a.RAErr = 0, "", nil
	}
	if !slices.Equal(got, want) {
		t.Errorf("attempts:\n got %+v\nwant %+v", got, want)
	}
}

// checkErrorCell: every attempt fails; the kernel may pick among the row's
// classes.
func checkErrorCell(t *testing.T, row matrixRow, m method, fd frontDoor, rec *attempts, status int, err error, hits int) {
	t.Helper()
	if err == nil {
		t.Fatalf("response %d; want an error", status)
	}
	var ee *middleware.ExhaustedError
	if !errors.As(err, &ee) {
		t.Fatalf("error %v (%T); want one unwrapping to *middleware.ExhaustedError", err, err)
	}
	if ee.Err == nil {
		t.Error("ExhaustedError.Err is nil; want the last attempt's error")
	}
	if !errors.Is(err, ee.Reason) {
		t.Errorf("errors.Is(err, %s) = false", ee.Reason)
	}
	wantHits := 0
	if row.processed {
		wantHits = ee.Attempts
	}
	if hits != wantHits {
		t.Errorf("server hits %d; want %d (attempts %d)", hits, wantHits, ee.Attempts)
	}

	if fd.plain {
		// The outcome only: some class of the row leads there, and with one
		// class the attempt count is fixed.
		ok := false
		for _, c := range row.classes {
			if v, r := expectVerdict(c, m, ee.Attempts, row); v == middleware.Stop && r == ee.Reason {
				ok = true
			}
		}
		if r, n := expectRun(row.classes[0], m, row); len(row.classes) == 1 && (ee.Reason != r || ee.Attempts != n) {
			ok = false
		}
		if !ok {
			t.Errorf("gave up after %d attempts with %s; no class of %v leads there", ee.Attempts, ee.Reason, row.classes)
		}
		return
	}

	got := rec.get()
	if len(got) != ee.Attempts {
		t.Fatalf("AttemptEnd ran %d times; the error says %d attempts", len(got), ee.Attempts)
	}
	for i, a := range got {
		if !slices.Contains(row.classes, a.Class) {
			t.Errorf("attempt %d class %s; want one of %v", i+1, a.Class, row.classes)
		}
		v, r := expectVerdict(a.Class, m, i+1, row)
		if a.Verdict != v || a.Reason != r {
			t.Errorf("attempt %d (%s): %v/%s; want %v/%s", i+1, a.Class, a.Verdict, a.Reason, v, r)
		}
		s, known := sentClass(a.Class)
		switch row.sent {
		case sentNo:
			s, known = false, true
		case sentYes:
			s, known = true, true
		}
		if known && a.Sent != s {
			t.Errorf("attempt %d (%s) Sent = %v; want %v", i+1, a.Class, a.Sent, s)
		}
	}
	if last := got[len(got)-1]; ee.Reason != last.Reason {
		t.Errorf("error reason %s; want the last attempt's %s", ee.Reason, last.Reason)
	}
}

// statusClass is the spec for statuses, written out independently of
// tank's policy.
func statusClass(code int) middleware.Class {
	switch code {
	case 429:
		return middleware.ClassThrottled
	case 502, 503:
		return middleware.ClassUnavailable
	case 500, 504:
		return middleware.ClassServerError
	}
	return middleware.ClassFinal
}

// sentClass says whether an attempt of class c reached the server, where
// the class alone tells (a TLS alert may come before or after the request
// is written, a cancel at any time: rows say).
func sentClass(c middleware.Class) (sent, known bool) {
	switch c {
	case middleware.ClassRefused, middleware.ClassConnect, middleware.ClassDNS, middleware.ClassInvalid:
		return false, true
	case middleware.ClassReset, middleware.ClassEOF, middleware.ClassTimeout, middleware.ClassProtocol:
		return true, true
	}
	return false, false
}

// expectVerdict is the decision table (README.md, docs/design.md) for
// attempt n of a request of kind m in row.
func expectVerdict(c middleware.Class, m method, n int, row matrixRow) (middleware.Verdict, middleware.Reason) {
	var r middleware.Reason
	switch c {
	case middleware.ClassRefused, middleware.ClassConnect:
		r = middleware.ReasonNotSent
	case middleware.ClassThrottled, middleware.ClassUnavailable, middleware.ClassRefusedStream:
		r = middleware.ReasonNotProcessed
	case middleware.ClassTLS, middleware.ClassInvalid, middleware.ClassDNS:
		return middleware.Stop, middleware.ReasonPermanent
	case middleware.ClassCanceled:
		return middleware.Stop, middleware.ReasonCanceled
	case middleware.ClassReset, middleware.ClassEOF, middleware.ClassTimeout, middleware.ClassProtocol,
		middleware.ClassTransport, middleware.ClassServerError:
		if !m.replayable() {
			return middleware.Stop, middleware.ReasonNotReplayable
		}
		r = middleware.ReasonReplayable
	default:
		return middleware.Stop, middleware.ReasonFinal
	}
	if n >= matrixMax {
		return middleware.Stop, middleware.ReasonAttempts
	}
	if row.stopRetry != "" {
		return middleware.Stop, row.stopRetry
	}
	return middleware.Retry, r
}

// expectRun gives the last reason and the attempt count when every attempt
// ends in class c.
func expectRun(c middleware.Class, m method, row matrixRow) (middleware.Reason, int) {
	for n := 1; n <= matrixMax; n++ {
		if v, r := expectVerdict(c, m, n, row); v == middleware.Stop {
			return r, n
		}
	}
	return "", 0 // not reached: attempt matrixMax always stops
}
