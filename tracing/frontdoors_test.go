package tracing_test

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-resty/resty/v2"
	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"

	"github.com/tankhttp/tank/adapters/backoffretry"
	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/middleware"
)

// A frontDoor is one front door sending a GET to url through base with
// opts; it returns the final status.
type frontDoor func(t *testing.T, base http.RoundTripper, url string, opts []middleware.Option) int

var frontDoors = []struct {
	name string
	send frontDoor
}{
	{"transport", func(t *testing.T, base http.RoundTripper, url string, opts []middleware.Option) int {
		c := &http.Client{Transport: middleware.NewTransport(base, opts...)}
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}},
	{"resty", func(t *testing.T, base http.RoundTripper, url string, opts []middleware.Option) int {
		c := restyretry.Apply(resty.New().SetTransport(base), opts...)
		resp, err := c.R().Get(url)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode()
	}},
	{"backoff", func(t *testing.T, base http.RoundTripper, url string, opts []middleware.Option) int {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		op, b := backoffretry.New(req, base, opts...)
		resp, err := backoff.RetryWithData(op, backoff.WithContext(b, req.Context()))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}},
}

// All three front doors show a request answered 503, 503, 200 the same way:
// tank's INTERNAL span and three sibling attempts with the same attributes.
func TestFrontDoorsSameSpans(t *testing.T) {
	for _, fd := range frontDoors {
		t.Run(fd.name, func(t *testing.T) {
			rec := newRecorder(t)
			srv := newServer(t, 503, 503, 200)
			base := &http.Transport{}
			defer base.CloseIdleConnections()
			if code := fd.send(t, base, srv.URL, testOptions(rec)); code != 200 {
				t.Fatalf("status = %d; want 200", code)
			}
			spans := rec.Ended()
			if diff := cmp.Diff(wantRetried(), views(spans, trace.SpanContext{})); diff != "" {
				t.Errorf("spans (-want +got):\n%s", diff)
			}
			_, attempts := byKind(spans)
			hdrs := srv.headers()
			for i := range min(len(hdrs), len(attempts)) {
				if want := attempts[i].SpanContext().SpanID().String(); len(hdrs[i]) < 52 || hdrs[i][36:52] != want {
					t.Errorf("attempt %d sent traceparent %q; want span id %s", i+1, hdrs[i], want)
				}
			}
		})
	}
}
