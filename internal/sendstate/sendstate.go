// Package sendstate records, per attempt, whether net/http obtained a
// connection for a request: the one reliable sign that the request may have
// reached the server (before it, nothing was written).
package sendstate

import (
	"context"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
)

// State is the send state of one attempt.
type State struct {
	conn    atomic.Bool
	trace   httptrace.ClientTrace
	gotConn func(httptrace.GotConnInfo) // s.record, bound once
}

var pool = sync.Pool{New: func() any {
	s := new(State)
	s.gotConn = s.record
	return s
}}

// Get returns a State that has seen no connection. Return it with Put once
// the attempt's RoundTrip has returned and Sent has been read.
func Get() *State {
	s := pool.Get().(*State)
	s.conn.Store(false)
	return s
}

// Put recycles s. net/http calls GotConn before RoundTrip returns, so no
// callback reaches s after its attempt; a wrapped transport that called it
// later could only make another attempt look sent, never unsent (the safe
// direction: fewer retries, never a duplicate).
func Put(s *State) { pool.Put(s) }

// Sent reports whether a connection was obtained for the attempt.
func (s *State) Sent() bool { return s.conn.Load() }

func (s *State) record(httptrace.GotConnInfo) { s.conn.Store(true) }

// With returns a context whose client trace records into s, composed with any
// trace already in ctx (the caller's hooks keep firing).
func With(ctx context.Context, s *State) context.Context {
	if httptrace.ContextClientTrace(ctx) != nil {
		// Composing mutates the trace we pass: give it one of its own.
		return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: s.gotConn})
	}
	s.trace = httptrace.ClientTrace{GotConn: s.gotConn}
	return httptrace.WithClientTrace(ctx, &s.trace)
}
