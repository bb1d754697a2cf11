package restyretry

import (
	"net/http"

	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/middleware"
)

// Apply makes c retry with tank's classifier and policy, configured by opts
// (the options of middleware.NewTransport), and returns c.
//
// It installs a middleware.Transport around the client's current transport
// (http.DefaultTransport when there is none), so a transport the caller set
// keeps doing the work and sees every attempt. It turns resty's own retry
// loop off: the retry count becomes 0 and a retry condition that always
// answers false is added, so only tank retries, even if SetRetryCount is
// called later. Call Apply once per client, after configuring TLS and
// proxies; doc.go explains why.
func Apply(c *resty.Client, opts ...middleware.Option) *resty.Client {
	hc := c.GetClient()
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = middleware.NewTransport(next, opts...)
	c.SetRetryCount(0)
	c.AddRetryCondition(neverRetry)
	return c
}

// neverRetry keeps resty's own retry loop from ever running a second
// attempt: with a condition present, resty no longer retries on errors by
// default, and this one never asks for a retry.
func neverRetry(*resty.Response, error) bool { return false }
