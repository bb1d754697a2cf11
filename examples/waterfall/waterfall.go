// Package waterfall draws recorded spans as a waterfall in a terminal: one
// line per span, its bar placed on a shared time axis, the wait that
// followed it drawn as dots, so retries and sleeps show as they would in
// Jaeger without running it.
//
// It knows nothing of OpenTelemetry: callers copy what they recorded into
// Spans.
//
// Concurrency: Render is a pure function of its arguments.
package waterfall

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// A Span is one line of the waterfall.
type Span struct {
	Name  string
	Depth int // indentation: 0 for a root, 1 for its children, ...
	Start time.Time
	End   time.Time
	Class string        // tank's class of the attempt, or ""
	Error bool          // the span's status is Error
	Sleep time.Duration // the wait after the span, 0 for none
	// SleepSource says where the wait came from ("backoff", "retry_after").
	SleepSource string
	// Cut says the wait was cut short (the caller gave up during it) after
	// Waited: Sleep is then the wait that was planned, the dots show only
	// Waited, and the note both.
	Cut    bool
	Waited time.Duration
	// Outcome is how a request ended (tank's reason: "final", "canceled",
	// ...), or "".
	Outcome string
}

// waited is the wait the span was really followed by.
func (s Span) waited() time.Duration {
	if s.Cut {
		return s.Waited
	}
	return s.Sleep
}

// Width is the number of columns of the time axis.
const Width = 50

const (
	barCell   = '█'
	sleepCell = '·'
)

// Render writes spans, in the order given, as a waterfall: a header with
// the time axis, then a line per span with its name, its bar, its
// duration, and its outcome, class and wait (planned and waited, when
// the wait was cut). It writes nothing for no spans.
func Render(w io.Writer, spans []Span) error {
	if len(spans) == 0 {
		return nil
	}
	t0, t1 := spans[0].Start, spans[0].End
	label := 0
	for _, s := range spans {
		if s.Start.Before(t0) {
			t0 = s.Start
		}
		if e := s.End.Add(s.waited()); e.After(t1) {
			t1 = e
		}
		label = max(label, len([]rune(s.Name))+2*s.Depth)
	}
	total := t1.Sub(t0)
	col := func(t time.Time) int {
		if total <= 0 {
			return 0
		}
		return min(Width-1, int(int64(t.Sub(t0))*Width/int64(total)))
	}

	var b strings.Builder
	end := fmtDur(total)
	fmt.Fprintf(&b, "%-*s  0%s%s\n", label, "", strings.Repeat(" ", max(1, Width-1-len(end))), end)
	for _, s := range spans {
		bar := []rune(strings.Repeat(" ", Width))
		from, to := col(s.Start), col(s.End)
		for i := from; i <= to; i++ {
			bar[i] = barCell
		}
		if w := s.waited(); w > 0 {
			for i := to + 1; i <= col(s.End.Add(w)); i++ {
				bar[i] = sleepCell
			}
		}
		name := strings.Repeat("  ", s.Depth) + s.Name
		fmt.Fprintf(&b, "%-*s  %s  %7s", label, name, string(bar), fmtDur(s.End.Sub(s.Start)))
		var notes []string
		if s.Outcome != "" {
			notes = append(notes, "outcome "+s.Outcome)
		}
		if s.Class != "" {
			notes = append(notes, s.Class)
		}
		if s.Error {
			notes = append(notes, "error")
		}
		if s.Sleep > 0 || s.Cut {
			n := "then sleep " + fmtDur(s.Sleep)
			if s.Cut {
				n = "planned sleep " + fmtDur(s.Sleep)
			}
			if s.SleepSource != "" {
				n += " (" + s.SleepSource + ")"
			}
			if s.Cut {
				n += ", cut after " + fmtDur(s.Waited)
			}
			notes = append(notes, n)
		}
		if len(notes) > 0 {
			b.WriteString("  " + strings.Join(notes, ", "))
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// fmtDur prints d with about three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
