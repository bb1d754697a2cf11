package retryafter

import (
	"errors"
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	now := time.Date(2026, time.November, 28, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		give string
		want time.Duration
	}{
		{"0", 0},
		{"120", 120 * time.Second},
		{" 7 ", 7 * time.Second},
		{"99999999999", time.Duration(math.MaxInt64)},
		{"922337203", 922337203 * time.Second},
		{"92233720369", time.Duration(math.MaxInt64)},
		{"Sat, 28 Nov 2026 12:01:30 GMT", 90 * time.Second},                                     // IMF-fixdate
		{"Saturday, 28-Nov-26 12:00:10 GMT", 10 * time.Second},                                  // RFC 850
		{"Sat Nov 28 12:00:05 2026", 5 * time.Second},                                           // asctime
		{"Sat, 28 Nov 2026 11:00:00 GMT", 0},                                                    // past
		{"Sat, 28 Nov 2026 12:00:00 GMT", 0},                                                    // now
		{"Mon, 01 Jan 2046 00:00:00 GMT", time.Date(2046, 1, 1, 0, 0, 0, 0, time.UTC).Sub(now)}, // far future
	} {
		got, err := Parse(tt.give, now)
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, nil", tt.give, got, err, tt.want)
		}
	}
}

func TestParseSyntaxErrors(t *testing.T) {
	now := time.Date(2026, time.November, 28, 12, 0, 0, 0, time.UTC)
	for _, give := range []string{"", "   ", "-", "-5", "-2", "-0", "+5", "1.5", "5s", "soon", "0x10", "12 34", "Sat, 28 Nov 2026", "١٢"} {
		got, err := Parse(give, now)
		var se *SyntaxError
		if got != 0 || !errors.As(err, &se) || se.Value != give || !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %v, %v; want 0, *SyntaxError{%q} matching ErrSyntax", give, got, err, give)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "120", "-5", "99999999999", "Sat, 28 Nov 2026 12:01:30 GMT", "Sat Nov 28 12:00:05 2026", "", "x"} {
		f.Add(s, int64(1795867200))
	}
	f.Fuzz(func(t *testing.T, v string, unix int64) {
		d, err := Parse(v, time.Unix(unix, 0))
		if d < 0 {
			t.Fatalf("Parse(%q) = %v; want >= 0", v, d)
		}
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || !errors.Is(err, ErrSyntax) || d != 0 {
				t.Fatalf("Parse(%q) = %v, %v (%T); want 0 and a *SyntaxError", v, d, err, err)
			}
		}
	})
}
