package conformance

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// Harness serves an App through one adapter. An adapter's own test
// implements it and calls Run.
type Harness interface {
	// Serve starts a server for app on a loopback listener and returns its
	// base URL, such as "http://127.0.0.1:41234". The server must stop
	// when t's cleanup functions run.
	//
	// Every route is served through two stacked idem layers, each built
	// from app.Engine the way the adapter documents: a router-wide layer
	// with app.Settings, which covers every route (a router's Use, a
	// group's middleware, a handler wrapped around the whole mux), and,
	// for each route whose Settings are not zero, a route layer with those
	// settings nearer the handler (chi's r.With, a middleware given to one
	// route). Where both set something the route layer wins; what the route
	// layer leaves zero comes from the router-wide layer, and exactly one
	// layer processes a request (B2, B27). A route whose Outer settings are
	// not zero gets a second route layer with them, outside the Settings
	// layer. Each route's handler does what
	// Handler.Serve says; the framework's own recovery and error handling
	// stay in place.
	Serve(t testing.TB, app App) string

	// Lacks names the capabilities the adapter or its framework does not
	// have, each with the reason. Cases that need one skip with the reason.
	Lacks() map[Capability]string
}

// Capability is something a case needs that not every framework offers.
type Capability string

const (
	// Flush: the handler can flush a partial response to the client.
	Flush Capability = "flush"
	// Hijack: the handler can take over the connection.
	Hijack Capability = "hijack"
	// HandlerError: the handler can return an error that the framework
	// renders as a response.
	HandlerError Capability = "handler-error"
	// Goexit: the handler can end its goroutine with runtime.Goexit (as
	// t.FailNow does in a test handler) and the framework then closes the
	// connection.
	Goexit Capability = "goexit"
)

// App describes an application: routes with scripted handlers, served with
// one engine.
type App struct {
	Engine *idem.Engine
	// Settings are the router-wide layer's settings (policy, store,
	// retention). The zero value means the engine's configuration applies.
	Settings idem.Route
	Routes   []*Route
}

// Route is one route of an App.
type Route struct {
	Method string
	// Path is a literal path such as "/orders"; it has no parameters.
	Path string
	// Settings are the route layer's settings (policy, store, retention).
	// The zero value means the route has no layer of its own: the
	// router-wide layer's settings apply.
	Settings idem.Route
	// Outer, when not zero, stacks a second route layer with these
	// settings on the route, outside the Settings layer (chi's
	// r.With(outer, inner), echo's and Fiber's route middleware in that
	// order, net/http's outer(inner(h))), as a user does who stacks idem
	// layers on one route. Exactly one of the two processes a request.
	Outer   idem.Route
	Handler *Handler
}

// Merge returns the settings inner with every setting it leaves zero
// taken from outer, the way stacked idem layers merge (the layer nearer
// the handler wins, B2). A harness whose router-wide layer skips the
// routes that have layers of their own (Fiber's Next, echo's Skipper)
// builds those route layers with Merge(route.Settings, app.Settings), so
// that they take what they leave zero from the router-wide settings.
func Merge(inner, outer idem.Route) idem.Route {
	if inner.Policy == idem.Inherit {
		inner.Policy = outer.Policy
	}
	if inner.Store == nil {
		inner.Store = outer.Store
	}
	if inner.Retention == 0 {
		inner.Retention = outer.Retention
	}
	if inner.Name == "" {
		inner.Name = outer.Name
	}
	return inner
}

// Handler is a scripted handler. A harness runs it in the framework's own
// handler type: it reads the whole request body, calls Serve, then acts
// on the Step it returns.
type Handler struct {
	// Status, Header and Body make the response. Status 0 means 200.
	Status int
	Header []idem.HeaderField
	Body   []byte
	// Late holds header fields the handler sets after it chose the status
	// and before it writes the first body byte (see Step).
	Late []idem.HeaderField
	// JSON answers with the framework's own JSON responder (see Step).
	JSON bool
	// EchoBody answers with the request body instead of Body.
	EchoBody bool
	// Delay holds the handler before it responds.
	Delay time.Duration
	// Gate, when set, holds the handler until it is closed.
	Gate chan struct{}
	// Panic makes the handler panic instead of responding.
	Panic bool
	// Goexit makes the handler end its goroutine with runtime.Goexit
	// instead of responding (needs Goexit).
	Goexit bool
	// Fail makes the handler return an error for the framework to render,
	// instead of responding (needs HandlerError).
	Fail bool
	// Flush writes the body in two halves and flushes after the first.
	Flush bool
	// Hijack makes the handler hijack the connection, write a minimal
	// HTTP/1.1 response on it and close it.
	Hijack bool

	calls    atomic.Int64
	mu       sync.Mutex
	bodies   [][]byte
	findings []*idem.Finding
	runs     []bool
	entered  chan struct{}
	closed   bool
	once     sync.Once
}

