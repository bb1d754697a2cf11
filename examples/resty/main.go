// Command resty shows restyretry.Apply on a resty v2 client, next to
// resty's own retry loop, against an embedded flaky server.
//
//	go run ./examples/resty
//
// It runs offline: the server listens on 127.0.0.1. Each case runs twice,
// once with resty's own retries (SetRetryCount) and once with one line
// added, restyretry.Apply, and prints what the server saw.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/examples/flaky"
	"github.com/tankhttp/tank/middleware"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "resty example:", err)
		os.Exit(1)
	}
}

// answer is the embedded server's misbehaviour; n counts the requests the
// path received, this one included.
func answer(w http.ResponseWriter, r *http.Request, n int) {
	switch r.URL.Path {
	case "/orders": // processes the order, then the connection dies
		flaky.Reset(w)
	case "/maintenance": // down for a while
		w.Header().Set("Retry-After", "5")
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	default: // 503 first, then 200
		if n == 1 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}
}

func run(out io.Writer) error {
	f := flaky.New(answer)
	srv := httptest.NewServer(f)
	defer srv.Close()

	// resty's own retry loop: 2 retries, on errors and on 503.
	restyOwn := resty.New().SetBaseURL(srv.URL).SetLogger(quiet{}).
		SetRetryCount(2).SetRetryWaitTime(20 * time.Millisecond).
		AddRetryCondition(func(r *resty.Response, err error) bool {
			return err != nil || r.StatusCode() == http.StatusServiceUnavailable
		})
	defer restyOwn.GetClient().CloseIdleConnections()

	// The same kind of client, plus one line.
	withTank := restyretry.Apply(resty.New().SetBaseURL(srv.URL).SetLogger(quiet{}),
		middleware.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	defer withTank.GetClient().CloseIdleConnections()

	clients := []struct {
		name string
		c    *resty.Client
	}{{"resty SetRetryCount(2)", restyOwn}, {"restyretry.Apply      ", withTank}}

	var failed []string
	check := func(ok bool, what string) {
		if !ok {
			failed = append(failed, what)
		}
	}

	fmt.Fprintln(out, "1. POST /orders: the server processes the order, then the connection is reset")
	for _, cl := range clients {
		_, err := cl.c.R().SetBody(`{"item":"tank"}`).Post("/orders")
		n := len(f.Take("/orders"))
		fmt.Fprintf(out, "   %s  orders placed: %d  (%s)\n", cl.name, n, short(err))
		if cl.c == withTank {
			check(n == 1, "tank placed the order more than once")
		}
	}

	fmt.Fprintln(out, "2. POST /upload, a body that cannot seek, answered 503 then 200")
	payload := strings.Repeat("tank ", 1000)
	for _, cl := range clients {
		resp, err := cl.c.R().SetBody(readOnly{strings.NewReader(payload)}).Post("/upload")
		got := f.Take("/upload")
		var sizes []int
		for _, b := range got {
			sizes = append(sizes, len(b))
		}
		fmt.Fprintf(out, "   %s  bytes received per attempt: %v  => %s\n", cl.name, sizes, status(resp, err))
		if cl.c == withTank {
			check(len(got) == 2 && got[1] == payload, "tank did not replay the body")
		}
	}

	fmt.Fprintln(out, "3. GET /maintenance: 503 with Retry-After: 5, the caller allows 1s")
	for _, cl := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		start := time.Now()
		resp, err := cl.c.R().SetContext(ctx).Get("/maintenance")
		took := time.Since(start)
		cancel()
		n := len(f.Take("/maintenance"))
		fmt.Fprintf(out, "   %s  attempts: %d  => %s  (%s)\n", cl.name, n, status(resp, err), speed(took))
		if cl.c == withTank {
			check(n == 1 && err == nil && took < 500*time.Millisecond, "tank did not return the 503 at once")
		}
	}

	if failed != nil {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

// quiet drops resty's log lines; the example prints its own.
type quiet struct{}

func (quiet) Errorf(string, ...any) {}
func (quiet) Warnf(string, ...any)  {}
func (quiet) Debugf(string, ...any) {}

// readOnly hides every method but Read, like a pipe or a network stream.
type readOnly struct{ r io.Reader }

func (o readOnly) Read(p []byte) (int, error) { return o.r.Read(p) }

func status(resp *resty.Response, err error) string {
	if err != nil {
		return short(err)
	}
	return resp.Status()
}

// short names an error by the reason tank recorded, or by its last words.
func short(err error) string {
	var ex *middleware.ExhaustedError
	switch {
	case err == nil:
		return "no error"
	case errors.As(err, &ex):
		return fmt.Sprintf("gave up: %s after %d attempt(s)", string(ex.Reason), ex.Attempts)
	case errors.Is(err, context.DeadlineExceeded):
		return "context deadline exceeded"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// speed keeps the output stable: it says whether the call waited.
func speed(d time.Duration) string {
	if d < 500*time.Millisecond {
		return "returned at once"
	}
	return fmt.Sprintf("waited %.1fs", d.Seconds())
}
