package bench

import "net/http"

// extraLibs lists front doors that land after the core: tank with tracing
// and resty with tank.
func extraLibs(base *http.Transport) []struct {
	name string
	do   doer
} {
	return nil
}
