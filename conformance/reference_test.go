package conformance_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// This file holds a reference adapter for a small gin-like framework,
// "refweb", written on the engine's API alone, so that every translation
// point an adapter author writes (the request handed to Begin, the
// engine's answer written out, the response recorded, stacking, panics,
// Goexit, errors and hijacks) sits in this file and can be broken on
// purpose. Each `if faulty(...)` is one mutant of the catalogue in
// mutants_test.go; with no fault set the adapter passes the whole suite
// (TestReferenceAdapter).

// fault is the mutant this process runs, "" for none. It is set once,
// before any request, from the environment of a child process.
var fault string

// faulty reports whether the adapter runs with mutant name.
func faulty(name string) bool { return fault == name }

// ---- refweb, the framework ----

// refCtx is refweb's per-request context, in the style of gin.Context.
type refCtx struct {
	W     refWriter
	R     *http.Request
	chain []refHandler
	i     int
	// idem is the adapter's per-request state (a framework's Locals).
	idem *refState
}

// refHandler is a refweb handler or middleware.
type refHandler interface{ Serve(c *refCtx) error }

type refFunc func(c *refCtx) error

func (f refFunc) Serve(c *refCtx) error { return f(c) }

// Next runs the rest of the chain.
func (c *refCtx) Next() error {
	c.i++
	if c.i < len(c.chain) {
		return c.chain[c.i].Serve(c)
	}
	return nil
}

// JSON is refweb's JSON responder, in gin's order: the status first, then
// Content-Type, then the body.
func (c *refCtx) JSON(status int, doc []byte) error {
	c.W.Status(status)
	c.W.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, err := c.W.Write(doc)
	return err
}

// refWriter is refweb's response writer. Status chooses the status; it is
// sent with the header when the first body byte is written, on a flush,
// or when the chain ends, as gin does.
type refWriter interface {
	Header() http.Header
	Status(code int)
	Write(p []byte) (int, error)
	Flush()
	Hijack() (net.Conn, *bufio.ReadWriter, error)
}

// baseWriter is refweb's writer over net/http.
type baseWriter struct {
	w        http.ResponseWriter
	status   int
	sent     bool
	hijacked bool
}

func (b *baseWriter) Header() http.Header { return b.w.Header() }
func (b *baseWriter) Status(code int) {
	if !b.sent {
		b.status = code
	}
}

// StatusCode returns the status chosen so far, as gin's Writer.Status().
func (b *baseWriter) StatusCode() int { return b.status }

func (b *baseWriter) send() {
	if b.sent || b.hijacked {
		return
	}
	b.sent = true
	if b.status == 0 {
		b.status = http.StatusOK
	}
	b.w.WriteHeader(b.status)
}

func (b *baseWriter) Write(p []byte) (int, error) {
	b.send()
	return b.w.Write(p)
}

func (b *baseWriter) Flush() {
	b.send()
	_ = http.NewResponseController(b.w).Flush()
}

func (b *baseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(b.w).Hijack()
	if err == nil {
		b.hijacked = true
	}
	return conn, rw, err
}

// refRouter is refweb's router: router-wide middleware (Use) and routes
// with middleware of their own, run as one chain, with recovery and error
// rendering around it.
type refRouter struct {
	use    []refHandler
	routes map[string][]refHandler
}

func (rt *refRouter) handle(method, path string, hs ...refHandler) {
	if rt.routes == nil {
		rt.routes = map[string][]refHandler{}
	}
	rt.routes[method+" "+path] = append(append([]refHandler(nil), rt.use...), hs...)
}

