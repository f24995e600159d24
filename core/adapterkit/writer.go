package adapterkit

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync"

	idem "github.com/idemkit/idem/core"
)

// runState is what a request that runs under a lease in a
// writer-wrapping framework needs, in one allocation.
type runState struct {
	rw   responseWriter
	body bodyReader
	ctx  markContext
}

type bodyReader struct{ bytes.Reader }

// Close does nothing: the bytes are in memory.
func (*bodyReader) Close() error { return nil }

// Wrap returns the http.ResponseWriter the handler must write through
// when it runs under a lease, recording what it writes to w; or w itself
// when the handler runs untracked or the framework is Buffered. The
// writer it returns keeps http.Flusher, http.Hijacker and io.ReaderFrom
// working and has an Unwrap method for http.ResponseController; it is the
// handler's until the chain returns.
//
// It records the response the way the client gets it:
//
//   - WriteHeader chooses the status; the status and the header go out
//     with the first body byte, a flush, or when the handler returns
//     without a body, and are recorded as they stand then. A framework
//     helper that sets Content-Type after choosing the status is
//     recorded with it; a status-only response (202 or 204 without a
//     body) is recorded with its status. 1xx statuses pass straight
//     through.
//   - Repeated header fields (Link, Vary) are recorded in order; only the
//     fields the engine stores are kept (B20).
//   - Up to Lease.MaxBody body bytes are recorded; past that, or after a
//     flush, the response is not replayable (B19). A hijack releases the
//     key at once (B19).
//   - When the lease holds the response (idem.Lease.HoldResponse), nothing
//     reaches w until Complete succeeded: the handler writes into a header
//     and body of its own, flushes are held too, and when Complete fails
//     the client gets the lease's CommitFailure problem instead.
func (h Handoff[C]) Wrap(w http.ResponseWriter) http.ResponseWriter {
	if h.st == nil {
		return w
	}
	rw := &h.st.rw
	rw.w = w
	if rw.hold {
		rw.heldHeader = w.Header().Clone()
		if rw.heldHeader == nil {
			rw.heldHeader = http.Header{}
		}
	}
	return rw
}

// responseWriter records what a handler running under a lease writes.
// It is used by one handler goroutine, like any ResponseWriter.
type responseWriter struct {
	w     http.ResponseWriter
	lease *idem.Lease
	max   int
	// hold: nothing reaches w before Complete (B35). heldHeader is the
	// handler's header until then, sentHeader its state at the first
	// body byte.
	hold                   bool
	heldHeader, sentHeader http.Header

	status int
	// sent: the status and header went out (under hold: were fixed).
	sent   bool
	header idem.Header // the stored fields as sent
	body   []byte
	pooled *[]byte // body's buffer, from bodies
	// truncated: more than max bytes were written (not under hold,
	// where the whole body is kept).
	truncated, streamed, hijacked bool
}

// bodies recycles the buffers responses are recorded into: a store
// copies the body it keeps, so a buffer is free again once Complete
// returned.
var bodies sync.Pool

// Buffers larger than maxPooledBody are left to the garbage collector.
const maxPooledBody = 64 << 10

// Header returns the header the handler sets.
func (rw *responseWriter) Header() http.Header {
	if rw.hold {
		return rw.heldHeader
	}
	return rw.w.Header()
}

// WriteHeader chooses the status; it goes out with the first body byte
// (see Wrap). A 1xx status other than 101 passes through at once (and is
// dropped under hold).
func (rw *responseWriter) WriteHeader(code int) {
	switch {
	case rw.hijacked:
		rw.w.WriteHeader(code)
	case code >= 100 && code < 200 && code != http.StatusSwitchingProtocols:
		if !rw.hold {
			rw.w.WriteHeader(code)
		}
	case rw.status == 0 && !rw.sent:
		rw.status = code
	}
}

// send sends the status and the header as they stand, once, and records
// them.
func (rw *responseWriter) send() {
	if rw.sent {
		return
	}
	rw.sent = true
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	if rw.hold {
		rw.sentHeader = rw.heldHeader.Clone()
		rw.header = rw.lease.KeepHeader(rw.sentHeader)
		return
	}
	rw.header = rw.lease.KeepHeader(rw.w.Header())
	rw.w.WriteHeader(rw.status)
}

// Write sends p and records it within the limit.
func (rw *responseWriter) Write(p []byte) (int, error) {
	if rw.hijacked {
		return rw.w.Write(p)
	}
	rw.send()
	if rw.hold {
		rw.record(p, true)
		return len(p), nil
	}
	n, err := rw.w.Write(p)
	rw.record(p[:n], false)
	return n, err
}

func (rw *responseWriter) record(p []byte, all bool) {
	if rw.truncated || len(p) == 0 {
		return
	}
	if rw.body == nil {
		if buf, ok := bodies.Get().(*[]byte); ok {
			rw.pooled, rw.body = buf, *buf
		} else {
			rw.pooled = new([]byte)
		}
	}
	if room := rw.max - len(rw.body); !all && len(p) > room {
		rw.body = append(rw.body, p[:room]...)
		rw.truncated = true
		return
	}
	rw.body = append(rw.body, p...)
}

