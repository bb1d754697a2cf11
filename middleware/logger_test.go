package middleware

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// logRecords runs one request through a Transport logging to a JSON
// handler at level, and returns the records.
func logRecords(t *testing.T, level slog.Level, answer func(n int) (*http.Response, error), method, url string) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))
	rt := &silentRT{answer: answer}
	resp, _ := NewTransport(rt, WithBackoff(0, 0), WithLogger(l)).RoundTrip(newReq(t, method, url, "x"))
	if resp != nil {
		resp.Body.Close()
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		recs = append(recs, m)
	}
	return recs
}

func status(codes ...int) func(n int) (*http.Response, error) {
	return func(n int) (*http.Response, error) {
		return &http.Response{StatusCode: codes[min(n, len(codes))-1]}, nil
	}
}

func TestLoggerRecords(t *testing.T) {
	recs := logRecords(t, slog.LevelInfo, status(503, 503, 503), http.MethodGet, "https://user:secret@api.test/items?token=abc")
	if len(recs) != 3 {
		t.Fatalf("%d records; want 2 retries and a give-up: %v", len(recs), recs)
	}
	want := []map[string]any{
		{"level": "INFO", "msg": "tank: retrying", "attempt": 1.0, "class": "unavailable", "reason": "not_processed", "status": 503.0, "method": "GET", "url": "https://api.test/items"},
		{"level": "INFO", "msg": "tank: retrying", "attempt": 2.0},
		{"level": "WARN", "msg": "tank: gave up", "attempt": 3.0, "class": "unavailable", "reason": "attempts_exhausted", "status": 503.0},
	}
	for i, w := range want {
		for k, v := range w {
			if recs[i][k] != v {
				t.Errorf("record %d: %s = %v; want %v", i+1, k, recs[i][k], v)
			}
		}
	}
	if _, ok := recs[0]["sleep"]; !ok {
		t.Error("a retry record has no sleep")
	}
	for _, r := range recs {
		if s, _ := r["url"].(string); strings.Contains(s, "secret") || strings.Contains(s, "abc") {
			t.Errorf("url %q leaks userinfo or a query value", s)
		}
	}
}

func TestLoggerQuietOnSuccess(t *testing.T) {
	if recs := logRecords(t, slog.LevelInfo, status(200), http.MethodGet, "http://api.test/"); len(recs) != 0 {
		t.Errorf("a first-try success logged %v; want nothing", recs)
	}
	recs := logRecords(t, slog.LevelInfo, status(503, 200), http.MethodGet, "http://api.test/")
	if len(recs) != 2 || recs[1]["msg"] != "tank: succeeded after retries" || recs[1]["level"] != "INFO" {
		t.Errorf("a retried success logged %v; want a retry and a success at INFO", recs)
	}
	// At WARN, only give-ups.
	if recs := logRecords(t, slog.LevelWarn, status(503, 200), http.MethodGet, "http://api.test/"); len(recs) != 0 {
		t.Errorf("at WARN a retried success logged %v; want nothing", recs)
	}
}

func TestLoggerTransportError(t *testing.T) {
	recs := logRecords(t, slog.LevelInfo, func(int) (*http.Response, error) { return nil, refusedErr() }, http.MethodPost, "http://api.test/")
	last := recs[len(recs)-1]
	if last["msg"] != "tank: gave up" || last["class"] != "refused" || !strings.Contains(last["error"].(string), "connection refused") {
		t.Errorf("last record %v; want a give-up with class refused and the error text", last)
	}
}

// TestLoggerOffCostsNothing: with the logger's level above WARN, a request
// takes the success path: no more allocations than without a logger.
func TestLoggerOffCostsNothing(t *testing.T) {
	rt := rtFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})
	off := slog.New(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelError}))
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://api.test/", nil)
	plain, logged := NewTransport(rt), NewTransport(rt, WithLogger(off))
	a := testing.AllocsPerRun(100, func() { plain.RoundTrip(req) })
	b := testing.AllocsPerRun(100, func() { logged.RoundTrip(req) })
	if b != a {
		t.Errorf("a disabled logger costs %v allocations per request against %v without; want the same", b, a)
	}
}
