// Package e2e holds tank's end-to-end tests against real external
// programs: retries through every front door, exported with OTLP over HTTP
// to a Jaeger started by the test, and read back from Jaeger's query API.
// It also holds the tracing benchmark that needs otelhttp.
//
// It is a module of its own so that the library's users never inherit the
// OTLP exporter, otelhttp or their dependencies.
//
//	JAEGER_BIN=/path/to/jaeger go -C tools/e2e test ./...
package e2e
