package idemecho

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	idem "github.com/idemkit/idem/core"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// Config configures the idempotency middleware, the echo way: fill in the
// fields you need and call [Config.ToMiddleware]. Zero fields mean the
// values of [DefaultConfig]; Policy, Store and Retention left zero mean the
// engine's configuration.
type Config struct {
	// Engine decides every request. Required.
	Engine *idem.Engine

	// Skipper, when it returns true, lets the request through untouched, as
	// if the middleware were not there. Default: middleware.DefaultSkipper,
	// which skips nothing.
	Skipper middleware.Skipper

	// Policy is the policy of the routes the middleware serves (B2).
	// Default: idem.Inherit, the engine's Config.DefaultPolicy.
	Policy idem.Policy
	// Store keeps the records of the routes the middleware serves, in place
	// of the engine's store (B27).
	Store idem.Store
	// Retention is how long the routes' completed records are kept, in
	// place of the engine's Config.Retention (B27). Zero or at least 1ms.
	Retention time.Duration

	// ProblemHandler, when set, answers in place of the engine's own
	// application/problem+json rendering wherever the engine refuses a
	// request (B25): missing or invalid key, key reused, request in
	// progress, and so on. The error it returns goes up the middleware
	// chain to echo's HTTPErrorHandler. To render problems with the
	// application's HTTPErrorHandler, return p itself (it is an error); it
	// should then honour p.Status and, when positive, p.RetryAfter.
	// Replays are always written by the middleware.
	ProblemHandler func(c echo.Context, p *idem.Problem) error
}

// DefaultConfig holds the defaults [Config.ToMiddleware] fills in.
var DefaultConfig = Config{
	Skipper: middleware.DefaultSkipper,
}

// Option adjusts the Config of a middleware built by [Middleware],
// [Required], [Optional], [Exempt] or [Manual].
type Option func(*Config)

// WithStore makes the middleware keep its records in s instead of the
// engine's store (B27).
func WithStore(s idem.Store) Option { return func(c *Config) { c.Store = s } }

// WithRetention makes the middleware keep completed records for d instead
// of the engine's retention time (B27).
func WithRetention(d time.Duration) Option { return func(c *Config) { c.Retention = d } }

// WithProblemHandler makes the middleware answer problems with h instead of
// the engine's rendering (B25); see Config.ProblemHandler.
func WithProblemHandler(h func(c echo.Context, p *idem.Problem) error) Option {
	return func(c *Config) { c.ProblemHandler = h }
}

// Middleware returns the idempotency middleware with the engine's default
// policy, for a whole application or group; route layers mounted inside a
// group's layer merge with it (see the package documentation):
//
//	api := e.Group("", idemecho.Middleware(engine))
//
// It panics when engine is nil or an option makes the configuration
// invalid; use [Config.ToMiddleware] to get an error instead.
func Middleware(engine *idem.Engine, opts ...Option) echo.MiddlewareFunc {
	return withPolicy(engine, idem.Inherit, opts)
}

// Required returns route middleware whose routes need a key: a request
// without one is answered 400 (B6). Options are applied as for Middleware.
func Required(engine *idem.Engine, opts ...Option) echo.MiddlewareFunc {
	return withPolicy(engine, idem.Required, opts)
}

// Optional returns route middleware whose routes run requests without a key
// untracked, and treat requests with a key as Required does (B6).
func Optional(engine *idem.Engine, opts ...Option) echo.MiddlewareFunc {
	return withPolicy(engine, idem.Optional, opts)
}

// Exempt returns route middleware whose routes never read the key and never
// touch the store (B3). As an outer layer it lets inner layers decide.
func Exempt(engine *idem.Engine, opts ...Option) echo.MiddlewareFunc {
	return withPolicy(engine, idem.Exempt, opts)
}

// Manual returns route middleware whose handlers answer retries themselves
// (B26): where the engine would replay or refuse a request, the handler
// runs instead and reads what the engine found with
// idem.FindingFrom(c.Request().Context()). Such a response is not stored.
func Manual(engine *idem.Engine, opts ...Option) echo.MiddlewareFunc {
	return withPolicy(engine, idem.Manual, opts)
}

func withPolicy(engine *idem.Engine, policy idem.Policy, opts []Option) echo.MiddlewareFunc {
	cfg := Config{Engine: engine, Policy: policy}
	for _, opt := range opts {
		opt(&cfg)
	}
	mw, err := cfg.ToMiddleware()
	if err != nil {
		panic(err)
	}
	return mw
}

