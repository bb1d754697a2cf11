package restyretry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/middleware"
)

// stallFirst is a server whose first copy of a request (the one without an
// X-Attempt header) is answered only after 300ms, unless the client gives
// it up first: without a hedge the request is slow. Copies may arrive in
// any order. It records the body of every request.
type stallFirst struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
}

func newStallFirst(t *testing.T) *stallFirst {
	s := &stallFirst{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.bodies = append(s.bodies, string(b))
		s.mu.Unlock()
		if r.Header.Get("X-Attempt") != "" {
			io.WriteString(w, "hedge")
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(300 * time.Millisecond):
		}
		io.WriteString(w, "first")
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *stallFirst) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

// Hedging works through resty: a GET and a PUT with a body are hedged (the
// hedge carries the whole body) and the hedge's answer is returned; a POST
// without a key is sent once.
func TestHedgingThroughResty(t *testing.T) {
	for _, tt := range []struct {
		method string
		want   string // the body the caller gets
		copies int
	}{
		{http.MethodGet, "hedge", 2},
		{http.MethodPut, "hedge", 2},
		{http.MethodPost, "first", 1},
	} {
		t.Run(tt.method, func(t *testing.T) {
			srv := newStallFirst(t)
			c := restyretry.Apply(newClient(t), middleware.WithHedging(20*time.Millisecond, 1), middleware.WithAttemptHeader("X-Attempt"))
			var out middleware.Outcome
			r := c.R().SetContext(middleware.WithOutcome(context.Background(), &out))
			if tt.method != http.MethodGet {
				r.SetBody("payload")
			}
			resp, err := r.Execute(tt.method, srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.String(); got != tt.want {
				t.Errorf("body %q; want %q", got, tt.want)
			}
			bodies := srv.got()
			if len(bodies) != tt.copies || out.Attempts != tt.copies || resp.Request.Attempt != tt.copies {
				t.Errorf("server got %d copies, Outcome %d, resty's Attempt %d; want %d", len(bodies), out.Attempts, resp.Request.Attempt, tt.copies)
			}
			for i, b := range bodies {
				if tt.method != http.MethodGet && b != "payload" {
					t.Errorf("copy %d carried %q; want the whole body", i+1, b)
				}
			}
		})
	}
}
