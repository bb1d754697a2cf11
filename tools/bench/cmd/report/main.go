// Command report turns benchmark output and the storm simulation's results
// into the tables and charts of BENCHMARKS.md.
//
//	go run ./cmd/report   # reads ../../docs/bench/peers.txt and storm.json, writes the charts there
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
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/tankhttp/tank/tools/bench/storm"
)

func main() {
	peers := flag.String("peers", "../../docs/bench/peers.txt", "go test -bench output with BenchmarkPeers results")
	stormFile := flag.String("storm", "../../docs/bench/storm.json", "storm simulation results (TestStormFull -storm.write)")
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
