package flaky

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCountsWhatWasProcessed: a request reset after its body was read is
// counted and its body kept, while the client sees a reset; Take hands the
// bodies over and starts the count again.
func TestCountsWhatWasProcessed(t *testing.T) {
	h := New(func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Path == "/orders" && n == 1 {
			Reset(w)
			return
		}
		io.WriteString(w, "ok")
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	post := func(path, body string) error {
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}

	if err := post("/orders", "first"); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("first POST /orders: err = %v; want a connection reset", err)
	}
	if err := post("/orders", "second"); err != nil {
		t.Errorf("second POST /orders: err = %v; want none", err)
	}
	if err := post("/other", "x"); err != nil {
		t.Errorf("POST /other: err = %v; want none", err)
	}
	if got := h.Count("/orders"); got != 2 {
		t.Errorf("Count(/orders) = %d; want 2", got)
	}
	if diff := cmp.Diff([]string{"first", "second"}, h.Take("/orders")); diff != "" {
		t.Errorf("Take(/orders) (-want +got):\n%s", diff)
	}
	if got := h.Count("/orders"); got != 0 {
		t.Errorf("Count(/orders) after Take = %d; want 0", got)
	}
	if got := h.Count("/other"); got != 1 {
		t.Errorf("Count(/other) = %d; want 1", got)
	}
}
