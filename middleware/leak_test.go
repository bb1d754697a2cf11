package middleware

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tankhttp/tank/internal/testsupport/faultserver"
)

// TestNoLeakWithLargeRetriedBodies: retried responses too large to drain
// cost their connections but leak nothing: every client connection is
// closed after CloseIdleConnections and no goroutine outlives the test.
func TestNoLeakWithLargeRetriedBodies(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	big := strings.Repeat("x", 256<<10)
	srv := faultserver.NewScripted(
		faultserver.Step{Status: 503, Body: big},
		faultserver.Step{Status: 503, Body: big},
		faultserver.Step{Status: 200, Body: "ok"})
	d := &faultserver.Dialer{}
	base := &http.Transport{DialContext: d.DialContext}
	tr := NewTransport(base, WithBackoff(0, 0), WithDrainLimit(64<<10))
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(method, srv.URL, strings.NewReader("payload"))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if d.Dialed() < 3 {
		t.Errorf("client dialed %d connections; want at least 3 (bodies past the drain limit end their connections)", d.Dialed())
	}
	tr.CloseIdleConnections()
	srv.Close()
	if n := d.WaitClosed(10 * time.Second); n != 0 {
		t.Errorf("%d client connections open after CloseIdleConnections; want 0", n)
	}
	goleak.VerifyNone(t, ignore)
}
