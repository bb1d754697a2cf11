// Package replay makes request bodies replayable and throws response bodies
// away without losing the connection under them.
package replay

import (
	"bytes"
	"io"
	"net/http"
)

// Buffered is a request body read into memory, up to a limit.
type Buffered struct {
	data []byte
}

// GetBody returns a fresh reader over the buffered bytes. The reader is an
// io.NopCloser over a *bytes.Reader, which net/http recognises as in-memory
// and writes together with the headers.
func (b *Buffered) GetBody() (io.ReadCloser, error) {
	if len(b.data) == 0 {
		return http.NoBody, nil
	}
	return io.NopCloser(bytes.NewReader(b.data)), nil
}

// Len is the number of buffered bytes.
func (b *Buffered) Len() int { return len(b.data) }

// Buffer reads body into memory when it holds at most limit bytes.
// length is the request's ContentLength (-1 or 0 when unknown).
//
// It always takes ownership of body. When the body fits, body is closed and
// the returned *Buffered replays it. When it does not fit (or reading fails),
// Buffer returns a nil *Buffered and a ReadCloser that yields every byte of
// the original body exactly once (what was read, then the rest) and closes
// the original: the request can still be sent once, but never again.
func Buffer(body io.ReadCloser, length, limit int64) (*Buffered, io.ReadCloser) {
	if length > limit {
		return nil, body
	}
	var buf []byte
	if length > 0 {
		buf = make([]byte, 0, length+1) // +1 so a short read-to-EOF needs no growth
	}
	buf, err := readAtMost(body, buf, limit)
	if err != nil || int64(len(buf)) > limit {
		return nil, &prefixed{r: io.MultiReader(bytes.NewReader(buf), body), c: body, err: err}
	}
	body.Close()
	return &Buffered{data: buf}, nil
}

// readAtMost appends from r to buf until EOF or until buf holds limit+1 bytes.
func readAtMost(r io.Reader, buf []byte, limit int64) ([]byte, error) {
	for int64(len(buf)) <= limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		room := cap(buf) - len(buf)
		if max := limit + 1 - int64(len(buf)); int64(room) > max {
			room = int(max)
		}
		n, err := r.Read(buf[len(buf) : len(buf)+room])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// prefixed replays the bytes Buffer already read, then the rest of the body.
// A read error met while buffering is returned after the buffered bytes, so
// the transport sees it exactly where the original reader failed.
type prefixed struct {
	r   io.Reader
	c   io.Closer
	err error
}

func (p *prefixed) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err == io.EOF && p.err != nil {
		return n, p.err
	}
	return n, err
}

func (p *prefixed) Close() error { return p.c.Close() }

// Discard reads at most limit bytes of body and closes it. When the body
// ends within the limit, net/http can reuse the connection; past the limit
// the connection is closed instead of reading on without bound.
func Discard(body io.ReadCloser, limit int64) {
	if body == nil {
		return
	}
	io.CopyN(io.Discard, body, limit+1)
	body.Close()
}
