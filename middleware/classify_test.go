package middleware

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tankhttp/tank/internal/sendstate"
	"github.com/tankhttp/tank/internal/testsupport/faultserver"
)

// realError sends one request with plain net/http and returns its error and
// whether sendstate saw it sent.
func realError(t *testing.T, method, url string, base *http.Transport) (error, bool) {
	t.Helper()
	st := sendstate.Get()
	defer sendstate.Put(st)
	var body io.Reader
	if method != http.MethodGet {
		body = strings.NewReader("payload")
	}
	req, err := http.NewRequestWithContext(sendstate.With(context.Background(), st), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := base.RoundTrip(req)
	if resp != nil {
		resp.Body.Close()
		t.Fatalf("%s %s: got %d; want an error", method, url, resp.StatusCode)
	}
	return err, st.Sent()
}

// TestClassifyRealErrors classifies errors produced by real net/http
// against the fault servers, with and without the send state.
func TestClassifyRealErrors(t *testing.T) {
	tlsSrv := faultserver.NewScriptedTLS(steps(200)...)
	defer tlsSrv.Close()
	plainSrv := newScripted(t, 200)
	raw := map[faultserver.Fault]*faultserver.Raw{}
	for _, f := range []faultserver.Fault{faultserver.TLSReset, faultserver.ReadRST, faultserver.ReadFIN, faultserver.Garbage, faultserver.Stall} {
		raw[f] = faultserver.NewRaw(f)
		defer raw[f].Close()
	}
	for _, tt := range []struct {
		name     string
		url      string
		base     func(*http.Transport)
		want     Class
		wantSent bool
		// valueOnly is the class from the error value alone (send state
		// unknown), which may differ where the value lies.
		valueOnly Class
	}{
		{name: "refused", url: "http://" + faultserver.RefusedAddr(), want: ClassRefused, valueOnly: ClassRefused},
		{name: "untrusted cert", url: tlsSrv.URL, want: ClassTLS, valueOnly: ClassTLS},
		{name: "https to http", url: "https" + strings.TrimPrefix(plainSrv.URL, "http"), want: ClassTLS, valueOnly: ClassTLS},
		{name: "unsupported scheme", url: "gopher://127.0.0.1/", want: ClassInvalid, valueOnly: ClassInvalid},
		// The value is a reset, like a reset after the request was read;
		// only the send state proves nothing was sent.
		{name: "TLS handshake reset", url: raw[faultserver.TLSReset].URL, want: ClassConnect, valueOnly: ClassReset},
		{name: "read then RST", url: raw[faultserver.ReadRST].URL, want: ClassReset, wantSent: true, valueOnly: ClassReset},
		{name: "read then FIN", url: raw[faultserver.ReadFIN].URL, want: ClassEOF, wantSent: true, valueOnly: ClassEOF},
		{name: "malformed status", url: raw[faultserver.Garbage].URL, want: ClassProtocol, wantSent: true, valueOnly: ClassProtocol},
		{name: "response header timeout", url: raw[faultserver.Stall].URL, want: ClassTimeout, wantSent: true, valueOnly: ClassTimeout,
			base: func(tr *http.Transport) { tr.ResponseHeaderTimeout = 20 * time.Millisecond }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				base, _ := newClientTransport(t)
				if tt.base != nil {
					tt.base(base)
				}
				err, sent := realError(t, method, tt.url, base)
				if sent != tt.wantSent {
					t.Errorf("%s: sent = %v; want %v (error %v)", method, sent, tt.wantSent, err)
				}
				if got := classifyErr(err, sent, true); got != tt.want {
					t.Errorf("%s: classifyErr(%q, sent=%v) = %s; want %s", method, err, sent, got, tt.want)
				}
				if got := classifyErr(err, false, false); got != tt.valueOnly {
					t.Errorf("%s: classifyErr(%q, unknown) = %s; want %s", method, err, got, tt.valueOnly)
				}
			}
		})
	}
}

// TestClassifyMadeErrors covers errors loopback cannot produce (DNS) and
// wrapped forms.
func TestClassifyMadeErrors(t *testing.T) {
	for _, tt := range []struct {
		give error
		sent bool
		want Class
	}{
		{&net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}}, false, ClassDNS},
		{&net.OpError{Op: "dial", Err: &net.DNSError{Err: "server misbehaving", Name: "x.test", IsTemporary: true}}, false, ClassConnect},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, false, ClassRefused},
		{&net.OpError{Op: "read", Err: syscall.EPIPE}, true, ClassReset},
		{fmt.Errorf("wrapped: %w", io.ErrUnexpectedEOF), true, ClassEOF},
		{errors.New("http: server closed idle connection"), true, ClassConnect},
		{errors.New("stream error: stream ID 1; REFUSED_STREAM; received from peer"), true, ClassRefusedStream},
		{errors.New("stream error: stream ID 1; INTERNAL_ERROR; received from peer"), true, ClassProtocol},
		{errors.New("remote error: tls: certificate required"), true, ClassTLS},
		{errors.New("something new"), true, ClassTransport},
		{errors.New("something new"), false, ClassConnect},
	} {
		if got := classifyErr(tt.give, tt.sent, true); got != tt.want {
			t.Errorf("classifyErr(%q, sent=%v) = %s; want %s", tt.give, tt.sent, got, tt.want)
		}
	}
}

// FuzzDecide runs random statuses and methods through the status classes
// and the default rules: no panic, and a request that is not replayable is
// never retried on a class that means the server may have done work.
func FuzzDecide(f *testing.F) {
	f.Add(503, "POST", false, 1)
	f.Add(500, "GET", true, 3)
	f.Add(-1, "", false, 0)
	f.Add(599, "PATCH", false, 2)
	f.Add(1<<30, "GET", true, 2)
	p, err := newPolicy()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, code int, method string, key bool, n int) {
		req := &http.Request{Method: method, Header: http.Header{}}
		if key {
			req.Header.Set("Idempotency-Key", "k")
		}
		a := &Attempt{Request: req, Replayable: p.replayable(req), Number: n}
		a.Class = p.statusClass(code)
		a.Response = &http.Response{StatusCode: code}
		r := &run{p: p, req: req}
		v, reason := r.decide(a, a.Class.group())
		if v == Pass {
			t.Fatalf("decide(%d, %q) = Pass; want a verdict", code, method)
		}
		postNoKey := !key && !p.methods[method] && method != ""
		if postNoKey && v == Retry && a.Class.group() != groupStatusAny {
			t.Fatalf("decide(%d, %q without key) = Retry (%s, class %s); want Stop", code, method, reason, a.Class)
		}
		// The sent error classes follow the same rule.
		for _, c := range []Class{ClassReset, ClassEOF, ClassTimeout, ClassProtocol, ClassTransport} {
			a.Class = c
			if v, _ := r.decide(a, c.group()); postNoKey && v == Retry {
				t.Fatalf("decide(%s, %q without key) = Retry; want Stop", c, method)
			}
		}
	})
}
