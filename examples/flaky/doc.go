// Package flaky holds the scaffold of the embedded flaky servers that the
// programs under examples/ start: a handler that records what each path
// received before it misbehaves, and Reset, which drops a connection with
// a TCP RST.
//
// Each example keeps its own misbehaviour, a func of the request and of how
// many requests its path has received, this one included:
//
//	h := flaky.New(func(w http.ResponseWriter, r *http.Request, n int) {
//		if n == 1 {
//			flaky.Reset(w) // processed, then the connection dies
//			return
//		}
//		io.WriteString(w, "ok")
//	})
//	srv := httptest.NewServer(h)
//	defer srv.Close()
//	// ... send requests to srv.URL ...
//	fmt.Println("processed:", h.Count("/orders"))
//
// A request counts once its body has been read in full, before the answer
// func runs: what the server processed, whatever the client saw.
//
// # Concurrency
//
// A Handler may serve requests and answer Count and Take from any number
// of goroutines; the answer func may run concurrently with itself.
package flaky
