package bench

import (
	"net/http"

	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/middleware"
)

// extraLibs lists tank's other front doors: resty with tank (and tank with
// tracing, in tracing_test.go).
func extraLibs(base *http.Transport) []struct {
	name string
	do   doer
} {
	out := []struct {
		name string
		do   doer
	}{
		{"resty_tank", restyDoer(restyretry.Apply(resty.NewWithClient(&http.Client{Transport: base}), middleware.WithBackoff(0, 0)))},
	}
	return append(out, tracedLibs(base)...)
}
