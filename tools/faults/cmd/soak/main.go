// Command soak drives tank's Transport through a flapping loopback server
// and checks that it stays safe and bounded under load: no non-replayable
// request processed twice, goroutines, heap and resident memory back near
// their baseline once the run is over.
//
// The server flaps, by request count, between healthy, 503 storms, resets
// after reading the request (the request was processed), and stalls (the
// request was processed; the answer never comes, and the handler returns
// when the client gives up). GETs and POSTs are mixed; every POST carries a
// unique id and the server records each id it processed.
//
// Usage:
//
//	go run ./cmd/soak                 # 100,000 requests, 64 at a time
//	go run ./cmd/soak -smoke          # 2,000 requests, for CI
//	go run ./cmd/soak -n 20000 -c 16 -duration 1m
//
// It exits 1 when a POST was processed twice, when the run leaves
// goroutines behind, when the resident set stays more than 8 MiB above its
// baseline, or when the duration cap cut it short.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tankhttp/tank/middleware"
)

func main() {
	var (
		n        = flag.Int("n", 100_000, "requests to make")
		c        = flag.Int("c", 64, "concurrent requests")
		duration = flag.Duration("duration", 4*time.Minute, "cap on the whole run")
		smoke    = flag.Bool("smoke", false, "a short run for CI: 2,000 requests (overrides -n)")
		phase    = flag.Int("phase", 0, "requests the server serves before it changes mood (0: n/100, at least 10)")
	)
	flag.Parse()
	if *smoke {
		*n = 2000
	}
	if *phase == 0 {
		*phase = max(*n/100, 10)
	}
	if *n < 1 || *c < 1 || *phase < 1 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "soak: -n, -c, -phase and -duration must be positive")
		os.Exit(2)
	}
	os.Exit(run(*n, *c, *phase, *duration))
}

// mood is what the server does in a phase.
type mood int

const (
	healthy mood = iota
	storm        // 503 for 90% of requests, without processing them
	resets       // half the requests: processed, then the connection is reset
	stalls       // a third of the requests: processed, never answered
)

// moods is the server's cycle: trouble between healthy spells.
var moods = []mood{healthy, storm, healthy, resets, healthy, stalls, healthy, storm, resets, stalls}

// server is the flapping loopback server.
type server struct {
	phaseLen int64
	arrivals atomic.Int64
	stop     chan struct{} // closed at shutdown: releases stalls

	mu        sync.Mutex
	processed map[string]int // POST id -> times processed

	opened, closed atomic.Int64
	connsDone      chan struct{}
	byAction       [5]atomic.Int64 // ok, 503, reset, stall, bad
}

const (
	actOK = iota
	act503
	actReset
	actStall
	actBad
)

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k := s.arrivals.Add(1)
	m := moods[(k/s.phaseLen)%int64(len(moods))]
	act := actOK
	switch {
	case m == storm && k%10 != 0:
		act = act503
	case m == resets && k%2 == 0:
		act = actReset
	case m == stalls && k%3 == 0:
		act = actStall
	}
	if act == act503 {
		// Not processed: the body is not even read.
		s.byAction[act503].Add(1)
		w.Header().Set("Retry-After", "0")
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if r.Method == http.MethodPost {
		id := r.Header.Get("X-Soak-Id")
		if id == "" || string(b) != "pay "+id {
			s.byAction[actBad].Add(1)
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.processed[id]++
		s.mu.Unlock()
	}
	s.byAction[act].Add(1)
	switch act {
	case actReset:
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, not FIN
		}
		conn.Close()
	case actStall:
		// Bounded: the client's attempt timeout closes the connection
		// (cancelling r.Context()); shutdown closes s.stop.
		select {
		case <-r.Context().Done():
		case <-s.stop:
		}
	default:
		io.WriteString(w, "ok")
	}
}

func (s *server) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.opened.Add(1)
	case http.StateClosed, http.StateHijacked:
		if s.closed.Add(1) == s.opened.Load() {
			select {
			case s.connsDone <- struct{}{}:
			default:
			}
		}
	}
}

// sampler records peak goroutines and heap while the load runs.
type sampler struct {
	peakG    atomic.Int64
	peakHeap atomic.Uint64
	peakRSS  atomic.Uint64
}

