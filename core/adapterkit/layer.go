package adapterkit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	idem "github.com/idemkit/idem/core"
)

// Framework is what an adapter tells the kit about its framework. C is
// the adapter's handle on one request, usually a small struct of the
// framework's own values (for net/http: the ResponseWriter, the *Request
// and the next handler). An adapter implements Framework once, typically
// on an empty struct type, and the kit calls it for every request.
type Framework[C any] interface {
	// Request describes c to the engine: it fills Method, Path
	// (escaped), RawQuery, Header, Context, and the body: Body with
	// ContentLength, or BodyBytes when the framework holds the body in
	// memory. Views of the framework's buffers are fine (see
	// idem.Request); r is reset after Begin. The kit sets Route.
	Request(c C, r *idem.Request)
	// RouteName returns the name of c's route by the framework's own
	// means (its route pattern), or "". Settings.RouteName replaces it.
	RouteName(c C) string
	// Mark returns the Mark a layer left on c with Hand, or nil.
	Mark(c C) *Mark[C]
	// Hand prepares c for the rest of the chain as h says and returns
	// the handle the kit passes to Next: h.Mark where Mark finds it,
	// h's context as the handler's context, h's body as the request
	// body, and, for a framework that writes through an
	// http.ResponseWriter, the writer wrapped with h.Wrap.
	Hand(c C, h Handoff[C]) C
	// Next runs the rest of the chain (inner middleware and the handler)
	// and returns what it returned. It undoes what Hand changed that must
	// not outlive the layer (a writer swapped into a shared response),
	// also when the chain panics.
	Next(c C) error
	// Write writes resp, a replay or the engine's rendering of a problem,
	// as the whole response to c: its header fields, replacing fields of
	// the same name already set, repeated fields in order, then its
	// status and body (WriteResponse does this for an
	// http.ResponseWriter).
	Write(c C, resp *idem.Response)
	// Fail renders err, an error the chain returned while the handler
	// ran under a lease, the framework's way (its error handler), so that
	// the response is final before the kit releases the key (B15). c is
	// the handle Hand returned: a framework that writes through an
	// http.ResponseWriter renders through the wrapped one. What Fail
	// returns is what Serve returns. A framework whose handlers return no
	// error never sees Fail called.
	Fail(c C, err error) error
}

// Buffered is implemented by the Framework of a framework that keeps the
// handler's whole response in memory until the handler returns, as
// fasthttp does, instead of writing through an http.ResponseWriter that
// the adapter wraps. The kit then reads the response after the chain
// returned.
type Buffered[C any] interface {
	// Recorded returns the response the chain left in c: the status, a
	// view of its header and its body, the body only when it is at most
	// maxBody bytes (else Truncated), Streamed when the body is sent as a
	// stream after the handler. Views of the framework's buffers are fine:
	// Complete copies what it keeps before the kit returns. hijacked
	// reports that the handler took the connection over.
	Recorded(c C, maxBody int) (rec idem.Recorded, hijacked bool)
	// Discard drops the response the chain left in c, its header fields
	// and body, before the kit writes a problem in its place (see
	// idem.Lease.HoldResponse).
	Discard(c C)
}

// Mark is what a layer leaves on a request for the idem layers inside it
// (Handoff.Mark): that it took charge of the request, or the settings an
// inner layer merges with. An adapter stores the pointer where
// Framework.Mark finds it, and never looks inside.
type Mark[C any] struct {
	taken    bool
	settings Settings[C]
	layer    *Layer[C]
}

// Taken reports that the layer which left m took charge of the request:
// every inner layer passes it through.
func (m *Mark[C]) Taken() bool { return m.taken }

// Layer is one idem middleware: an engine, a Framework and the layer's
// Settings. An adapter makes one with NewLayer for every middleware it
// builds and calls Serve for every request the middleware sees.
type Layer[C any] struct {
	engine   *idem.Engine
	fw       Framework[C]
	buffered Buffered[C]
	settings Settings[C]
	safe     []string
	logger   *slog.Logger
	defaults defaults
	// own is the layer's settings with the marks it leaves.
	own marks[C]
	// warned is set once the layer warned that an outer layer ignored
	// its settings.
	warned atomic.Bool
}

