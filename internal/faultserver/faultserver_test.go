package faultserver

import (
	"bufio"
	"io"
	"net"
	"net/http"
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
