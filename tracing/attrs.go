package tracing

import (
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// methodOf returns the http.request.method value for m, and m itself when
// it is not a method the conventions know (the value is then "_OTHER").
func methodOf(m string) (method, original string) {
	switch m {
	case "", "GET":
		return "GET", ""
	case "CONNECT", "DELETE", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE":
		return m, ""
	}
	return semconv.HTTPRequestMethodOther.Value.AsString(), m
}

// requestSpanName names tank's INTERNAL span for a request with method m.
func requestSpanName(m string) string {
	switch m {
	case "GET":
		return "GET (tank)"
	case "POST":
		return "POST (tank)"
	case "PUT":
		return "PUT (tank)"
	case "DELETE":
		return "DELETE (tank)"
	case "_OTHER":
		return "HTTP (tank)"
	}
	return m + " (tank)"
}

// serverAttrs are the attributes that depend only on the request URL,
// computed once per request.
type serverAttrs struct {
	address string
	port    int // 0: unknown
	full    string
}

func serverOf(u *url.URL) serverAttrs {
	if u == nil {
		return serverAttrs{}
	}
	s := serverAttrs{address: u.Hostname(), full: fullURL(u)}
	if p := u.Port(); p != "" {
		s.port, _ = strconv.Atoi(p)
	} else {
		switch u.Scheme {
		case "http":
			s.port = 80
		case "https":
			s.port = 443
		}
	}
	return s
}

// append adds http.request.method (and method_original), server.address,
// server.port and, unless full is "", url.full.
func (s *serverAttrs) append(attrs []attribute.KeyValue, method, original string) []attribute.KeyValue {
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method))
	if original != "" {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(original))
	}
	if s.address != "" {
		attrs = append(attrs, semconv.ServerAddress(s.address))
	}
	if s.port > 0 {
		attrs = append(attrs, semconv.ServerPort(s.port))
	}
	if s.full != "" {
		attrs = append(attrs, semconv.URLFull(s.full))
	}
	return attrs
}

// metricAttrs is append without url.full, which is too fine for a metric.
func (s *serverAttrs) metricAttrs(attrs []attribute.KeyValue, method string) []attribute.KeyValue {
	c := *s
	c.full = ""
	return c.append(attrs, method, "")
}

// sensitiveParams are the query parameters whose values the conventions
// redact in url.full.
var sensitiveParams = [...]string{"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"}

// fullURL is u as url.full: credentials become REDACTED:REDACTED and the
// values of sensitive query parameters become REDACTED.
func fullURL(u *url.URL) string {
	q := u.RawQuery
	mayLeak := strings.Contains(q, "%") || strings.Contains(q, "sig") ||
		strings.Contains(q, "Signature") || strings.Contains(q, "AWSAccessKeyId")
	if u.User == nil && !mayLeak {
		return u.String()
	}
	c := *u
	if c.User != nil {
		c.User = url.UserPassword("REDACTED", "REDACTED")
	}
	if mayLeak {
		c.RawQuery = redactQuery(q)
	}
	return c.String()
}

// redactQuery replaces the values of sensitive parameters in a raw query,
// keeping everything else byte for byte.
func redactQuery(q string) string {
	parts := strings.Split(q, "&")
	changed := false
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		for _, s := range sensitiveParams {
			if k == s {
				key, _, _ := strings.Cut(p, "=")
				parts[i] = key + "=REDACTED"
				changed = true
				break
			}
		}
	}
	if !changed {
		return q
	}
	return strings.Join(parts, "&")
}
