package middleware

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// FuzzOptions decodes its input into options given arbitrary values, then
// checks that newPolicy and a Transport built with them hold up:
//
//  1. newPolicy returns a policy, or an error that is an *OptionError; when
//     every value is one the documentation rules on, the error names the
//     first option given a value it cannot take, and nil when there is none.
//     NewBudget's errors are *OptionErrors too, for exactly the values it
//     documents as out of range.
//  2. A request sent through NewTransport(fake, opts...), in virtual time
//     (testing/synctest) under a caller's deadline, never panics; the result
//     is a response (with a Body that closes) or an error (*ExhaustedError,
//     or the *OptionError of invalid options, with no attempt made); it
//     never returns after the deadline; the request body and every GetBody
//     body are closed exactly once; attempts stay within the last
//     WithMaxAttempts; every response body is closed once, and a retried one
//     read to its end when it fits within the drain limit.
//  3. With the fuzzer's hooks installed: every attempt is seen once, no wait
//     is negative, a status outside 100-599 is not judged final, and a
//     malformed Retry-After ("-2", "soon") falls back to the backoff.
//
// The options include WithHedging and WithAdaptiveHedging with any values
// (a non-positive delay, a quantile outside (0, 1) or a negative maxHedges
// is an *OptionError); with hedging on, the checks allow for copies in
// flight at once: the response may be any copy's, hooks see attempts in
// the order they end, and dropped copies (Retry, no wait) are not waits.
// The checks run once the caller has closed the response and the bubble is
// idle, so that cancelled copies have been reaped.
//
// The fake transport answers from the script: 200, 503, 429 or 503 with a
// Retry-After, odd statuses (999, 600, 0, 99, ...), 502 with a body, a
// reset after the request was sent, a refused dial; past the script, one
// 200, then a permanent (certificate) error. Each call decides its answer
// when it arrives, then thinks (flags bits 11-14; at most 4096 hedging
// delays) before giving it, until its context ends; bit 15 trains
// WithAdaptiveHedging's tracker first.
func FuzzOptions(f *testing.F) {
	e := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	get, post, put := uint16(0), uint16(1), uint16(2)
	plainUnknown, plainKnown, withGetBody := uint16(3)<<2, uint16(2)<<2, uint16(1)<<2
	long := uint16(15) << 4 // 105-byte body
	deadline24h := uint16(3) << 8

	f.Add(foEncBufferLimit(math.MaxInt64), []byte{foOut503, foOut200}, post|plainUnknown|long|deadline24h)
	f.Add(foEncBufferLimit(math.MaxInt64), []byte{foOut503, foOut200}, post|plainKnown|long|deadline24h)
	f.Add(foEncBufferLimit(math.MaxInt64), []byte{foOutReset, foOut200}, put|plainUnknown|long|deadline24h)
	f.Add(foEncBufferLimit(math.MinInt64), []byte{foOut200}, post|plainUnknown)
	f.Add(foEncDrainLimit(math.MaxInt64), []byte{foOut502, 50, foOut200}, get|deadline24h)
	f.Add(e(foEncDrainLimit(math.MaxInt64), foEncMaxAttempts(5)), []byte{foOut502, 99, foOut502, 0, foOut200}, get|deadline24h)
	f.Add(foEncDrainLimit(0), []byte{foOut502, 0, foOut502, 1, foOut200}, get|deadline24h)
	f.Add(foEncDrainLimit(-1), []byte{foOut200}, get)
	f.Add(foEncDrainLimit(math.MinInt64), []byte{foOut200}, get)
	f.Add(e(foEncHooks(), foEncBackoff(time.Second, time.Second)), []byte{foOut503RA, 0 /* "-2" */, foOut200}, get|deadline24h)
	f.Add(e(foEncHooks(), foEncBackoff(time.Second, time.Second)), []byte{foOut429RA, 0 /* "-2" */, foOut200}, post|deadline24h)
	f.Add(e(foEncHooks(), foEncBackoff(time.Second, time.Second)), []byte{foOut503RA, 3 /* "soon" */, foOut200}, get|deadline24h)
	for i, code := range foOddStatuses {
		f.Add(foEncHooks(), []byte{foOutOdd, byte(i), foOut200}, get|deadline24h)
		if code == 999 || code == 600 || code == 0 {
			f.Add(foEncHooks(), []byte{foOutOdd, byte(i), foOut200}, post|withGetBody|deadline24h)
			f.Add([]byte{}, []byte{foOutOdd, byte(i), foOut200}, put|deadline24h)
		}
	}
	for _, b := range [][2]float64{{math.NaN(), 1}, {0.5, math.Inf(1)}, {-0.1, 0}, {0.2, 10}, {0, 0}, {1, math.MaxFloat64}, {math.Inf(-1), math.NaN()}} {
		f.Add(e(foEncBudget(b[0], b[1]), foEncMaxAttempts(6)), []byte{foOut503, foOut503, foOut503, foOut503, foOut200}, get|deadline24h)
	}
	f.Add(foEncMaxAttempts(math.MinInt64), []byte{foOut200}, get)
	f.Add(foEncMaxAttempts(math.MaxInt64), []byte{foOut503, foOut503, foOut429RA, 1, foOutReset, foOutRefused}, get|deadline24h)
	f.Add(e(foEncStatuses([]int{200}, nil), foEncMaxAttempts(math.MaxInt64)), []byte{foOut200}, get|deadline24h)
	f.Add(e(foEncStatuses([]int{999}, []int{0}), foEncStatuses([]int{503}, []int{503})), []byte{foOut200}, get)
	f.Add(foEncJitter(255), []byte{foOut200}, get)
	// Jitter draws come from the script after each answer: 255 is the
	// largest draw, just below 1.
	f.Add(e(foEncBackoff(math.MaxInt64, math.MaxInt64), foEncJitter(byte(JitterDecorrelated)), foEncHooks()), []byte{foOut503, 255, foOut503, 255, foOut200}, get|deadline24h)
	f.Add(e(foEncBackoff(5000, math.MaxInt64), foEncJitter(byte(JitterDecorrelated)), foEncHooks(), foEncMaxAttempts(math.MaxInt64)), bytes.Repeat([]byte{foOut503, 255}, 40), get|deadline24h)
	f.Add(e(foEncBackoff(time.Millisecond, math.MaxInt64), foEncJitter(byte(JitterFull)), foEncHooks(), foEncMaxAttempts(math.MaxInt64)), bytes.Repeat([]byte{foOut503, 255}, 40), get|deadline24h)
	f.Add(e(foEncBackoff(2*time.Second, time.Second)), []byte{foOut200}, get)
	f.Add(e(foEncAttemptHeader("X Bad"), foEncMaxAttempts(2)), []byte{foOut200}, get)
	f.Add(e(foEncAttemptHeader("X-Attempt"), foEncIdempotencyKeys(true)), []byte{foOut503, foOut200}, post|withGetBody|deadline24h)
	f.Add(e(foEncMethods("GET", ""), foEncMethods("POST")), []byte{foOutReset, foOut200}, post|deadline24h)
	f.Add(e(foEncRetryAfterCap(math.MaxInt64), foEncHooks()), []byte{foOut429RA, 4 /* huge */, foOut200}, get|deadline24h)
	f.Add(e(foEncAttemptTimeout(1), foEncGroups(1, 1, 1)), []byte{foOutRefused, foOutReset, foOut503, foOut200}, get|deadline24h)
	// Hedging: think times of 30ms (the later copies faster), delays of a
	// few milliseconds, so that hedges go out and win.
	think30, faster, train := uint16(3)<<11, uint16(1)<<14, uint16(1)<<15
	f.Add(e(foEncHooks(), foEncHedging(5*time.Millisecond, 2)), []byte{foOut503, foOut200, foOut200, foOut200}, get|deadline24h|think30|faster)
	f.Add(e(foEncHooks(), foEncHedging(5*time.Millisecond, 1), foEncMaxAttempts(4)), []byte{foOutReset, foOut200, foOut503, foOut200}, put|withGetBody|deadline24h|think30)
	f.Add(e(foEncHooks(), foEncHedging(time.Millisecond, 3), foEncDrainLimit(0)), []byte{foOut502, 40, foOut502, 9, foOut200, foOut200}, post|withGetBody|deadline24h|think30|faster|1<<10)
	f.Add(e(foEncHooks(), foEncHedging(5*time.Millisecond, 2)), []byte{foOut200}, post|withGetBody|deadline24h|think30) // no key: not hedged
	f.Add(e(foEncHooks(), foEncAdaptiveHedging(0.5, 2)), []byte{foOut503, foOut200, foOut200}, get|deadline24h|think30|faster|train)
	f.Add(e(foEncHooks(), foEncAdaptiveHedging(0.95, 1)), []byte{foOut200, foOut200}, get|deadline24h|think30|faster) // untrained
	f.Add(foEncHedging(5*time.Millisecond, 2), []byte{foOut200, foOut200, foOut200}, get|think30|faster)              // deadline 10ms
	f.Add(foEncHedging(0, 1), []byte{foOut200}, get)
	f.Add(foEncHedging(-1, 1), []byte{foOut200}, get)
	f.Add(foEncHedging(time.Millisecond, -1), []byte{foOut200}, get)
	f.Add(foEncHedging(time.Millisecond, 0), []byte{foOut200}, get|think30)
	f.Add(foEncHedging(math.MaxInt64, math.MaxInt64), []byte{foOut200}, get|think30)
	f.Add(foEncHedging(time.Millisecond, math.MaxInt64), []byte{foOut200, foOut200}, get|think30|deadline24h)
	f.Add(foEncHedging(time.Millisecond, math.MinInt64), []byte{foOut200}, get)
	for _, q := range []float64{0, 1, -0.5, math.NaN(), math.Inf(1), math.SmallestNonzeroFloat64, math.Nextafter(1, 0)} {
		f.Add(foEncAdaptiveHedging(q, 1), []byte{foOut200, foOut200}, get|think30|faster|train|deadline24h)
	}
	f.Add(e(foEncHedging(5*time.Millisecond, 2), foEncAdaptiveHedging(2, 1)), []byte{foOut200}, get) // the second is invalid

	f.Fuzz(func(t *testing.T, optData, script []byte, flags uint16) {
		d := foDecode(optData)
		desc := fmt.Sprintf("options %s; script %v; flags %#x", d.desc(), script, flags)
		for _, b := range d.budgetErrs {
			t.Log(b)
		}
		if d.budgetBad != "" {
			t.Fatalf("%s: %s", desc, d.budgetBad)
		}

		// 1. newPolicy: a policy or an *OptionError, as documented.
		var (
			p   *policy
			err error
		)
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("%s: newPolicy panicked: %v\n%s", desc, r, smStack())
				}
			}()
			p, err = newPolicy(d.opts...)
		}()
		var oe *OptionError
		switch {
		case (p == nil) == (err == nil):
			t.Fatalf("%s: newPolicy = %v, %v; want exactly one of a policy and an error", desc, p, err)
		case err != nil && !errors.As(err, &oe):
			t.Fatalf("%s: newPolicy error %v (%T); want an *OptionError", desc, err, err)
		}
		if want, known := d.wantErr(); known {
			switch {
			case want == "" && err != nil:
				t.Fatalf("%s: newPolicy error %v; every value is documented as valid", desc, err)
			case want != "" && err == nil:
				t.Fatalf("%s: newPolicy accepted the options; %s was given a value documented as invalid", desc, want)
			case want != "" && oe.Option != want:
				t.Fatalf("%s: newPolicy error %v; want the *OptionError of %s, the first invalid option", desc, err, want)
			}
		}

		// 2, 3. A request through the Transport, in virtual time.
		synctest.Test(t, func(t *testing.T) { foRoundTrip(t, d, err, script, flags, desc) })
	})
}

