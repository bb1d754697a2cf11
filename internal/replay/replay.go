// Package replay makes request bodies replayable and throws response bodies
// away without losing the connection under them.
package replay

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net/http"
	"sync"
)

// ErrTooLong is returned by Recorder.Rewind when the body has been read past
// the recorder's limit, so its first bytes are no longer kept.
var ErrTooLong = errors.New("request body read past the buffer limit")

// errRewound is what a reader handed to an earlier attempt returns once the
// body has been rewound for a later one.
var errRewound = errors.New("request body rewound for another attempt")

// A Recorder keeps the bytes of a request body as the transport reads them,
// up to a limit, so that the body can be sent again. It never reads ahead of
// the transport: a body that trickles out is read only as fast as the
// transport sends it, under the transport's own deadline (the way net/http
// rewinds a body and gRPC fills its replay buffer).
//
// Each attempt gets its own reader (Body, then Rewind). A reader picks up
// where the recording ends: a retry replays what earlier attempts read, then
// reads on from the caller's body. A reader handed to an earlier attempt
// stops working once the body is rewound, so a transport goroutine still
// writing an abandoned attempt cannot take bytes from the next one.
//
// The caller's body is closed exactly once: when the request is finished
// (Finish) and the last reader handed out has been closed or never sent.
//
// Concurrency: net/http may read and close an attempt's body on its own
// goroutine after RoundTrip has returned; every method is safe for that.
type Recorder struct {
	src   io.ReadCloser
	limit int64

	rmu sync.Mutex // held while src.Read runs: reads of src are serialised

	mu       sync.Mutex // guards what follows
	buf      []byte     // bytes [0, len(buf)) of the body
	n        int64      // bytes read from src so far
	over     bool       // recording stopped: the body passed the limit
	err      error      // src's terminal error (io.EOF once the body is read)
	gen      uint32     // the reader generation in use
	memory   bool       // the reader in use is an in-memory copy (the body was complete)
	closedBy bool       // the reader in use has been closed
	finished bool       // the request is over
	srcDone  bool       // src has been closed

	first reader
}

// NewRecorder returns a Recorder over src that keeps at most limit bytes.
// length is the request's ContentLength (0 or -1 when unknown): a body
// declared longer than limit is not recorded at all, and can be sent again
// only if no attempt has read from it yet.
func NewRecorder(src io.ReadCloser, length, limit int64) *Recorder {
	r := &Recorder{src: src, limit: limit, over: length > limit}
	r.first = reader{r: r}
	return r
}

// Body returns the first attempt's reader.
func (r *Recorder) Body() io.ReadCloser { return &r.first }

// Replayable reports whether Rewind can succeed now.
func (r *Recorder) Replayable() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n == 0 || !r.over
}

// Rewind returns a reader for the next attempt: the recorded bytes, then the
// rest of the body. When the whole body has been read, it is an in-memory
// reader (net/http then writes it together with the headers). It fails with
// ErrTooLong once the body has been read past the limit.
func (r *Recorder) Rewind() (io.ReadCloser, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 && r.over {
		return nil, ErrTooLong
	}
	r.gen++
	r.closedBy = false
	r.memory = r.err == io.EOF
	if r.memory {
		if len(r.buf) == 0 {
			return http.NoBody, nil
		}
		return io.NopCloser(bytes.NewReader(r.buf)), nil
	}
	return &reader{r: r, gen: r.gen}, nil
}

// Finish marks the request as over. The caller's body is closed now, or when
// the transport closes the last reader it was given.
func (r *Recorder) Finish() {
	r.mu.Lock()
	r.finished = true
	closeNow := r.closedBy || r.memory
	r.mu.Unlock()
	if closeNow {
		r.closeSrc()
	}
}

func (r *Recorder) closeSrc() {
	r.mu.Lock()
	done := r.srcDone
	r.srcDone = true
	r.mu.Unlock()
	if !done {
		r.src.Close()
	}
}

// reader is one attempt's view of the body.
type reader struct {
	r   *Recorder
	gen uint32
	pos int64
}

func (x *reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r := x.r
	for {
		r.mu.Lock()
		if x.gen != r.gen {
			r.mu.Unlock()
			return 0, errRewound
		}
		if x.pos < r.n {
			// Replay what an earlier attempt read.
			k := copy(p, r.buf[x.pos:r.n])
			x.pos += int64(k)
			r.mu.Unlock()
			return k, nil
		}
		if r.err != nil {
			err := r.err
			r.mu.Unlock()
			return 0, err
		}
		r.mu.Unlock()

		r.rmu.Lock()
		r.mu.Lock()
		if x.gen != r.gen || x.pos < r.n || r.err != nil {
			// Another reader moved while this one waited: look again.
			r.mu.Unlock()
			r.rmu.Unlock()
			continue
		}
		r.mu.Unlock()
		k, err := r.src.Read(p)
		r.mu.Lock()
		r.record(p[:k], x.gen == r.gen)
		if err != nil {
			r.err = err
		}
		if x.gen == r.gen {
			x.pos = r.n
		}
		r.mu.Unlock()
		r.rmu.Unlock()
		if k == 0 && err == nil {
			continue
		}
		return k, err
	}
}

// record notes b, just read from src; r.mu is held. head says the reader
// in use read it: no other reader lags behind it, so once past the limit the
// recording can be dropped. A read by a reader that was rewound meanwhile
// is always kept, because the reader in use has yet to replay it.
func (r *Recorder) record(b []byte, head bool) {
	n := r.n + int64(len(b))
	switch {
	case head && (r.over || n > r.limit):
		r.over, r.buf = true, nil
	case !r.over || !head:
		r.buf = append(r.buf, b...)
		if n > r.limit {
			r.over = true
		}
	}
	r.n = n
}

// Close closes the caller's body if the request is finished and this is the
// reader in use; otherwise it only records that the transport is done with
// this reader.
func (x *reader) Close() error {
	r := x.r
	r.mu.Lock()
	current := x.gen == r.gen
	if current {
		r.closedBy = true
	}
	closeNow := current && r.finished
	r.mu.Unlock()
	if closeNow {
		r.closeSrc()
	}
	return nil
}

// Discard reads at most limit bytes of body and closes it. When the body
// ends within the limit, net/http can reuse the connection; past the limit
// the connection is closed instead of reading on without bound.
func Discard(body io.ReadCloser, limit int64) {
	if body == nil {
		return
	}
	if limit < math.MaxInt64 {
		limit++ // one byte more tells a body that ends at the limit from a longer one
	}
	io.CopyN(io.Discard, body, limit)
	body.Close()
}
