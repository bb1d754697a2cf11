package faults

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/tankhttp/tank/middleware"
)

// newProxy starts an embedded toxiproxy (in-process, without its HTTP API)
// in front of upstream, with the given toxics (JSON) added before any client
// dials: a reset_peer toxic only resets links created after it (an older
// keep-alive link sees a FIN, io.EOF, instead of a reset).
func newProxy(t *testing.T, upstream string, toxics ...string) *toxiproxy.Proxy {
	t.Helper()
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(api, "tank", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Removing the toxics interrupts those that hold data on a timer
		// (latency), so no toxiproxy goroutine outlives the test.
		p.Toxics.ResetToxics(context.Background())
		p.Stop()
	})
	for _, js := range toxics {
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.Fatalf("add toxic %s: %v", js, err)
		}
	}
	return p
}

// respBody is what the toxiproxy rows' server answers: 32 KiB, so a
// limit_data toxic can cut it inside the body and bandwidth makes it slow.
var respBody = bytes.Repeat([]byte("0123456789abcdef"), 2048)

// processingHandler counts a request as processed once it has read the
// whole body intact, then answers 200 with respBody.
func processingHandler(h *hits) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if r.Method != http.MethodGet && string(b) != payload {
			http.Error(w, "corrupt body: "+string(b), http.StatusBadRequest)
			return
		}
		h.add(r.Method)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(respBody)
	})
}

// toxiRow is one network fault. The expectations follow from the fault:
// a success row (class "") returns 200 after one attempt; a fault row is
// retried up to 3 attempts when the request is replayable and stopped after
// one otherwise; lost rows never reach the handler.
type toxiRow struct {
	name      string
	toxics    []string
	attemptTO time.Duration
	class     middleware.Class // every attempt's class; "" for success rows
	alt       middleware.Class // a class some attempts may show instead of class
	lost      bool             // the request dies in transit: the handler never runs
	cutBody   bool             // success row whose body read fails (limit_data inside the body)
}

var toxiRows = []toxiRow{
	{
		// The response is held 1.5s; each attempt gives up after 250ms.
		// The server processed every attempt: only replayable requests may
		// have a second one.
		name:      "latency/attempt_timeout",
		toxics:    []string{`{"name":"lat","type":"latency","stream":"downstream","toxicity":1,"attributes":{"latency":1500}}`},
		attemptTO: 250 * time.Millisecond,
		class:     middleware.ClassTimeout,
	},
	{
		// Black hole after the server: processed, no answer ever.
		name:      "timeout/downstream",
		toxics:    []string{`{"name":"bh","type":"timeout","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`},
		attemptTO: 250 * time.Millisecond,
		class:     middleware.ClassTimeout,
	},
	{
		// Black hole before the server: lost in transit. The client cannot
		// tell this from the row above, so a POST is still not retried.
		name:      "timeout/upstream",
		toxics:    []string{`{"name":"bh","type":"timeout","stream":"upstream","toxicity":1,"attributes":{"timeout":0}}`},
		attemptTO: 250 * time.Millisecond,
		class:     middleware.ClassTimeout,
		lost:      true,
	},
	{
		// The request is reset on its way: server hits 0, client sees
		// ECONNRESET. When the reset lands while net/http still writes the
		// body (about 1 POST in 8 here), net/http reports the body write's
		// "use of closed network connection" instead, which tank classes
		// transport: same group, same decision.
		name:   "reset_peer/upstream",
		toxics: []string{`{"name":"rst","type":"reset_peer","stream":"upstream","toxicity":1,"attributes":{"timeout":0}}`},
		class:  middleware.ClassReset,
		alt:    middleware.ClassTransport,
		lost:   true,
	},
	{
		// Processed, then the response is reset: the same ECONNRESET. A POST
		// must be processed exactly once.
		name:   "reset_peer/downstream",
		toxics: []string{`{"name":"rst","type":"reset_peer","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`},
		class:  middleware.ClassReset,
	},
	{
		// The status line and 3 bytes of a header, then close. net/http
		// reports the cut header line as "malformed MIME header: missing
		// colon", not as an unexpected EOF, so the class is protocol; the
		// decision is the same as for eof (sent, no usable answer).
		name:   "limit_data/in_headers",
		toxics: []string{`{"name":"lim","type":"limit_data","stream":"downstream","toxicity":1,"attributes":{"bytes":20}}`},
		class:  middleware.ClassProtocol,
	},
	{
		// Headers and 4 KiB of a 32 KiB body: the response is returned (tank
		// cannot retry what it has handed over); reading the body fails.
		name:    "limit_data/in_body",
		toxics:  []string{`{"name":"lim","type":"limit_data","stream":"downstream","toxicity":1,"attributes":{"bytes":4096}}`},
		cutBody: true,
	},
	{
		// 32 KiB at 128 KB/s: a slow body is not a fault.
		name:   "bandwidth",
		toxics: []string{`{"name":"bw","type":"bandwidth","stream":"downstream","toxicity":1,"attributes":{"rate":128}}`},
	},
	{
		// Request and response cut into small TCP segments: bodies intact.
		name: "slicer",
		toxics: []string{
			`{"name":"sl_up","type":"slicer","stream":"upstream","toxicity":1,"attributes":{"average_size":8,"size_variation":4,"delay":10}}`,
			`{"name":"sl_down","type":"slicer","stream":"downstream","toxicity":1,"attributes":{"average_size":100,"size_variation":50,"delay":10}}`,
		},
	},
}