func (p *sampler) sample() {
	if g := int64(runtime.NumGoroutine()); g > p.peakG.Load() {
		p.peakG.Store(g)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > p.peakHeap.Load() {
		p.peakHeap.Store(ms.HeapAlloc)
	}
	if r := rssNow(); r > p.peakRSS.Load() {
		p.peakRSS.Store(r)
	}
}

// loop samples every 20ms until done is closed; it is bounded by the run's
// duration cap through done.
func (p *sampler) loop(done <-chan struct{}, finished chan<- struct{}) {
	defer close(finished)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			p.sample()
			return
		case <-t.C:
			p.sample()
		}
	}
}

func heapNow() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// rssNow is the process's resident set size in bytes, from
// /proc/self/statm (0 where there is none).
func rssNow() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// rssSlack is how far above its baseline the resident set may stay once the
// run is over and the heap is returned to the OS: the runtime keeps its own
// structures (span metadata, stacks of the peak goroutines) mapped.
const rssSlack = 8 << 20

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func run(n, c, phaseLen int, capDur time.Duration) int {
	runtime.GC()
	debug.FreeOSMemory()
	baseG, baseHeap, baseRSS := runtime.NumGoroutine(), heapNow(), rssNow()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	}
	s := &server{phaseLen: int64(phaseLen), stop: make(chan struct{}), processed: map[string]int{}, connsDone: make(chan struct{}, 1)}
	hs := &http.Server{Handler: s, ConnState: s.connState, ReadHeaderTimeout: 10 * time.Second}
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		hs.Serve(ln)
	}()

	// The client: tank over a keep-alive pool big enough for c requests.
	var attemptsByClass sync.Map // middleware.Class -> *atomic.Int64
	count := func(m *sync.Map, k string) {
		v, _ := m.LoadOrStore(k, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	budget, err := middleware.NewBudget(0.2, 10, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	}
	base := &http.Transport{MaxIdleConnsPerHost: c, MaxIdleConns: c}
	tr := middleware.NewTransport(base,
		middleware.WithAttemptTimeout(100*time.Millisecond),
		middleware.WithBackoff(time.Millisecond, 20*time.Millisecond),
		middleware.WithBudget(budget),
		middleware.WithHooks(middleware.Hooks{
			AttemptEnd: func(_ context.Context, a *middleware.Attempt) {
				count(&attemptsByClass, string(a.Class))
			},
			RequestEnd: func(ctx context.Context, last *middleware.Attempt) {
				if r, ok := ctx.Value(reasonKey{}).(*middleware.Reason); ok {
					*r = last.Reason
				}
			},
		}),
	)
	client := &http.Client{Transport: tr}
	url := "http://" + ln.Addr().String() + "/"

	ctx, cancel := context.WithTimeout(context.Background(), capDur)
	defer cancel()

	var p sampler
	samplerDone, samplerFinished := make(chan struct{}), make(chan struct{})
	go p.loop(samplerDone, samplerFinished)

	var (
		next     atomic.Int64
		outcomes sync.Map // string -> *atomic.Int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil { // bounded: at most n requests in all, and the cap
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				count(&outcomes, one(ctx, client, url, i))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	capped := ctx.Err() != nil
	close(samplerDone)
	<-samplerFinished

	// Shut down: idle connections, stalled handlers, the server.
	tr.CloseIdleConnections()
	close(s.stop)
	hs.Close()
	<-serveDone
	select { // bounded wait for the server to see every connection closed
	case <-s.connsDone:
	case <-time.After(10 * time.Second):
	}
	s.mu.Lock()
	dups, extra := 0, 0
	for _, k := range s.processed {
		if k > 1 {
			dups++
			extra += k - 1
		}
	}
	postsProcessed := len(s.processed)
	s.mu.Unlock()
	s.mu.Lock()
	s.processed = nil // the server's ledger is not tank's memory
	s.mu.Unlock()

	for range 10 { // let closed connections' goroutines exit (bounded)
		if runtime.NumGoroutine() <= baseG {
			break
		}
		runtime.GC()
		runtime.Gosched()
	}
	runtime.GC()
	debug.FreeOSMemory()
	afterG, afterHeap, afterRSS := runtime.NumGoroutine(), heapNow(), rssNow()

	// Report.
	done := min(next.Load(), int64(n))
	fmt.Printf("soak: %d requests (%d GET, %d POST) at %d-way concurrency in %v (%.0f req/s)%s\n",
		done, done-done/2, done/2, c, elapsed.Round(time.Millisecond), float64(done)/elapsed.Seconds(),
		map[bool]string{true: "  [STOPPED BY -duration CAP]", false: ""}[capped])
	fmt.Println("outcomes:")
	printMap(&outcomes)
	fmt.Println("attempts by class:")
	printMap(&attemptsByClass)
	fmt.Printf("server: ok %d, 503 %d, reset-after-processing %d, stalled %d, bad body %d\n",
		s.byAction[actOK].Load(), s.byAction[act503].Load(), s.byAction[actReset].Load(), s.byAction[actStall].Load(), s.byAction[actBad].Load())

	fmt.Printf("POSTs processed: %d distinct; duplicates of non-replayable requests: %d (%d extra)\n", postsProcessed, dups, extra)
	fmt.Printf("connections opened (server ConnState): %d; closed: %d\n", s.opened.Load(), s.closed.Load())
	fmt.Printf("goroutines: baseline %d, peak %d, after %d\n", baseG, p.peakG.Load(), afterG)
	fmt.Printf("heap: baseline %s, peak %s, after %s\n", mib(baseHeap), mib(p.peakHeap.Load()), mib(afterHeap))
	fmt.Printf("RSS: baseline %s, peak %s, after %s (after a GC and debug.FreeOSMemory)\n", mib(baseRSS), mib(p.peakRSS.Load()), mib(afterRSS))

	code := 0
	if dups > 0 {
		fmt.Println("FAIL: a non-replayable request was processed more than once")
		code = 1
	}
	if afterG > baseG+2 {
		fmt.Printf("FAIL: %d goroutines left behind\n", afterG-baseG)
		code = 1
	}
	if baseRSS > 0 && afterRSS > baseRSS+rssSlack {
		fmt.Printf("FAIL: RSS stayed %s above its baseline (slack %s)\n", mib(afterRSS-baseRSS), mib(rssSlack))
		code = 1
	}
	if s.byAction[actBad].Load() > 0 {
		fmt.Println("FAIL: the server received corrupt POST bodies")
		code = 1
	}
	if capped {
		fmt.Println("FAIL: the -duration cap stopped the run before -n requests")
		code = 1
	}
	return code
}

// reasonKey carries a *middleware.Reason that the RequestEnd hook fills.
type reasonKey struct{}

// one makes request i: even ones GET, odd ones POST with a unique id.
// It returns the outcome's name: method, status or error, and why tank
// stopped.
func one(ctx context.Context, client *http.Client, url string, i int64) string {
	var reason middleware.Reason
	ctx = context.WithValue(ctx, reasonKey{}, &reason)
	var req *http.Request
	if i%2 == 0 {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	} else {
		id := strconv.FormatInt(i, 10)
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("pay "+id))
		req.Header.Set("X-Soak-Id", id)
	}
	resp, err := client.Do(req)
	if err != nil {
		var ee *middleware.ExhaustedError
		if errors.As(err, &ee) {
			return fmt.Sprintf("%s error (%s after %d)", req.Method, string(ee.Reason), ee.Attempts)
		}
		return req.Method + " error: " + err.Error()
	}
	_, rerr := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if rerr != nil {
		return fmt.Sprintf("%s %d, body read error", req.Method, resp.StatusCode)
	}
	return fmt.Sprintf("%s %d (%s)", req.Method, resp.StatusCode, string(reason))
}

func printMap(m *sync.Map) {
	type kv struct {
		k string
		v int64
	}
	var all []kv
	m.Range(func(k, v any) bool {
		all = append(all, kv{k.(string), v.(*atomic.Int64).Load()})
		return true
	})
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	for _, e := range all {
		fmt.Printf("  %-45s %d\n", e.k, e.v)
	}
}