// Fake transport outcomes (script byte % foOuts).
const (
	foOut200     = iota
	foOut503     // no Retry-After
	foOut429RA   // Retry-After from foRetryAfters[next byte]
	foOut503RA   // Retry-After from foRetryAfters[next byte]
	foOutOdd     // status foOddStatuses[next byte]
	foOutReset   // ECONNRESET after the request was sent (full trace)
	foOutRefused // dial refused, nothing sent
	foOut502     // 502 with a body of (next byte) bytes
	foOuts
)

var (
	foOddStatuses = []int{999, 600, 0, 99, 100, 500, 501, 504, 404, -1, 1000, 429}
	// The Retry-After values; foMalformedRA marks those RFC 9110 rejects.
	foRetryAfters = []string{"-2", "0", "1", "soon", "99999999999999999999", "date+2s", "", " 2 ", "-0", "+1", "1e3", "date-5s"}
	foMalformedRA = map[string]bool{"-2": true, "soon": true, "": true, "-0": true, "+1": true, "1e3": true}
)

// The option kinds (option byte % foOpts).
const (
	foMaxAttempts = iota
	foGroups
	foBackoff
	foJitter
	foRetryAfterCap
	foAttemptTimeout
	foBufferLimit
	foDrainLimit
	foStatuses
	foMethods
	foAttemptHeader
	foIdempotencyKeys
	foBudget
	foHooks
	foSchedule
	foClassifier
	foNilBudget
	foNil
	foOpts
)