// TestToxiproxy runs every toxiproxy row for GET, PUT, POST and POST with an
// Idempotency-Key through every front door: with hooks (observing each
// attempt's class and decision) through the Transport, resty and backoff,
// and, where the policy allows it, on the Transport's plain success path
// (no hooks, no attempt timeout), which judges only failed first attempts.
func TestToxiproxy(t *testing.T) {
	for _, row := range toxiRows {
		for _, m := range methods {
			for _, fd := range frontDoors {
				if fd.plain && row.attemptTO > 0 {
					continue // an attempt timeout always takes the full path
				}
				t.Run(row.name+"/"+m.name+"/"+fd.name, func(t *testing.T) { runToxiRow(t, row, m, fd) })
			}
		}
	}
}

func runToxiRow(t *testing.T, row toxiRow, m method, fd frontDoor) {
	h := newHits()
	srv, states := newServer(t, processingHandler(h))
	p := newProxy(t, srv.Listener.Addr().String(), row.toxics...)

	d := newDialer()
	base := &http.Transport{DialContext: d.DialContext}
	var rec attempts
	opts := []middleware.Option{middleware.WithBackoff(0, 0)}
	plain := fd.plain
	if !plain {
		opts = append(opts, middleware.WithHooks(rec.hooks()))
	}
	if row.attemptTO > 0 {
		opts = append(opts, middleware.WithAttemptTimeout(row.attemptTO))
	}

	req := m.newRequest(t, context.Background(), "http://"+p.Listen+"/charge")
	var body *closeCounter
	if fd.ownsBody {
		body = countCloses(req)
	}
	resp, err := fd.do(t, base, req, opts)

	wantN := 1
	if row.class != "" && m.replayable() {
		wantN = 3
	}
	switch {
	case row.class == "":
		if err != nil {
			t.Fatalf("RoundTrip error = %v; want a response", err)
		}
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status = %d; want 200", resp.StatusCode)
		}
		if row.cutBody {
			// What the user sees: a 200 with a nil error, then a body that
			// ends early with io.ErrUnexpectedEOF.
			if !errors.Is(rerr, io.ErrUnexpectedEOF) || len(body) >= len(respBody) {
				t.Errorf("body read = %d bytes, err %v; want fewer than %d and io.ErrUnexpectedEOF", len(body), rerr, len(respBody))
			}
		} else if rerr != nil || !bytes.Equal(body, respBody) {
			t.Errorf("body read = %d bytes, err %v; want %d intact bytes", len(body), rerr, len(respBody))
		}
		if !plain {
			checkAttempts(t, rec.get(), 1, middleware.ClassFinal, middleware.ReasonFinal)
		}
	default:
		if resp != nil {
			resp.Body.Close()
			t.Fatalf("RoundTrip = %d response; want an error", resp.StatusCode)
		}
		reason := middleware.ReasonNotReplayable
		if m.replayable() {
			reason = middleware.ReasonAttempts
		}
		exhausted(t, err, wantN, reason)
		if !plain {
			got := rec.get()
			for i := range got {
				if row.alt != "" && got[i].Class == row.alt {
					got[i].Class = row.class
				}
			}
			checkAttempts(t, got, wantN, row.class, reason)
			for i, a := range got {
				if !a.Sent {
					t.Errorf("attempt %d Sent = false; want true (a connection was obtained)", i+1)
				}
			}
		}
	}

	// Settle: every client connection closed, every server handler done.
	d.closeAll(t, base)
	states.settled(t)
	body.closedOnce(t)

	wantHits := wantN
	if row.lost {
		wantHits = 0
	}
	if got := h.total(); got != wantHits {
		t.Errorf("server processed %d requests; want %d", got, wantHits)
	}
	if !m.replayable() && h.total() > 1 {
		t.Errorf("INVARIANT: non-replayable %s processed %d times", m.name, h.total())
	}
	if got := d.dialed.Load(); got != int64(wantN) {
		t.Errorf("client dialed %d connections; want %d (one per attempt)", got, wantN)
	}
}
