package sendstate

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSentOverRealTransport: a refused dial is not sent; a request that got
// a connection and wrote its headers is.
func TestSentOverRealTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := "http://" + ln.Addr().String()
	ln.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for _, tt := range []struct {
		url  string
		want bool
	}{{refused, false}, {srv.URL, true}} {
		s := Get()
		req, _ := http.NewRequestWithContext(With(context.Background(), s), "GET", tt.url, nil)
		if resp, err := tr.RoundTrip(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if s.Sent() != tt.want || s.Conn() != tt.want {
			t.Errorf("%s: Sent() = %v, Conn() = %v; want %v", tt.url, s.Sent(), s.Conn(), tt.want)
		}
		Put(s)
	}
}

// TestSentNeedsConnAndHeaders: a connection alone is not "sent", and Get
// hands out a clean State.
func TestSentNeedsConnAndHeaders(t *testing.T) {
	s := Get()
	tr := httptrace.ContextClientTrace(With(context.Background(), s))
	tr.GotConn(httptrace.GotConnInfo{})
	if s.Sent() || !s.Conn() {
		t.Errorf("after GotConn only: Sent() = %v, Conn() = %v; want false, true", s.Sent(), s.Conn())
	}
	tr.WroteHeaders()
	if !s.Sent() {
		t.Error("after GotConn and WroteHeaders: Sent() = false; want true")
	}
	Put(s)
	if s2 := Get(); s2.Sent() || s2.Conn() {
		t.Error("Get returned a State that remembers an earlier attempt")
	}
}

// TestWithKeepsCallerTrace: the caller's own trace hooks keep firing.
func TestWithKeepsCallerTrace(t *testing.T) {
	var callerConn, callerWrote int
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn:      func(httptrace.GotConnInfo) { callerConn++ },
		WroteHeaders: func() { callerWrote++ },
	})
	s := Get()
	defer Put(s)
	tr := httptrace.ContextClientTrace(With(ctx, s))
	tr.GotConn(httptrace.GotConnInfo{})
	tr.WroteHeaders()
	if !s.Sent() || callerConn != 1 || callerWrote != 1 {
		t.Errorf("Sent() = %v, caller's GotConn %d, WroteHeaders %d; want true, 1, 1", s.Sent(), callerConn, callerWrote)
	}
}

// TestObservedByNetHTTP: net/http's transport asks for a connection on
// every attempt that can reach the network, refused dials included, over
// HTTP/1 and HTTP/2; a transport that reports nothing leaves it unobserved.
func TestObservedByNetHTTP(t *testing.T) {
	h1 := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer h1.Close()
	h2 := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	h2.EnableHTTP2 = true
	h2.StartTLS()
	defer h2.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String()
	l.Close()
	silent := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, syscall.ECONNRESET })
	for _, tt := range []struct {
		name string
		rt   http.RoundTripper
		url  string
		want bool
	}{
		{"http1", h1.Client().Transport, h1.URL, true},
		{"http2", h2.Client().Transport, h2.URL, true},
		{"refused", &http.Transport{}, refused, true},
		{"silent transport", silent, h1.URL, false},
	} {
		s := Get()
		req, _ := http.NewRequestWithContext(With(context.Background(), s), "GET", tt.url, nil)
		if resp, err := tt.rt.RoundTrip(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if s.Observed() != tt.want {
			t.Errorf("%s: Observed() = %v; want %v", tt.name, s.Observed(), tt.want)
		}
		Put(s)
		if c, ok := tt.rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
