package idemecho

import (
	"bufio"
	"net"
	"net/http"

	idem "github.com/idemkit/idem/core"
)

// recorder sits under echo's Response as its Writer while a handler runs
// under a lease: it passes everything on to the client and records the
// status, the header as sent and up to max body bytes (B19).
type recorder struct {
	http.ResponseWriter
	max int
	// onHijack runs when the handler has taken the connection over.
	onHijack func()

	status    int
	header    http.Header // the header as sent with status
	body      []byte
	truncated bool
	streamed  bool
	hijacked  bool
}

// WriteHeader records the first final status and the header sent with it.
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && !r.hijacked && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		r.sendStatus(code)
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) sendStatus(code int) {
	r.status = code
	r.header = r.ResponseWriter.Header().Clone()
}

// Write records b, up to the limit, and passes it on.
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	r.record(b)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) record(b []byte) {
	if r.truncated || r.hijacked {
		return
	}
	if len(r.body)+len(b) > r.max {
		r.truncated = true
		r.body = nil // an incomplete body is never stored
		return
	}
	r.body = append(r.body, b...)
}

// FlushError flushes the response to the client, which makes it not
// replayable (B19). http.ResponseController and echo's Response.Flush call
// it.
func (r *recorder) FlushError() error {
	if err := http.NewResponseController(r.ResponseWriter).Flush(); err != nil {
		return err
	}
	if r.status == 0 { // net/http sent an implicit 200 with the header
		r.sendStatus(http.StatusOK)
	}
	r.streamed = true
	return nil
}

// Flush is FlushError for callers that use http.Flusher.
func (r *recorder) Flush() { _ = r.FlushError() }

// Hijack hands the connection to the handler and runs onHijack.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil {
		r.hijacked = true
		r.onHijack()
	}
	return conn, rw, err
}

// Unwrap returns the writer underneath, for http.ResponseController.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// recorded returns what the handler sent. A handler that wrote nothing
// gets net/http's implicit 200 with the header as it stands.
func (r *recorder) recorded() idem.Recorded {
	header := r.header
	if r.status == 0 {
		header = r.ResponseWriter.Header()
	}
	return idem.Recorded{Status: r.status, Header: header, Body: r.body,
		Truncated: r.truncated, Streamed: r.streamed}
}
