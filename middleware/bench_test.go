package middleware

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkSuccessPath measures what tank adds to a request that succeeds
// at once: bare is the http.Transport alone, tank wraps the same transport,
// tank-hedging adds WithHedging.
func BenchmarkSuccessPath(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	base := &http.Transport{MaxIdleConnsPerHost: 4}
	defer base.CloseIdleConnections()
	payload := bytes.Repeat([]byte("x"), 1024)

	for _, rt := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"bare", base},
		{"tank", NewTransport(base)},
		// Hedging on, answered before the delay: what the hedged path
		// costs a request that needs no hedge (POST is not hedged).
		{"tank-hedging", NewTransport(base, WithHedging(time.Second, 1))},
	} {
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			b.Run(m+"/"+rt.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					var body io.Reader
					if m == http.MethodPost {
						body = bytes.NewReader(payload)
					}
					req, _ := http.NewRequest(m, srv.URL, body)
					resp, err := rt.rt.RoundTrip(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
	}
}
