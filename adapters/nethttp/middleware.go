package idemhttp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	idem "github.com/idemkit/idem/core"
)

// Middleware returns middleware that runs each unsafe request carrying an
// idempotency key once and answers its retries with the recorded response.
// Options set the layer's policy and other route-level settings; without
// them the engine's configuration applies. See the package documentation
// for how stacked layers combine.
//
// It panics when an option sets a policy that is not one of idem's or a
// retention that is negative or shorter than 1ms (see idem.Route.Validate).
func Middleware(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	var cfg layerConfig
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.route.Validate(); err != nil {
		panic("idemhttp: " + err.Error())
	}
	return func(next http.Handler) http.Handler { return newLayer(e, cfg, next) }
}

// Required is Middleware with the Required policy: a request without a key
// is answered 400 (B6).
func Required(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return withPolicy(e, idem.Required, opts)
}

// Optional is Middleware with the Optional policy: a request without a key
// runs untracked; one with a key is handled as on a Required route.
func Optional(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return withPolicy(e, idem.Optional, opts)
}

// Exempt is Middleware with the Exempt policy: the handler runs every time
// and the key is never read (B3).
func Exempt(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return withPolicy(e, idem.Exempt, opts)
}

// Manual is Middleware with the Manual policy: where the engine would
// answer a retry itself, the handler runs instead and reads what the engine
// found with idem.FindingFrom(r.Context()) (B26). Its response is then not
// stored.
func Manual(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return withPolicy(e, idem.Manual, opts)
}

func withPolicy(e *idem.Engine, p idem.Policy, opts []Option) func(http.Handler) http.Handler {
	all := make([]Option, 0, len(opts)+1)
	all = append(all, Policy(p))
	return Middleware(e, append(all, opts...)...)
}

// Handled reports whether an idem layer already took charge of r, so that
// another idem layer seeing r must pass it straight through. Adapters built
// on this package use it to stack with its layers.
func Handled(r *http.Request) bool {
	_, ok := r.Context().Value(handledKey{}).(*handledCtx)
	return ok
}

// handledCtx marks a request context with the route settings of the layer
// that took charge of the request, as context.WithValue(ctx, handledKey{},
// settings) would.
type handledCtx struct {
	context.Context
	route idem.Route
}

// Value returns c itself for handledKey and asks the parent otherwise.
func (c *handledCtx) Value(key any) any {
	if _, ok := key.(handledKey); ok {
		return c
	}
	return c.Context.Value(key)
}

// runState is what a request run under a lease needs, in one allocation.
type runState struct {
	rec  Recorder
	ctx  handledCtx
	body bodyReader
}

// requestPool recycles the requests handed to Engine.Begin, which does
// not keep them.
var requestPool = sync.Pool{New: func() any { return new(idem.Request) }}

// handledKey marks a request context with the layer that took charge of it.
type handledKey struct{}

var (
	errHandlerAborted = errors.New("idemhttp: the handler panicked or did not return")
	errHijacked       = errors.New("idemhttp: the handler hijacked the connection")
)

// layer is one idem middleware around a handler.
type layer struct {
	e    *idem.Engine
	cfg  layerConfig
	next http.Handler
	// mux is next when next is an http.ServeMux: the layer then looks up
	// the route a request is for, to apply the route's own layer's
	// settings, except for the engine's safe methods, which pass anyway.
	mux  *http.ServeMux
	safe []string
	// warned is set once the layer has warned that an outer layer ignored
	// its settings.
	warned atomic.Bool
}

// newLayer wraps next; when next is itself a layer of the same engine the
// two merge into one, the inner layer's settings winning (B2).
func newLayer(e *idem.Engine, cfg layerConfig, next http.Handler) http.Handler {
	if inner, ok := next.(*layer); ok && inner.e == e {
		return &layer{e: e, cfg: inner.cfg.under(cfg), next: inner.next, mux: inner.mux, safe: inner.safe}
	}
	l := &layer{e: e, cfg: cfg, next: next}
	if mux, ok := next.(*http.ServeMux); ok {
		l.mux, l.safe = mux, e.Config().SafeMethods
	}
	return l
}

// under returns c merged with the settings of a layer outside it: every
// setting c sets wins (B2).
func (c layerConfig) under(outer layerConfig) layerConfig {
	c.route = c.route.Merge(outer.route)
	if c.routeName == nil {
		c.routeName = outer.routeName
	}
	if c.problem == nil {
		c.problem = outer.problem
	}
	return c
}

// settingsFor returns the settings the layer applies to r. Around an
// http.ServeMux they are merged with those of the layer the route's
// handler is, so that the layer nearest the handler wins although the mux
// runs it later (B2); the route then passes the request through. pattern
// is the route's pattern, "" when there is no mux or no route.
func (l *layer) settingsFor(r *http.Request) (cfg layerConfig, pattern string) {
	if l.mux == nil || slices.Contains(l.safe, r.Method) {
		return l.cfg, ""
	}
	h, pattern := l.mux.Handler(r)
	if inner, ok := h.(*layer); ok && inner.e == l.e {
		return inner.cfg.under(l.cfg), pattern
	}
	return l.cfg, pattern
}