// Kind bytes from foExt on pick the hedging options (even: WithHedging,
// odd: WithAdaptiveHedging); below, byte % foOpts picks as ever, so that
// the stored inputs keep their meaning.
const foExt = 216

// What the documentation says of a value.
const (
	foValid = iota
	foInvalid
	foUnknown // the documentation does not rule on it: either outcome is fine
)

// foReader hands out input bytes; past the end it gives zeros.
type foReader struct{ b []byte }

func (r *foReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *foReader) raw64() uint64 {
	var v uint64
	for range 8 {
		v = v<<8 | uint64(r.byte())
	}
	return v
}

// int64 reads a selector byte: 0, -1, MaxInt64, MinInt64, 1, a small
// positive or negative value (next byte), or 8 raw bytes.
func (r *foReader) int64() int64 {
	switch r.byte() % 8 {
	case 0:
		return 0
	case 1:
		return -1
	case 2:
		return math.MaxInt64
	case 3:
		return math.MinInt64
	case 4:
		return 1
	case 5:
		return int64(r.byte())
	case 6:
		return -int64(r.byte()) - 1
	}
	return int64(r.raw64())
}

// dur is int64 with the small values in milliseconds (5) or seconds (6).
func (r *foReader) dur() time.Duration {
	if len(r.b) > 0 {
		switch r.b[0] % 8 {
		case 5:
			r.byte()
			return time.Duration(r.byte()) * time.Millisecond
		case 6:
			r.byte()
			return time.Duration(r.byte()) * time.Second
		}
	}
	return time.Duration(r.int64())
}

func (r *foReader) f64() float64 {
	switch r.byte() % 8 {
	case 0:
		return 0
	case 1:
		return math.NaN()
	case 2:
		return math.Inf(1)
	case 3:
		return math.Inf(-1)
	case 4:
		return 1
	case 5:
		return float64(r.byte()) / 100
	case 6:
		return -float64(r.byte())/100 - 0.01
	}
	return math.Float64frombits(r.raw64())
}

var foStrings = []string{"", "GET", "get", "POST", "PATCH", " ", "\x00", "X-Attempt", "X Attempt", "Ünicode",
	"a:b", "Idempotency-Key", strings.Repeat("A", 300), "\r\n", "x-envoy-attempt-count", "Host"}

func (r *foReader) str() string {
	if r.byte()%2 == 0 {
		return foStrings[int(r.byte())%len(foStrings)]
	}
	n := int(r.byte()) % 24
	var b []byte
	for range n {
		b = append(b, r.byte())
	}
	return string(b)
}

func (r *foReader) status() int {
	switch r.byte() % 3 {
	case 0:
		return 100 + int(r.byte())%500
	case 1:
		return []int{0, 99, 100, 599, 600, 999, -1, 429, 503, 200, 501}[int(r.byte())%11]
	}
	return int(r.int64())
}

