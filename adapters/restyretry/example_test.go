package restyretry_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"

	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/middleware"
)

// A server answers 503 twice, then 200. Apply makes the resty client retry
// with tank's judgement; Request.Attempt reports tank's attempts, and
// per-request options and outcomes travel in the request's context.
func ExampleApply() {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "hello")
	}))
	defer srv.Close()

	client := restyretry.Apply(resty.New(),
		middleware.WithMaxAttempts(4),
		middleware.WithBackoff(0, 0), // no waits in this example
	)
	defer client.GetClient().CloseIdleConnections()

	resp, err := client.R().Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.Status(), resp.String(), "attempts:", resp.Request.Attempt)

	// A health check: no retries for this request, and its outcome.
	var out middleware.Outcome
	ctx := middleware.WithRequestOptions(context.Background(), middleware.WithMaxAttempts(1))
	ctx = middleware.WithOutcome(ctx, &out)
	resp, err = client.R().SetContext(ctx).Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.Status(), "attempts:", out.Attempts, "reason:", out.Reason)
	// Output:
	// 200 OK hello attempts: 3
	// 200 OK attempts: 1 reason: final
}
