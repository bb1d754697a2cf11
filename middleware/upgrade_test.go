package middleware

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestProtocolSwitchKeepsWritableBody: a 101 Switching Protocols response's
// body is the connection (an io.ReadWriteCloser); it stays writable through
// tank, also when an attempt timeout wraps the final body.
func TestProtocolSwitchKeepsWritableBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		line, _ := brw.ReadString('\n')
		io.WriteString(c, line)
	}))
	defer srv.Close()
	for _, opts := range [][]Option{nil, {WithAttemptTimeout(time.Hour)}} {
		base, _ := newClientTransport(t)
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "echo")
		resp, err := NewTransport(base, opts...).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		rw, ok := resp.Body.(io.ReadWriteCloser)
		if !ok {
			resp.Body.Close()
			t.Errorf("with %d options: 101 body is %T; want an io.ReadWriteCloser", len(opts), resp.Body)
			continue
		}
		io.WriteString(rw, "ping\n")
		line, err := bufio.NewReader(rw).ReadString('\n')
		rw.Close()
		if err != nil || line != "ping\n" {
			t.Errorf("with %d options: echo %q, %v; want \"ping\\n\"", len(opts), line, err)
		}
	}
}
