package faults

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/tankhttp/tank/internal/testsupport/faultserver"
	"github.com/tankhttp/tank/middleware"
)

// TestKeepAliveReuse runs, through every front door, a reused keep-alive
// connection that dies after the request was read and before the first
// response byte: a keep-alive server answers a first request, then reads
// the second in full (on the same connection) and resets. net/http
// re-sends the second by itself, on a new connection, when it is
// replayable by net/http's rules (GET, or any method with an
// Idempotency-Key): tank sees one attempt that succeeds. A PUT without a key comes back as an error, and tank retries it.
// A POST without a key comes back as an error, and tank stops: the server
// processed it once.
func TestKeepAliveReuse(t *testing.T) {
	type want struct {
		ok       bool // the second request returns 200
		attempts int  // tank's attempts for the second request
		hits     int  // requests the server read in full, both requests
		dialed   int
	}
	wants := map[string]want{
		"GET":      {ok: true, attempts: 1, hits: 3, dialed: 2}, // net/http re-sent it
		"PUT":      {ok: true, attempts: 2, hits: 3, dialed: 2}, // tank retried it
		"POST":     {ok: false, attempts: 1, hits: 2, dialed: 1},
		"POST+key": {ok: true, attempts: 1, hits: 3, dialed: 2}, // net/http re-sent it
	}
	for _, m := range methods {
		for _, fd := range frontDoors {
			t.Run(m.name+"/"+fd.name, func(t *testing.T) {
				w := wants[m.name]
				s := faultserver.NewResetWhen(func(n int) bool { return n == 2 })
				t.Cleanup(s.Close)
				d := newDialer()
				base := &http.Transport{DialContext: d.DialContext}
				opts := []middleware.Option{middleware.WithMaxAttempts(matrixMax), middleware.WithBackoff(0, 0)}

				send := func(opts []middleware.Option) (int, error) {
					resp, err := fd.do(t, base, m.newRequest(t, context.Background(), s.URL), opts)
					if err != nil {
						return 0, err
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					return resp.StatusCode, nil
				}
				if code, err := send(opts); code != http.StatusOK {
					t.Fatalf("first request: %d, %v; want 200", code, err)
				}
				var rec attempts
				if !fd.plain {
					opts = append(opts, middleware.WithHooks(rec.hooks()))
				}
				code, err := send(opts)
				d.closeAll(t, base)
				s.Close()

				if w.ok && (code != http.StatusOK || err != nil) {
					t.Errorf("second request: %d, %v; want 200", code, err)
				}
				if !w.ok {
					ee := exhausted(t, err, w.attempts, middleware.ReasonNotReplayable)
					if ee != nil && !fd.plain {
						if a := rec.get(); len(a) == 1 && !a[0].Sent {
							t.Error("the failed attempt on a reused connection has Sent = false; it was written")
						}
					}
				}
				if got := len(rec.get()); !fd.plain && got != w.attempts {
					t.Errorf("tank saw %d attempts of the second request; want %d", got, w.attempts)
				}
				if got := s.Hits(); got != w.hits {
					t.Errorf("server read %d requests in full; want %d", got, w.hits)
				}
				if got := int(d.dialed.Load()); got != w.dialed {
					t.Errorf("client dialed %d connections; want %d", got, w.dialed)
				}
			})
		}
	}
}
