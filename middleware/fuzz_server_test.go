package middleware

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tankhttp/tank/internal/testsupport/faultserver"
)

// What a fuzz server does with one connection.
const (
	fzClose = iota // close at once, reading nothing
	fzRST          // read the request, then reset (SO_LINGER 0)
	fzFIN          // read the request, then close without an answer
	fzReply        // read the request, answer a status line, headers and body from the script
	fzRaw          // read the request, answer raw bytes from the script
	fzStall        // read the request, never answer
	fzKinds
)

var fzKindNames = [fzKinds]string{"close", "rst", "fin", "reply", "raw", "stall"}

const (
	fzMaxScript   = 1 << 10 // script bytes decoded; the rest is ignored
	fzMaxConns    = 3       // behaviours per script; the last repeats
	fzMaxBody     = 4 << 10 // reply body bytes
	fzMaxRaw      = 2 << 10 // raw answer bytes
	fzMaxRA       = 32      // Retry-After bytes
	fzMaxAttempts = 3
	fzPayload     = "payload: fuzz"
	fzBound       = 5 * time.Second // the whole iteration, and every wait in it
)

var fzMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions,
	http.MethodPost, http.MethodPatch,
}

// fzBehaviour is one connection's misbehaviour.
type fzBehaviour struct {
	kind  int
	out   []byte // bytes answered (fzReply, fzRaw)
	stall bool   // after answering, stall instead of closing
}

func (b fzBehaviour) String() string {
	s := fzKindNames[b.kind]
	if b.kind == fzReply || b.kind == fzRaw {
		if len(b.out) > 200 {
			s += fmt.Sprintf(" %q...(%d bytes)", b.out[:200], len(b.out))
		} else {
			s += fmt.Sprintf(" %q", b.out)
		}
		if b.stall {
			s += " then stall"
		}
	}
	return s
}

// fzReader hands out script bytes; past the end it gives zeros.
type fzReader struct{ b []byte }

func (r *fzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *fzReader) u16() int { return int(r.byte())<<8 | int(r.byte()) }

func (r *fzReader) bytes(n int) []byte {
	n = min(n, len(r.b))
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

// fzDecode turns a script into at most fzMaxConns behaviours:
//
//	kind byte: kind%6 (fzClose...fzStall); bit 0x80 stalls after an answer
//	fzReply:   status u16 (100 + v%500), Retry-After length byte n (0: no
//	           header, else n-1 bytes of value, mod 32), body length u16
//	           (mod 4 KiB), Content-Length mode byte (%3: exact, longer
//	           than the body, absent)
//	fzRaw:     length u16 (mod 2 KiB), then that many bytes
func fzDecode(script []byte) []fzBehaviour {
	r := &fzReader{b: script[:min(len(script), fzMaxScript)]}
	var bs []fzBehaviour
	for len(bs) < fzMaxConns && len(r.b) > 0 {
		k := r.byte()
		b := fzBehaviour{kind: int(k&0x7f) % fzKinds, stall: k&0x80 != 0}
		switch b.kind {
		case fzReply:
			code := 100 + r.u16()%500
			var buf bytes.Buffer
			fmt.Fprintf(&buf, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
			if n := int(r.byte()); n > 0 {
				fmt.Fprintf(&buf, "Retry-After: %s\r\n", r.bytes((n-1)%fzMaxRA))
			}
			body := r.u16() % fzMaxBody
			switch r.byte() % 3 {
			case 0:
				fmt.Fprintf(&buf, "Content-Length: %d\r\n", body)
			case 1:
				fmt.Fprintf(&buf, "Content-Length: %d\r\n", body+1+body/2)
			}
			buf.WriteString("\r\n")
			buf.Write(bytes.Repeat([]byte{'b'}, body))
			b.out = buf.Bytes()
		case fzRaw:
			b.out = bytes.Clone(r.bytes(r.u16() % fzMaxRaw))
		}
		bs = append(bs, b)
	}
	if len(bs) == 0 {
		bs = append(bs, fzBehaviour{kind: fzClose})
	}
	return bs
}

// fzNoWork reports whether out, read as net/http's client reads it for a
// request of method (1xx answers but 101 skipped), is a final 429, 502 or
// 503: the server says it did no work.
func fzNoWork(out []byte, method string) bool {
	br := bufio.NewReader(bytes.NewReader(out))
	req := &http.Request{Method: method}
	for range len(out) + 1 { // every response read consumes at least a byte
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return false
		}
		if c := resp.StatusCode; c >= 100 && c <= 199 && c != http.StatusSwitchingProtocols {
			continue
		}
		return defaultAnyStatus.has(resp.StatusCode)
	}
	return false
}

// fzServer is a raw loopback server committing a scripted behaviour on each
// connection it accepts, in order (the last behaviour repeats).
type fzServer struct {
	ln     net.Listener
	bs     []fzBehaviour
	noWork []bool // per behaviour: does its answer say "no work done"?
	wg     sync.WaitGroup

	mu        sync.Mutex
	conns     map[net.Conn]bool
	accepted  int
	closed    bool
	processed []bool // per request read in full, in order: was its answer "no work"?
}

func newFzServer(t *testing.T, bs []fzBehaviour, method string) *fzServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fzServer{ln: ln, bs: bs, conns: map[net.Conn]bool{}}
	for _, b := range bs {
		s.noWork = append(s.noWork, (b.kind == fzReply || b.kind == fzRaw) && fzNoWork(b.out, method))
	}
	s.wg.Add(1)
	go s.serve()
	return s
}

