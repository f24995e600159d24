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
	// Every route is served with the adapter's middleware built from
	// app.Engine, with the route's Settings applied the adapter's way for
	// route-level settings: the way the adapter documents for giving one
	// route a policy, store or retention of its own that wins over the
	// engine's configuration (B2, B27). Each route's handler does what
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
)

// App describes an application: routes with scripted handlers, served with
// one engine.
type App struct {
	Engine *idem.Engine
	Routes []*Route
}

// Route is one route of an App.
type Route struct {
	Method string
	// Path is a literal path such as "/orders"; it has no parameters.
	Path string
	// Settings are the route-level settings (policy, store, retention).
	// The zero value means the engine's configuration applies.
	Settings idem.Route
	Handler  *Handler
}

// Handler is a scripted handler. A harness runs it in the framework's own
// handler type: it reads the whole request body, calls Serve, then acts
// on the Step it returns.
type Handler struct {
	// Status, Header and Body make the response. Status 0 means 200.
	Status int
	Header []idem.HeaderField
	Body   []byte
	// EchoBody answers with the request body instead of Body.
	EchoBody bool
	// Delay holds the handler before it responds.
	Delay time.Duration
	// Gate, when set, holds the handler until it is closed.
	Gate chan struct{}
	// Panic makes the handler panic instead of responding.
	Panic bool
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
	entered  chan struct{}
	closed   bool
	once     sync.Once
}

// HijackedResponse is what a harness writes on a hijacked connection
// before it closes it.
const HijackedResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked"

// ErrScripted is the error a Fail handler returns.
var ErrScripted = errors.New("conformance: scripted handler error")

// Step tells a harness what the handler does after Serve returns.
type Step struct {
	Panic  bool
	Fail   bool
	Hijack bool
	Flush  bool
	Status int
	Header []idem.HeaderField
	// Body is the whole body; with Flush, write Body[:len(Body)/2], flush,
	// then the rest.
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
	st := Step{Panic: h.Panic, Fail: h.Fail, Hijack: h.Hijack, Flush: h.Flush,
		Status: h.Status, Header: h.Header, Body: h.Body}
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

// Findings returns the Finding of each execution (nil where none).
func (h *Handler) Findings() []*idem.Finding {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*idem.Finding(nil), h.findings...)
}
