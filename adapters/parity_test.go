// Package adapters_test checks that tank's three front doors judge the same
// scenarios the same way: middleware.NewTransport, restyretry.Apply and
// backoffretry.New share one classifier and policy, so each row must give
// the same classes, verdicts, attempts and server hits through each.
package adapters_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-resty/resty/v2"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tankhttp/tank/adapters/backoffretry"
	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/internal/faultserver"
	"github.com/tankhttp/tank/middleware"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a scenario's server, seen from the test.
type server struct {
	url  string
	hits func() int
}

type scenario struct {
	name  string
	start func(t *testing.T) server
}

func raw(f faultserver.Fault) func(t *testing.T) server {
	return func(t *testing.T) server {
		s := faultserver.NewRaw(f)
		t.Cleanup(s.Close)
		return server{s.URL, s.Hits}
	}
}

func scripted(tls bool, codes ...int) func(t *testing.T) server {
	return func(t *testing.T) server {
		steps := make([]faultserver.Step, len(codes))
		for i, c := range codes {
			steps[i] = faultserver.Step{Status: c, Body: http.StatusText(c)}
		}
		newServer := faultserver.NewScripted
		if tls {
			newServer = faultserver.NewScriptedTLS
		}
		s := newServer(steps...)
		t.Cleanup(s.Close)
		t.Cleanup(func() {
			for i, b := range s.Bodies() {
				if len(b) > 0 && string(b) != payload {
					t.Errorf("hit %d: server got body %q; want %q", i+1, b, payload)
				}
			}
		})
		return server{s.URL, s.Hits}
	}
}

// The scenarios are the deterministic rows of the core's decision table
// (those where the kernel cannot race one class into another).
var scenarios = []scenario{
	{"refused", func(t *testing.T) server {
		return server{"http://" + faultserver.RefusedAddr(), func() int { return 0 }}
	}},
	{"tls_handshake_reset", raw(faultserver.TLSReset)},
	{"untrusted_cert", scripted(true, 200)},
	{"read_then_rst", raw(faultserver.ReadRST)},
	{"read_then_fin", raw(faultserver.ReadFIN)},
	{"malformed_status", raw(faultserver.Garbage)},
	{"503", scripted(false, 503)},
	{"429", scripted(false, 429)},
	{"500", scripted(false, 500)},
	{"501", scripted(false, 501)},
	{"503_503_200", scripted(false, 503, 503, 200)},
	{"500_200", scripted(false, 500, 200)},
	{"404", scripted(false, 404)},
}

type methodKind struct {
	name, method string
	key          bool
}

var kinds = []methodKind{
	{"GET", http.MethodGet, false},
	{"PUT", http.MethodPut, false},
	{"POST", http.MethodPost, false},
	{"POST+key", http.MethodPost, true},
}

const payload = "payload: the same bytes every time"

// outcome is what a front door did with one request.
type outcome struct {
	Classes  []middleware.Class
	Verdicts []string
	Reasons  []middleware.Reason
	Hits     int
	Status   int               // the final response's, 0 on error
	Reason   middleware.Reason // the *middleware.ExhaustedError's, "" on a response
}

// frontDoor sends one request of kind k to url through base with opts.
type frontDoor func(t *testing.T, base *http.Transport, k methodKind, url string, opts []middleware.Option) (status int, err error)