func (r *foReader) statuses() []int {
	var s []int
	for range r.byte() % 5 {
		s = append(s, r.status())
	}
	return s
}

// foObs is what the fuzzer's hooks saw. A hedged request's reaper runs
// hooks on a goroutine of its own.
type foObs struct {
	mu   sync.Mutex
	recs []Attempt
	ends int
}

// foDecoded is the options decoded from the input and the model of them.
type foDecoded struct {
	opts       []Option
	names      []string
	verdicts   []int // foValid, foInvalid, foUnknown per option
	descs      []string
	budgetErrs []string
	budgetBad  string // NewBudget broke its contract

	// The policy the options make when valid (the last setting wins).
	maxAttempts int
	drainLimit  int64
	obs         *foObs        // the first hooks' record, nil without hooks
	hedging     bool          // the last valid hedging option turns hedging on
	maxHedges   int           // its maxHedges
	hedgeDelay  time.Duration // its delay (0: adaptive)
}

func (d *foDecoded) add(o Option, name string, verdict int, desc string) {
	d.opts, d.names, d.verdicts, d.descs = append(d.opts, o), append(d.names, name), append(d.verdicts, verdict), append(d.descs, desc)
}

func (d *foDecoded) desc() string { return "[" + strings.Join(d.descs, ", ") + "]" }

// wantErr returns the name of the first option given an invalid value (""
// for none); known is false when an option the documentation does not rule
// on comes first.
func (d *foDecoded) wantErr() (name string, known bool) {
	for i, v := range d.verdicts {
		switch v {
		case foInvalid:
			return d.names[i], true
		case foUnknown:
			return "", false
		}
	}
	// Every option is valid alone; a schedule given with a backoff option
	// is an error, in any order.
	if slices.Contains(d.names, "WithSchedule") && (slices.Contains(d.names, "WithBackoff") || slices.Contains(d.names, "WithJitter")) {
		return "WithSchedule", true
	}
	return "", true
}

func foVerdict(ok bool) int {
	if ok {
		return foValid
	}
	return foInvalid
}

const foMaxOpts = 16

