package idemhttp

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"

	idem "github.com/idemkit/idem/core"
)

// Recorder is the http.ResponseWriter a handler writes through while it
// runs under a lease. It passes everything on to the underlying writer at
// once and records the status, the header as sent and up to a limit of body
// bytes. It implements http.Flusher, http.Hijacker and io.ReaderFrom, and
// Unwrap for http.ResponseController; a flush or a hijack, directly or
// through a ResponseController, is recorded.
//
// A Recorder is used by one handler goroutine, like any ResponseWriter.
type Recorder struct {
	w           http.ResponseWriter
	max         int
	status      int
	header      idem.Header // as sent with the status
	wroteHeader bool
	body        []byte
	pooled      *[]byte // body's buffer, from bodyPool
	truncated   bool
	streamed    bool
	hijacked    bool
	lease       *idem.Lease // released on a hijack, when set
}

// NewRecorder returns a Recorder that writes to w and records up to
// maxBody body bytes (see idem.Lease.MaxBody).
func NewRecorder(w http.ResponseWriter, maxBody int) *Recorder {
	return &Recorder{w: w, max: maxBody}
}

// Reset makes r a new Recorder that writes to w for lease, as NewRecorder
// with lease.MaxBody() and ReleaseOnHijack(lease) would. An adapter that
// keeps a Recorder inside state of its own, allocated once per request,
// uses it instead of NewRecorder.
func (r *Recorder) Reset(w http.ResponseWriter, lease *idem.Lease) {
	*r = Recorder{w: w, max: lease.MaxBody(), lease: lease}
}

// bodyPool recycles the buffers Recorders record bodies into: a store
// copies the body it keeps, so a buffer is free again once Complete
// returned (see Recycle).
var bodyPool sync.Pool

// Buffers larger than maxPooledBody are left to the garbage collector
// instead of being kept for the next small response.
const maxPooledBody = 64 << 10

// Recycle hands the buffer the Recorder recorded the body into back for
// reuse by another Recorder. Call it once the recording was passed to
// idem.Lease.Complete (which copies what it keeps), or was dropped; the
// body Recorded returned must not be used after it. A Recorder that is
// never recycled leaves its buffer to the garbage collector.
func (r *Recorder) Recycle() {
	if r.pooled == nil {
		return
	}
	if cap(r.body) <= maxPooledBody {
		*r.pooled = r.body[:0]
		bodyPool.Put(r.pooled)
	}
	r.pooled, r.body = nil, nil
}

// Header returns the underlying writer's header map.
func (r *Recorder) Header() http.Header { return r.w.Header() }

// WriteHeader records the status and a copy of the header, then sends
// them. Informational (1xx) statuses pass through unrecorded. With a lease
// (see ReleaseOnHijack) the copy holds only the fields the lease stores.
func (r *Recorder) WriteHeader(code int) {
	if !r.wroteHeader && !r.hijacked && (code < 100 || code >= 200 || code == http.StatusSwitchingProtocols) {
		r.wroteHeader = true
		r.status = code
		if r.lease != nil {
			r.header = r.lease.KeepHeader(r.w.Header())
		} else {
			r.header = r.w.Header().Clone()
		}
	}
	r.w.WriteHeader(code)
}

// Write sends p and records it within the limit.
func (r *Recorder) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.w.Write(p)
	r.record(p[:n])
	return n, err
}

func (r *Recorder) record(p []byte) {
	if r.truncated || len(p) == 0 {
		return
	}
	if r.body == nil {
		if buf, ok := bodyPool.Get().(*[]byte); ok {
			r.pooled, r.body = buf, *buf
		} else {
			r.pooled = new([]byte)
		}
	}
	if room := r.max - len(r.body); len(p) > room {
		r.body = append(r.body, p[:room]...)
		r.truncated = true
		return
	}
	r.body = append(r.body, p...)
}

// ReadFrom copies src to the response. The bytes the Recorder keeps go
// through Write; past the limit the rest goes to the underlying writer's
// own ReadFrom, so net/http can still use sendfile for large bodies.
func (r *Recorder) ReadFrom(src io.Reader) (int64, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	var n int64
	if !r.truncated {
		m, err := io.CopyN(writerOnly{r}, src, int64(r.max-len(r.body))+1)
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
	if rf, ok := r.w.(io.ReaderFrom); ok {
		m, err = rf.ReadFrom(src)
	} else {
		m, err = io.Copy(writerOnly{r.w}, src)
	}
	return n + m, err
}

// writerOnly hides every method but Write, so io.Copy does not call
// ReadFrom back.
type writerOnly struct{ io.Writer }

// Flush sends what was written so far to the client and records the
// response as streamed.
func (r *Recorder) Flush() { _ = r.FlushError() }

// FlushError is Flush that reports an error, as http.ResponseController
// uses it. The response counts as streamed once a flush succeeded.
func (r *Recorder) FlushError() error {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	err := http.NewResponseController(r.w).Flush()
	if err == nil {
		r.streamed = true
	}
	return err
}

// Hijack takes over the connection from the underlying writer. The
// recording then no longer describes the response, and the lease set with
// ReleaseOnHijack is released.
func (r *Recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(r.w).Hijack()
	if err == nil {
		r.hijacked = true
		if r.lease != nil {
			_ = r.lease.Release(errHijacked)
		}
	}
	return conn, rw, err
}

// ReleaseOnHijack ties the Recorder to lease: a successful Hijack releases
// lease before it hands the connection to the handler, so that the key is free again while the
// handler still holds the connection, which a WebSocket session may do for
// hours (B19). The adapter then must not complete or release lease once
// Hijacked reports true. The header snapshot then keeps only the fields
// lease stores (idem.Lease.KeepHeader). Run uses it; so does an adapter
// that runs its handlers itself.
func (r *Recorder) ReleaseOnHijack(lease *idem.Lease) { r.lease = lease }

// Unwrap returns the underlying writer, for http.ResponseController.
func (r *Recorder) Unwrap() http.ResponseWriter { return r.w }

// Hijacked reports whether the handler hijacked the connection.
func (r *Recorder) Hijacked() bool { return r.hijacked }

// Recorded returns what the Recorder saw, for idem.Lease.Complete. Its
// body is the Recorder's buffer, valid until Recycle.
func (r *Recorder) Recorded() idem.Recorded {
	header := r.header
	if !r.wroteHeader {
		header = r.w.Header()
	}
	return idem.Recorded{Status: r.status, Header: header, Body: r.body,
		Truncated: r.truncated, Streamed: r.streamed}
}
