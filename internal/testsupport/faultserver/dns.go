package faultserver

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
)

// DNS response codes a DNS server can answer with.
const (
	RcodeServFail = 2 // the server failed: a temporary error
	RcodeNXDomain = 3 // the name does not exist
	// NoAnswer is not a response code: the server reads each query and
	// never answers.
	NoAnswer = -1
)

// DNS is a loopback UDP DNS server that answers every query with one
// response code and no records. Point a resolver at it with Resolver.
type DNS struct {
	Addr    string // 127.0.0.1:port
	silent  bool   // NoAnswer
	rcode   byte
	pc      net.PacketConn
	queries atomic.Int64
	asked   chan struct{} // closed on the first query
	wg      sync.WaitGroup
	// The resolver's connections, closed by Close: a resolver reads its
	// UDP socket until its own timeout (5 s), whatever its context says,
	// so a query never answered would outlive the test otherwise.
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

// NewDNS starts a DNS server answering every query with rcode, or never
// answering (NoAnswer).
func NewDNS(rcode int) *DNS {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		panic("faultserver: " + err.Error())
	}
	s := &DNS{Addr: pc.LocalAddr().String(), silent: rcode == NoAnswer, rcode: byte(rcode & 0xf), pc: pc, conns: map[net.Conn]bool{}, asked: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	return s
}

// Resolver returns a pure-Go resolver that sends every query to s, whatever
// the system's configuration names. Once s is closed its lookups fail at
// once.
func (s *DNS) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: s.dial}
}

func (s *DNS) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", s.Addr)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	s.conns[c] = true
	return &dnsConn{UDPConn: c.(*net.UDPConn), s: s}, nil
}

// dnsConn forgets itself when the resolver closes it. It stays a
// net.PacketConn: the resolver frames its messages for UDP only then.
type dnsConn struct {
	*net.UDPConn
	s *DNS
}

func (c *dnsConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c.UDPConn)
	c.s.mu.Unlock()
	return c.UDPConn.Close()
}

// Queries is the number of well-formed queries received.
func (s *DNS) Queries() int { return int(s.queries.Load()) }

// Asked is closed once the server has received its first query.
func (s *DNS) Asked() <-chan struct{} { return s.asked }

// Close stops the server, closes the connections of its resolvers (a
// lookup waiting for an answer fails at once) and waits for its goroutine
// to end.
func (s *DNS) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.pc.Close()
	s.wg.Wait()
}

func (s *DNS) serve() {
	defer s.wg.Done()
	var buf [1500]byte
	for {
		n, from, err := s.pc.ReadFrom(buf[:])
		if err != nil {
			return
		}
		if resp := s.answer(buf[:n]); resp != nil {
			if s.queries.Add(1) == 1 {
				close(s.asked)
			}
			if !s.silent {
				s.pc.WriteTo(resp, from)
			}
		}
	}
}

// answer builds the reply to query q: its ID and question, the response
// flag, recursion available, s.rcode, and no records. It returns nil for a
// message that is not a query with one question.
func (s *DNS) answer(q []byte) []byte {
	const header = 12
	if len(q) < header || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	// The question: a name of length-prefixed labels ending in 0, then
	// type and class.
	i := header
	for i < len(q) && q[i] != 0 {
		if q[i]&0xc0 != 0 { // no compression in a question we accept
			return nil
		}
		i += 1 + int(q[i])
	}
	end := i + 1 + 4
	if end > len(q) {
		return nil
	}
	resp := make([]byte, end)
	copy(resp, q[:end])
	resp[2] = 0x80 | q[2]&0x79 // QR, the query's opcode and RD
	resp[3] = 0x80 | s.rcode   // RA and the response code
	clear(resp[6:header])      // no answer, authority or additional records
	return resp
}
