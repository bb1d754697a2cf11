package restyretry_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/adapters/restyretry"
)

// BenchmarkGET and BenchmarkPOST measure resty's success path against a
// loopback server: plain resty, resty's own retry loop, and resty with
// Apply. A POST is not replayable, so tank traces its send state.
func BenchmarkGET(b *testing.B) {
	benchmark(b, func(c *resty.Client, url string) (*resty.Response, error) { return c.R().Get(url) })
}

func BenchmarkPOST(b *testing.B) {
	body := []byte(`{"item":"tank","qty":1}`)
	benchmark(b, func(c *resty.Client, url string) (*resty.Response, error) { return c.R().SetBody(body).Post(url) })
}

func benchmark(b *testing.B, send func(c *resty.Client, url string) (*resty.Response, error)) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	for _, bb := range []struct {
		name string
		make func() *resty.Client
	}{
		{"plain", resty.New},
		{"retry3", func() *resty.Client {
			return resty.New().SetRetryCount(3).AddRetryCondition(func(r *resty.Response, err error) bool {
				return err != nil || r.StatusCode() == http.StatusServiceUnavailable
			})
		}},
		{"apply", func() *resty.Client { return restyretry.Apply(resty.New()) }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			c := bb.make()
			defer c.GetClient().CloseIdleConnections()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := send(c, srv.URL)
				if err != nil || resp.StatusCode() != 200 {
					b.Fatal(resp, err)
				}
			}
		})
	}
}
