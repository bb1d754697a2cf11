package faults

import (
	"io"
	"net/http"
	"testing"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/adapters/backoffretry"
	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/middleware"
)

// A frontDoor is one way a user reaches tank. Every fault table in this
// package runs through each of them: they share one classifier and policy,
// so each cell's attempts, decisions and server hits must follow the same
// decision table whatever the door. (The plain door shows no classes; where
// the kernel races, doors may see different classes of the row's set.)
type frontDoor struct {
	name string
	// do sends req over base through the front door, with opts, and returns
	// the response (body unread) or the error.
	do func(t testing.TB, base http.RoundTripper, req *http.Request, opts []middleware.Option) (*http.Response, error)
	// plain: no hooks, as most callers run: the Transport takes its success
	// path, and only the outcome and the server side can be checked.
	plain bool
	// ownsBody: req.Body reaches the transport as given, so its Close calls
	// can be counted (resty reads the caller's body into its own).
	ownsBody bool
}

var frontDoors = []frontDoor{
	{name: "transport", do: viaTransport, ownsBody: true},
	{name: "transport_plain", do: viaTransport, ownsBody: true, plain: true},
	{name: "resty", do: viaResty},
	{name: "resty_plain", do: viaResty, plain: true},
	{name: "backoff", do: viaBackoff, ownsBody: true},
	{name: "backoff_plain", do: viaBackoff, ownsBody: true, plain: true},
}

func viaTransport(_ testing.TB, base http.RoundTripper, req *http.Request, opts []middleware.Option) (*http.Response, error) {
	return middleware.NewTransport(base, opts...).RoundTrip(req)
}

// viaResty sends what req describes (method, URL, headers, body, context)
// as a resty request on a client upgraded by restyretry.Apply.
func viaResty(t testing.TB, base http.RoundTripper, req *http.Request, opts []middleware.Option) (*http.Response, error) {
	t.Helper()
	c := restyretry.Apply(resty.New().SetTransport(base).SetLogger(nopLogger{}), opts...)
	r := c.R().SetContext(req.Context()).SetDoNotParseResponse(true)
	for k, v := range req.Header {
		r.Header[k] = v
	}
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		r.SetBody(b)
	}
	resp, err := r.Execute(req.Method, req.URL.String())
	if err != nil {
		return nil, err
	}
	return resp.RawResponse, nil
}

func viaBackoff(_ testing.TB, base http.RoundTripper, req *http.Request, opts []middleware.Option) (*http.Response, error) {
	op, b := backoffretry.New(req, base, opts...)
	return backoff.RetryWithData(op, backoff.WithContext(b, req.Context()))
}

type nopLogger struct{}

func (nopLogger) Errorf(string, ...any) {}
func (nopLogger) Warnf(string, ...any)  {}
func (nopLogger) Debugf(string, ...any) {}
