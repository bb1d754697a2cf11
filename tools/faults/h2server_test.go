package faults

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Action is what the raw HTTP/2 server does with a request it has
// received in full.
type h2Action int

const (
	h2OK          h2Action = iota // 200 "ok"
	h2Refused                     // RST_STREAM REFUSED_STREAM
	h2GoAway0                     // GOAWAY last-stream 0, NO_ERROR, then close
	h2GoAwayN                     // GOAWAY last-stream = this stream, INTERNAL_ERROR, then close
	h2RSTInternal                 // RST_STREAM INTERNAL_ERROR
	h2RSTProtocol                 // RST_STREAM PROTOCOL_ERROR
	h2Stall                       // no answer until the server closes
)

// h2Server is a loopback h2c (prior knowledge) server built on the raw
// x/net/http2 Framer, so it can answer with frames net/http's own server
// never sends. It counts every request it received in full (HEADERS and
// DATA up to END_STREAM): for a real server that is a processed request,
// whatever frame this one answers with.
type h2Server struct {
	ln     net.Listener
	script []h2Action // action for the 1st, 2nd, ... request; h2OK after the list

	received atomic.Int64
	mu       sync.Mutex
	methods  []string // method of each received request, in order
	bodies   []string // body of each received request
	conns    map[net.Conn]bool
	opened   int
	wg       sync.WaitGroup
}

func newH2Server(t *testing.T, script ...h2Action) *h2Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &h2Server{ln: ln, script: script, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *h2Server) url() string { return "http://" + s.ln.Addr().String() + "/charge" }

func (s *h2Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // listener closed
		}
		s.mu.Lock()
		s.conns[c] = true
		s.opened++
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

// close stops accepting, closes every connection and waits for every
// goroutine of the server.
func (s *h2Server) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *h2Server) got() (n int, methods, bodies []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.received.Load()), append([]string(nil), s.methods...), append([]string(nil), s.bodies...)
}

// maxFrames bounds the frames read on one connection.
const maxFrames = 10000

func (s *h2Server) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if fr.WriteSettings() != nil {
		return
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	type stream struct {
		method string
		body   []byte
	}
	streams := map[uint32]*stream{}
	for range maxFrames {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		var done *stream
		var id uint32
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && fr.WriteSettingsAck() != nil {
				return
			}
		case *http2.PingFrame:
			if !f.IsAck() && fr.WritePing(true, f.Data) != nil {
				return
			}
		case *http2.MetaHeadersFrame:
			st := &stream{method: f.PseudoValue("method")}
			streams[f.StreamID] = st
			if f.StreamEnded() {
				done, id = st, f.StreamID
			}
		case *http2.DataFrame:
			st := streams[f.StreamID]
			if st == nil {
				continue
			}
			st.body = append(st.body, f.Data()...)
			if f.StreamEnded() {
				done, id = st, f.StreamID
			}
		case *http2.GoAwayFrame:
			return
		}
		if done == nil {
			continue
		}
		delete(streams, id)
		n := s.received.Add(1)
		s.mu.Lock()
		s.methods = append(s.methods, done.method)
		s.bodies = append(s.bodies, string(done.body))
		s.mu.Unlock()
		act := h2OK
		if int(n) <= len(s.script) {
			act = s.script[n-1]
		}
		var werr error
		switch act {
		case h2OK:
			hbuf.Reset()
			enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(2)})
			if werr = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}); werr == nil {
				werr = fr.WriteData(id, true, []byte("ok"))
			}
		case h2Refused:
			werr = fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		case h2RSTInternal:
			werr = fr.WriteRSTStream(id, http2.ErrCodeInternal)
		case h2RSTProtocol:
			werr = fr.WriteRSTStream(id, http2.ErrCodeProtocol)
		case h2Stall:
		case h2GoAway0:
			fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			return
		case h2GoAwayN:
			fr.WriteGoAway(id, http2.ErrCodeInternal, []byte("bye"))
			return
		}
		if werr != nil {
			return
		}
	}
}
