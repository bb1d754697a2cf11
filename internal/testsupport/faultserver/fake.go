package faultserver

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FakeTransport is an in-memory http.RoundTripper answering from a script.
// It closes each request's body, records when each attempt was made, gives
// every response a body of its status text and counts how many of those
// bodies were closed.
type FakeTransport struct {
	// Answer returns the answer to the n-th attempt, counting from 1.
	Answer func(n int) (*http.Response, error)

	mu     sync.Mutex
	times  []time.Time
	closed atomic.Int32
}

// RoundTrip answers req with Answer.
func (f *FakeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	f.mu.Lock()
	f.times = append(f.times, time.Now())
	n := len(f.times)
	f.mu.Unlock()
	resp, err := f.Answer(n)
	if resp != nil {
		resp.Request = req
		resp.Body = &countClose{Reader: strings.NewReader(http.StatusText(resp.StatusCode)), n: &f.closed}
	}
	return resp, err
}

// Attempts is the number of round trips made.
func (f *FakeTransport) Attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.times)
}

// Waits returns the time between consecutive round trips.
func (f *FakeTransport) Waits() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var w []time.Duration
	for i := 1; i < len(f.times); i++ {
		w = append(w, f.times[i].Sub(f.times[i-1]))
	}
	return w
}

// Closed is the number of Close calls on the response bodies it gave.
func (f *FakeTransport) Closed() int { return int(f.closed.Load()) }

type countClose struct {
	io.Reader
	n *atomic.Int32
}

func (c *countClose) Close() error { c.n.Add(1); return nil }

// Response returns an HTTP/1.1 response with status code and the headers
// in kv, given as name, value pairs. Its Body is nil.
func Response(code int, kv ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return &http.Response{StatusCode: code, Status: strconv.Itoa(code) + " " + http.StatusText(code),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h}
}