func foDecode(data []byte) *foDecoded {
	r := &foReader{b: data[:min(len(data), 512)]}
	d := &foDecoded{maxAttempts: defaultMaxAttempts, drainLimit: defaultDrainLimit}
	for len(d.opts) < foMaxOpts && len(r.b) > 0 {
		b := r.byte()
		if b >= foExt {
			d.decodeHedging(r, b)
			continue
		}
		switch k := int(b) % foOpts; k {
		case foMaxAttempts:
			n := r.int64()
			if n == int64(int(n)) && n >= 1 {
				d.maxAttempts = int(n)
			}
			d.add(WithMaxAttempts(int(n)), "WithMaxAttempts", foVerdict(int(n) >= 1), fmt.Sprintf("WithMaxAttempts(%d)", int(n)))
		case foGroups:
			a, b, c := int(r.int64()), int(r.int64()), int(r.int64())
			d.add(WithGroupAttempts(a, b, c), "WithGroupAttempts", foVerdict(a >= 0 && b >= 0 && c >= 0), fmt.Sprintf("WithGroupAttempts(%d, %d, %d)", a, b, c))
		case foBackoff:
			i, m := r.dur(), r.dur()
			d.add(WithBackoff(i, m), "WithBackoff", foVerdict(0 <= i && i <= m), fmt.Sprintf("WithBackoff(%d, %d)", i, m))
		case foJitter:
			j := Jitter(r.byte())
			d.add(WithJitter(j), "WithJitter", foVerdict(j <= JitterNone), fmt.Sprintf("WithJitter(%d)", j))
		case foRetryAfterCap:
			c := r.dur()
			d.add(WithRetryAfterCap(c), "WithRetryAfterCap", foVerdict(c >= 0), fmt.Sprintf("WithRetryAfterCap(%d)", c))
		case foAttemptTimeout:
			c := r.dur()
			d.add(WithAttemptTimeout(c), "WithAttemptTimeout", foVerdict(c >= 0), fmt.Sprintf("WithAttemptTimeout(%d)", c))
		case foBufferLimit:
			n := r.int64()
			d.add(WithBufferLimit(n), "WithBufferLimit", foVerdict(n >= 0), fmt.Sprintf("WithBufferLimit(%d)", n))
		case foDrainLimit:
			n := r.int64()
			if n >= 0 {
				d.drainLimit = n
			}
			d.add(WithDrainLimit(n), "WithDrainLimit", foVerdict(n >= 0), fmt.Sprintf("WithDrainLimit(%d)", n))
		case foStatuses:
			a, b := r.statuses(), r.statuses()
			ok := true
			for _, c := range a {
				ok = ok && c >= 100 && c <= 599
			}
			for _, c := range b {
				ok = ok && c >= 100 && c <= 599 && !slices.Contains(a, c)
			}
			d.add(WithStatuses(a, b), "WithStatuses", foVerdict(ok), fmt.Sprintf("WithStatuses(%v, %v)", a, b))
		case foMethods:
			var ms []string
			for range r.byte() % 4 {
				ms = append(ms, r.str())
			}
			v := foValid
			for _, m := range ms {
				switch {
				case m == "":
					v = foInvalid
				case !validHeaderName(m) && v == foValid: // methods are tokens too
					v = foUnknown
				}
			}
			d.add(WithReplayableMethods(ms...), "WithReplayableMethods", v, fmt.Sprintf("WithReplayableMethods(%q)", ms))
		case foAttemptHeader:
			s := r.str()
			v := foVerdict(s == "" || validHeaderName(s))
			switch http.CanonicalHeaderKey(s) {
			case "Host", "Content-Length", "Transfer-Encoding", "Connection", idempotencyKey, idempotencyKeyAlt:
				v = foUnknown // a token, but a header tank may refuse to set
			}
			d.add(WithAttemptHeader(s), "WithAttemptHeader", v, fmt.Sprintf("WithAttemptHeader(%q)", s))
		case foIdempotencyKeys:
			on := r.byte()%2 == 1
			d.add(WithIdempotencyKeys(on), "WithIdempotencyKeys", foValid, fmt.Sprintf("WithIdempotencyKeys(%v)", on))
		case foBudget:
			ratio, perSec := r.f64(), r.f64()
			var b *Budget
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						d.budgetBad = fmt.Sprintf("NewBudget(%v, %v, nil) panicked: %v", ratio, perSec, p)
					}
				}()
				b, err = NewBudget(ratio, perSec, nil)
			}()
			wantOK := ratio >= 0 && ratio <= 1 && perSec >= 0 && !math.IsInf(perSec, 0)
			var oe *OptionError
			switch {
			case d.budgetBad != "":
			case (b == nil) == (err == nil):
				d.budgetBad = fmt.Sprintf("NewBudget(%v, %v, nil) = %v, %v; want exactly one of a budget and an error", ratio, perSec, b, err)
			case err != nil && !errors.As(err, &oe):
				d.budgetBad = fmt.Sprintf("NewBudget(%v, %v, nil) error %v (%T); want an *OptionError", ratio, perSec, err, err)
			case (err == nil) != wantOK:
				d.budgetBad = fmt.Sprintf("NewBudget(%v, %v, nil) error %v; documented valid: %v", ratio, perSec, err, wantOK)
			}
			if err != nil {
				d.budgetErrs = append(d.budgetErrs, err.Error())
				continue
			}
			if b != nil {
				d.add(WithBudget(b), "WithBudget", foValid, fmt.Sprintf("WithBudget(NewBudget(%v, %v))", ratio, perSec))
			}
		case foHooks:
			obs := &foObs{}
			if d.obs == nil {
				d.obs = obs
			}
			d.add(WithHooks(Hooks{
				AttemptEnd: func(_ context.Context, a *Attempt) {
					obs.mu.Lock()
					obs.recs = append(obs.recs, *a)
					obs.mu.Unlock()
				},
				RequestEnd: func(context.Context, *Attempt) {
					obs.mu.Lock()
					obs.ends++
					obs.mu.Unlock()
				},
			}), "WithHooks", foValid, "WithHooks(observer)")
		case foSchedule:
			if r.byte()%8 == 0 {
				d.add(WithSchedule(nil), "WithSchedule", foInvalid, "WithSchedule(nil)")
				continue
			}
			n := 1 + int(r.byte())%4
			waits, oks := make([]time.Duration, n), make([]bool, n)
			for i := range n {
				waits[i], oks[i] = r.dur(), r.byte()%4 != 0
			}
			d.add(WithSchedule(func() func(int) (time.Duration, bool) {
				return func(k int) (time.Duration, bool) { return waits[(k-1)%n], oks[(k-1)%n] }
			}), "WithSchedule", foValid, fmt.Sprintf("WithSchedule(%v, %v)", waits, oks))
		case foClassifier:
			if r.byte()%8 == 0 {
				d.add(WithClassifier(nil), "WithClassifier", foInvalid, "WithClassifier(nil)")
				continue
			}
			var vs [6]Verdict
			for i := range vs {
				vs[i] = Verdict(r.byte() % 4) // 3 is no verdict tank knows
			}
			d.add(WithClassifier(func(a *Attempt) Verdict {
				if a.Number < 1 || a.Number > len(vs) {
					return Pass
				}
				return vs[a.Number-1]
			}), "WithClassifier", foValid, fmt.Sprintf("WithClassifier(%v)", vs))
		case foNilBudget:
			d.add(WithBudget(nil), "WithBudget", foUnknown, "WithBudget(nil)")
		case foNil:
			d.add(nil, "nil", foValid, "nil")
		}
	}
	return d
}

// decodeHedging decodes WithHedging or WithAdaptiveHedging (kind byte b).
func (d *foDecoded) decodeHedging(r *foReader, b byte) {
	if (b-foExt)%2 == 0 {
		delay := r.dur()
		k := int(r.int64())
		ok := delay > 0 && k >= 0
		if ok {
			d.hedging, d.maxHedges, d.hedgeDelay = k > 0, k, delay
		}
		d.add(WithHedging(delay, k), "WithHedging", foVerdict(ok), fmt.Sprintf("WithHedging(%d, %d)", delay, k))
		return
	}
	q := r.f64()
	k := int(r.int64())
	ok := q > 0 && q < 1 && k >= 0
	if ok {
		d.hedging, d.maxHedges, d.hedgeDelay = k > 0, k, 0
	}
	d.add(WithAdaptiveHedging(q, k), "WithAdaptiveHedging", foVerdict(ok), fmt.Sprintf("WithAdaptiveHedging(%v, %d)", q, k))
}

