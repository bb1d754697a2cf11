package middleware

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestHooksAccumulate: each WithHooks call's hooks run after earlier ones,
// and the contexts they return chain: RequestStart's is every attempt's
// parent, AttemptStart's reaches AttemptEnd.
func TestHooksAccumulate(t *testing.T) {
	type key string
	var calls []string
	mk := func(name string) Hooks {
		return Hooks{
			RequestStart: func(ctx context.Context, _ *http.Request) context.Context {
				calls = append(calls, name+".RequestStart")
				return context.WithValue(ctx, key(name), "req")
			},
			AttemptStart: func(ctx context.Context, a *Attempt) context.Context {
				if ctx.Value(key("a")) != "req" {
					t.Errorf("%s.AttemptStart: RequestStart's context is not the parent", name)
				}
				calls = append(calls, name+".AttemptStart")
				return context.WithValue(ctx, key(name+"-attempt"), a.Number)
			},
			AttemptEnd: func(ctx context.Context, a *Attempt) {
				if ctx.Value(key("b-attempt")) != a.Number {
					t.Errorf("%s.AttemptEnd: AttemptStart's context lost", name)
				}
				calls = append(calls, name+".AttemptEnd")
			},
			RequestEnd: func(ctx context.Context, _ *Attempt) {
				if ctx.Value(key("b")) != "req" {
					t.Errorf("%s.RequestEnd: RequestStart's context lost", name)
				}
				calls = append(calls, name+".RequestEnd")
			},
		}
	}
	tr := NewTransport(&fakeRT{status: 200}, WithHooks(mk("a")), WithHooks(Hooks{}), WithHooks(mk("b")))
	req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
	if _, err := tr.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	want := []string{"a.RequestStart", "b.RequestStart", "a.AttemptStart", "b.AttemptStart",
		"a.AttemptEnd", "b.AttemptEnd", "a.RequestEnd", "b.RequestEnd"}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("hook calls (-want +got):\n%s", diff)
	}
}

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