func (s *fzServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		i := min(s.accepted, len(s.bs)-1)
		s.accepted++
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.handle(c, i)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *fzServer) handle(c net.Conn, i int) {
	b := s.bs[i]
	if b.kind == fzClose {
		return
	}
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return // not read in full: not processed
	}
	s.mu.Lock()
	s.processed = append(s.processed, s.noWork[i])
	s.mu.Unlock()
	switch b.kind {
	case fzRST:
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	case fzReply, fzRaw:
		c.Write(b.out)
		if b.stall {
			io.Copy(io.Discard, c) // until the client or Close closes c
		}
	case fzStall:
		io.Copy(io.Discard, c)
	}
}

// Processed returns, per request read in full, whether its answer said the
// server did no work.
func (s *fzServer) Processed() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.processed...)
}

// Close stops the server, closes every connection and waits for every
// goroutine it started.
func (s *fzServer) Close() {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// fzBody is a request body that counts its Close calls and signals the first.
type fzBody struct {
	io.Reader
	closes atomic.Int32
	once   sync.Once
	closed chan struct{}
}

func newFzBody() *fzBody {
	return &fzBody{Reader: strings.NewReader(fzPayload), closed: make(chan struct{})}
}

func (b *fzBody) Close() error {
	b.closes.Add(1)
	b.once.Do(func() { close(b.closed) })
	return nil
}

// FuzzTransportServer runs the Transport against a raw server that
// misbehaves as the fuzzer scripts it, per connection: close at once, reset
// or close after reading, stall, or answer any status, Retry-After and body,
// or raw bytes. For every script:
//
//  1. RoundTrip returns a response with a nil error, or an *ExhaustedError;
//  2. at most 3 attempts are made, and the server reads at most 3 requests;
//  3. a request that is not replayable is read in full by the server at most
//     once, unless the server answered that read with 429, 502 or 503;
//  4. the request body (and every GetBody body) is closed exactly once;
//  5. once the response body is read and closed and idle connections are
//     closed, no client connection is left open;
//  6. everything ends within a bound, and the server's goroutines all exit
//     (goleak in TestMain checks the rest).
func FuzzTransportServer(f *testing.F) {
	const (
		get  = 0 // fzMethods indexes
		post = 5
	)
	reply := func(code int, ra string, body, clMode int, stall bool) []byte {
		k := byte(fzReply)
		if stall {
			k |= 0x80
		}
		s := []byte{k, byte((code - 100) >> 8), byte(code - 100)}
		if ra == "-" {
			s = append(s, 0)
		} else {
			s = append(s, byte(len(ra)+1))
			s = append(s, ra...)
		}
		return append(s, byte(body>>8), byte(body), byte(clMode))
	}
	raw := func(out string, stall bool) []byte {
		k := byte(fzRaw)
		if stall {
			k |= 0x80
		}
		return append([]byte{k, byte(len(out) >> 8), byte(len(out))}, out...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	ok200 := reply(200, "-", 2, 0, false)

	f.Add(byte(get), false, ok200)
	f.Add(byte(post), false, ok200)
	f.Add(byte(post), false, cat(reply(503, "1", 4, 0, false), ok200))
	f.Add(byte(post), false, cat(reply(503, "0", 4, 0, false), ok200))
	f.Add(byte(get), false, cat(reply(429, "soon", 0, 2, false), reply(429, "", 0, 0, false), ok200))
	f.Add(byte(post), true, cat([]byte{fzRST}, ok200))
	f.Add(byte(post), false, cat([]byte{fzRST}, ok200))
	f.Add(byte(get), false, cat([]byte{fzFIN}, []byte{fzClose}, ok200))
	f.Add(byte(get), false, cat(raw("garbage\r\n\r\n", false), ok200))
	f.Add(byte(post), false, cat(raw("HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 503 x\r\nContent-Length: 0\r\n\r\n", false), ok200))
	f.Add(byte(get), false, cat([]byte{fzStall}, ok200))
	f.Add(byte(post), false, cat([]byte{fzStall}, ok200))
	f.Add(byte(get), false, reply(200, "-", 100, 1, true))
	f.Add(byte(post)|0x40, false, cat(reply(502, "-", 3000, 0, false), reply(500, "-", 0, 0, false)))
	f.Add(byte(get)|0x80, false, reply(101, "-", 0, 2, true))
	f.Add(byte(get), false, raw("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: fuzz\r\n\r\n", true))

	f.Fuzz(func(t *testing.T, m byte, hasKey bool, script []byte) {
		method := fzMethods[int(m&0x3f)%len(fzMethods)]
		withGetBody := m&0x40 != 0
		withHooks := m&0x80 != 0
		bs := fzDecode(script)
		replayable := hasKey || (method != http.MethodPost && method != http.MethodPatch)
		desc := fmt.Sprintf("%s key=%v getBody=%v hooks=%v script=%v", method, hasKey, withGetBody, withHooks, bs)

		srv := newFzServer(t, bs, method)
		defer srv.Close()
		d := &faultserver.Dialer{}
		base := &http.Transport{DialContext: d.DialContext}
		defer base.CloseIdleConnections()

		var attempts, ends atomic.Int32
		opts := []Option{
			WithMaxAttempts(fzMaxAttempts),
			WithBackoff(0, 0),
			WithAttemptTimeout(50 * time.Millisecond),
			WithRetryAfterCap(10 * time.Millisecond), // "0" is honoured, "1" returns the response at once
		}
		if withHooks {
			opts = append(opts, WithHooks(Hooks{
				AttemptStart: func(context.Context, *Attempt) context.Context { attempts.Add(1); return nil },
				RequestEnd:   func(context.Context, *Attempt) { ends.Add(1) },
			}))
		}
		tr := NewTransport(base, opts...)

		ctx, cancel := context.WithTimeout(context.Background(), fzBound)
		defer cancel()
		var body *fzBody
		var bodyR io.Reader
		if method != http.MethodGet && method != http.MethodHead {
			body = newFzBody()
			bodyR = body
		}
		req, err := http.NewRequestWithContext(ctx, method, "http://"+srv.ln.Addr().String(), bodyR)
		if err != nil {
			t.Fatal(err)
		}
		if hasKey {
			req.Header.Set("Idempotency-Key", "k-1")
		}
		var (
			gmu       sync.Mutex
			getBodies []*fzBody
		)
		if body != nil && withGetBody {
			req.ContentLength = int64(len(fzPayload))
			req.GetBody = func() (io.ReadCloser, error) {
				b := newFzBody()
				gmu.Lock()
				getBodies = append(getBodies, b)
				gmu.Unlock()
				return b, nil
			}
		}

		// 1. A response with a nil error, or an *ExhaustedError.
		type result struct {
			resp *http.Response
			err  error
		}
		done := make(chan result, 1)
		go func() {
			resp, err := tr.RoundTrip(req)
			done <- result{resp, err}
		}()
		watchdog := time.NewTimer(2 * fzBound)
		defer watchdog.Stop()
		var res result
		select {
		case res = <-done:
		case <-watchdog.C:
			t.Fatalf("%s: RoundTrip did not return within %v of a %v deadline", desc, 2*fzBound, fzBound)
		}
		resp, err := res.resp, res.err
		var ee *ExhaustedError
		switch {
		case err == nil && resp == nil:
			t.Fatalf("%s: RoundTrip = nil, nil; want a response or an error", desc)
		case err != nil && resp != nil:
			t.Fatalf("%s: RoundTrip returned both a response (%d) and an error (%v)", desc, resp.StatusCode, err)
		case err != nil && !errors.As(err, &ee):
			t.Fatalf("%s: RoundTrip error %v (%T); want an *ExhaustedError", desc, err, err)
		}

		// 6. The final body ends within the bound (the attempt timeout
		// covers it), then is closed. A protocol switch's body is the
		// connection, which no context bounds (net/http hands it over even
		// to a request that asked for no upgrade): the caller owns it, so
		// it is closed unread.
		var upgraded bool
		if resp != nil {
			_, upgraded = resp.Body.(io.Writer)
		}
		if upgraded {
			resp.Body.Close()
		} else if resp != nil {
			readDone := make(chan struct{})
			go func() {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
				close(readDone)
			}()
			t0 := time.NewTimer(fzBound)
			select {
			case <-readDone:
				t0.Stop()
				resp.Body.Close()
			case <-t0.C:
				resp.Body.Close()
				<-readDone
				t.Fatalf("%s: reading the %d response's body did not end within %v", desc, resp.StatusCode, fzBound)
			}
		}

		// 2. At most 3 attempts.
		if ee != nil && (ee.Attempts < 1 || ee.Attempts > fzMaxAttempts) {
			t.Fatalf("%s: ExhaustedError.Attempts = %d; want 1 to %d (%v)", desc, ee.Attempts, fzMaxAttempts, err)
		}
		if withHooks {
			if n := attempts.Load(); n < 1 || n > fzMaxAttempts {
				t.Fatalf("%s: %d attempts started; want 1 to %d", desc, n, fzMaxAttempts)
			}
			if ee != nil && int(attempts.Load()) != ee.Attempts {
				t.Fatalf("%s: ExhaustedError.Attempts = %d; hooks saw %d attempts", desc, ee.Attempts, attempts.Load())
			}
			if n := ends.Load(); n != 1 {
				t.Fatalf("%s: RequestEnd ran %d times; want 1", desc, n)
			}
		}

		// 4. Every body closed: wait for each first Close, bounded.
		gmu.Lock()
		bodies := append([]*fzBody(nil), getBodies...)
		gmu.Unlock()
		if body != nil {
			bodies = append([]*fzBody{body}, bodies...)
		}
		closeWait := time.NewTimer(fzBound)
		defer closeWait.Stop()
		for i, b := range bodies {
			select {
			case <-b.closed:
			case <-closeWait.C:
				t.Fatalf("%s: body %d of %d (0: the request's, then GetBody's) never closed", desc, i, len(bodies))
			}
		}

		// 5. No client connection left open.
		base.CloseIdleConnections()
		if n := d.WaitClosed(fzBound); n != 0 {
			t.Fatalf("%s: %d client connections open after the response body was closed and CloseIdleConnections; want 0", desc, n)
		}

		// 6. The server's goroutines all exit.
		srv.Close()

		// 2, 3. What the server read in full.
		processed := srv.Processed()
		if resp != nil {
			t.Logf("%s: %d, server read %v (true: answered no work)", desc, resp.StatusCode, processed)
		} else {
			t.Logf("%s: %v, server read %v (true: answered no work)", desc, err, processed)
		}
		if len(processed) > fzMaxAttempts {
			t.Fatalf("%s: server read %d requests in full; want at most %d", desc, len(processed), fzMaxAttempts)
		}
		if !replayable {
			for i, noWork := range processed[:max(len(processed)-1, 0)] {
				if !noWork {
					t.Fatalf("%s: server read a %s without Idempotency-Key %d times (read %d not answered 429/502/503); want once", desc, method, len(processed), i+1)
				}
			}
		}

		// 4. Exactly once.
		for i, b := range bodies {
			if n := b.closes.Load(); n != 1 {
				t.Fatalf("%s: body %d of %d (0: the request's, then GetBody's) closed %d times; want exactly 1", desc, i, len(bodies), n)
			}
		}
	})
}
