package middleware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestErrorMessages: every error names the package and what went wrong.
func TestErrorMessages(t *testing.T) {
	last := errors.New("read: connection reset by peer")
	for _, tt := range []struct {
		give error
		want string
	}{
		{&ExhaustedError{Attempts: 3, Reason: ReasonAttempts, Err: last},
			"tank: gave up after 3 attempts (attempts_exhausted): read: connection reset by peer"},
		{&ExhaustedError{Attempts: 1, Reason: ReasonCanceled, cause: errors.New("shutdown")},
			"tank: gave up after 1 attempt (canceled): shutdown"},
		{&BodyError{Err: errors.New("gone")}, "tank: request body cannot be replayed: gone"},
		{&OptionError{"WithMaxAttempts", 0, "must be at least 1"}, "tank: WithMaxAttempts(0): must be at least 1"},
		{ReasonBudget, "budget_exhausted"},
	} {
		if got := tt.give.Error(); got != tt.want {
			t.Errorf("Error() = %q; want %q", got, tt.want)
		}
	}
	e := &ExhaustedError{Attempts: 2, Reason: ReasonCanceled, Err: last, cause: context.Canceled}
	if !errors.Is(e, last) || !errors.Is(e, ReasonCanceled) || !errors.Is(e, context.Canceled) {
		t.Error("ExhaustedError does not unwrap to its last error, reason and cause")
	}
	// Labels print as themselves, with %s, %v and in log/slog records.
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "reason", ReasonNotProcessed, "class", ClassThrottled)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "reason", ReasonNotProcessed, "class", ClassThrottled)
	for _, want := range []string{`"reason":"not_processed","class":"throttled"`, `reason=not_processed class=throttled`} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("slog records %q; want them to contain %q", logged.String(), want)
		}
	}
	if got := fmt.Sprintf("%s %v %s %v", ReasonNotProcessed, ReasonDeadline, ClassReset, ClassThrottled); got != "not_processed deadline reset throttled" {
		t.Errorf("Sprintf of labels = %q; want %q", got, "not_processed deadline reset throttled")
	}
	for _, v := range []Verdict{Pass, Retry, Stop} {
		if s := v.String(); s == "" || strings.Contains(s, "(") {
			t.Errorf("Verdict(%d).String() = %q", v, s)
		}
	}
}