func (rt *refRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	chain, ok := rt.routes[r.Method+" "+r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	bw := &baseWriter{w: w}
	c := &refCtx{W: bw, R: r, chain: chain, i: -1}
	defer func() {
		// Recovery: a panic is answered 500 when nothing was sent yet.
		if p := recover(); p != nil && !bw.sent && !bw.hijacked {
			bw.Header().Set("Content-Type", "text/plain; charset=utf-8")
			bw.Status(http.StatusInternalServerError)
			_, _ = bw.Write([]byte("internal error"))
		}
	}()
	if err := c.Next(); err != nil && !bw.sent && !bw.hijacked {
		bw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		bw.Status(http.StatusInternalServerError)
		_, _ = bw.Write([]byte("error: " + err.Error()))
	}
	bw.send()
}

// ---- the reference adapter ----

// refState is the adapter's state on one request.
type refState struct {
	// handled: a layer took charge of the request.
	handled bool
	// outer: the merged settings of the outer layers that left the
	// request to a nearer one.
	outer idem.Route
}

// refLayer is one idem middleware of the reference adapter.
type refLayer struct {
	e     *idem.Engine
	route idem.Route
}

var (
	errAborted  = errors.New("reference: the handler panicked or did not return")
	errHijacked = errors.New("reference: the handler hijacked the connection")
)

func (l *refLayer) Serve(c *refCtx) error {
	if c.idem == nil {
		c.idem = &refState{}
	}
	st := c.idem
	if st.handled && !faulty("two_layers_process") {
		return c.Next()
	}
	if l.nearerLayerFollows(c) && !faulty("outer_layer_wins") && !faulty("two_layers_process") {
		// The layer nearest the handler decides, with settings merged
		// over this one's (B2).
		st.outer = conformance.Merge(l.route, st.outer)
		return c.Next()
	}
	route := l.route
	if !faulty("route_layer_not_merged") {
		route = conformance.Merge(route, st.outer)
	}
	if faulty("route_store_dropped") {
		route.Store = nil
	}
	if faulty("route_retention_dropped") {
		route.Retention = 0
	}
	d := l.e.Begin(l.request(c, route))
	switch d.Action {
	case idem.Respond:
		write(c.W, d)
		if faulty("handler_runs_after_respond") {
			return c.Next()
		}
		return nil
	case idem.Run:
		st.handled = true
		return l.run(c, d)
	}
	if d.TookPart() {
		st.handled = true
	}
	if d.BodyRead && !faulty("body_not_restored_on_pass") {
		c.R.Body = io.NopCloser(bytes.NewReader(d.Body))
	}
	if d.Finding != nil && !faulty("finding_not_passed") {
		c.R = c.R.WithContext(idem.WithFinding(c.R.Context(), d.Finding))
	}
	return c.Next()
}

// nearerLayerFollows reports whether another layer of l's engine follows
// l in c's chain.
func (l *refLayer) nearerLayerFollows(c *refCtx) bool {
	for _, h := range c.chain[c.i+1:] {
		if o, ok := h.(*refLayer); ok && o.e == l.e {
			return true
		}
	}
	return false
}

// request describes c to the engine.
func (l *refLayer) request(c *refCtx, route idem.Route) *idem.Request {
	r := c.R
	req := &idem.Request{Method: r.Method, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
		Header: r.Header, Context: r.Context(), Route: route}
	switch {
	case faulty("wrong_method"):
		req.Method = http.MethodPost
	case faulty("wrong_path"):
		req.Path = "/"
	case faulty("dropped_query"):
		req.RawQuery = ""
	case faulty("scope_header_dropped"):
		req.Header = onlyHeader{r.Header, l.e.Config().HeaderName}
	case faulty("request_header_first_value_only"):
		req.Header = firstValues{r.Header}
	}
	if r.Body != nil && r.Body != http.NoBody {
		req.Body, req.ContentLength = r.Body, r.ContentLength
	}
	return req
}

// onlyHeader shows the engine one header field name of h.
type onlyHeader struct {
	h    http.Header
	name string
}

func (o onlyHeader) Values(name string) []string {
	if http.CanonicalHeaderKey(name) != http.CanonicalHeaderKey(o.name) {
		return nil
	}
	return o.h.Values(name)
}

// firstValues shows only the first value of each name, as fasthttp's Peek.
type firstValues struct{ h http.Header }

func (f firstValues) Values(name string) []string {
	if v := f.h.Values(name); len(v) > 0 {
		return v[:1]
	}
	return nil
}

// run runs the rest of the chain under d.Lease and completes or releases
// the lease.
func (l *refLayer) run(c *refCtx, d idem.Decision) error {
	lease := d.Lease
	if d.BodyRead && !faulty("body_not_restored_on_run") {
		c.R.Body = io.NopCloser(bytes.NewReader(d.Body))
	}
	if !faulty("run_context_not_passed") {
		// A transactional store's run context carries its transaction.
		c.R = c.R.WithContext(lease.Context())
	}
	rec := &recorder{w: c.W, lease: lease, hold: lease.HoldResponse() && !faulty("response_not_held")}
	c.W = rec
	defer func() { c.W = rec.w }()
	switch {
	case faulty("goexit_not_released"):
		// Tells a failed handler by recover(), which a runtime.Goexit
		// gets past: the lease is left to expire.
		defer func() {
			if p := recover(); p != nil {
				_ = lease.Release(errAborted)
				panic(p)
			}
		}()
	case faulty("panic_swallowed"):
		defer func() {
			if p := recover(); p != nil {
				_ = lease.Release(errAborted)
			}
		}()
	case faulty("panic_not_released"):
	default:
		// A panic or runtime.Goexit leaves returned false.
		returned := false
		defer func() {
			if !returned && !rec.hijacked {
				_ = lease.Release(errAborted)
			}
		}()
		err := c.Next()
		returned = true
		return l.finish(rec, lease, err)
	}
	return l.finish(rec, lease, c.Next())
}

// finish completes or releases lease after the chain returned err.
func (l *refLayer) finish(rec *recorder, lease *idem.Lease, err error) error {
	switch {
	case rec.hijacked:
	case err != nil && faulty("complete_on_handler_error"):
		_ = lease.Complete(rec.recorded())
	case err != nil && faulty("lease_left_on_handler_error"):
	case err != nil:
		_ = lease.Release(err)
	default:
		if cerr := lease.Complete(rec.recorded()); cerr != nil && rec.hold {
			// The handler's writes did not commit: never its success.
			rec.commitFailed()
			return nil
		}
	}
	if rec.hold && rec.touched && !rec.hijacked {
		rec.sendHeld()
	}
	return err
}

// recorder is the writer a handler writes through under a lease: it
// passes everything on and records the status, the header as it stands
// when the first body byte goes out (or the handler ends) and the body up
// to the lease's limit.
type recorder struct {
	w         refWriter
	lease     *idem.Lease
	status    int
	header    idem.Header
	body      []byte
	truncated bool
	streamed  bool
	hijacked  bool
	// hold: the lease's record commits with the handler's writes, so the
	// response goes out only after Complete (B35); until then the status
	// and the body are kept here (touched: the handler chose a status,
	// wrote or flushed).
	hold    bool
	touched bool
	held    []byte
}

// sendHeld writes the held response.
func (r *recorder) sendHeld() {
	status := r.status
	if status == 0 {
		status = http.StatusOK
	}
	r.w.Status(status)
	if len(r.held) > 0 {
		_, _ = r.w.Write(r.held)
	}
}

// commitFailed answers with the lease's not-committed problem in place of
// the held response, dropping the header fields the handler set.
func (r *recorder) commitFailed() {
	h := r.w.Header()
	for name := range h {
		delete(h, name)
	}
	p, resp := r.lease.CommitFailure()
	write(r.w, idem.Decision{Action: idem.Respond, Response: resp, Problem: p})
}

func (r *recorder) Header() http.Header { return r.w.Header() }

func (r *recorder) Status(code int) {
	r.touched = true
	if !r.hold {
		r.w.Status(code)
	}
	if !faulty("status_only_as_200") && !faulty("status_not_recorded") {
		r.status = code
	}
	switch {
	case faulty("headers_at_status"):
		r.snapshot()
	case faulty("late_headers_dropped"):
		// Sends the header as soon as the status is chosen.
		r.snapshot()
		if !r.hold {
			_, _ = r.w.Write(nil)
		}
	}
}

// snapshot keeps the header fields the lease stores, as they stand now.
func (r *recorder) snapshot() {
	var h idem.Header = r.w.Header()
	if faulty("recorded_header_first_values_only") {
		h = firstValues{r.w.Header()}
	}
	r.header = r.lease.KeepHeader(h)
}

// begin records the status and header when the first body byte goes out.
func (r *recorder) begin() {
	if r.header != nil {
		return
	}
	if faulty("status_only_as_200") {
		r.status = r.w.(interface{ StatusCode() int }).StatusCode()
	}
	r.snapshot()
}

func (r *recorder) Write(p []byte) (int, error) {
	r.begin()
	r.touched = true
	n, err := len(p), error(nil)
	if r.hold {
		r.held = append(r.held, p...)
	} else {
		n, err = r.w.Write(p)
	}
	if room := r.lease.MaxBody() - len(r.body); n > room {
		r.body = append(r.body, p[:room]...)
		r.truncated = !faulty("truncation_not_reported")
	} else {
		r.body = append(r.body, p[:n]...)
	}
	return n, err
}

func (r *recorder) Flush() {
	r.begin()
	r.touched = true
	if !r.hold {
		r.w.Flush()
	}
	if !faulty("flush_bypasses_recorder") {
		r.streamed = true
	}
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := r.w.Hijack()
	if err == nil && !faulty("hijack_not_released") {
		r.hijacked = true
		_ = r.lease.Release(errHijacked)
	}
	return conn, rw, err
}

// recorded returns the response for Lease.Complete.
func (r *recorder) recorded() idem.Recorded {
	if r.header == nil {
		r.snapshot()
	}
	return idem.Recorded{Status: r.status, Header: r.header, Body: r.body,
		Truncated: r.truncated, Streamed: r.streamed}
}

// write writes the engine's answer in d: a replay or a problem.
func write(w refWriter, d idem.Decision) {
	resp := d.Response
	if d.Problem != nil && faulty("problem_as_text_plain") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Status(d.Problem.Status)
		_, _ = w.Write([]byte(d.Problem.Detail))
		return
	}
	status := resp.Status
	if faulty("respond_status_ignored") {
		status = http.StatusOK
	}
	if faulty("replay_written_before_headers") {
		w.Status(status)
		_, _ = w.Write(nil)
	}
	h := w.Header()
	for _, f := range resp.Header {
		h.Del(f.Name)
	}
	for _, f := range resp.Header {
		switch {
		case f.Name == idem.ReplayedHeader && faulty("replay_without_marker"):
		case faulty("replay_headers_set_not_added"):
			h.Set(f.Name, f.Value)
		default:
			h.Add(f.Name, f.Value)
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.Status(status)
	if len(resp.Body) > 0 {
		_, _ = w.Write(resp.Body)
	}
}

// ---- the harness ----

// refHarness serves conformance apps with refweb and the reference
// adapter: the router-wide layer in Use, a route layer among the route's
// handlers.
type refHarness struct{}

func (refHarness) Lacks() map[conformance.Capability]string { return nil }

func (refHarness) Serve(t testing.TB, app conformance.App) string {
	rt := &refRouter{use: []refHandler{&refLayer{e: app.Engine, route: app.Settings}}}
	for _, r := range app.Routes {
		var hs []refHandler
		for _, s := range []idem.Route{r.Outer, r.Settings} {
			if s != (idem.Route{}) {
				hs = append(hs, &refLayer{e: app.Engine, route: s})
			}
		}
		rt.handle(r.Method, r.Path, append(hs, refScripted(r.Handler))...)
	}
	srv := httptest.NewUnstartedServer(rt)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // scripted panics
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// refScripted runs a conformance handler as a refweb handler.
func refScripted(h *conformance.Handler) refHandler {
	return refFunc(func(c *refCtx) error {
		body, err := io.ReadAll(c.R.Body)
		if err != nil {
			return err
		}
		st := h.Serve(c.R.Context(), body)
		switch {
		case st.Panic:
			panic("conformance: scripted panic")
		case st.Goexit:
			runtime.Goexit()
		case st.Fail:
			return conformance.ErrScripted
		case st.Hijack:
			conn, _, err := c.W.Hijack()
			if err != nil {
				return err
			}
			_, _ = io.WriteString(conn, conformance.HijackedResponse)
			return conn.Close()
		}
		for _, f := range st.Header {
			c.W.Header().Add(f.Name, f.Value)
		}
		if st.JSON {
			return c.JSON(st.Status, st.Body)
		}
		c.W.Status(st.Status)
		for _, f := range st.Late {
			c.W.Header().Add(f.Name, f.Value)
		}
		if len(st.Body) == 0 {
			return nil
		}
		if st.Flush {
			half := len(st.Body) / 2
			if _, err := c.W.Write(st.Body[:half]); err != nil {
				return err
			}
			c.W.Flush()
			st.Body = st.Body[half:]
		}
		_, err = c.W.Write(st.Body)
		return err
	})
}

// TestReferenceAdapter runs the suite against the reference adapter with
// no fault: the baseline every mutant departs from.
func TestReferenceAdapter(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("a child process runs only TestSuiteChild")
	}
	conformance.Run(t, refHarness{})
}