func (l *layer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if outer, ok := ctx.Value(handledKey{}).(*handledCtx); ok {
		l.warnIgnored(r, outer.route)
		l.next.ServeHTTP(w, r)
		return
	}
	cfg, pattern := l.settingsFor(r)
	route := routeOf(&cfg, r, pattern)
	req := requestPool.Get().(*idem.Request)
	*req = idem.Request{
		Method:   r.Method,
		Path:     r.URL.EscapedPath(),
		RawQuery: r.URL.RawQuery,
		Header:   r.Header,
		Context:  ctx,
		Route:    route,
	}
	if r.Body != nil && r.Body != http.NoBody {
		req.Body = r.Body
		req.ContentLength = r.ContentLength
	}
	d := l.e.Begin(req)
	*req = idem.Request{}
	requestPool.Put(req)
	switch d.Action {
	case idem.Respond:
		if d.Problem != nil && cfg.problem != nil {
			cfg.problem(w, r, d.Problem)
			return
		}
		WriteResponse(w, d.Response)
	case idem.Run:
		// One allocation holds what the run needs besides the request
		// copy: the recorder, the context marking r handled and the body
		// reader.
		st := &runState{ctx: handledCtx{Context: ctx, route: cfg.route}}
		r = r.WithContext(&st.ctx)
		if d.BodyRead {
			st.body.Reset(d.Body)
			r.Body = &st.body
		}
		st.rec.Reset(w, d.Lease)
		run(&st.rec, r, d.Lease, l.next)
	default: // idem.Pass
		if d.TookPart() {
			ctx = &handledCtx{Context: ctx, route: cfg.route}
		}
		if d.Finding != nil {
			ctx = idem.WithFinding(ctx, d.Finding)
		}
		if ctx == r.Context() && !d.BodyRead {
			l.next.ServeHTTP(w, r)
			return
		}
		l.next.ServeHTTP(w, withBody(r, ctx, d))
	}
}

// routeOf returns the route settings of cfg named for r: by RouteName,
// else by the ServeMux pattern that serves r (pattern when the layer runs
// around the mux, r.Pattern inside it).
func routeOf(cfg *layerConfig, r *http.Request, pattern string) idem.Route {
	route := cfg.route
	switch {
	case cfg.routeName != nil:
		route.Name = cfg.routeName(r)
	case route.Name == "" && r.Pattern != "":
		route.Name = r.Pattern
	case route.Name == "":
		route.Name = pattern
	}
	return route
}

// withBody returns r with ctx and, when the engine consumed the body, a
// body that yields exactly the bytes it read (B21).
func withBody(r *http.Request, ctx context.Context, d idem.Decision) *http.Request {
	r = r.WithContext(ctx)
	if d.BodyRead {
		r.Body = BodyReader(d.Body)
	}
	return r
}

// BodyReader returns a ReadCloser over b, in one allocation: adapters hand
// it to the handler in place of a request body the engine read (B21).
func BodyReader(b []byte) io.ReadCloser {
	r := &bodyReader{}
	r.Reset(b)
	return r
}

type bodyReader struct{ bytes.Reader }

// Close does nothing: the bytes are in memory.
func (*bodyReader) Close() error { return nil }

// Run runs next under lease with a Recorder around w, then reports how the
// handler ended: Complete with what it recorded, or Release when it
// panicked (B15). A handler that hijacks the connection releases the lease
// as soon as it holds the connection, before it answers on it (B19). A
// panic goes on to the caller's recovery. r must already carry the body
// the handler should read. Adapters built on net/http call Run for a
// Decision whose Action is Run.
func Run(w http.ResponseWriter, r *http.Request, lease *idem.Lease, next http.Handler) {
	rec := NewRecorder(w, lease.MaxBody())
	rec.ReleaseOnHijack(lease)
	run(rec, r, lease, next)
}

// run is Run with a Recorder the caller made for lease.
func run(rec *Recorder, r *http.Request, lease *idem.Lease, next http.Handler) {
	defer rec.Recycle()
	returned := false
	defer func() {
		if !returned && !rec.Hijacked() {
			_ = lease.Release(errHandlerAborted)
		}
	}()
	next.ServeHTTP(rec, r)
	returned = true
	if !rec.Hijacked() {
		_ = lease.Complete(rec.Recorded())
	}
}

// WriteResponse writes a response the engine answered with (a replay or a
// problem): its header fields, replacing fields of the same name already
// set, a Content-Length, the status and the body.
func WriteResponse(w http.ResponseWriter, resp *idem.Response) {
	h := w.Header()
	// Every value goes into one slice; each name gets a capped window of
	// it, so that appending a later value of the same name copies it out.
	// The first field of a name replaces what was set before, the others
	// add to it.
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

// warnIgnored logs, once per layer, that the outer layer which handled r
// with the settings outer ignored settings of l that would have changed
// the outcome (B2).
func (l *layer) warnIgnored(r *http.Request, outer idem.Route) {
	logger := l.e.Config().Logger
	if logger == nil || l.warned.Load() {
		return
	}
	ignored := l.e.Overrides(l.cfg.route, outer)
	if len(ignored) == 0 || l.warned.Swap(true) {
		return
	}
	logger.WarnContext(r.Context(),
		"idem: route-level setting ignored: an outer idem layer already handled the request",
		"route", routeOf(&l.cfg, r, "").Name,
		"ignored", strings.Join(ignored, ", "),
		"fix", "wrap the handler directly with the route-level layer, or make the outer Middleware Exempt or Optional so routes opt in")
}
