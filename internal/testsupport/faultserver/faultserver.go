// Package faultserver holds loopback servers that misbehave on purpose, for
// tests. Each counts what it really processed: a hit is a request read in
// full (headers and body), so a test can prove how many times a request
// reached the server, whatever the client saw.
//
// Every server listens on 127.0.0.1:0 and stops every goroutine it started
// in Close.
//
// For tests that need no network, FakeTransport answers from a script in
// memory, with responses built by Response.
package faultserver

import (
	"bufio"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what a raw server does with each connection.
type Fault int

const (
	// AcceptClose accepts and closes at once, reading nothing.
	AcceptClose Fault = iota
	// CloseRST accepts and resets the connection before reading (SO_LINGER 0).
	CloseRST
	// ReadRST reads the full request, then resets the connection.
	ReadRST
	// ReadFIN reads the full request, then closes without a response.
	ReadFIN
	// Garbage reads the full request and answers a malformed status line.
	Garbage
	// Stall reads the full request and never answers; it lets go when the
	// client closes the connection or the server is closed.
	Stall
	// PartialBody reads the full request, answers 200 with a Content-Length
	// of 100 and 10 body bytes, then closes.
	PartialBody
	// TLSReset reads the first bytes of a TLS ClientHello, then resets the
	// connection: the handshake fails, no request is ever sent.
	TLSReset
	// TLSClose reads the first bytes of a TLS ClientHello, then closes the
	// connection (FIN): the client's handshake ends in io.EOF, the same
	// value a request written and then unanswered ends in.
	TLSClose
	// Reply reads the full request, writes the bytes given to NewReply,
	// then closes (servers from NewReply only).
	Reply
	// NotTLS speaks first, in plain text, like an SSH or SMTP server: a
	// TLS client reads a first record that is not TLS, and no request is
	// ever sent.
	NotTLS
)

// Raw is a raw net.Listener server committing one Fault on every connection
// (from NewRaw), answering fixed bytes (from NewReply), or resetting after
// the requests it was told to (from NewResetWhen).
type Raw struct {
	URL       string // http://127.0.0.1:port (https:// for TLSReset, TLSClose and NotTLS)
	Addr      string // 127.0.0.1:port
	fault     Fault
	resetWhen func(n int) bool // set by NewResetWhen
	reply     string           // set by NewReply
	ln        net.Listener
	hits      atomic.Int64
	conns     atomic.Int64
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	mu        sync.Mutex
	open      map[net.Conn]bool
}

// NewRaw starts a server that commits f on every connection.
func NewRaw(f Fault) *Raw { return newRaw(f, nil, "") }

// NewResetWhen starts a keep-alive HTTP/1 server that reads each request in
// full, then resets the connection (SO_LINGER 0) when reset(n) is true for
// the n-th request it read (counting across connections, from 1), and
// answers 200 "ok" otherwise.
func NewResetWhen(reset func(n int) bool) *Raw { return newRaw(ReadRST, reset, "") }

// NewReply starts a server that reads each request in full, answers the
// raw bytes resp (a response net/http may reject) and closes.
func NewReply(resp string) *Raw { return newRaw(Reply, nil, resp) }

func newRaw(f Fault, resetWhen func(n int) bool, reply string) *Raw {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("faultserver: " + err.Error())
	}
	s := &Raw{Addr: ln.Addr().String(), fault: f, resetWhen: resetWhen, reply: reply, ln: ln, done: make(chan struct{}), open: map[net.Conn]bool{}}
	s.URL = "http://" + s.Addr
	if f == TLSReset || f == TLSClose || f == NotTLS {
		s.URL = "https://" + s.Addr
	}
	s.wg.Add(1)
	go s.serve()
	return s
}

// Hits is the number of requests the server read in full.
func (s *Raw) Hits() int { return int(s.hits.Load()) }

// Conns is the number of connections the server accepted.
func (s *Raw) Conns() int { return int(s.conns.Load()) }

// Close stops the server, closes every connection, and waits for its
// goroutines to end: Hits and Conns are final once it returns. Calling it
// again does nothing.
func (s *Raw) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.ln.Close()
		s.mu.Lock()
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

func (s *Raw) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.conns.Add(1)
		s.mu.Lock()
		select {
		case <-s.done:
			s.mu.Unlock()
			c.Close()
			return
		default:
		}
		s.open[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.open, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *Raw) handle(c net.Conn) {
	if s.resetWhen != nil {
		s.resetOrAnswer(c)
		return
	}
	switch s.fault {
	case AcceptClose:
		return
	case CloseRST:
		reset(c)
		return
	case TLSReset:
		var b [512]byte
		c.Read(b[:])
		reset(c)
		return
	case TLSClose:
		// Read the whole first record (the ClientHello), so that closing
		// leaves no unread data behind: the client gets a FIN, not an RST.
		var h [5]byte
		if _, err := io.ReadFull(c, h[:]); err == nil {
			io.CopyN(io.Discard, c, int64(h[3])<<8|int64(h[4]))
		}
		return
	case NotTLS:
		io.WriteString(c, "SSH-2.0-faultserver\r\n")
		io.Copy(io.Discard, c) // until the client or Close closes c
		return
	}
	if !s.readRequest(c) {
		return
	}
	switch s.fault {
	case ReadRST:
		reset(c)
	case ReadFIN:
	case Garbage:
		io.WriteString(c, "garbage\r\n\r\n")
	case Stall:
		io.Copy(io.Discard, c) // until the client or Close closes c
	case PartialBody:
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
	case Reply:
		io.WriteString(c, s.reply)
	}
}