type foCall struct {
	status int
	ra     string // the Retry-After sent, when hasRA
	hasRA  bool
	body   *smRespBody
	cut    bool // its context ended while it thought
}

// foFake is the wrapped transport, answering from the script. The copies
// of a hedged request call it at once; mu guards it.
type foFake struct {
	mu    sync.Mutex
	r     *foReader
	calls []*foCall
	extra int // answers given past the script
	think func(n int) time.Duration
}

// RoundTrip decides the call's answer when it arrives, then thinks before
// giving it; a call whose context ends while it thinks returns the
// context's error.
func (f *foFake) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	c := &foCall{}
	f.calls = append(f.calls, c)
	n := len(f.calls)
	resp, err := f.answer(req, c, n)
	f.mu.Unlock()
	if d := f.think(n); d > 0 && req.Context().Err() == nil && !smSleep(req.Context(), d) {
		if resp != nil {
			f.mu.Lock()
			c.body, c.cut = nil, true // never seen by tank
			f.mu.Unlock()
		}
		return nil, req.Context().Err()
	}
	return resp, err
}

// answer is RoundTrip's answer to the n-th call; f.mu is held.
func (f *foFake) answer(req *http.Request, c *foCall, n int) (*http.Response, error) {
	ctx := req.Context()
	tr := httptrace.ContextClientTrace(ctx)
	sent := func() {
		if tr != nil && tr.GetConn != nil {
			tr.GetConn("api.test:80")
		}
		if tr != nil && tr.GotConn != nil {
			tr.GotConn(httptrace.GotConnInfo{})
		}
		if tr != nil && tr.WroteHeaders != nil {
			tr.WroteHeaders()
		}
		if req.Body != nil {
			io.Copy(io.Discard, req.Body)
			req.Body.Close()
		}
	}
	if err := ctx.Err(); err != nil {
		smCloseBody(req)
		return nil, err
	}
	var out int
	switch {
	case len(f.r.b) > 0:
		out = int(f.r.byte()) % foOuts
	case f.extra == 0 && n < 100:
		f.extra++
		out = foOut200
	default:
		// A permanent error: a certificate nobody trusts. Nothing is sent.
		if tr != nil && tr.GetConn != nil {
			tr.GetConn("api.test:443")
		}
		smCloseBody(req)
		return nil, x509.UnknownAuthorityError{}
	}
	size := 0
	switch out {
	case foOut200:
		c.status = 200
	case foOut503:
		c.status = 503
	case foOut429RA, foOut503RA:
		c.status = 429
		if out == foOut503RA {
			c.status = 503
		}
		c.ra, c.hasRA = foRetryAfters[int(f.r.byte())%len(foRetryAfters)], true
		switch c.ra {
		case "date+2s":
			c.ra = time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
		case "date-5s":
			c.ra = time.Now().Add(-5 * time.Second).UTC().Format(http.TimeFormat)
		}
	case foOutOdd:
		c.status = foOddStatuses[int(f.r.byte())%len(foOddStatuses)]
	case foOutReset:
		sent()
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	case foOutRefused:
		if tr != nil && tr.GetConn != nil {
			tr.GetConn("api.test:80")
		}
		smCloseBody(req)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	case foOut502:
		c.status = 502
		size = int(f.r.byte())
	}
	sent()
	h := http.Header{"X-Fo-Attempt": {strconv.Itoa(n)}}
	if c.hasRA {
		h[retryAfterHeader] = []string{c.ra}
	}
	c.body = &smRespBody{r: strings.NewReader(strings.Repeat("b", size)), size: size}
	return &http.Response{StatusCode: c.status, Status: strconv.Itoa(c.status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: c.body, ContentLength: int64(size), Request: req}, nil
}

// foRoundTrip sends one request through NewTransport(fake, d.opts...). It
// runs inside a synctest bubble.
func foRoundTrip(t *testing.T, d *foDecoded, polErr error, script []byte, flags uint16, desc string) {
	think, faster := time.Duration(flags>>11&7)*10*time.Millisecond, flags>>14&1 == 1
	if polErr == nil && d.hedging && d.hedgeDelay > 0 && d.hedgeDelay < think/4096 {
		// A round wakes every delay until its copies come back (while the
		// budget refuses hedges, by design; while the round is full, see
		// TestHedgeNoTicksWhileFull): each wake-up costs real time even in
		// a bubble, so copies take at most 4096 delays.
		think = d.hedgeDelay * 4096
	}
	fake := &foFake{r: &foReader{b: script[:min(len(script), 256)]}, think: func(n int) time.Duration {
		if faster {
			return think / time.Duration(n)
		}
		return think
	}}
	tr := NewTransport(fake, d.opts...)
	if tr.p != nil {
		// Jitter draws from the script too, extremes included.
		tr.p.rand = func() float64 {
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if b := fake.r.byte(); b < 255 {
				return float64(b) / 256
			}
			return math.Nextafter(1, 0)
		}
		if h := tr.p.hedge; h != nil && h.latency != nil && flags>>15&1 == 1 {
			// The adaptive tracker has seen the fake's think times.
			for n := range 60 {
				h.latency.Observe("api.test", fake.think(1+n%3))
			}
		}
	}
	hedging := polErr == nil && d.hedging

	method := []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch}[flags&3]
	payload := bytes.Repeat([]byte("payload"), int(flags>>4&15))
	dl := []time.Duration{10 * time.Millisecond, time.Second, time.Minute, 24 * time.Hour}[flags>>8&3]
	ctx, cancel := context.WithTimeout(context.Background(), dl)
	defer cancel()
	deadline, _ := ctx.Deadline()
	req, err := http.NewRequestWithContext(ctx, method, "http://api.test/fuzz", nil)
	if err != nil {
		t.Fatal(err)
	}
	if flags>>10&1 == 1 {
		req.Header.Set(idempotencyKey, "fuzz-key")
	}
	var body *smReqBody
	var getBodies []*smReqBody
	switch flags >> 2 & 3 {
	case 1:
		body = &smReqBody{Reader: bytes.NewReader(payload)}
		req.Body, req.ContentLength = body, int64(len(payload))
		req.GetBody = func() (io.ReadCloser, error) {
			b := &smReqBody{Reader: bytes.NewReader(payload)}
			getBodies = append(getBodies, b)
			return b, nil
		}
	case 2, 3:
		body = &smReqBody{Reader: io.MultiReader(bytes.NewReader(payload))}
		req.Body = body
		if flags>>2&3 == 2 {
			req.ContentLength = int64(len(payload))
		}
	}
	desc = fmt.Sprintf("%s; %s body %d bytes (kind %d), deadline %v, think %v (faster %v)", desc, method, len(payload), flags>>2&3, dl, think, faster)

	var resp *http.Response
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("%s: RoundTrip panicked: %v\n%s", desc, r, smStack())
			}
		}()
		resp, err = tr.RoundTrip(req)
	}()
	if now := time.Now(); now.After(deadline) {
		t.Errorf("%s: RoundTrip returned %v after the deadline", desc, now.Sub(deadline))
	}

	// The caller reads and closes the response; then the copies of a
	// hedged request that tank cancelled are reaped.
	if resp != nil && resp.Body != nil {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: reading or closing the response body panicked: %v\n%s", desc, r, smStack())
				}
			}()
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	synctest.Wait()
	fake.mu.Lock()
	defer fake.mu.Unlock()
	calls := fake.calls

	// The result.
	var ee *ExhaustedError
	var oe *OptionError
	switch {
	case (resp == nil) == (err == nil):
		t.Fatalf("%s: RoundTrip = %v, %v; want exactly one of a response and an error", desc, resp, err)
	case polErr != nil:
		if !errors.As(err, &oe) || len(calls) != 0 {
			t.Fatalf("%s: invalid options (%v): RoundTrip error %v after %d attempts; want the *OptionError and none", desc, polErr, err, len(calls))
		}
	case err != nil && !errors.As(err, &ee):
		t.Fatalf("%s: RoundTrip error %v (%T); want an *ExhaustedError", desc, err, err)
	case ee != nil && ee.Attempts != len(calls):
		t.Errorf("%s: ExhaustedError.Attempts = %d; %d attempts made", desc, ee.Attempts, len(calls))
	}
	winner := 0 // the attempt whose response was returned
	if resp != nil {
		if resp.Body == nil {
			t.Errorf("%s: response %d with a nil Body", desc, resp.StatusCode)
		}
		got := resp.Header.Get("X-Fo-Attempt")
		winner, _ = strconv.Atoi(got)
		switch {
		case hedging && (winner < 1 || winner > len(calls)):
			t.Errorf("%s: returned the response of attempt %q; %d attempts made", desc, got, len(calls))
		case !hedging && winner != len(calls):
			t.Errorf("%s: returned the response of attempt %q; %d attempts made", desc, got, len(calls))
		}
	}

	// Attempts.
	if polErr == nil && len(calls) > d.maxAttempts {
		t.Errorf("%s: %d attempts; WithMaxAttempts(%d)", desc, len(calls), d.maxAttempts)
	}
	if len(calls) >= 100 && (polErr != nil || d.maxAttempts < 100) {
		// More attempts than allowed is caught above; this catches a loop
		// that ignores the cap. A cap of 100 or more with a long script of
		// retryable answers may rightly make that many.
		t.Errorf("%s: %d attempts: runaway", desc, len(calls))
	}

	// Bodies.
	if body != nil {
		if n := body.closed(); n != 1 {
			t.Errorf("%s: request body closed %d times; want exactly 1", desc, n)
		}
	}
	for i, b := range getBodies {
		if n := b.closed(); n != 1 {
			t.Errorf("%s: GetBody body %d of %d closed %d times; want exactly 1", desc, i+1, len(getBodies), n)
		}
	}
	for i, c := range calls {
		if c.body == nil {
			continue
		}
		final := i+1 == winner
		closes, eof := c.body.state()
		if closes != 1 {
			t.Errorf("%s: attempt %d's %d response body (final %v) closed %d times; want exactly 1", desc, i+1, c.status, final, closes)
		}
		if !final && int64(c.body.size) <= d.drainLimit && !eof {
			t.Errorf("%s: attempt %d's retried or losing %d response body of %d bytes not read to its end; WithDrainLimit(%d)", desc, i+1, c.status, c.body.size, d.drainLimit)
		}
	}

	// What the hooks saw: with hedging, attempts end in any order.
	if d.obs == nil || polErr != nil {
		return
	}
	d.obs.mu.Lock()
	defer d.obs.mu.Unlock()
	if len(d.obs.recs) != len(calls) || d.obs.ends != 1 {
		t.Fatalf("%s: AttemptEnd ran %d times, RequestEnd %d times; %d attempts made", desc, len(d.obs.recs), d.obs.ends, len(calls))
	}
	seen := map[int]bool{}
	for i, a := range d.obs.recs {
		if a.Number < 1 || a.Number > len(calls) || seen[a.Number] || !hedging && a.Number != i+1 {
			t.Fatalf("%s: AttemptEnd %d saw Attempt.Number %d (%d attempts; hedging %v)", desc, i+1, a.Number, len(calls), hedging)
		}
		seen[a.Number] = true
		c, n := calls[a.Number-1], a.Number
		if a.Verdict == Retry && a.Sleep < 0 {
			t.Errorf("%s: attempt %d: negative wait %v (%s)", desc, n, a.Sleep, a.SleepSource)
		}
		if a.Err == nil && (c.status < 100 || c.status > 599) && (a.Class == ClassFinal || a.Reason == ReasonFinal) {
			t.Errorf("%s: attempt %d: status %d judged %s (%s); want it treated as a 5xx (RFC 9110 §15)", desc, n, c.status, a.Class, a.Reason)
		}
		dropped := hedging && a.Verdict == Retry && a.SleepSource == "" // a copy dropped while others carried on: no wait
		// With hedging, a well-formed Retry-After on a copy dropped in the
		// same round binds the wait too.
		heldByOther := hedging && a.SleepSource == SleepRetryAfter && slices.ContainsFunc(calls, func(o *foCall) bool {
			return o != c && (o.status == 429 || o.status == 503) && o.hasRA && !foMalformedRA[o.ra]
		})
		if (c.status == 429 || c.status == 503) && c.hasRA && foMalformedRA[c.ra] && a.Verdict == Retry && !dropped &&
			(a.SleepSource != SleepBackoff && !heldByOther || !errors.Is(a.RetryAfterErr, ErrRetryAfter)) {
			t.Errorf("%s: attempt %d: %d with malformed Retry-After %q: waited %v from %q, RetryAfterErr %v; want the backoff and ErrRetryAfter",
				desc, n, c.status, c.ra, a.Sleep, a.SleepSource, a.RetryAfterErr)
		}
		if a.Hedge && !hedging {
			t.Errorf("%s: attempt %d: Attempt.Hedge without hedging", desc, n)
		}
	}
}

