// Package sendstate records, per attempt, whether net/http obtained a
// connection for a request and began writing it: the one reliable sign that
// the request may have reached the server. Error values cannot tell (EOF and
// connection resets happen in TLS handshakes too); before a connection is
// obtained and the headers are written, nothing can have reached a handler.
package sendstate

import (
	"context"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
)

// State is the send state of one attempt.
type State struct {
	asked, conn, wrote atomic.Bool
	trace              httptrace.ClientTrace
	getConn            func(string)                // s.recordAsk, bound once
	gotConn            func(httptrace.GotConnInfo) // s.record, bound once
	wroteHeaders       func()                      // s.recordWrite, bound once
}

var pool = sync.Pool{New: func() any {
	s := new(State)
	s.getConn, s.gotConn, s.wroteHeaders = s.recordAsk, s.record, s.recordWrite
	// Written once, never again: net/http's readLoop reads the trace of a
	// request after its RoundTrip has returned (PutIdleConn, when the body
	// is done), by which time s may serve another attempt.
	s.trace = httptrace.ClientTrace{GetConn: s.getConn, GotConn: s.gotConn, WroteHeaders: s.wroteHeaders}
	return s
}}

// Get returns a State that has seen no connection. Return it with Put once
// the attempt's RoundTrip has returned and Sent has been read.
func Get() *State {
	s := pool.Get().(*State)
	s.asked.Store(false)
	s.conn.Store(false)
	s.wrote.Store(false)
	return s
}

// Put recycles s once its attempt has been judged. A callback may still
// reach s after that: HTTP/2 reports WroteHeaders from its writer goroutine,
// which can run after RoundTrip has returned, and a wrapped transport may
// call hooks late. Such a callback can only make a later attempt look sent
// (or observed), never unsent: the safe direction, fewer retries and never a
// duplicate.
func Put(s *State) { pool.Put(s) }

// Sent reports whether a connection was obtained for the attempt and its
// headers were written (to the connection's buffer: not proof of delivery,
// but before it nothing was sent). A reused keep-alive connection that
// fails before the write counts as not sent.
func (s *State) Sent() bool { return s.conn.Load() && s.wrote.Load() }

// Conn reports whether a connection was obtained.
func (s *State) Conn() bool { return s.conn.Load() }

// Observed reports whether the transport reported on this attempt at all:
// net/http's transports (HTTP/1 and HTTP/2) ask for a connection (GetConn)
// before anything else that can reach the network, so any event counts. A transport that fires
// no trace events (a mock, a recording or caching RoundTripper, a stack that
// runs the request under a context of its own) leaves the send state
// unknown, and unknown must be read as "may have been sent".
func (s *State) Observed() bool { return s.asked.Load() || s.conn.Load() || s.wrote.Load() }

func (s *State) recordAsk(string) { s.asked.Store(true) }

func (s *State) record(httptrace.GotConnInfo) { s.conn.Store(true) }

func (s *State) recordWrite() { s.wrote.Store(true) }

// With returns a context whose client trace records into s, composed with any
// trace already in ctx (the caller's hooks keep firing).
func With(ctx context.Context, s *State) context.Context {
	if httptrace.ContextClientTrace(ctx) != nil {
		// Composing mutates the trace we pass: give it one of its own.
		return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GetConn: s.getConn, GotConn: s.gotConn, WroteHeaders: s.wroteHeaders})
	}
	return httptrace.WithClientTrace(ctx, &s.trace)
}
