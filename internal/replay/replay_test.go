package replay

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// body is a request body that counts its reads and closes.
type body struct {
	io.Reader
	reads  atomic.Int32
	closes atomic.Int32
}

func (b *body) Read(p []byte) (int, error) { b.reads.Add(1); return b.Reader.Read(p) }
func (b *body) Close() error               { b.closes.Add(1); return nil }

func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return p
}

// readN reads up to n bytes of rc (all of it when n < 0) and closes it.
func readN(t *testing.T, rc io.ReadCloser, n int) []byte {
	t.Helper()
	var r io.Reader = rc
	if n >= 0 {
		r = io.LimitReader(rc, int64(n))
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	return b
}

func TestRecorderNeverReadsAhead(t *testing.T) {
	b := &body{Reader: bytes.NewReader(payload(100))}
	rec := NewRecorder(b, -1, 1000)
	if b.reads.Load() != 0 {
		t.Fatalf("NewRecorder read the body %d times before any attempt; want 0", b.reads.Load())
	}
	first := rec.Body()
	if b.reads.Load() != 0 {
		t.Fatalf("Body read the body %d times; want 0", b.reads.Load())
	}
	p := make([]byte, 10)
	if n, _ := first.Read(p); n != 10 || b.reads.Load() != 1 {
		t.Errorf("Read(10) = %d after %d reads of the caller's body; want 10 after 1", n, b.reads.Load())
	}
}

func TestRecorderReplaysEveryAttemptWhole(t *testing.T) {
	// Each attempt reads a different share of the body before failing; every
	// attempt that reads to the end must see the caller's bytes, in order.
	for _, tt := range []struct {
		name   string
		reads  []int // bytes each failed attempt reads before the last one
		length int64
	}{
		{"nothing read, then all", []int{0}, -1},
		{"half, then all", []int{500}, 1000},
		{"all, then all", []int{-1}, -1},
		{"some, more, less", []int{100, 700, 50}, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := payload(1000)
			b := &body{Reader: iotest.HalfReader(bytes.NewReader(p))}
			rec := NewRecorder(b, tt.length, 1000)
			rc := rec.Body()
			for i, n := range tt.reads {
				got := readN(t, rc, n)
				if want := p[:len(got)]; !bytes.Equal(got, want) {
					t.Fatalf("attempt %d read %d bytes that differ from the body's first %d", i+1, len(got), len(want))
				}
				var err error
				if rc, err = rec.Rewind(); err != nil {
					t.Fatalf("Rewind after attempt %d: %v", i+1, err)
				}
			}
			if got := readN(t, rc, -1); !bytes.Equal(got, p) {
				t.Errorf("last attempt read %d bytes; want the %d-byte body unchanged", len(got), len(p))
			}
			rec.Finish()
			if c := b.closes.Load(); c != 1 {
				t.Errorf("caller's body closed %d times; want 1", c)
			}
		})
	}
}

func TestRecorderCompleteBodyReplaysFromMemory(t *testing.T) {
	b := &body{Reader: bytes.NewReader(payload(64))}
	rec := NewRecorder(b, -1, 1000)
	readN(t, rec.Body(), -1)
	rc, err := rec.Rewind()
	if err != nil {
		t.Fatal(err)
	}
	// net/http writes an io.NopCloser over a *bytes.Reader together with the
	// headers; any other reader costs a flush of its own.
	if _, ok := rc.(io.WriterTo); !ok {
		t.Errorf("Rewind of a complete body = %T; want an in-memory reader", rc)
	}
	readsBefore := b.reads.Load()
	if got := readN(t, rc, -1); !bytes.Equal(got, payload(64)) || b.reads.Load() != readsBefore {
		t.Errorf("replay read %d bytes and the caller's body %d more times; want 64 and 0", len(got), b.reads.Load()-readsBefore)
	}
	rec.Finish()
	if c := b.closes.Load(); c != 1 {
		t.Errorf("caller's body closed %d times; want 1", c)
	}
}