// ReadFrom copies src to the response. The bytes the writer records go
// through Write; past the limit the rest goes to the underlying writer's
// own ReadFrom, so net/http can still use sendfile for large bodies.
func (rw *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	if rw.hold || rw.hijacked {
		return io.Copy(writerOnly{rw}, src)
	}
	rw.send()
	var n int64
	if !rw.truncated {
		m, err := io.CopyN(writerOnly{rw}, src, int64(rw.max-len(rw.body))+1)
		n += m
		switch {
		case err == io.EOF:
			return n, nil
		case err != nil:
			return n, err
		}
	}
	var m int64
	var err error
	if rf, ok := rw.w.(io.ReaderFrom); ok {
		m, err = rf.ReadFrom(src)
	} else {
		m, err = io.Copy(writerOnly{rw.w}, src)
	}
	return n + m, err
}

// writerOnly hides every method but Write, so io.Copy does not call
// ReadFrom back.
type writerOnly struct{ io.Writer }

// Flush sends what was written so far to the client; the response is
// then not replayable (B19).
func (rw *responseWriter) Flush() { _ = rw.FlushError() }

// FlushError is Flush that reports an error, as http.ResponseController
// uses it. The response counts as streamed once a flush succeeded. Under
// hold it does nothing.
func (rw *responseWriter) FlushError() error {
	if rw.hold {
		return nil
	}
	rw.send()
	err := http.NewResponseController(rw.w).Flush()
	if err == nil && !rw.hijacked {
		rw.streamed = true
	}
	return err
}

// Hijack takes the connection over from the underlying writer, after
// sending a status the handler chose (a 101 before a WebSocket takes the
// connection), and releases the key at once, before the handler answers
// on the connection (B19).
func (rw *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if rw.status != 0 && !rw.hold {
		rw.send()
	}
	conn, brw, err := http.NewResponseController(rw.w).Hijack()
	if err == nil && !rw.hijacked {
		rw.hijacked = true
		_ = rw.lease.Release(errHijacked)
	}
	return conn, brw, err
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.w }

var errNotWrapped = errors.New("adapterkit: Framework.Hand did not wrap the response writer with Handoff.Wrap")

// end ends the lease once the chain returned with chainErr, the error
// Framework.Fail rendered.
func (rw *responseWriter) end(chainErr error) {
	defer rw.recycle()
	lease := rw.lease
	switch {
	case rw.w == nil:
		_ = lease.Release(errNotWrapped)
		panic(errNotWrapped.Error())
	case rw.hijacked: // released by Hijack
		return
	}
	if chainErr != nil {
		// Framework.Fail rendered the error, through this writer or the
		// framework's own way: the key is released, nothing recorded.
		_ = lease.Release(chainErr)
		if rw.sent {
			rw.sendHeld()
		}
		return
	}
	rw.send() // a status-only response goes out, and is recorded, now
	rec := idem.Recorded{Status: rw.status, Header: rw.header, Body: rw.body,
		Truncated: rw.truncated, Streamed: rw.streamed}
	if rw.hold && len(rw.body) > rw.max {
		rec.Body, rec.Truncated = nil, true
	}
	err := lease.Complete(rec) // a failure is reported by the engine (B23)
	switch {
	case !rw.hold:
	case err != nil:
		_, resp := lease.CommitFailure()
		WriteResponse(rw.w, resp)
	default:
		rw.sendHeld()
	}
}

// sendHeld writes a held response out (B35).
func (rw *responseWriter) sendHeld() {
	if !rw.hold {
		return
	}
	h := rw.w.Header()
	clear(h)
	maps.Copy(h, rw.sentHeader)
	rw.w.WriteHeader(rw.status)
	_, _ = rw.w.Write(rw.body)
}

// recycle hands the body buffer back for another response.
func (rw *responseWriter) recycle() {
	if rw.pooled == nil {
		return
	}
	if cap(rw.body) <= maxPooledBody {
		clear(rw.body)
		*rw.pooled = rw.body[:0]
		bodies.Put(rw.pooled)
	}
	rw.pooled, rw.body = nil, nil
}

// WriteResponse writes resp, a response the engine answered with (a
// replay or a problem), to w: its header fields, the first field of each
// name replacing fields of that name already set and the others added in
// order, a Content-Length, the status and the body.
func WriteResponse(w http.ResponseWriter, resp *idem.Response) {
	h := w.Header()
	// Every value goes into one slice; each name gets a capped window of
	// it, so that appending a later value of the same name copies it out.
	n := len(resp.Header)
	values := make([]string, n+1)
	var seen [8]string // the canonical names so far, for a short header
	for i, f := range resp.Header {
		name := http.CanonicalHeaderKey(f.Name)
		values[i] = f.Value
		first := true
		if n <= len(seen) {
			for _, s := range seen[:i] {
				if s == name {
					first = false
					break
				}
			}
			seen[i] = name
		} else {
			for _, g := range resp.Header[:i] {
				if http.CanonicalHeaderKey(g.Name) == name {
					first = false
					break
				}
			}
		}
		if first {
			h[name] = values[i : i+1 : i+1]
		} else {
			h[name] = append(h[name], f.Value)
		}
	}
	values[n] = strconv.Itoa(len(resp.Body))
	h["Content-Length"] = values[n:]
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(resp.Body)
}