// Encoders for the seed corpus: they write what foDecode reads.

func foEncInt64(v int64) []byte {
	switch v {
	case 0:
		return []byte{0}
	case -1:
		return []byte{1}
	case math.MaxInt64:
		return []byte{2}
	case math.MinInt64:
		return []byte{3}
	case 1:
		return []byte{4}
	}
	return binary.BigEndian.AppendUint64([]byte{7}, uint64(v))
}

func foEncBufferLimit(n int64) []byte   { return append([]byte{foBufferLimit}, foEncInt64(n)...) }
func foEncDrainLimit(n int64) []byte    { return append([]byte{foDrainLimit}, foEncInt64(n)...) }
func foEncMaxAttempts(n int64) []byte   { return append([]byte{foMaxAttempts}, foEncInt64(n)...) }
func foEncRetryAfterCap(d int64) []byte { return append([]byte{foRetryAfterCap}, foEncInt64(d)...) }
func foEncAttemptTimeout(d int64) []byte {
	return append([]byte{foAttemptTimeout}, foEncInt64(d)...)
}
func foEncHooks() []byte        { return []byte{foHooks} }
func foEncJitter(j byte) []byte { return []byte{foJitter, j} }
func foEncIdempotencyKeys(on bool) []byte {
	if on {
		return []byte{foIdempotencyKeys, 1}
	}
	return []byte{foIdempotencyKeys, 0}
}

