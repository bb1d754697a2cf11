package replay

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
	"testing/iotest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// body is a request body that counts its closes.
type body struct {
	io.Reader
	closes int
}

func (b *body) Close() error { b.closes++; return nil }

func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return p
}

func readAll(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	return b
}

func TestBufferWithinLimit(t *testing.T) {
	for _, tt := range []struct {
		name   string
		n      int
		length int64
		limit  int64
	}{
		{"known length", 1000, 1000, 1000},
		{"unknown length", 1000, -1, 1000},
		{"unknown length, zero", 1000, 0, 4096},
		{"one byte", 1, 1, 1},
		{"short read, larger declared length", 10, 20, 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := payload(tt.n)
			b := &body{Reader: iotest.HalfReader(bytes.NewReader(p))}
			buf, once := Buffer(b, tt.length, tt.limit)
			if buf == nil || once != nil {
				t.Fatalf("Buffer = %v, %v; want a *Buffered", buf, once)
			}
			if b.closes != 1 {
				t.Errorf("original closed %d times; want 1", b.closes)
			}
			if buf.Len() != tt.n {
				t.Errorf("Len() = %d; want %d", buf.Len(), tt.n)
			}
			for i := 0; i < 3; i++ {
				rc, err := buf.GetBody()
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, rc); !bytes.Equal(got, p) {
					t.Errorf("replay %d: %d bytes differ from the %d-byte original", i+1, len(got), len(p))
				}
			}
		})
	}
}

func TestBufferEmpty(t *testing.T) {
	b := &body{Reader: bytes.NewReader(nil)}
	buf, _ := Buffer(b, 0, 10)
	if rc, _ := buf.GetBody(); rc != http.NoBody {
		t.Errorf("GetBody of an empty body = %T; want http.NoBody", rc)
	}
}

func TestBufferOverLimit(t *testing.T) {
	for _, tt := range []struct {
		name   string
		length int64
	}{
		{"declared too long", 1001},
		{"unknown length", -1},
		{"declared short, really long", 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := payload(1001)
			b := &body{Reader: iotest.OneByteReader(bytes.NewReader(p))}
			buf, once := Buffer(b, tt.length, 1000)
			if buf != nil {
				t.Fatal("Buffer buffered a body over the limit")
			}
			if b.closes != 0 {
				t.Errorf("original closed %d times before the send; want 0", b.closes)
			}
			if got := readAll(t, once); !bytes.Equal(got, p) {
				t.Errorf("sent %d bytes; want every one of the %d, in order", len(got), len(p))
			}
			if b.closes != 1 {
				t.Errorf("original closed %d times; want exactly 1", b.closes)
			}
		})
	}
}

func TestBufferReadErrorMidBody(t *testing.T) {
	errBroken := errors.New("disk on fire")
	p := payload(100)
	b := &body{Reader: io.MultiReader(bytes.NewReader(p), iotest.ErrReader(errBroken))}
	buf, once := Buffer(b, -1, 1000)
	if buf != nil {
		t.Fatal("Buffer kept a body whose read failed")
	}
	got, err := io.ReadAll(once)
	if !bytes.Equal(got, p) || !errors.Is(err, errBroken) {
		t.Errorf("read %d bytes then %v; want the %d bytes read so far, then the read error", len(got), err, len(p))
	}
	once.Close()
	if b.closes != 1 {
		t.Errorf("original closed %d times; want exactly 1", b.closes)
	}
}

func TestDiscard(t *testing.T) {
	for _, tt := range []struct {
		n, limit int
		wantRead int
	}{
		{10, 64, 10},
		{100, 64, 65}, // stops past the limit
		{0, 0, 0},
	} {
		r := bytes.NewReader(payload(tt.n))
		b := &body{Reader: r}
		Discard(b, int64(tt.limit))
		if read := tt.n - r.Len(); read != tt.wantRead || b.closes != 1 {
			t.Errorf("Discard(%d bytes, limit %d) read %d, closed %d times; want %d and 1", tt.n, tt.limit, read, b.closes, tt.wantRead)
		}
	}
	Discard(nil, 10) // must not panic
}
