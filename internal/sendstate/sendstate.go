// Package sendstate records, per attempt, whether net/http obtained a
// connection for a request: the one reliable sign that the request may have
// reached the server (before it, nothing was written).
package sendstate

import (
	"context"
	"net/http/httptrace"
	"sync/atomic"
)

// State is the send state of one attempt. Its zero value means "no
// connection yet".
type State struct {
	conn  atomic.Bool
	trace httptrace.ClientTrace
}

// Sent reports whether a connection was obtained for the attempt.
func (s *State) Sent() bool { return s.conn.Load() }

func (s *State) gotConn(httptrace.GotConnInfo) { s.conn.Store(true) }

// With returns a context whose client trace records into s, composed with any
// trace already in ctx (the caller's hooks keep firing).
func With(ctx context.Context, s *State) context.Context {
	s.trace = httptrace.ClientTrace{GotConn: s.gotConn}
	return httptrace.WithClientTrace(ctx, &s.trace)
}
