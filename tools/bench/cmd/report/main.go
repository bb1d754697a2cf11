// Command report turns benchmark output and the storm and hedging
// simulations' results into the tables and charts of BENCHMARKS.md.
//
//	go run ./cmd/report   # reads ../../docs/bench/peers.txt, storm.json and hedge.json, writes the charts there
//
// Ratios are paired: within each pass (the n-th result of a benchmark), a
// lib's value is divided by bare's value from the same pass, and the table
// shows the median over passes.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"log"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/tankhttp/tank/tools/bench/hedge"
	"github.com/tankhttp/tank/tools/bench/storm"
)

func main() {
	peers := flag.String("peers", "../../docs/bench/peers.txt", "go test -bench output with BenchmarkPeers results")
	stormFile := flag.String("storm", "../../docs/bench/storm.json", "storm simulation results (TestStormFull -storm.write)")
	hedgeFile := flag.String("hedge", "../../docs/bench/hedge.json", "hedging simulation results (TestHedgeFull -hedge.write); skipped if absent")
	out := flag.String("out", "../../docs/bench", "directory for the PNG charts")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	if *peers != "" {
		if err := reportPeers(*peers, *out); err != nil {
			log.Fatal(err)
		}
	}
	if *stormFile != "" {
		if err := reportStorm(*stormFile, *out); err != nil {
			log.Fatal(err)
		}
	}
	if *hedgeFile != "" {
		if _, err := os.Stat(*hedgeFile); err == nil {
			if err := reportHedge(*hedgeFile, *out); err != nil {
				log.Fatal(err)
			}
		}
	}
}

// sample is one benchmark result line.
type sample struct{ ns, cpu, bytes, allocs float64 }

// key is a benchmark's case without the lib.
type key struct{ path, method, mode string }

func parse(file string) (map[key]map[string][]sample, []string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	data := map[key]map[string][]sample{}
	var order []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "BenchmarkPeers/") {
			continue
		}
		name := strings.TrimPrefix(fields[0], "BenchmarkPeers/")
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		kv := map[string]string{}
		for _, part := range strings.Split(name, "/") {
			if k, v, ok := strings.Cut(part, "="); ok {
				kv[k] = v
			}
		}
		var s sample
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			switch fields[i+1] {
			case "ns/op":
				s.ns = v
			case "cpu-ns/op":
				s.cpu = v
			case "B/op":
				s.bytes = v
			case "allocs/op":
				s.allocs = v
			}
		}
		k := key{kv["path"], kv["method"], kv["mode"]}
		if data[k] == nil {
			data[k] = map[string][]sample{}
		}
		data[k][kv["lib"]] = append(data[k][kv["lib"]], s)
		if !seen[kv["lib"]] {
			seen[kv["lib"]] = true
			order = append(order, kv["lib"])
		}
	}
	return data, order, sc.Err()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// paired returns the median over passes of lib/bare for the field f.
func paired(lib, bare []sample, f func(sample) float64) float64 {
	var r []float64
	for i := 0; i < len(lib) && i < len(bare); i++ {
		if f(bare[i]) > 0 {
			r = append(r, f(lib[i])/f(bare[i]))
		}
	}
	return median(r)
}

func med(xs []sample, f func(sample) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	return median(v)
}

