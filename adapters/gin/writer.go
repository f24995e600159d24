package idemgin

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/gin-gonic/gin"
)

// writer is the gin.ResponseWriter a handler writes through while it runs
// under a lease. rec, the kit's recording writer around gin's own, sends
// the status and the header with the first body byte and records them as
// they stand then. The status follows gin's rules: it may change until the
// first body byte (c.Status, then c.JSON with another status), and gin's
// own writer keeps it, so c.Writer.Status() and gin's logger see it; it
// reaches rec when the response goes out.
type writer struct {
	gin.ResponseWriter // gin's own: Status, CloseNotify, Pusher
	rec                http.ResponseWriter
	size               int // -1 until the header went out, as gin counts
	hijacked           bool
}

// Header returns the header the handler sets.
func (w *writer) Header() http.Header { return w.rec.Header() }

// WriteHeader chooses the status, as gin's writer does: it goes out with
// the first body byte, a flush or WriteHeaderNow, or when the handler
// returns.
func (w *writer) WriteHeader(code int) {
	if !w.Written() {
		w.ResponseWriter.WriteHeader(code)
	}
}

// send hands the status gin kept to the recording writer, once.
func (w *writer) send() {
	if w.size < 0 {
		w.size = 0
		w.rec.WriteHeader(w.ResponseWriter.Status())
	}
}

// WriteHeaderNow sends the status and the header without a body byte, as
// gin does for a status-only response (c.AbortWithStatus, c.Status with
// no body).
func (w *writer) WriteHeaderNow() {
	if w.size < 0 {
		w.send()
		_, _ = w.rec.Write(nil)
	}
}

func (w *writer) Write(p []byte) (int, error) {
	w.send()
	n, err := w.rec.Write(p)
	w.size += n
	return n, err
}

func (w *writer) WriteString(s string) (int, error) {
	w.send()
	n, err := io.WriteString(w.rec, s)
	w.size += n
	return n, err
}

// Size returns the number of body bytes written, -1 before the header
// went out.
func (w *writer) Size() int { return w.size }

// Written reports whether the header went out.
func (w *writer) Written() bool { return w.size >= 0 }

// Flush sends what was written so far; the response is then not
// replayable (B19).
func (w *writer) Flush() {
	w.send()
	_ = http.NewResponseController(w.rec).Flush()
}

// Hijack takes the connection over; the key is released at once (B19).
// As with gin's writer, a response whose body was written cannot be
// hijacked.
func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.size > 0 {
		return nil, nil, errBodyWritten
	}
	conn, brw, err := http.NewResponseController(w.rec).Hijack()
	if err == nil {
		w.hijacked, w.size = true, 0
	}
	return conn, brw, err
}

// Unwrap returns the recording writer, for http.ResponseController.
func (w *writer) Unwrap() http.ResponseWriter { return w.rec }

// end hands the status of a response the handler left without a body
// (c.Status(202) and return) to the recording writer, which sends and
// records it.
func (w *writer) end() {
	if !w.Written() && !w.hijacked {
		w.rec.WriteHeader(w.ResponseWriter.Status())
	}
}

var errBodyWritten = errors.New("idemgin: response body already written")