// NewLayer returns the layer of engine e with settings s, or an error
// when e is nil or s cannot serve a route: Policy must be Inherit or one
// of the policies, and Retention 0 (the engine's) or at least 1ms, the
// bound idem.New applies to Config.Retention. The error joins one error
// per problem, each naming the setting as Settings spells it, without a
// package prefix, for instance "Retention 1µs is neither 0 nor at least
// 1ms": an adapter adds its own prefix.
func NewLayer[C any](e *idem.Engine, fw Framework[C], s Settings[C]) (*Layer[C], error) {
	var errs []error
	if e == nil {
		errs = append(errs, errors.New("Engine is nil"))
	}
	errs = append(errs, s.validate()...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return newLayer(e, fw, s), nil
}

func newLayer[C any](e *idem.Engine, fw Framework[C], s Settings[C]) *Layer[C] {
	cfg := e.Config()
	l := &Layer[C]{engine: e, fw: fw, settings: s, safe: cfg.SafeMethods, logger: cfg.Logger,
		defaults: defaults{cfg.DefaultPolicy, e.Store(), cfg.Retention}}
	l.buffered, _ = fw.(Buffered[C])
	l.own.init(l, s)
	return l
}

// Engine returns the layer's engine.
func (l *Layer[C]) Engine() *idem.Engine { return l.engine }

// Settings returns the layer's settings.
func (l *Layer[C]) Settings() Settings[C] { return l.settings }

// Under returns the layer that l and outer, a layer of the same engine
// that wraps l directly, merge into: l's settings win, the ones it leaves
// zero come from outer (B2). An adapter that sees at build time that one
// of its layers wraps another (net/http: the next handler is a layer)
// serves requests with the merged layer alone.
func (l *Layer[C]) Under(outer *Layer[C]) *Layer[C] {
	return newLayer(l.engine, l.fw, l.settings.under(&outer.settings))
}

// requests recycles the requests handed to Engine.Begin, which keeps
// none.
var requests = sync.Pool{New: func() any { return new(idem.Request) }}

// Serve handles one request: it decides with the engine, answers, passes
// the request on or runs the handler under a lease, records the response
// and completes or releases the lease. It returns what the chain, the
// ProblemHandler or Framework.Fail returned, for the adapter to return to
// its framework.
func (l *Layer[C]) Serve(c C) error {
	fw := l.fw
	mark := fw.Mark(c)
	if mark != nil && mark.taken {
		l.warnIgnored(c, mark)
		return fw.Next(c)
	}
	own := &l.own
	if mark != nil {
		// An outer layer left the request to inner ones: take what it
		// hands on where this layer sets nothing.
		own = new(marks[C])
		own.init(l, l.settings.inherit(&mark.settings))
	}
	s := &own.taken.settings
	req := requests.Get().(*idem.Request)
	fw.Request(c, req)
	req.Route = idem.Route{Policy: s.Policy, Store: s.Store, Retention: s.Retention, Name: routeName(s, fw, c)}
	d := l.engine.Begin(req)
	reqCtx, safe := req.Context, slices.Contains(l.safe, req.Method)
	*req = idem.Request{}
	requests.Put(req)
	if reqCtx == nil {
		reqCtx = context.Background()
	}

	h := Handoff[C]{body: d.Body, bodyRead: d.BodyRead}
	switch {
	case !d.TookPart():
		// Inner layers decide, taking the settings this layer hands on
		// (a safe method passes every layer of the engine anyway).
		if !safe && s.handsOn() {
			h.Mark = &own.passed
		}
		if h.Mark == nil && !h.bodyRead {
			return fw.Next(c)
		}
		return fw.Next(fw.Hand(c, h))
	case d.Action == idem.Respond:
		if d.Problem != nil && s.ProblemHandler != nil {
			return s.ProblemHandler(c, d.Problem)
		}
		fw.Write(c, d.Response)
		return nil
	case d.Action == idem.Run:
		return l.run(c, h, &own.taken, d.Lease, reqCtx)
	default: // a Pass that took part: a Manual finding, or fail-open
		h.Mark = &own.taken
		if d.Finding != nil {
			h.ctx = idem.WithFinding(reqCtx, d.Finding)
		}
		return fw.Next(fw.Hand(c, h))
	}
}

var (
	errAborted  = errors.New("adapterkit: the handler panicked or exited its goroutine")
	errHijacked = errors.New("adapterkit: the handler hijacked the connection")
)

// run runs the chain under lease and ends the lease (B14, B15, B19, B35).
func (l *Layer[C]) run(c C, h Handoff[C], taken *Mark[C], lease *idem.Lease, reqCtx context.Context) error {
	fw := l.fw
	h.Mark, h.lease = taken, lease
	if ctx := lease.Context(); ctx != reqCtx {
		h.ctx = ctx
	}
	var st *runState
	if l.buffered == nil {
		// One allocation holds what a writer-wrapping adapter needs.
		st = &runState{}
		st.rw.lease, st.rw.max, st.rw.hold = lease, lease.MaxBody(), lease.HoldResponse()
		h.st = st
	}
	returned := false
	defer func() {
		// A panic or runtime.Goexit: give the key up, and let the panic
		// go on to the framework's recovery with its own stack (B15).
		if !returned && (st == nil || !st.rw.hijacked) {
			_ = lease.Release(errAborted)
		}
	}()
	c = fw.Hand(c, h)
	chainErr := fw.Next(c)
	ret := chainErr
	if chainErr != nil {
		// Rendered before the key is released, so the response is final.
		ret = fw.Fail(c, chainErr)
	}
	returned = true
	if st != nil {
		st.rw.end(chainErr)
		return ret
	}
	if chainErr != nil {
		_ = lease.Release(chainErr)
		return ret
	}
	rec, hijacked := l.buffered.Recorded(c, lease.MaxBody())
	if hijacked {
		_ = lease.Release(errHijacked) // B19
		return ret
	}
	// A failure is reported by the engine (B23).
	if err := lease.Complete(rec); err != nil && lease.HoldResponse() {
		l.buffered.Discard(c)
		_, resp := lease.CommitFailure()
		fw.Write(c, resp)
	}
	return ret
}

// routeName names c's route with the settings s.
func routeName[C any](s *Settings[C], fw Framework[C], c C) string {
	if s.RouteName != nil {
		return s.RouteName(c)
	}
	return fw.RouteName(c)
}

// marks are a layer's settings, as the marks it leaves carry them.
type marks[C any] struct {
	// taken marks a request the layer took charge of, passed one it
	// left to inner layers.
	taken, passed Mark[C]
}

func (m *marks[C]) init(l *Layer[C], s Settings[C]) {
	m.taken = Mark[C]{taken: true, settings: s, layer: l}
	m.passed = Mark[C]{settings: s, layer: l}
}

// warnIgnored logs, once per layer, that the outer layer which left mark
// took charge of the request although this layer's own settings would
// have changed how it was handled (B2).
func (l *Layer[C]) warnIgnored(c C, mark *Mark[C]) {
	if l.logger == nil || mark.layer == l || l.warned.Load() {
		return
	}
	ignored := overrides(&l.defaults, &l.settings, &mark.settings)
	if len(ignored) == 0 || l.warned.Swap(true) {
		return
	}
	l.logger.LogAttrs(context.Background(), slog.LevelWarn,
		"idem: route-level setting ignored: an outer idem layer already handled the request",
		slog.String("route", routeName(&l.settings, l.fw, c)),
		slog.String("ignored", strings.Join(ignored, ", ")),
		slog.String("fix", "make the outer layer Exempt or Optional, or let it skip this route, so that the route's own layer decides"))
}

// Handoff says how Framework.Hand prepares a request for the rest of the
// chain. It is passed by value; its methods allocate nothing on the path
// of a request that runs under a lease.
type Handoff[C any] struct {
	// Mark, when not nil, must be left on the request where
	// Framework.Mark finds it (an adapter that marks through the request's
	// context uses Context(parent), which carries it).
	Mark *Mark[C]

	ctx      context.Context
	body     []byte
	bodyRead bool
	lease    *idem.Lease
	st       *runState
}

// HandlerContext returns the context the handler must run with and true,
// or nil and false when it is the request's own: a Manual handler's
// context carries what the engine found (idem.FindingFrom, B26), a
// transactional store's carries its transaction (idem.Lease.Context).
func (h Handoff[C]) HandlerContext() (context.Context, bool) { return h.ctx, h.ctx != nil }

// Context returns the context the handler must run with, derived from
// parent, the request's context: HandlerContext when it is set, carrying
// Mark when it is set, for MarkFrom. It returns parent itself when there
// is nothing to add.
func (h Handoff[C]) Context(parent context.Context) context.Context {
	ctx := parent
	if h.ctx != nil {
		ctx = h.ctx
	}
	if h.Mark == nil {
		return ctx
	}
	if h.st != nil {
		h.st.ctx = markContext{ctx, h.Mark}
		return &h.st.ctx
	}
	return &markContext{ctx, h.Mark}
}

// MarkFrom returns the Mark that Handoff.Context put in ctx, or nil.
func MarkFrom[C any](ctx context.Context) *Mark[C] {
	m, _ := ctx.Value(markKey{}).(*Mark[C])
	return m
}

type markKey struct{}

// markContext carries a Mark, as context.WithValue(ctx, markKey{}, mark)
// would.
type markContext struct {
	context.Context
	mark any
}

// Value returns the mark for markKey and asks the parent otherwise.
func (c *markContext) Value(key any) any {
	if _, ok := key.(markKey); ok {
		return c.mark
	}
	return c.Context.Value(key)
}

// Body returns the request body the handler must read in place of the one
// the engine consumed, and true; or nil and false when the engine did not
// consume the body (B21).
func (h Handoff[C]) Body() ([]byte, bool) { return h.body, h.bodyRead }

// BodyReader returns Body as an io.ReadCloser, for a framework whose
// request body is one.
func (h Handoff[C]) BodyReader() io.ReadCloser {
	if h.st != nil {
		h.st.body.Reset(h.body)
		return &h.st.body
	}
	r := &bodyReader{}
	r.Reset(h.body)
	return r
}

// Lease returns the lease the handler runs under, or nil when it runs
// untracked.
func (h Handoff[C]) Lease() *idem.Lease { return h.lease }