func reportPeers(file, out string) error {
	data, order, err := parse(file)
	if err != nil {
		return err
	}
	cpu := func(s sample) float64 { return s.cpu }
	ns := func(s sample) float64 { return s.ns }
	allocs := func(s sample) float64 { return s.allocs }
	bytes := func(s sample) float64 { return s.bytes }
	for _, path := range []string{"ok", "retry"} {
		fmt.Printf("\n#### path=%s: paired medians vs bare (cpu-ns/op ratio, ns/op ratio, extra allocs/op, extra B/op)\n\n", path)
		fmt.Println("| lib | GET seq | GET par | POST seq | POST par |")
		fmt.Println("|---|---|---|---|---|")
		for _, lib := range order {
			row := "| " + lib + " |"
			any := false
			for _, method := range []string{"GET", "POST"} {
				for _, mode := range []string{"seq", "par"} {
					d := data[key{path, method, mode}]
					l, b := d[lib], d["bare"]
					if len(l) == 0 || len(b) == 0 {
						row += " — |"
						continue
					}
					any = true
					if lib == "bare" {
						row += fmt.Sprintf(" %.1f µs cpu, %.1f µs wall, %.0f allocs, %.0f B |",
							med(b, cpu)/1e3, med(b, ns)/1e3, med(b, allocs), med(b, bytes))
						continue
					}
					row += fmt.Sprintf(" %.2f× cpu, %.2f× wall, %+.0f allocs, %+.0f B |",
						paired(l, b, cpu), paired(l, b, ns), med(l, allocs)-med(b, allocs), med(l, bytes)-med(b, bytes))
				}
			}
			if any {
				fmt.Println(row)
			}
		}
	}
	// Chart: CPU per request per lib, success path, sequential.
	p := plot.New()
	p.Title.Text = "CPU per request on loopback (success path, sequential, median)"
	p.Y.Label.Text = "µs of CPU per request (client + in-process server)"
	var names []string
	var top float64
	w := vg.Points(12)
	for i, method := range []string{"GET", "POST (1 KiB body)"} {
		d := data[key{"ok", strings.Fields(method)[0], "seq"}]
		var vals plotter.Values
		names = names[:0]
		for _, lib := range order {
			if len(d[lib]) == 0 {
				continue
			}
			names = append(names, lib)
			vals = append(vals, med(d[lib], cpu)/1e3)
			top = max(top, vals[len(vals)-1])
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(2*i-1) / 2
		p.Add(bars)
		p.Legend.Add(method, bars)
	}
	// Room above the tallest bar for the legend, which sits there, left.
	p.Y.Min, p.Y.Max = 0, math.Ceil(top*1.25/100)*100
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs = vg.Points(40)
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = 0.5
	p.X.Tick.Label.XAlign = -0.8
	return p.Save(10*vg.Inch, 5*vg.Inch, filepath.Join(out, "cpu_per_request.png"))
}

func reportStorm(file, out string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var rs []storm.Result
	if err := json.Unmarshal(b, &rs); err != nil {
		return err
	}
	fmt.Println("\n| strategy | amplification (peak 1 s load ÷ base) | requests at the server | logical requests failed | recovery after the outage |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range rs {
		rec := fmt.Sprintf("%.1f s", r.Recovery)
		if r.Recovery < 0 {
			rec = "not within the run"
		}
		fmt.Printf("| %s | %.2f | %d | %.1f%% | %s |\n", r.Strategy, r.Amplification, r.Attempts, 100*r.FailedShare, rec)
	}
	p := plot.New()
	p.Title.Text = "Offered load at the server: outage from 10 s to 20 s"
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = "requests per second (100 ms buckets)"
	var top float64
	for i, r := range rs {
		pts := make(plotter.XYs, len(r.Offered))
		for j, v := range r.Offered {
			pts[j] = plotter.XY{X: float64(j) * r.BucketSeconds, Y: v}
			top = max(top, v)
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.2)
		if r.Strategy == "tank_budget" {
			l.Color = color.RGBA{R: 0, G: 0, B: 0, A: 255}
			l.Width = vg.Points(2)
		}
		p.Add(l)
		p.Legend.Add(r.Strategy, l)
	}
	// Room above the peak: no line touches the frame, and the legend sits
	// in the quiet first 10 s, top left.
	p.Y.Min, p.Y.Max = 0, math.Ceil(top*1.2/500)*500
	p.Y.Tick.Marker = plot.TickerFunc(func(_, hi float64) []plot.Tick {
		var ts []plot.Tick
		for v := 0.0; v <= hi; v += 1000 {
			ts = append(ts, plot.Tick{Value: v, Label: strconv.Itoa(int(v))})
		}
		return ts
	})
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs = vg.Points(40)
	return p.Save(10*vg.Inch, 5*vg.Inch, filepath.Join(out, "storm_offered_load.png"))
}

func reportHedge(file, out string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var rs []hedge.Result
	if err := json.Unmarshal(b, &rs); err != nil {
		return err
	}
	var scenarios, strategies []string
	by := map[[2]string]hedge.Result{}
	for _, r := range rs {
		if !slices.Contains(scenarios, r.Scenario) {
			scenarios = append(scenarios, r.Scenario)
		}
		if !slices.Contains(strategies, r.Strategy) {
			strategies = append(strategies, r.Strategy)
		}
		by[[2]string{r.Scenario, r.Strategy}] = r
	}
	fmt.Println("\n| scenario | strategy | p50 | p99 | p99.9 | requests at the server | extra requests |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Printf("| %s | %s | %.2f ms | %.2f ms | %.2f ms | %d | %+.2f%% |\n",
			r.Scenario, r.Strategy, r.P50, r.P99, r.P999, r.Hits, 100*r.Extra)
	}

	// Left: the long tail's latency by percentile, one line a strategy.
	lat := plot.New()
	lat.Title.Text = "Long tail: latency by percentile (log scales)"
	lat.X.Label.Text = "percentile"
	lat.Y.Label.Text = "latency seen by the caller"
	lat.Y.Scale = plot.LogScale{}
	nines := func(q float64) float64 { return -math.Log10(1 - q) }
	lat.X.Tick.Marker = plot.ConstantTicks([]plot.Tick{
		{Value: nines(0.5), Label: "p50"}, {Value: nines(0.9), Label: "p90"}, {Value: nines(0.99), Label: "p99"},
		{Value: nines(0.999), Label: "p99.9"}, {Value: nines(0.9999), Label: "p99.99"},
	})
	lat.Y.Tick.Marker = plot.ConstantTicks([]plot.Tick{
		{Value: 1, Label: "1 ms"}, {Value: 10, Label: "10 ms"}, {Value: 100, Label: "100 ms"}, {Value: 1000, Label: "1 s"},
	})
	var top float64
	var under, over []plot.Plotter
	for i, name := range strategies {
		r, ok := by[[2]string{"tail", name}]
		if !ok {
			continue
		}
		pts := make(plotter.XYs, len(r.Quantiles))
		for j, q := range r.Quantiles {
			pts[j] = plotter.XY{X: nines(q.Q), Y: q.MS}
			top = max(top, q.MS)
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
		l.Width = vg.Points(1.5)
		sc.Shape = plotutil.Shape(i)
		if name == "failsafe" {
			// With the same delay and the same draws it may lie on
			// tank_fixed's line: drawn wide, dashed and underneath.
			l.Width = vg.Points(5)
			l.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
			under = append(under, l, sc)
		} else {
			over = append(over, l, sc)
		}
		lat.Legend.Add(name, l, sc)
	}
	lat.Add(under...)
	lat.Add(over...)
	// Room above the slowest request; the legend sits top left, above
	// the fast mode where every line starts.
	lat.X.Min, lat.X.Max = 0.2, 4.1
	lat.Y.Min, lat.Y.Max = 1, top*5
	lat.Legend.Top, lat.Legend.Left = true, true
	lat.Legend.XOffs = vg.Points(10)
	if err := lat.Save(10*vg.Inch, 5*vg.Inch, filepath.Join(out, "hedge_latency.png")); err != nil {
		return err
	}

	// Right: extra requests at the server, per strategy and scenario.
	ex := plot.New()
	ex.Title.Text = "Extra requests at the server"
	ex.Y.Label.Text = "requests at the server ÷ logical requests − 1"
	w := vg.Points(28)
	top = 0
	// The budget's line goes first, under the bars.
	budget := plotter.NewFunction(func(float64) float64 { return 20 })
	budget.Color = color.Gray{Y: 80}
	budget.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	ex.Add(budget)
	for i, sc := range scenarios {
		var vals plotter.Values
		// Each bar's value is written above a short bar, inside the top
		// of a tall one (clear of the budget's line).
		var above, inside plotter.XYLabels
		for j, name := range strategies {
			x := 100 * by[[2]string{sc, name}].Extra
			vals = append(vals, x)
			top = max(top, x)
			l := &above
			if x >= 10 {
				l = &inside
			}
			l.XYs = append(l.XYs, plotter.XY{X: float64(j), Y: x})
			l.Labels = append(l.Labels, fmt.Sprintf("%.1f%%", x))
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(2*i-1) / 2
		ex.Add(bars)
		ex.Legend.Add(sc, bars)
		for _, set := range []struct {
			l     plotter.XYLabels
			align draw.YAlignment
			dy    vg.Length // points
			c     color.Color
		}{{above, draw.YBottom, 2, color.Black}, {inside, draw.YTop, -3, color.White}} {
			if len(set.l.Labels) == 0 {
				continue
			}
			lb, err := plotter.NewLabels(set.l)
			if err != nil {
				return err
			}
			for k := range lb.TextStyle {
				lb.TextStyle[k].XAlign, lb.TextStyle[k].YAlign = draw.XCenter, set.align
				lb.TextStyle[k].Font.Size = vg.Points(9)
				lb.TextStyle[k].Color = set.c
			}
			lb.Offset = vg.Point{X: bars.Offset, Y: set.dy}
			ex.Add(lb)
		}
	}
	ex.Legend.Add("tank's budget ratio (20%)", budget)
	ex.Legend.Padding = vg.Points(2)
	ex.NominalX(strategies...)
	ex.X.Min, ex.X.Max = -0.6, float64(len(strategies))-0.4
	// Room above the tallest bar and its label for the legend, top left,
	// over the low bars of none and tank_fixed.
	ex.Y.Min, ex.Y.Max = 0, math.Ceil(top*1.3/20)*20
	ex.Y.Tick.Marker = plot.TickerFunc(func(_, hi float64) []plot.Tick {
		var ts []plot.Tick
		for v := 0.0; v <= hi; v += 20 {
			ts = append(ts, plot.Tick{Value: v, Label: strconv.Itoa(int(v)) + "%"})
		}
		return ts
	})
	ex.Legend.Top, ex.Legend.Left = true, true
	ex.Legend.XOffs = vg.Points(10)

	return ex.Save(10*vg.Inch, 5*vg.Inch, filepath.Join(out, "hedge_extra.png"))
}
