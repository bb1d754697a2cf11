package middleware

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHooksEnabled: hooks that say they are not wanted for a request are
// not called for it, and the request still gets tank's retries.
func TestHooksEnabled(t *testing.T) {
	for _, want := range []bool{false, true} {
		calls := 0
		rt := &budgetFakeRT{status: 503}
		h := Hooks{
			Enabled:    func(*http.Request) bool { return want },
			AttemptEnd: func(context.Context, *Attempt) { calls++ },
		}
		tr := NewTransport(rt, WithHooks(h), WithBackoff(0, 0))
		resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://api.test/", nil))
		if err != nil || resp.StatusCode != 503 || rt.calls != 3 {
			t.Fatalf("enabled=%v: %v, %v after %d attempts; want the 503 after 3", want, resp, err, rt.calls)
		}
		if got := calls > 0; got != want {
			t.Errorf("enabled=%v: AttemptEnd called %d times", want, calls)
		}
	}
}

// TestHooksEnabledJoin: joined hooks see a request when either side wants it.
func TestHooksEnabledJoin(t *testing.T) {
	off := Hooks{Enabled: func(*http.Request) bool { return false }, AttemptEnd: func(context.Context, *Attempt) {}}
	on := Hooks{AttemptEnd: func(context.Context, *Attempt) {}}
	req := httptest.NewRequest("GET", "http://api.test/", nil)
	for _, tt := range []struct {
		name string
		h    Hooks
		want bool
	}{
		{"off", Hooks{}.join(off), false},
		{"off+off", off.join(off), false},
		{"off+always", off.join(on), true},
		{"always+off", on.join(off), true},
	} {
		p, _ := newPolicy(WithHooks(tt.h))
		if got := p.hooksOn(req); got != tt.want {
			t.Errorf("%s: hooksOn = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func BenchmarkDisabledHooks(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	tr := NewTransport(base, WithHooks(Hooks{Enabled: func(*http.Request) bool { return false },
		AttemptEnd: func(context.Context, *Attempt) {}}))
	c := &http.Client{Transport: tr}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		resp, err := c.Get(srv.URL)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}