// resetOrAnswer serves NewResetWhen's requests on c, one after another.
func (s *Raw) resetOrAnswer(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		n := s.readFrom(br)
		if n == 0 {
			return
		}
		if s.resetWhen(n) {
			reset(c)
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}
}

// readRequest reads one request in full and counts it as a hit.
func (s *Raw) readRequest(c net.Conn) bool { return s.readFrom(bufio.NewReader(c)) > 0 }

// readFrom reads one request in full from br, counts it as a hit and
// returns the hit's number; it returns 0 when no request was read in full.
func (s *Raw) readFrom(br *bufio.Reader) int {
	req, err := http.ReadRequest(br)
	if err != nil {
		return 0
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return 0
	}
	return int(s.hits.Add(1))
}

// reset closes c with a TCP RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// RefusedAddr returns a loopback address nothing listens on: it listens,
// notes the address and closes. (Another process could take the port in
// between; on loopback in tests that is vanishingly rare.)
func RefusedAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("faultserver: " + err.Error())
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A Step is one scripted answer.
type Step struct {
	Status     int
	RetryAfter string // sent as the Retry-After header when not ""
	Body       string
}

// Scripted is an httptest server answering with a script of steps, one per
// request; the last step repeats. It records each request's body and counts
// new connections.
type Scripted struct {
	*httptest.Server
	steps  []Step
	mu     sync.Mutex
	bodies [][]byte
	conns  atomic.Int64
}

// NewScripted starts a plain HTTP scripted server.
func NewScripted(steps ...Step) *Scripted { return newScripted(false, steps) }

// NewScriptedTLS starts a scripted server on TLS with httptest's
// self-signed certificate, which default clients do not trust. Its
// handshake errors are not logged.
func NewScriptedTLS(steps ...Step) *Scripted { return newScripted(true, steps) }

func newScripted(tls bool, steps []Step) *Scripted {
	if len(steps) == 0 {
		steps = []Step{{Status: http.StatusOK}}
	}
	s := &Scripted{steps: steps}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	return s
}

func (s *Scripted) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // not read in full: not a hit
	}
	s.mu.Lock()
	n := len(s.bodies)
	s.bodies = append(s.bodies, body)
	s.mu.Unlock()
	st := s.steps[min(n, len(s.steps)-1)]
	if st.RetryAfter != "" {
		w.Header().Set("Retry-After", st.RetryAfter)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(st.Body)))
	w.WriteHeader(st.Status)
	io.WriteString(w, st.Body)
}

// Hits is the number of requests read in full.
func (s *Scripted) Hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bodies)
}

// Bodies returns the body of every request, in order.
func (s *Scripted) Bodies() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.bodies...)
}

// Conns is the number of connections the server accepted.
func (s *Scripted) Conns() int { return int(s.conns.Load()) }

// Dialer counts a client's connections: Dialed ever made, Open not yet
// closed. Use its DialContext in an http.Transport.
type Dialer struct {
	d       net.Dialer
	mu      sync.Mutex
	dialed  int
	open    int
	changed chan struct{} // closed and replaced when a connection closes
}

// DialContext dials like net.Dialer and tracks the connection.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.dialed++
	d.open++
	d.mu.Unlock()
	return &trackedConn{Conn: c, d: d}, nil
}

// Dialed is the number of connections made.
func (d *Dialer) Dialed() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dialed
}

// Open is the number of connections made and not yet closed.
func (d *Dialer) Open() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.open
}

// WaitClosed waits until every connection is closed, or at most bound
// (net/http closes a broken connection on its own goroutine, just after
// the caller sees the error), and returns how many are still open.
func (d *Dialer) WaitClosed(bound time.Duration) int {
	t := time.NewTimer(bound)
	defer t.Stop()
	for {
		d.mu.Lock()
		open, ch := d.open, d.changedLocked()
		d.mu.Unlock()
		if open == 0 {
			return 0
		}
		select {
		case <-ch:
		case <-t.C:
			return d.Open()
		}
	}
}

func (d *Dialer) changedLocked() chan struct{} {
	if d.changed == nil {
		d.changed = make(chan struct{})
	}
	return d.changed
}

type trackedConn struct {
	net.Conn
	d    *Dialer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		d := c.d
		d.mu.Lock()
		d.open--
		close(d.changedLocked())
		d.changed = nil
		d.mu.Unlock()
	})
	return c.Conn.Close()
}
