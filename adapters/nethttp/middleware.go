package idemhttp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"sync"

	idem "github.com/idemkit/idem/core"
)

// Middleware returns middleware that runs each unsafe request carrying an
// idempotency key once and answers its retries with the recorded response.
// Options set the layer's policy and other route-level settings; without
// them the engine's configuration applies. See the package documentation
// for how stacked layers combine.
func Middleware(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	var cfg layerConfig
	for _, o := range opts {
		o(&cfg)
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
	_, ok := r.Context().Value(handledKey{}).(*layer)
	return ok
}

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
	warn *sync.Once
}

// newLayer wraps next; when next is itself a layer of the same engine the
// two merge into one, the inner layer's settings winning (B2).
func newLayer(e *idem.Engine, cfg layerConfig, next http.Handler) http.Handler {
	if inner, ok := next.(*layer); ok && inner.e == e {
		merged := inner.cfg
		merged.route = inner.cfg.route.Merge(cfg.route)
		if merged.routeName == nil {
			merged.routeName = cfg.routeName
		}
		if merged.problem == nil {
			merged.problem = cfg.problem
		}
		return &layer{e: e, cfg: merged, next: inner.next, warn: new(sync.Once)}
	}
	return &layer{e: e, cfg: cfg, next: next, warn: new(sync.Once)}
}

func (l *layer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if outer, ok := ctx.Value(handledKey{}).(*layer); ok {
		if l.overriddenBy(outer) {
			l.warn.Do(func() { l.warnIgnored(r, outer) })
		}
		l.next.ServeHTTP(w, r)
		return
	}
	req := idem.Request{
		Method:   r.Method,
		Path:     r.URL.EscapedPath(),
		RawQuery: r.URL.RawQuery,
		Header:   r.Header,
		Context:  ctx,
		Route:    l.route(r),
	}
	if r.Body != nil && r.Body != http.NoBody {
		req.Body = r.Body
		req.ContentLength = r.ContentLength
	}
	d := l.e.Begin(&req)
	switch d.Action {
	case idem.Respond:
		if d.Problem != nil && l.cfg.problem != nil {
			l.cfg.problem(w, r, d.Problem)
			return
		}
		WriteResponse(w, d.Response)
	case idem.Run:
		ctx = context.WithValue(ctx, handledKey{}, l)
		Run(w, withBody(r, ctx, d), d.Lease, l.next)
	default: // idem.Pass
		if d.TookPart() {
			ctx = context.WithValue(ctx, handledKey{}, l)
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

// route returns the layer's route settings named for r.
func (l *layer) route(r *http.Request) idem.Route {
	route := l.cfg.route
	switch {
	case l.cfg.routeName != nil:
		route.Name = l.cfg.routeName(r)
	case route.Name == "":
		route.Name = r.Pattern
	}
	return route
}

// withBody returns r with ctx and, when the engine consumed the body, a
// body that yields exactly the bytes it read (B21).
func withBody(r *http.Request, ctx context.Context, d idem.Decision) *http.Request {
	r = r.WithContext(ctx)
	if d.BodyRead {
		r.Body = io.NopCloser(bytes.NewReader(d.Body))
	}
	return r
}

// Run runs next under lease with a Recorder around w, then reports how the
// handler ended: Complete with what it recorded, or Release when it
// hijacked the connection or panicked (B15, B19). A panic goes on to the
// caller's recovery. r must already carry the body the handler should read.
// Adapters built on net/http call Run for a Decision whose Action is Run.
func Run(w http.ResponseWriter, r *http.Request, lease *idem.Lease, next http.Handler) {
	rec := NewRecorder(w, lease.MaxBody())
	returned := false
	defer func() {
		if !returned {
			_ = lease.Release(errHandlerAborted)
		}
	}()
	next.ServeHTTP(rec, r)
	returned = true
	if rec.Hijacked() {
		_ = lease.Release(errHijacked)
		return
	}
	_ = lease.Complete(rec.Recorded())
}

// WriteResponse writes a response the engine answered with (a replay or a
// problem): its header fields, replacing fields of the same name already
// set, a Content-Length, the status and the body.
func WriteResponse(w http.ResponseWriter, resp *idem.Response) {
	h := w.Header()
	for _, f := range resp.Header {
		h.Del(f.Name)
	}
	for _, f := range resp.Header {
		h.Add(f.Name, f.Value)
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(resp.Body)
}

// overriddenBy reports whether l sets a route-level setting that differs
// from what the outer layer that handled the request applied.
func (l *layer) overriddenBy(outer *layer) bool {
	mine, theirs := l.cfg.route, outer.cfg.route
	if mine.Policy != idem.Inherit && keyed(mine.Policy) != keyed(outer.policy()) {
		return true
	}
	if mine.Store != nil && !sameStore(mine.Store, outer.store()) {
		return true
	}
	if mine.Retention != 0 {
		retention := theirs.Retention
		if retention == 0 {
			retention = outer.e.Config().Retention
		}
		return mine.Retention != retention
	}
	return false
}

// keyed returns how policy p treats a request that carries a key, the
// only kind an outer layer hands on marked: Optional then acts as Required.
func keyed(p idem.Policy) idem.Policy {
	if p == idem.Optional {
		return idem.Required
	}
	return p
}

func (l *layer) policy() idem.Policy {
	if l.cfg.route.Policy != idem.Inherit {
		return l.cfg.route.Policy
	}
	return l.e.Config().DefaultPolicy
}

func (l *layer) store() idem.Store {
	if l.cfg.route.Store != nil {
		return l.cfg.route.Store
	}
	return l.e.Store()
}

// sameStore compares two stores without panicking on store types that are
// not comparable.
func sameStore(a, b idem.Store) bool {
	if reflect.TypeOf(a) != reflect.TypeOf(b) || !reflect.TypeOf(a).Comparable() {
		return false
	}
	return a == b
}

func (l *layer) warnIgnored(r *http.Request, outer *layer) {
	logger := l.e.Config().Logger
	if logger == nil {
		return
	}
	route := l.route(r)
	logger.WarnContext(r.Context(),
		"idem: route-level setting ignored: an outer idem layer already handled the request",
		"route", route.Name,
		"policy", l.cfg.route.Policy.String(),
		"applied_policy", outer.policy().String(),
		"fix", "wrap the handler directly with the route-level layer, or make the outer Middleware Exempt or Optional so routes opt in")
}
