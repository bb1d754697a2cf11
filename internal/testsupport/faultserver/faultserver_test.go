package faultserver

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCloseStopsStalledConnections: Close ends a connection the server is
// stalling on, and (TestMain's goleak) every goroutine of the server.
func TestCloseStopsStalledConnections(t *testing.T) {
	s := NewRaw(Stall)
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound, not an expectation
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from a stalling server")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("Close left the stalled connection open")
	}
}

// TestRawHitsCountFullRequests: a hit is a request read in full, and the
// faults that read nothing count none.
func TestRawHitsCountFullRequests(t *testing.T) {
	for _, tt := range []struct {
		f    Fault
		hits int
	}{
		{AcceptClose, 0}, {CloseRST, 0}, {ReadRST, 1}, {ReadFIN, 1}, {Garbage, 1}, {PartialBody, 1},
	} {
		s := NewRaw(tt.f)
		tr := &http.Transport{}
		resp, err := tr.RoundTrip(mustReq(t, s.URL))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		tr.CloseIdleConnections()
		s.Close()
		if s.Hits() != tt.hits || s.Conns() != 1 {
			t.Errorf("fault %d: %d hits, %d connections; want %d and 1", tt.f, s.Hits(), s.Conns(), tt.hits)
		}
	}
}

func TestScriptedRepeatsLastStep(t *testing.T) {
	s := NewScripted(Step{Status: 503, RetryAfter: "1"}, Step{Status: 200, Body: "ok"})
	defer s.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	var got []int
	for i := 0; i < 3; i++ {
		resp, err := tr.RoundTrip(mustReq(t, s.URL))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && resp.Header.Get("Retry-After") != "1" {
			t.Errorf("Retry-After %q; want \"1\"", resp.Header.Get("Retry-After"))
		}
		io.Copy(io.Discard, bufio.NewReader(resp.Body))
		resp.Body.Close()
		got = append(got, resp.StatusCode)
	}
	if got[0] != 503 || got[1] != 200 || got[2] != 200 || s.Hits() != 3 || s.Conns() != 1 {
		t.Errorf("statuses %v, %d hits, %d conns; want [503 200 200], 3, 1", got, s.Hits(), s.Conns())
	}
}

func mustReq(t *testing.T, u string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestResetWhen: the request reset after it was read counts as a hit, and
// the next one is answered.
func TestResetWhen(t *testing.T) {
	s := NewResetWhen(func(n int) bool { return n == 1 })
	defer s.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	if _, err := tr.RoundTrip(mustReq(t, s.URL)); err == nil {
		t.Fatal("first request answered; want a reset")
	}
	resp, err := tr.RoundTrip(mustReq(t, s.URL))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" || s.Hits() != 2 {
		t.Errorf("second request: %d %q, %d hits; want 200 \"ok\", 2", resp.StatusCode, b, s.Hits())
	}
}

// TestFakeTransport: answers by attempt number, with the headers asked
// for, and counts the response bodies closed.
func TestFakeTransport(t *testing.T) {
	f := &FakeTransport{Answer: func(n int) (*http.Response, error) {
		if n == 1 {
			return Response(503, "Retry-After", "1"), nil
		}
		return Response(200), nil
	}}
	var got []string
	for range 2 {
		resp, err := f.RoundTrip(mustReq(t, "http://tank.test/"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = append(got, resp.Status+" "+resp.Header.Get("Retry-After")+" "+string(b))
	}
	want := []string{"503 Service Unavailable 1 Service Unavailable", "200 OK  OK"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] || f.Attempts() != 2 || f.Closed() != 2 {
		t.Errorf("got %q, %d attempts, %d closed; want %q, 2, 2", got, f.Attempts(), f.Closed(), want)
	}
}

// TestFullBacklogDialTimesOut: a dial to the full queue ends in the
// dialer's timeout, not a refusal or a connection.
func TestFullBacklogDialTimesOut(t *testing.T) {
	s, err := NewFullBacklog()
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := (&net.Dialer{Timeout: 50 * time.Millisecond}).Dial("tcp", s.Addr)
	if err == nil {
		c.Close()
		t.Fatal("dial connected; want a timeout")
	}
	if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
		t.Fatalf("dial error %v; want a timeout", err)
	}
}

// TestTLSHandshakeFaults: each fault ends a TLS client's handshake the way
// its doc says, and the client never gets a connection.
func TestTLSHandshakeFaults(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fault Fault
		want  func(error) bool
	}{
		{"NotTLS", NotTLS, func(err error) bool { _, ok := errors.AsType[tls.RecordHeaderError](err); return ok }},
		{"TLSClose", TLSClose, func(err error) bool { return errors.Is(err, io.EOF) }},
		{"TLSReset", TLSReset, func(err error) bool { return errors.Is(err, syscall.ECONNRESET) }},
	} {
		s := NewRaw(tt.fault)
		c, err := tls.Dial("tcp", s.Addr, &tls.Config{ServerName: "example.com"})
		s.Close()
		if err == nil {
			c.Close()
			t.Errorf("%s: handshake succeeded", tt.name)
		} else if !tt.want(err) {
			t.Errorf("%s: handshake error %v (%T)", tt.name, err, err)
		}
	}
}