func TestRecorderEmptyBody(t *testing.T) {
	rec := NewRecorder(&body{Reader: bytes.NewReader(nil)}, 0, 10)
	readN(t, rec.Body(), -1)
	if rc, _ := rec.Rewind(); rc != http.NoBody {
		t.Errorf("Rewind of an empty body = %T; want http.NoBody", rc)
	}
}

func TestRecorderPastLimit(t *testing.T) {
	for _, tt := range []struct {
		name   string
		length int64
		read   int
		want   error
	}{
		{"read past the limit", -1, 1001, ErrTooLong},
		{"read to the limit", -1, 1000, nil},
		{"declared too long, read some", 5000, 1, ErrTooLong},
		{"declared too long, nothing read", 5000, 0, nil},
		{"declared short, really long", 10, 1001, ErrTooLong},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := payload(5000)
			b := &body{Reader: bytes.NewReader(p)}
			rec := NewRecorder(b, tt.length, 1000)
			first := rec.Body()
			readN(t, first, tt.read)
			if got := rec.Replayable(); got != (tt.want == nil) {
				t.Errorf("Replayable() = %v; want %v", got, tt.want == nil)
			}
			rc, err := rec.Rewind()
			if !errors.Is(err, tt.want) {
				t.Fatalf("Rewind() error = %v; want %v", err, tt.want)
			}
			if err == nil {
				if got := readN(t, rc, -1); !bytes.Equal(got, p) {
					t.Errorf("replay read %d bytes; want the %d-byte body", len(got), len(p))
				}
			}
			rec.Finish()
			if c := b.closes.Load(); c != 1 {
				t.Errorf("caller's body closed %d times; want 1", c)
			}
		})
	}
}

func TestRecorderKeepsNothingPastLimit(t *testing.T) {
	rec := NewRecorder(&body{Reader: bytes.NewReader(payload(1 << 20))}, -1, 1000)
	readN(t, rec.Body(), -1)
	if len(rec.buf) != 0 {
		t.Errorf("kept %d bytes of a body read past its 1000-byte limit; want 0", len(rec.buf))
	}
}

func TestRecorderHugeLimit(t *testing.T) {
	// A limit of math.MaxInt64 must not overflow anywhere.
	p := payload(100)
	rec := NewRecorder(&body{Reader: bytes.NewReader(p)}, int64(len(p)), math.MaxInt64)
	readN(t, rec.Body(), -1)
	rc, err := rec.Rewind()
	if err != nil {
		t.Fatal(err)
	}
	if got := readN(t, rc, -1); !bytes.Equal(got, p) {
		t.Errorf("replay read %d bytes; want %d", len(got), len(p))
	}
}

func TestRecorderReadErrorReplayed(t *testing.T) {
	errBroken := errors.New("disk on fire")
	p := payload(100)
	b := &body{Reader: io.MultiReader(bytes.NewReader(p), iotest.ErrReader(errBroken))}
	rec := NewRecorder(b, -1, 1000)
	for i := 0; i < 2; i++ {
		rc := rec.Body()
		if i > 0 {
			var err error
			if rc, err = rec.Rewind(); err != nil {
				t.Fatal(err)
			}
		}
		got, err := io.ReadAll(rc)
		if !bytes.Equal(got, p) || !errors.Is(err, errBroken) {
			t.Errorf("attempt %d read %d bytes then %v; want %d bytes, then the read error", i+1, len(got), err, len(p))
		}
	}
}

func TestRecorderStaleReaderStops(t *testing.T) {
	p := payload(100)
	rec := NewRecorder(&body{Reader: bytes.NewReader(p)}, -1, 1000)
	old := rec.Body()
	readN(t, old, 10)
	next, err := rec.Rewind()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := old.Read(make([]byte, 10)); n != 0 || err == nil {
		t.Errorf("earlier attempt's reader read %d bytes, %v after a rewind; want 0 and an error", n, err)
	}
	if got := readN(t, next, -1); !bytes.Equal(got, p) {
		t.Errorf("next attempt read %d bytes; want the %d-byte body", len(got), len(p))
	}
}

// blockingBody hands out its bytes only when told to, like a body that
// trickles out.
type blockingBody struct {
	ch     chan []byte
	closed atomic.Int32
}

