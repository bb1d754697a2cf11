// Package retryafter parses the HTTP Retry-After header (RFC 9110 §10.2.3).
//
// The math is pure: the caller passes the current time, so tests need no
// clock and the parser never reads one.
package retryafter

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"
)

// ErrSyntax is matched by every error Parse returns.
var ErrSyntax = errors.New("malformed Retry-After")

// SyntaxError reports a Retry-After value that is neither delta-seconds nor
// an HTTP-date. Value is the header as received.
type SyntaxError struct {
	Value string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("malformed Retry-After %q", e.Value) }

// Is reports whether target is ErrSyntax.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }

// maxDelay is the largest delay Parse returns; larger values are clamped to it,
// which every sensible cap rejects.
const maxDelay = time.Duration(math.MaxInt64)

// Parse returns how long the server asks the client to wait.
//
//   - delta-seconds ("120") give that many seconds; values too large for a
//     time.Duration are clamped to the largest one.
//   - an HTTP-date in any of the three forms net/http accepts gives the time
//     left until then; a date in the past gives 0.
//   - anything else is a *SyntaxError: the empty string, and a negative
//     number ("-5"), since delta-seconds is digits only (RFC 9110 §10.2.3);
//     a server must not make a client retry with no wait by sending one.
func Parse(v string, now time.Time) (time.Duration, error) {
	s := strings.TrimSpace(v)
	if s == "" {
		return 0, &SyntaxError{Value: v}
	}
	if d, ok := parseSeconds(s); ok {
		return d, nil
	}
	t, err := http.ParseTime(s)
	if err != nil {
		return 0, &SyntaxError{Value: v}
	}
	if !t.After(now) {
		return 0, nil
	}
	return t.Sub(now), nil
}

// parseSeconds accepts decimal digits only.
func parseSeconds(s string) (time.Duration, bool) {
	var secs int64
	overflow := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if secs > (math.MaxInt64/int64(time.Second)-9)/10 {
			overflow = true
			continue
		}
		secs = secs*10 + int64(c-'0')
	}
	if overflow {
		return maxDelay, true
	}
	return time.Duration(secs) * time.Second, true
}
