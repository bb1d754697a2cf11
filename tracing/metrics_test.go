package tracing_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/tankhttp/tank/tracing"
)

func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	rec := newRecorder(t)
	srv := newServer(t, 503, 503, 200)
	c := newClient(t, testOptions(rec, tracing.WithMeterProvider(mp))...)
	get(t, c, context.Background(), srv.URL)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]metricdata.Aggregation{}
	units := map[string]string{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != "github.com/tankhttp/tank/tracing" {
			t.Errorf("scope = %q; want github.com/tankhttp/tank/tracing", sm.Scope.Name)
		}
		for _, m := range sm.Metrics {
			got[m.Name] = m.Data
			units[m.Name] = m.Unit
		}
	}
	wantUnits := map[string]string{"http.client.request.duration": "s", "tank.client.attempts": "{attempt}", "tank.client.retry.sleep": "s"}
	if diff := cmp.Diff(wantUnits, units); diff != "" {
		t.Errorf("metrics and units (-want +got):\n%s", diff)
	}

	// http.client.request.duration: one point per attempt, by status.
	dur, ok := got["http.client.request.duration"].(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("http.client.request.duration is %T; want a float64 histogram", got["http.client.request.duration"])
	}
	counts := map[string]uint64{}
	for _, dp := range dur.DataPoints {
		counts[setString(dp.Attributes, "http.response.status_code", "error.type", "http.request.method", "server.address")] += dp.Count
		if _, ok := dp.Attributes.Value("server.port"); !ok {
			t.Errorf("duration point %v has no server.port", dp.Attributes)
		}
		if _, ok := dp.Attributes.Value("url.full"); ok {
			t.Errorf("duration point has url.full; want low-cardinality attributes only")
		}
	}
	wantCounts := map[string]uint64{"200,-,GET,127.0.0.1": 1, "503,503,GET,127.0.0.1": 2}
	if diff := cmp.Diff(wantCounts, counts); diff != "" {
		t.Errorf("duration counts (-want +got):\n%s", diff)
	}

	// tank.client.attempts by class and decision.
	att, ok := got["tank.client.attempts"].(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("tank.client.attempts is %T; want an int64 sum", got["tank.client.attempts"])
	}
	sums := map[string]int64{}
	for _, dp := range att.DataPoints {
		if dp.Attributes.Len() != 2 {
			t.Errorf("attempts point attributes = %v; want class and decision only", dp.Attributes)
		}
		sums[setString(dp.Attributes, "tank.attempt.class", "tank.attempt.decision")] += dp.Value
	}
	if diff := cmp.Diff(map[string]int64{"unavailable,retry": 2, "final,stop": 1}, sums); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
	if !att.IsMonotonic {
		t.Errorf("tank.client.attempts is not monotonic")
	}

	// tank.client.retry.sleep: one point per wait.
	sl, ok := got["tank.client.retry.sleep"].(metricdata.Histogram[float64])
	if !ok || len(sl.DataPoints) != 1 {
		t.Fatalf("tank.client.retry.sleep = %#v; want one float64 histogram point", got["tank.client.retry.sleep"])
	}
	dp := sl.DataPoints[0]
	if dp.Count != 2 || dp.Sum != 0.002 || setString(dp.Attributes, "tank.attempt.sleep_source") != "backoff" {
		t.Errorf("sleep histogram = count %d sum %v %v; want 2 waits, 0.002 s, backoff", dp.Count, dp.Sum, dp.Attributes)
	}
}

// setString joins the values of keys in s ("-" when absent).
func setString(s attribute.Set, keys ...string) string {
	var out string
	for i, k := range keys {
		if i > 0 {
			out += ","
		}
		if v, ok := s.Value(attribute.Key(k)); ok {
			out += v.String()
		} else {
			out += "-"
		}
	}
	return out
}