func newRequest(t *testing.T, k methodKind, url string) *http.Request {
	var body io.Reader
	if k.method != http.MethodGet {
		body = strings.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(context.Background(), k.method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if k.key {
		req.Header.Set("Idempotency-Key", "parity-1")
	}
	return req
}

func closeResp(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

var frontDoors = []struct {
	name string
	do   frontDoor
}{
	{"transport", func(t *testing.T, base *http.Transport, k methodKind, url string, opts []middleware.Option) (int, error) {
		resp, err := middleware.NewTransport(base, opts...).RoundTrip(newRequest(t, k, url))
		return closeResp(resp), err
	}},
	{"resty", func(t *testing.T, base *http.Transport, k methodKind, url string, opts []middleware.Option) (int, error) {
		c := restyretry.Apply(resty.New().SetTransport(base).SetLogger(nopLogger{}), opts...)
		r := c.R().SetDoNotParseResponse(true)
		if k.method != http.MethodGet {
			r.SetBody(payload)
		}
		if k.key {
			r.SetHeader("Idempotency-Key", "parity-1")
		}
		resp, err := r.Execute(k.method, url)
		if err != nil {
			return 0, err
		}
		return closeResp(resp.RawResponse), nil
	}},
	{"backoff", func(t *testing.T, base *http.Transport, k methodKind, url string, opts []middleware.Option) (int, error) {
		req := newRequest(t, k, url)
		op, b := backoffretry.New(req, base, opts...)
		resp, err := backoff.RetryWithData(op, backoff.WithContext(b, req.Context()))
		return closeResp(resp), err
	}},
}

// TestFrontDoorParity runs every scenario and method kind through the three
// front doors and requires the same outcome from each, and the core
// invariant from all: a request that is not replayable is processed at most
// once (429/502/503 answers excepted: the server says it did no work).
func TestFrontDoorParity(t *testing.T) {
	for _, sc := range scenarios {
		for _, k := range kinds {
			t.Run(sc.name+"/"+k.name, func(t *testing.T) {
				var want *outcome
				for _, fd := range frontDoors {
					got := run(t, sc, k, fd.do)
					if want == nil {
						want = &got
						if len(got.Classes) == 0 {
							t.Fatal("no attempt observed through the transport")
						}
						notProcessed := got.Classes[0] == middleware.ClassUnavailable || got.Classes[0] == middleware.ClassThrottled
						if k.method == http.MethodPost && !k.key && !notProcessed && got.Hits > 1 {
							t.Errorf("%s: server processed a POST without Idempotency-Key %d times; want at most 1", fd.name, got.Hits)
						}
						continue
					}
					if diff := cmp.Diff(*want, got); diff != "" {
						t.Errorf("%s differs from the transport (-transport +%s):\n%s", fd.name, fd.name, diff)
					}
				}
			})
		}
	}
}

func run(t *testing.T, sc scenario, k methodKind, do frontDoor) outcome {
	srv := sc.start(t)
	d := &faultserver.Dialer{}
	base := &http.Transport{DialContext: d.DialContext}
	defer func() {
		base.CloseIdleConnections()
		if n := d.WaitClosed(10 * time.Second); n != 0 {
			t.Errorf("%d client connections open after CloseIdleConnections; want 0", n)
		}
	}()
	var (
		mu  sync.Mutex
		out outcome
	)
	hooks := middleware.Hooks{AttemptEnd: func(_ context.Context, a *middleware.Attempt) {
		mu.Lock()
		defer mu.Unlock()
		out.Classes = append(out.Classes, a.Class)
		out.Verdicts = append(out.Verdicts, a.Verdict.String())
		out.Reasons = append(out.Reasons, a.Reason)
	}}
	opts := []middleware.Option{middleware.WithMaxAttempts(3), middleware.WithBackoff(0, 0), middleware.WithHooks(hooks)}
	status, err := do(t, base, k, srv.url, opts)
	out.Status = status
	if err != nil {
		var ee *middleware.ExhaustedError
		if !errors.As(err, &ee) {
			t.Fatalf("error %v (%T); want one unwrapping to *middleware.ExhaustedError", err, err)
		}
		out.Reason = ee.Reason
		if ee.Attempts != len(out.Classes) {
			t.Errorf("ExhaustedError.Attempts = %d; hooks saw %d attempts", ee.Attempts, len(out.Classes))
		}
	}
	out.Hits = srv.hits()
	return out
}

type nopLogger struct{}

func (nopLogger) Errorf(string, ...any) {}
func (nopLogger) Warnf(string, ...any)  {}
func (nopLogger) Debugf(string, ...any) {}
