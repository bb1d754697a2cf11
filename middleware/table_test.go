package middleware

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tankhttp/tank/internal/faultserver"
)

// A methodKind is one way of sending the same request: what the decision
// table distinguishes is whether the request is replayable.
type methodKind struct {
	name   string
	method string
	key    bool // carries an Idempotency-Key
}

var methodKinds = []methodKind{
	{"GET", http.MethodGet, false},
	{"PUT", http.MethodPut, false},
	{"POST", http.MethodPost, false},
	{"POST+key", http.MethodPost, true},
}

func (k methodKind) replayable() bool { return k.method != http.MethodPost || k.key }

const tablePayload = "payload: exactly these bytes"

func (k methodKind) newRequest(t testing.TB, url string) *http.Request {
	t.Helper()
	var body io.Reader
	if k.method != http.MethodGet {
		body = strings.NewReader(tablePayload)
	}
	req, err := http.NewRequestWithContext(context.Background(), k.method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if k.key {
		req.Header.Set("Idempotency-Key", "k-1")
	}
	return req
}

// target is a server under test, seen from the test.
type target struct {
	url   string
	hits  func() int // requests the server read in full
	conns func() int // connections the server accepted (-1: unknown)
}

type tableRow struct {
	name    string
	start   func(t *testing.T) target
	opts    []Option
	classes []Class // the classes an attempt may end in (more than one where the kernel races)
	// processed: the server reads every attempt in full.
	processed bool
	// statuses, for scripted servers: the status of attempt i (last repeats).
	statuses []int
}

func rawTarget(f faultserver.Fault) func(t *testing.T) target {
	return func(t *testing.T) target {
		s := faultserver.NewRaw(f)
		t.Cleanup(s.Close)
		return target{url: s.URL, hits: s.Hits, conns: s.Conns}
	}
}

func scriptedTarget(tls bool, statuses ...int) func(t *testing.T) target {
	return func(t *testing.T) target {
		newServer := faultserver.NewScripted
		if tls {
			newServer = faultserver.NewScriptedTLS
		}
		s := newServer(steps(statuses...)...)
		t.Cleanup(s.Close)
		t.Cleanup(func() {
			for i, b := range s.Bodies() {
				if want := tablePayload; len(b) > 0 && string(b) != want {
					t.Errorf("hit %d body %q; want %q", i+1, b, want)
				}
			}
		})
		return target{url: s.URL, hits: s.Hits, conns: s.Conns}
	}
}

// decisionTable is DESIGN.md's table, one row per fault tank must tell apart.
var decisionTable = []tableRow{
	// Not sent, transient: retried for any method.
	{name: "refused", classes: []Class{ClassRefused},
		start: func(t *testing.T) target {
			return target{url: "http://" + faultserver.RefusedAddr(), hits: func() int { return 0 }, conns: func() int { return -1 }}
		}},
	{name: "tls_handshake_reset", start: rawTarget(faultserver.TLSReset), classes: []Class{ClassConnect}},

	// Not sent, permanent: stop.
	{name: "untrusted_cert", start: scriptedTarget(true, 200), classes: []Class{ClassTLS}},
	{name: "https_to_http", classes: []Class{ClassTLS},
		start: func(t *testing.T) target {
			tg := scriptedTarget(false, 200)(t)
			tg.url = "https" + strings.TrimPrefix(tg.url, "http")
			return tg
		}},
	{name: "unsupported_scheme", classes: []Class{ClassInvalid},
		start: func(t *testing.T) target {
			return target{url: "ftp://127.0.0.1/", hits: func() int { return 0 }, conns: func() int { return -1 }}
		}},

	// Sent, no response: retried only when replayable.
	// The server closes before reading: the client may see its FIN, the RST
	// its unread data causes, or (FIN first) "server closed idle connection".
	{name: "accept_close", start: rawTarget(faultserver.AcceptClose),
		classes: []Class{ClassEOF, ClassReset, ClassConnect}},
	{name: "close_rst", start: rawTarget(faultserver.CloseRST),
		classes: []Class{ClassEOF, ClassReset, ClassConnect}},
	{name: "read_then_rst", start: rawTarget(faultserver.ReadRST), classes: []Class{ClassReset}, processed: true},
	{name: "read_then_fin", start: rawTarget(faultserver.ReadFIN), classes: []Class{ClassEOF}, processed: true},
	{name: "malformed_status", start: rawTarget(faultserver.Garbage), classes: []Class{ClassProtocol}, processed: true},
	{name: "stall_attempt_timeout", start: rawTarget(faultserver.Stall), classes: []Class{ClassTimeout}, processed: true,
		opts: []Option{WithAttemptTimeout(50 * time.Millisecond)}},

	// Statuses.
	{name: "503", start: scriptedTarget(false, 503), statuses: []int{503}},
	{name: "429", start: scriptedTarget(false, 429), statuses: []int{429}},
	{name: "502", start: scriptedTarget(false, 502), statuses: []int{502}},
	{name: "500", start: scriptedTarget(false, 500), statuses: []int{500}},
	{name: "504", start: scriptedTarget(false, 504), statuses: []int{504}},
	{name: "501", start: scriptedTarget(false, 501), statuses: []int{501}},
	{name: "404", start: scriptedTarget(false, 404), statuses: []int{404}},
	{name: "200", start: scriptedTarget(false, 200), statuses: []int{200}},
	{name: "503_503_200", start: scriptedTarget(false, 503, 503, 200), statuses: []int{503, 503, 200}},
	{name: "500_200", start: scriptedTarget(false, 500, 200), statuses: []int{500, 200}},
	// A broken body is the caller's to read: the 200 is returned, not retried.
	{name: "partial_body", start: rawTarget(faultserver.PartialBody), statuses: []int{200}},
}

// tableStatusClass is the spec for statuses, written out independently of
// Policy.statusClass.
func tableStatusClass(code int) Class {
	switch code {
	case 429:
		return ClassThrottled
	case 502, 503:
		return ClassUnavailable
	case 500, 504:
		return ClassServerError
	}
	return ClassFinal
}

// expectVerdict is DESIGN.md's decision table for attempt n of tableMax.
func expectVerdict(c Class, k methodKind, n int) (Verdict, Reason) {
	var v Verdict
	var r Reason
	switch c {
	case ClassRefused, ClassConnect:
		v, r = Retry, ReasonNotSent
	case ClassThrottled, ClassUnavailable:
		v, r = Retry, ReasonNotProcessed
	case ClassTLS, ClassInvalid, ClassDNS:
		return Stop, ReasonPermanent
	case ClassReset, ClassEOF, ClassTimeout, ClassProtocol, ClassTransport, ClassServerError:
		if !k.replayable() {
			return Stop, ReasonNotReplayable
		}
		v, r = Retry, ReasonReplayable
	default:
		return Stop, ReasonFinal
	}
	if n >= tableMax {
		return Stop, ReasonAttempts
	}
	return v, r
}

const tableMax = 3

type seenAttempt struct {
	class   Class
	verdict Verdict
	reason  Reason
	sent    bool
}

type recorder struct {
	mu       sync.Mutex
	attempts []seenAttempt
	ends     int
}

func (r *recorder) hooks() Hooks {
	return Hooks{
		AttemptEnd: func(_ context.Context, a *Attempt) {
			r.mu.Lock()
			r.attempts = append(r.attempts, seenAttempt{a.Class, a.Verdict, a.Reason, a.Sent})
			r.mu.Unlock()
		},
		RequestEnd: func(context.Context, *Attempt) {
			r.mu.Lock()
			r.ends++
			r.mu.Unlock()
		},
	}
}

// TestDecisionTable sends every method kind through every row of the
// decision table over loopback and checks each attempt's class and verdict,
// the attempts made, and what the server really processed. The invariant
// behind it all: a request that is not replayable is processed at most once.
func TestDecisionTable(t *testing.T) {
	for _, row := range decisionTable {
		for _, k := range methodKinds {
			t.Run(row.name+"/"+k.name, func(t *testing.T) {
				runTableRow(t, row, k, true)
			})
			t.Run(row.name+"/"+k.name+"/plain", func(t *testing.T) {
				runTableRow(t, row, k, false)
			})
		}
	}
}

// runTableRow runs one cell. With hooks the Run path judges every attempt;
// without, the Transport's success path makes the first attempt, and only
// the outcome and the server side are checked.
func runTableRow(t *testing.T, row tableRow, k methodKind, withHooks bool) {
	tg := row.start(t)
	base, _ := newClientTransport(t)
	rec := &recorder{}
	opts := append([]Option{WithMaxAttempts(tableMax), WithBackoff(0, 0)}, row.opts...)
	if withHooks {
		opts = append(opts, WithHooks(rec.hooks()))
	}
	tr := NewTransport(base, opts...)

	resp, err := tr.RoundTrip(k.newRequest(t, tg.url))
	if resp != nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	// How many attempts were made, as far as the client can tell.
	attempts := 0
	var ee *ExhaustedError
	switch {
	case err != nil && errors.As(err, &ee):
		attempts = ee.Attempts
	case err != nil:
		t.Fatalf("RoundTrip error %v (%T); want *ExhaustedError", err, err)
	case row.statuses != nil:
		attempts = tg.hits()
	}
	hits := tg.hits()
	// 429, 502 and 503 say the server did no work; any other hit is work done.
	anyStatus := row.statuses != nil && tableStatusClass(row.statuses[0]).group() == groupStatusAny
	if !k.replayable() && !anyStatus && hits > 1 {
		t.Fatalf("server processed a %s without Idempotency-Key %d times; want at most 1", k.method, hits)
	}

	if row.statuses != nil {
		// The server is scripted: the outcome is fully determined.
		var want []seenAttempt
		for n := 1; ; n++ {
			c := tableStatusClass(row.statuses[min(n, len(row.statuses))-1])
			v, r := expectVerdict(c, k, n)
			want = append(want, seenAttempt{class: c, verdict: v, reason: r, sent: true})
			if v == Stop {
				break
			}
		}
		if err != nil {
			t.Fatalf("RoundTrip error %v; want the last response", err)
		}
		wantStatus := row.statuses[min(len(want), len(row.statuses))-1]
		if resp.StatusCode != wantStatus {
			t.Errorf("status %d; want %d", resp.StatusCode, wantStatus)
		}
		if hits != len(want) {
			t.Errorf("server hits %d; want %d", hits, len(want))
		}
		if withHooks {
			checkAttempts(t, rec, want)
		}
		return
	}

	if err == nil {
		t.Fatalf("RoundTrip returned %d; want an error", resp.StatusCode)
	}
	if !withHooks {
		// Outcome only: the last attempt must have stopped for the reason
		// the rules give one of the row's classes at that attempt; with one
		// class per row, the attempt count is fixed too.
		ok := false
		for _, c := range row.classes {
			if v, r := expectVerdict(c, k, ee.Attempts); v == Stop && r == ee.Reason {
				ok = true
			}
		}
		if _, r, n := expectRun(row.classes[0], k); len(row.classes) == 1 && (ee.Reason != r || ee.Attempts != n) {
			ok = false
		}
		if !ok {
			t.Errorf("gave up after %d attempts with %s; no class of %v leads there", ee.Attempts, ee.Reason, row.classes)
		}
	} else {
		rec.mu.Lock()
		got := slices.Clone(rec.attempts)
		rec.mu.Unlock()
		if len(got) != attempts {
			t.Fatalf("AttemptEnd ran %d times; the error says %d attempts", len(got), attempts)
		}
		var want []seenAttempt
		for i, a := range got {
			if !slices.Contains(row.classes, a.class) {
				t.Errorf("attempt %d class %s; want one of %v", i+1, a.class, row.classes)
			}
			v, r := expectVerdict(a.class, k, i+1)
			sent := a.class.group() == groupSent
			want = append(want, seenAttempt{a.class, v, r, sent})
		}
		checkAttempts(t, rec, want)
		if last := got[len(got)-1]; ee.Reason != last.reason || !errors.Is(err, last.reason) {
			t.Errorf("error reason %s; want the last attempt's %s", ee.Reason, last.reason)
		}
	}
	wantHits := 0
	if row.processed {
		wantHits = attempts
	}
	if hits != wantHits {
		t.Errorf("server hits %d; want %d (attempts %d)", hits, wantHits, attempts)
	}
	if ee.Err == nil {
		t.Error("ExhaustedError.Err is nil; want the last attempt's error")
	}
}

// expectRun gives the last verdict, reason and attempt count when every
// attempt ends in class c.
func expectRun(c Class, k methodKind) (Verdict, Reason, int) {
	for n := 1; ; n++ {
		if v, r := expectVerdict(c, k, n); v == Stop {
			return v, r, n
		}
	}
}

func checkAttempts(t *testing.T, rec *recorder, want []seenAttempt) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.attempts, want) {
		t.Errorf("attempts (class, verdict, reason, sent):\n got %v\nwant %v", rec.attempts, want)
	}
	if rec.ends != 1 {
		t.Errorf("RequestEnd ran %d times; want 1", rec.ends)
	}
}
