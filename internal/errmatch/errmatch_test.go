package errmatch

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tankhttp/tank/internal/testsupport/faultserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// roundTripErr sends req through a fresh transport and returns its error.
func roundTripErr(t *testing.T, tr *http.Transport, req *http.Request) error {
	t.Helper()
	if tr == nil {
		tr = &http.Transport{}
	}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("RoundTrip succeeded with %d; want an error", resp.StatusCode)
	}
	return err
}

func newReq(t *testing.T, method, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func check(t *testing.T, msg string, want Kind) {
	t.Helper()
	if got := Classify(msg); got != want {
		t.Errorf("Classify(%q) = %d; want %d", msg, got, want)
	}
}

func TestHTTPSToHTTP(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	// http.Client writes this message (a Transport alone reports the
	// tls.RecordHeaderError, which tank matches by type).
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https" + strings.TrimPrefix(srv.URL, "http"))
	if err == nil {
		resp.Body.Close()
		t.Fatal("https to a plain server succeeded")
	}
	check(t, err.Error(), HTTPSToHTTP)
}

func TestInvalidRequest(t *testing.T) {
	t.Run("unsupported scheme", func(t *testing.T) {
		check(t, roundTripErr(t, nil, newReq(t, "GET", "ftp://127.0.0.1/")).Error(), InvalidRequest)
	})
	t.Run("no host", func(t *testing.T) {
		check(t, roundTripErr(t, nil, newReq(t, "GET", "http:///path")).Error(), InvalidRequest)
	})
	t.Run("invalid header field value", func(t *testing.T) {
		req := newReq(t, "GET", "http://127.0.0.1/")
		req.Header["X-Bad"] = []string{"a\nb"}
		check(t, roundTripErr(t, nil, req).Error(), InvalidRequest)
	})
	t.Run("invalid header field name", func(t *testing.T) {
		req := newReq(t, "GET", "http://127.0.0.1/")
		req.Header["X Bad"] = []string{"v"}
		check(t, roundTripErr(t, nil, req).Error(), InvalidRequest)
	})
	t.Run("invalid method", func(t *testing.T) {
		req := newReq(t, "GET", "http://127.0.0.1/")
		req.Method = "BAD METHOD"
		check(t, roundTripErr(t, nil, req).Error(), InvalidRequest)
	})
	t.Run("nil URL", func(t *testing.T) {
		check(t, roundTripErr(t, nil, &http.Request{Method: "GET", Header: http.Header{}}).Error(), InvalidRequest)
	})
	t.Run("nil Header", func(t *testing.T) {
		u, _ := url.Parse("http://127.0.0.1/")
		check(t, roundTripErr(t, nil, &http.Request{Method: "GET", URL: u}).Error(), InvalidRequest)
	})
}

func TestMalformed(t *testing.T) {
	s := faultserver.NewRaw(faultserver.Garbage)
	defer s.Close()
	check(t, roundTripErr(t, nil, newReq(t, "GET", s.URL)).Error(), Malformed)
	// Not produced here (needs a server sending two Content-Lengths or an
	// HTTP/2 peer); the messages are net/http's literal texts (Go 1.26).
	check(t, `net/http: HTTP/1.x transport connection broken: http: message cannot contain multiple Content-Length headers; got ["5" "6"]`, Malformed)
	check(t, `stream error: stream ID 1; INTERNAL_ERROR; received from peer`, Malformed)
	check(t, `http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=INTERNAL_ERROR, debug="bye"`, Malformed)
}

func TestTLSAlert(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.Config.ErrorLog = discardLogger()
	srv.StartTLS()
	defer srv.Close()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	check(t, roundTripErr(t, tr, newReq(t, "GET", srv.URL)).Error(), TLSAlert)
}

// The messages below need an HTTP/2 peer or a close race; they are net/http's
// literal texts (net/http transport.go, h2_bundle.go).
func TestLiteralMessages(t *testing.T) {
	check(t, `Get "http://127.0.0.1:1/": http: server closed idle connection`, IdleClosed)
	check(t, `stream error: stream ID 1; REFUSED_STREAM; received from peer`, RefusedStream)
	check(t, `http2: Transport: cannot retry err [http2: Transport received Server's graceful shutdown GOAWAY] after Request.Body was written; define Request.GetBody to avoid this error`, RefusedStream)
	check(t, `http2: Transport: cannot retry err [http2: client conn is not usable] after Request.Body was written; define Request.GetBody to avoid this error`, RefusedStream)
	check(t, `read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer`, Unknown)
	check(t, `EOF`, Unknown)
	check(t, ``, Unknown)
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }
