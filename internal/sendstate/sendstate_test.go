package sendstate

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
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