func (b *blockingBody) Read(p []byte) (int, error) {
	chunk, ok := <-b.ch
	if !ok {
		return 0, io.EOF
	}
	return copy(p, chunk), nil
}

func (b *blockingBody) Close() error { b.closed.Add(1); return nil }

func TestRecorderReadInFlightDuringRewind(t *testing.T) {
	// An abandoned attempt's reader is blocked in the caller's body when the
	// body is rewound; the bytes it then gets belong to the new attempt too.
	b := &blockingBody{ch: make(chan []byte)}
	rec := NewRecorder(b, -1, 1000)
	old := rec.Body()
	var wg sync.WaitGroup
	wg.Add(1)
	started := make(chan struct{})
	go func() {
		defer wg.Done()
		close(started)
		old.Read(make([]byte, 64))
	}()
	<-started
	next, err := rec.Rewind()
	if err != nil {
		t.Fatal(err)
	}
	// Each chunk is taken by whichever reader is in src first: the old one,
	// if it got there before the rewind, or the next.
	go func() { b.ch <- []byte("hello, "); b.ch <- []byte("world"); close(b.ch) }()
	got := readN(t, next, -1)
	wg.Wait()
	if string(got) != "hello, world" {
		t.Errorf("next attempt read %q; want %q", got, "hello, world")
	}
	rec.Finish()
	if c := b.closed.Load(); c != 1 {
		t.Errorf("caller's body closed %d times; want 1", c)
	}
}

func TestRecorderClosesCallerBodyOnce(t *testing.T) {
	for _, tt := range []struct {
		name string
		run  func(rec *Recorder)
	}{
		{"last reader closed before Finish", func(rec *Recorder) { rec.Body().Close(); rec.Finish() }},
		{"last reader closed after Finish", func(rec *Recorder) { rc := rec.Body(); rec.Finish(); rc.Close(); rc.Close() }},
		{"earlier readers closed late", func(rec *Recorder) {
			a := rec.Body()
			b, _ := rec.Rewind()
			c, _ := rec.Rewind()
			c.Close()
			rec.Finish()
			a.Close()
			b.Close()
		}},
		{"next reader never sent", func(rec *Recorder) {
			rec.Body().Close()
			rc, _ := rec.Rewind()
			rec.Finish()
			rc.Close()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := &body{Reader: bytes.NewReader(payload(10))}
			rec := NewRecorder(b, -1, 1000)
			tt.run(rec)
			if c := b.closes.Load(); c != 1 {
				t.Errorf("caller's body closed %d times; want 1", c)
			}
		})
	}
}

func TestRecorderOpenUntilLastReaderClosed(t *testing.T) {
	// The transport may still be writing the final attempt's body when the
	// request ends (HTTP/2 streams a request body after the response
	// headers): the caller's body stays open until that reader is closed.
	b := &body{Reader: bytes.NewReader(payload(10))}
	rec := NewRecorder(b, -1, 1000)
	rc := rec.Body()
	rec.Finish()
	if c := b.closes.Load(); c != 0 {
		t.Fatalf("caller's body closed %d times while the transport still held it; want 0", c)
	}
	readN(t, rc, -1)
	if c := b.closes.Load(); c != 1 {
		t.Errorf("caller's body closed %d times; want 1", c)
	}
}

func TestDiscard(t *testing.T) {
	for _, tt := range []struct {
		n        int
		limit    int64
		wantRead int
	}{
		{10, 64, 10},
		{100, 64, 65}, // stops past the limit
		{0, 0, 0},
		{100, math.MaxInt64, 100}, // the largest limit reads it all
	} {
		r := bytes.NewReader(payload(tt.n))
		b := &body{Reader: r}
		Discard(b, tt.limit)
		if read := tt.n - r.Len(); read != tt.wantRead || b.closes.Load() != 1 {
			t.Errorf("Discard(%d bytes, limit %d) read %d, closed %d times; want %d and 1", tt.n, tt.limit, read, b.closes.Load(), tt.wantRead)
		}
	}
	Discard(nil, 10) // must not panic
}
