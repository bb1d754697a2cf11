package waterfall

import (
	"strings"
	"testing"
	"time"
)

func TestRender(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }
	spans := []Span{
		{Name: "GET (tank)", Start: at(0), End: at(100)},
		{Name: "GET", Depth: 1, Start: at(0), End: at(4), Class: "unavailable", Error: true, Sleep: 20 * time.Millisecond, SleepSource: "backoff"},
		{Name: "GET", Depth: 1, Start: at(24), End: at(28), Class: "refused", Error: true, Sleep: 60 * time.Millisecond, SleepSource: "retry_after"},
		{Name: "GET", Depth: 1, Start: at(88), End: at(100), Class: "final"},
	}
	var b strings.Builder
	if err := Render(&b, spans); err != nil {
		t.Fatal(err)
	}
	// 100ms over 50 columns: 2ms a column.
	bar := func(from, cells, dots int) string {
		s := strings.Repeat(" ", from) + strings.Repeat("█", cells) + strings.Repeat("·", dots)
		return s + strings.Repeat(" ", Width-from-cells-dots)
	}
	want := "            0" + strings.Repeat(" ", 44) + "100ms\n" +
		"GET (tank)  " + bar(0, 50, 0) + "    100ms\n" +
		"  GET       " + bar(0, 3, 10) + "      4ms  unavailable, error, then sleep 20ms (backoff)\n" +
		"  GET       " + bar(12, 3, 30) + "      4ms  refused, error, then sleep 60ms (retry_after)\n" +
		"  GET       " + bar(44, 6, 0) + "     12ms  final\n"
	if got := b.String(); got != want {
		t.Errorf("Render =\n%s\nwant\n%s", got, want)
	}
}

// TestRenderCutWait: a wait cut by the caller is drawn as far as it went,
// with the plan and the wait in the note, and the request's outcome.
func TestRenderCutWait(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }
	spans := []Span{
		{Name: "GET (tank)", Start: at(0), End: at(20), Error: true, Outcome: "canceled"},
		{Name: "GET", Depth: 1, Start: at(0), End: at(4), Class: "unavailable", Error: true,
			Sleep: 300 * time.Millisecond, SleepSource: "backoff", Cut: true, Waited: 16 * time.Millisecond},
	}
	var b strings.Builder
	if err := Render(&b, spans); err != nil {
		t.Fatal(err)
	}
	// 20ms over 50 columns: 0.4ms a column; the planned 300ms is not drawn.
	bar := func(from, cells, dots int) string {
		s := strings.Repeat(" ", from) + strings.Repeat("█", cells) + strings.Repeat("·", dots)
		return s + strings.Repeat(" ", Width-from-cells-dots)
	}
	want := "            0" + strings.Repeat(" ", 45) + "20ms\n" +
		"GET (tank)  " + bar(0, 50, 0) + "     20ms  outcome canceled, error\n" +
		"  GET       " + bar(0, 11, 39) + "      4ms  unavailable, error, planned sleep 300ms (backoff), cut after 16ms\n"
	if got := b.String(); got != want {
		t.Errorf("Render =\n%s\nwant\n%s", got, want)
	}
}

func TestRenderEdges(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		name string
		give []Span
		want string
	}{
		{"none", nil, ""},
		{"instant", []Span{{Name: "x", Start: t0, End: t0}},
			"   0" + strings.Repeat(" ", 47) + "0s\n" +
				"x  █" + strings.Repeat(" ", 49) + "       0s\n"},
	} {
		var b strings.Builder
		if err := Render(&b, tt.give); err != nil {
			t.Fatal(err)
		}
		if got := b.String(); got != tt.want {
			t.Errorf("%s: Render =\n%q\nwant\n%q", tt.name, got, tt.want)
		}
	}
}

func TestFmtDur(t *testing.T) {
	for _, tt := range []struct {
		give time.Duration
		want string
	}{
		{0, "0s"},
		{1234 * time.Nanosecond, "1µs"},
		{1234567 * time.Nanosecond, "1.23ms"},
		{123456789 * time.Nanosecond, "123.5ms"},
		{1234567890 * time.Nanosecond, "1.23s"},
	} {
		if got := fmtDur(tt.give); got != tt.want {
			t.Errorf("fmtDur(%v) = %q; want %q", tt.give, got, tt.want)
		}
	}
}