// HijackedResponse is what a harness writes on a hijacked connection
// before it closes it.
const HijackedResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked"

// ErrScripted is the error a Fail handler returns.
var ErrScripted = errors.New("conformance: scripted handler error")

// Step tells a harness what the handler does after Serve returns. At most
// one of Panic, Goexit, Fail and Hijack is set; otherwise the handler
// responds, in this order:
//
//  1. set the fields of Header (adding each, so a name may repeat);
//  2. choose Status the framework's way, without writing a body: gin's
//     c.Status, echo's Response().WriteHeader, fiber's c.Status, net/http's
//     WriteHeader;
//  3. set the fields of Late (adding each), as a handler does that sets a
//     header after it chose the status;
//  4. write Body, unless it is empty: a status-only response writes no
//     body at all (no empty Write); with Flush, write Body[:len(Body)/2],
//     flush, then the rest.
//
// With JSON the handler instead answers with the framework's own JSON
// responder, given Status and Body (a JSON document, as a json.RawMessage
// or the framework's equivalent): gin's c.JSON, echo's c.JSON, fiber's
// c.Status(...).JSON. The responder sets Content-Type application/json
// wherever the framework sets it, before or after the status; a framework
// without one (net/http) sets Content-Type, then the status, then writes
// Body. Header fields are set first, as in step 1.
type Step struct {
	Panic  bool
	Goexit bool
	Fail   bool
	Hijack bool
	Flush  bool
	JSON   bool
	Status int
	Header []idem.HeaderField
	Late   []idem.HeaderField
	// Body is the whole body.
	Body []byte
}

// Serve records one execution with the request body the handler read and
// the Finding from the request's context (nil when there is none), waits
// for Delay and Gate, and returns what to do next.
func (h *Handler) Serve(ctx context.Context, body []byte) Step {
	h.calls.Add(1)
	f, _ := idem.FindingFrom(ctx)
	h.mu.Lock()
	h.bodies = append(h.bodies, append([]byte(nil), body...))
	h.findings = append(h.findings, f)
	h.runs = append(h.runs, ctx.Value(runKey{}) != nil)
	if !h.closed {
		h.closed = true
		close(h.entry())
	}
	h.mu.Unlock()
	if h.Delay > 0 {
		select {
		case <-time.After(h.Delay):
		case <-ctx.Done():
		}
	}
	if h.Gate != nil {
		<-h.Gate
	}
	st := Step{Panic: h.Panic, Goexit: h.Goexit, Fail: h.Fail, Hijack: h.Hijack, Flush: h.Flush,
		JSON: h.JSON, Status: h.Status, Header: h.Header, Late: h.Late, Body: h.Body}
	if st.Status == 0 {
		st.Status = 200
	}
	if h.EchoBody {
		st.Body = append([]byte(nil), body...)
	}
	return st
}

func (h *Handler) entry() chan struct{} {
	h.once.Do(func() { h.entered = make(chan struct{}) })
	return h.entered
}

// Entered is closed when the handler first runs.
func (h *Handler) Entered() <-chan struct{} { return h.entry() }

// Calls reports how many times the handler ran.
func (h *Handler) Calls() int64 { return h.calls.Load() }

// Bodies returns the request bodies the handler read, one per execution.
func (h *Handler) Bodies() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.bodies...)
}

// Runs reports, for each execution, whether the handler's context was the
// one a transactional store began for the run (B35); only the suite's own
// transactional store marks its runs.
func (h *Handler) Runs() []bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]bool(nil), h.runs...)
}

// Findings returns the Finding of each execution (nil where none).
func (h *Handler) Findings() []*idem.Finding {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*idem.Finding(nil), h.findings...)
}
