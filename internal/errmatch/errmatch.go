// Package errmatch holds every match on an error's text that tank makes.
// net/http leaves these conditions without an exported type or value; each
// pattern here has a test that produces the message from real net/http.
package errmatch

import "strings"

// Kind is what an error message tells, beyond its types.
type Kind uint8

const (
	// Unknown: the message says nothing we rely on.
	Unknown Kind = iota
	// IdleClosed: the server closed an idle connection before the request
	// was written ("http: server closed idle connection").
	IdleClosed
	// HTTPSToHTTP: an https:// URL reached a plain HTTP server.
	HTTPSToHTTP
	// InvalidRequest: net/http refused the request before dialling
	// (unsupported scheme, missing host, invalid header or method).
	InvalidRequest
	// RefusedStream: an HTTP/2 server refused the stream, or net/http could
	// not re-send a request after a graceful GOAWAY or on an unusable
	// connection (RFC 9113 §8.7: the request was not processed).
	RefusedStream
	// Malformed: the server answered with something that is not HTTP, or
	// broke the protocol mid-response.
	Malformed
	// TLSAlert: the server aborted the TLS handshake with an alert
	// ("remote error: tls: ...").
	TLSAlert
)

// Classify reports what msg (an error's Error()) tells.
func Classify(msg string) Kind {
	switch {
	case strings.Contains(msg, "server closed idle connection"):
		return IdleClosed
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return HTTPSToHTTP
	case strings.Contains(msg, "unsupported protocol scheme"),
		strings.Contains(msg, "no Host in request URL"),
		strings.Contains(msg, "invalid header field"),
		strings.Contains(msg, "invalid method"),
		strings.Contains(msg, "nil Request.URL"),
		strings.Contains(msg, "nil Request.Header"):
		return InvalidRequest
	case strings.Contains(msg, "REFUSED_STREAM"),
		strings.Contains(msg, "cannot retry err [http2: Transport received Server's graceful shutdown GOAWAY]"),
		strings.Contains(msg, "cannot retry err [http2: client conn is not usable]"):
		return RefusedStream
	case strings.Contains(msg, "remote error: tls:"):
		return TLSAlert
	case strings.Contains(msg, "malformed HTTP"),
		strings.Contains(msg, "transport connection broken"),
		strings.Contains(msg, "stream error"),
		strings.Contains(msg, "GOAWAY"),
		strings.Contains(msg, "multiple Content-Length"):
		return Malformed
	}
	return Unknown
}