func foEncBackoff(initial, max time.Duration) []byte {
	return append(append([]byte{foBackoff}, foEncInt64(int64(initial))...), foEncInt64(int64(max))...)
}

func foEncGroups(a, b, c int64) []byte {
	return append(append(append([]byte{foGroups}, foEncInt64(a)...), foEncInt64(b)...), foEncInt64(c)...)
}

func foEncStr(s string) []byte { return append([]byte{1, byte(len(s))}, s...) }

func foEncAttemptHeader(s string) []byte { return append([]byte{foAttemptHeader}, foEncStr(s)...) }

func foEncMethods(ms ...string) []byte {
	b := []byte{foMethods, byte(len(ms))}
	for _, m := range ms {
		b = append(b, foEncStr(m)...)
	}
	return b
}

func foEncStatuses(anyMethod, replayable []int) []byte {
	b := []byte{foStatuses}
	for _, list := range [][]int{anyMethod, replayable} {
		b = append(b, byte(len(list)))
		for _, c := range list {
			b = append(b, 2)
			b = append(b, foEncInt64(int64(c))...)
		}
	}
	return b
}

func foEncF64(v float64) []byte {
	return binary.BigEndian.AppendUint64([]byte{7}, math.Float64bits(v))
}

func foEncHedging(delay time.Duration, maxHedges int64) []byte {
	return append(append([]byte{foExt}, foEncInt64(int64(delay))...), foEncInt64(maxHedges)...)
}

func foEncAdaptiveHedging(quantile float64, maxHedges int64) []byte {
	return append(append([]byte{foExt + 1}, foEncF64(quantile)...), foEncInt64(maxHedges)...)
}

func foEncBudget(ratio, perSecond float64) []byte {
	return append(append([]byte{foBudget}, foEncF64(ratio)...), foEncF64(perSecond)...)
}