// ToMiddleware returns the middleware cfg describes, or an error when cfg
// is invalid: no Engine, a Policy that is not one of idem's policies, or a
// Retention that is negative or shorter than 1ms.
func (cfg Config) ToMiddleware() (echo.MiddlewareFunc, error) {
	var errs []error
	if cfg.Engine == nil {
		errs = append(errs, errors.New("idemecho: config: Engine is nil"))
	}
	route := idem.Route{Policy: cfg.Policy, Store: cfg.Store, Retention: cfg.Retention}
	if err := route.Validate(); err != nil {
		for _, problem := range err.(interface{ Unwrap() []error }).Unwrap() {
			errs = append(errs, fmt.Errorf("idemecho: config: %w", problem))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Skipper == nil {
		cfg.Skipper = DefaultConfig.Skipper
	}
	l := &layer{
		engine:  cfg.Engine,
		skipper: cfg.Skipper,
		problem: cfg.ProblemHandler,
		route:   route,
		logger:  cfg.Engine.Config().Logger,
	}
	l.alone = []*layer{l}
	return l.middleware, nil
}

// handledKey is the echo.Context key under which the layer that processes
// a request leaves the settings it applied, so inner layers pass through.
const handledKey = "github.com/idemkit/idem/adapters/echo.handled"

// layer is one idem middleware: one Config turned into a MiddlewareFunc.
type layer struct {
	engine  *idem.Engine
	skipper middleware.Skipper
	problem func(echo.Context, *idem.Problem) error
	route   idem.Route
	logger  *slog.Logger
	// warned is set once the layer has warned that an outer layer ignored
	// its settings.
	warned atomic.Bool
	// alone is the chain of this layer alone.
	alone []*layer
}

// middleware is the layer's echo.MiddlewareFunc. When next is the handler
// of idem layers of the same engine, the layers merge into one chain that
// calls their next directly: echo composes a route's middleware (group
// middleware, then route middleware) per request, so an outer layer sees
// an inner one that wraps it directly.
func (l *layer) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	chain := l.alone
	if inner, innerNext, ok := layersOf(next); ok && inner[0].engine == l.engine {
		chain = make([]*layer, 0, 1+len(inner))
		chain = append(append(chain, l), inner...)
		next = innerNext
	}
	return serveChain(chain, next)
}

// serveChain returns the handler of chain, idem layers outermost first that
// run as one: the nearest the handler wins each setting it sets (B2).
//
//go:noinline
func serveChain(chain []*layer, next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if p, ok := c.(*chainProbe); ok {
			p.chain, p.next = chain, next
			return nil
		}
		return serve(c, chain, next)
	}
}

// serveChainCode identifies the handlers serveChain returns.
var serveChainCode = reflect.ValueOf(serveChain(nil, nil)).Pointer()

// chainProbe is the echo.Context a layer hands to a handler returned by
// serveChain to learn its chain and next without running it.
type chainProbe struct {
	echo.Context
	chain []*layer
	next  echo.HandlerFunc
}

// layersOf reports the chain and next of h when h was returned by
// serveChain. It calls h only then, with a probe that h answers without
// running anything.
func layersOf(h echo.HandlerFunc) ([]*layer, echo.HandlerFunc, bool) {
	if h == nil || reflect.ValueOf(h).Pointer() != serveChainCode {
		return nil, nil, false
	}
	p := &chainProbe{}
	_ = h(p)
	return p.chain, p.next, len(p.chain) > 0
}

