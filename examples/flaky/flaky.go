package flaky

import (
	"io"
	"net"
	"net/http"
	"sync"
)

// Handler reads each request's body in full, records it under the request's
// path, then calls its answer func with the number of requests that path
// has received, this one included.
type Handler struct {
	answer func(w http.ResponseWriter, r *http.Request, n int)
	mu     sync.Mutex
	bodies map[string][]string
}

// New returns a Handler that answers with answer.
func New(answer func(w http.ResponseWriter, r *http.Request, n int)) *Handler {
	return &Handler{answer: answer, bodies: map[string][]string{}}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body) // the request is processed once its body is read
	h.mu.Lock()
	h.bodies[r.URL.Path] = append(h.bodies[r.URL.Path], string(b))
	n := len(h.bodies[r.URL.Path])
	h.mu.Unlock()
	h.answer(w, r, n)
}

// Count is the number of requests path has received.
func (h *Handler) Count(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.bodies[path])
}

// Take returns the bodies path has received, in order, and forgets them:
// path's count starts again from 0.
func (h *Handler) Take(path string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.bodies[path]
	delete(h.bodies, path)
	return s
}

// Reset aborts w's connection with a TCP RST (SO_LINGER 0) instead of an
// answer. Call it after the request was read: the server has processed the
// request, the client sees "connection reset by peer".
func Reset(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // Close sends RST
	}
	conn.Close()
}
