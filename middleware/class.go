package middleware

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/tankhttp/tank/internal/errmatch"
)

// A Class names what happened to one attempt. Classes are stable,
// low-cardinality strings, fit for span attributes and metric labels.
type Class string

// The classes, by group. "Not sent" classes are failures before a connection
// was obtained; "sent" classes are failures after the request may have
// reached the server.
const (
	// Not sent, transient: retried for any method.
	ClassRefused       Class = "refused"        // connection refused
	ClassConnect       Class = "connect"        // dial timeout, DNS temporary failure, TLS handshake cut, idle connection closed
	ClassRefusedStream Class = "refused_stream" // HTTP/2 REFUSED_STREAM: provably not processed

	// Not sent, permanent: never retried by default.
	ClassDNS     Class = "dns_not_found"   // the host does not exist
	ClassTLS     Class = "tls"             // certificate rejected, TLS alert, not a TLS server
	ClassInvalid Class = "invalid_request" // net/http refused the request (scheme, host, header, method)

	// Sent, no usable answer: retried only for replayable requests.
	ClassReset     Class = "reset"     // connection reset or broken pipe
	ClassEOF       Class = "eof"       // connection closed before a complete response
	ClassTimeout   Class = "timeout"   // attempt timeout or response-header timeout
	ClassProtocol  Class = "protocol"  // malformed response, HTTP/2 stream or GOAWAY error
	ClassTransport Class = "transport" // any other transport error

	// Responses.
	ClassThrottled   Class = "throttled"    // 429: not processed, retried for any method
	ClassUnavailable Class = "unavailable"  // 502, 503 (and any status set for any method)
	ClassServerError Class = "server_error" // other 5xx except 501: retried only if replayable
	ClassFinal       Class = "final"        // 1xx-4xx, 501: returned as is

	// The caller's context is done.
	ClassCanceled Class = "canceled"
)

// String returns the Class's stable label, such as "refused".
func (c Class) String() string { return string(c) }

type group uint8

const (
	groupFinal group = iota
	groupNotSent
	groupPermanent
	groupSent
	groupStatusAny
	groupStatusReplayable
	groupCanceled
)

func (c Class) group() group {
	switch c {
	case ClassRefused, ClassConnect, ClassRefusedStream:
		return groupNotSent
	case ClassDNS, ClassTLS, ClassInvalid:
		return groupPermanent
	case ClassReset, ClassEOF, ClassTimeout, ClassProtocol, ClassTransport:
		return groupSent
	case ClassThrottled, ClassUnavailable:
		return groupStatusAny
	case ClassServerError:
		return groupStatusReplayable
	case ClassCanceled:
		return groupCanceled
	}
	return groupFinal
}

// classifyErr names a transport error. sent reports whether a connection was
// obtained for the attempt; known is false when the send state was not
// traced, in which case only the error value decides.
func classifyErr(err error, sent, known bool) Class {
	if c, ok := permanentOrNotSent(err); ok {
		return c
	}
	if known && !sent {
		// No connection was obtained, whatever the error says: nothing was
		// written (EOF and resets also happen in TLS handshakes).
		return ClassConnect
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return ClassTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, net.ErrClosed):
		return ClassReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if errmatch.Classify(err.Error()) == errmatch.Malformed && !errors.Is(err, io.ErrUnexpectedEOF) {
			return ClassProtocol
		}
		return ClassEOF
	}
	if errmatch.Classify(err.Error()) == errmatch.Malformed {
		return ClassProtocol
	}
	return ClassTransport
}

// permanentOrNotSent recognises errors whose value alone proves the request
// was never written, and errors that no retry can fix.
func permanentOrNotSent(err error) (Class, bool) {
	var (
		verr  *tls.CertificateVerificationError
		uaerr x509.UnknownAuthorityError
		hnerr x509.HostnameError
		cierr x509.CertificateInvalidError
		rherr tls.RecordHeaderError
		dns   *net.DNSError
		op    *net.OpError
	)
	switch {
	case errors.As(err, &verr), errors.As(err, &uaerr), errors.As(err, &hnerr),
		errors.As(err, &cierr), errors.As(err, &rherr):
		return ClassTLS, true
	case errors.As(err, &dns):
		if dns.IsNotFound {
			return ClassDNS, true
		}
		return ClassConnect, true
	case errors.As(err, &op) && op.Op == "dial":
		if errors.Is(err, syscall.ECONNREFUSED) {
			return ClassRefused, true
		}
		return ClassConnect, true
	}
	switch errmatch.Classify(err.Error()) {
	case errmatch.HTTPSToHTTP, errmatch.TLSAlert:
		return ClassTLS, true
	case errmatch.InvalidRequest:
		return ClassInvalid, true
	case errmatch.IdleClosed:
		return ClassConnect, true
	case errmatch.RefusedStream:
		return ClassRefusedStream, true
	}
	return "", false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