// serve processes one request through a chain of idem layers.
func serve(c echo.Context, chain []*layer, next echo.HandlerFunc) error {
	if outer, ok := c.Get(handledKey).(*idem.Route); ok {
		for _, l := range chain {
			if !l.skipper(c) {
				l.warnIgnored(c, outer)
			}
		}
		return next(c)
	}
	// Merge the settings of the layers not skipped, the innermost winning.
	var route idem.Route
	var problem func(echo.Context, *idem.Problem) error
	var innermost *layer
	for i := len(chain) - 1; i >= 0; i-- {
		l := chain[i]
		if l.skipper(c) {
			continue
		}
		if innermost == nil {
			innermost = l
		}
		route = route.Merge(l.route)
		if problem == nil {
			problem = l.problem
		}
	}
	if innermost == nil {
		return next(c)
	}
	route.Name = c.Path()
	req := c.Request()
	ireq := requestPool.Get().(*idem.Request)
	*ireq = idem.Request{
		Method:   req.Method,
		Path:     req.URL.EscapedPath(),
		RawQuery: req.URL.RawQuery,
		Header:   req.Header,
		Context:  req.Context(),
		// A declared length lets the engine refuse an oversized body
		// before reading it.
		ContentLength: req.ContentLength,
		Route:         route,
	}
	if req.Body != http.NoBody {
		ireq.Body = req.Body
	}
	d := innermost.engine.Begin(ireq)
	*ireq = idem.Request{}
	requestPool.Put(ireq)
	if !d.TookPart() {
		prepareRequest(c, &d)
		return next(c)
	}
	// One allocation holds the settings that mark the request handled
	// and, for a run, the recorder.
	st := &requestState{route: route}
	c.Set(handledKey, &st.route)
	switch d.Action {
	case idem.Respond:
		if d.Problem != nil && problem != nil {
			return problem(c, d.Problem)
		}
		// Through echo's Response, so that its hooks run and Committed
		// is set.
		idemhttp.WriteResponse(c.Response(), d.Response)
		return nil
	case idem.Run:
		return run(c, next, &d, &st.rec)
	}
	prepareRequest(c, &d)
	return next(c)
}

// requestState is what a request that takes part keeps while it runs.
type requestState struct {
	route idem.Route
	rec   idemhttp.Recorder
}

// requestPool recycles the requests handed to Engine.Begin, which does
// not keep them.
var requestPool = sync.Pool{New: func() any { return new(idem.Request) }}

// prepareRequest hands the handler the body the engine read (B21) and, on
// a Manual route, what the engine found (B26).
func prepareRequest(c echo.Context, d *idem.Decision) {
	req := c.Request()
	if d.BodyRead {
		req.Body = idemhttp.BodyReader(d.Body)
	}
	if d.Finding != nil {
		c.SetRequest(req.WithContext(idem.WithFinding(req.Context(), d.Finding)))
	}
}

// run runs the handler once under d.Lease while recording its response,
// and completes or releases the lease.
func run(c echo.Context, next echo.HandlerFunc, d *idem.Decision, rec *idemhttp.Recorder) error {
	prepareRequest(c, d)
	res := c.Response()
	sent := res.Writer
	// A hijacked connection is the handler's from then on (a WebSocket
	// session, say): the key is released at once, before the handler
	// answers on the connection (B19).
	rec.Reset(sent, d.Lease)
	defer rec.Recycle() // after Complete or Release, in the deferred function below
	res.Writer = rec
	finished := false
	defer func() {
		res.Writer = sent
		if finished {
			return
		}
		v := recover()
		if !rec.Hijacked() {
			cause := errors.New("idemecho: the handler exited its goroutine")
			if v != nil {
				cause = fmt.Errorf("idemecho: the handler panicked: %v", v)
			}
			_ = d.Lease.Release(cause)
		}
		if v != nil { // nil: runtime.Goexit, nothing to re-raise
			panic(v)
		}
	}()
	err := next(c)
	if err != nil {
		// Render the error here, so the response is final when the lease
		// is released (B15).
		c.Error(err)
	}
	finished = true
	switch {
	case rec.Hijacked(): // released by Hijack
	case err != nil:
		_ = d.Lease.Release(err)
	default:
		_ = d.Lease.Complete(rec.Recorded())
	}
	return err
}

// warnIgnored logs, once per layer, that an outer layer processed a request
// that this layer's own settings would have treated differently.
func (l *layer) warnIgnored(c echo.Context, outer *idem.Route) {
	if l.logger == nil || l.warned.Load() {
		return
	}
	ignored := l.engine.Overrides(l.route, *outer)
	if len(ignored) == 0 || l.warned.Swap(true) {
		return
	}
	l.logger.LogAttrs(c.Request().Context(), slog.LevelWarn,
		"idemecho: route-level idempotency settings ignored: an outer idem layer already handled the request; "+
			"mount the outer layer with Optional or Exempt (or leave the route out with its Skipper) so the route's layer decides",
		slog.String("route", c.Path()), slog.String("ignored", strings.Join(ignored, ", ")))
}
