// Package faults is tank's fault-injection suite: the fault matrix, real
// network faults (toxiproxy, embedded in-process), raw HTTP/2 framer
// servers, hostile servers and leak guards, run through every front door
// (middleware.NewTransport, restyretry.Apply, backoffretry.New).
//
// It is a nested module so that tank's users never inherit toxiproxy,
// prometheus, zerolog or x/net. The package holds tests only; the soak
// command lives in cmd/soak. See README.md for what each row proves.
//
// Concurrency: nothing here is exported; each test owns its servers,
// proxies and transports and stops them before it returns.
package faults
