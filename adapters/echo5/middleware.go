package idemecho5

import (
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v5"
	"github.com/labstack/echo/v5/middleware"

	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
)

// Config configures the idempotency middleware, the echo way: fill in the
// fields you need and call [Config.ToMiddleware] (Config is an
// echo.MiddlewareConfigurator). Zero fields mean the values of
// [DefaultConfig]; Policy, Store and Retention left zero mean an outer
// idem layer's settings, or else the engine's configuration.
type Config struct {
	// Engine decides every request. Required.
	Engine *idem.Engine

	// Skipper, when it returns true, lets the request through untouched,
	// as if the middleware were not there. Default:
	// middleware.DefaultSkipper, which skips nothing.
	Skipper middleware.Skipper

	// Policy is the policy of the routes the middleware serves (B2).
	// Default: idem.Inherit, the engine's Config.DefaultPolicy.
	Policy idem.Policy
	// Store keeps the records of the routes the middleware serves, in
	// place of the engine's store (B27).
	Store idem.Store
	// Retention is how long the routes' completed records are kept, in
	// place of the engine's Config.Retention (B27). Zero or at least 1ms.
	Retention time.Duration
	// RouteName names each request's route in logs and events. Default:
	// its echo route pattern, c.Path().
	RouteName func(c *echo.Context) string

	// ProblemHandler, when set, answers in place of the engine's own
	// application/problem+json rendering wherever the engine refuses a
	// request (B25): missing or invalid key, key reused, request in
	// progress, and so on. The error it returns goes up the middleware
	// chain to echo's HTTPErrorHandler, so returning
	// echo.NewHTTPError(p.Status, p.Detail) is a valid ProblemHandler; to
	// render problems with the application's own HTTPErrorHandler, return
	// p itself (it is an error with a StatusCode method, which echo's
	// default handler honours): that handler should then honour p.Status
	// and, when positive, p.RetryAfter. Replays are always written by the
	// middleware.
	ProblemHandler func(c *echo.Context, p *idem.Problem) error
}

// DefaultConfig holds the defaults [Config.ToMiddleware] fills in.
var DefaultConfig = Config{
	Skipper: middleware.DefaultSkipper,
}

var _ echo.MiddlewareConfigurator = Config{}

// Option adjusts the Config of a middleware built by [Middleware],
// [Required], [Optional], [Exempt] or [Manual]. The options are named as
// in every idem adapter, after the Config fields they set.
type Option func(*Config)

// Policy sets Config.Policy.
func Policy(p idem.Policy) Option { return func(c *Config) { c.Policy = p } }

// Store sets Config.Store: the middleware keeps its records in s instead
// of the engine's store (B27).
func Store(s idem.Store) Option { return func(c *Config) { c.Store = s } }

// Retention sets Config.Retention: the middleware keeps completed records
// for d instead of the engine's retention time (B27).
func Retention(d time.Duration) Option { return func(c *Config) { c.Retention = d } }

// RouteName sets Config.RouteName.
func RouteName(f func(c *echo.Context) string) Option { return func(c *Config) { c.RouteName = f } }

// ProblemHandler sets Config.ProblemHandler: the middleware answers
// problems with h instead of the engine's rendering (B25).
func ProblemHandler(h func(c *echo.Context, p *idem.Problem) error) Option {
	return func(c *Config) { c.ProblemHandler = h }
}

// Middleware returns the idempotency middleware with the engine's default
// policy, for a whole application or group (see the package documentation
// for how it stacks with route layers):
//
//	e.Use(idemecho5.Middleware(engine))
//
// It panics when engine is nil or an option makes the configuration
// invalid; use [Config.ToMiddleware] to get an error instead.
func Middleware(engine *idem.Engine, opts ...Option) echo.MiddlewareFunc {
	return withPolicy(engine, idem.Inherit, opts)
}

// Required returns route middleware whose routes need a key: a request
// without one is answered 400 (B6). Options are applied as for
// Middleware.
func Required(engine *idem.Engine, opts ...Option) echo.MiddlewareFunc {
	return withPolicy(engine, idem.Required, opts)
}

// Optional returns route middleware whose routes run requests without a
// key untracked, and treat requests with a key as Required does (B6).
func Optional(engine *idem.Engine, opts ...Option) echo.MiddlewareFunc {
	return withPolicy(engine, idem.Optional, opts)
}

// Exempt returns route middleware whose routes never read the key and
// never touch the store (B3). As an outer layer it lets inner layers
// decide.
func Exempt(engine *idem.Engine, opts ...Option) echo.MiddlewareFunc {
	return withPolicy(engine, idem.Exempt, opts)
}

// Manual returns route middleware whose handlers answer retries
// themselves (B26): where the engine would replay or refuse a request, the
// handler runs instead and reads what the engine found with
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
	s := adapterkit.Settings[call]{Policy: cfg.Policy, Store: cfg.Store, Retention: cfg.Retention}
	if f := cfg.RouteName; f != nil {
		s.RouteName = func(c call) string { return f(c.c) }
	}
	if f := cfg.ProblemHandler; f != nil {
		s.ProblemHandler = func(c call, p *idem.Problem) error { return f(c.c, p) }
	}
	kit, err := adapterkit.NewLayer[call](cfg.Engine, framework{}, s)
	if err != nil {
		return nil, fmt.Errorf("idemecho5: config: %w", err)
	}
	skip := cfg.Skipper
	if skip == nil {
		skip = DefaultConfig.Skipper
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c *echo.Context) error {
			if skip(c) {
				return next(c)
			}
			return kit.Serve(call{c: c, next: next})
		}
	}, nil
}

// call is the kit's handle on one request.
type call struct {
	c    *echo.Context
	next echo.HandlerFunc
	// sent is the context's response writer that Hand replaced with
	// wrapped, the kit's recording writer, while Next and Fail run.
	sent, wrapped http.ResponseWriter
}

// framework tells the kit how echo v5 does things.
type framework struct{}

func (framework) Request(c call, r *idem.Request) {
	req := c.c.Request()
	*r = idem.Request{
		Method:   req.Method,
		Path:     req.URL.EscapedPath(),
		RawQuery: req.URL.RawQuery,
		Header:   req.Header,
		Context:  req.Context(),
	}
	if req.Body != nil && req.Body != http.NoBody {
		// A declared length lets the engine refuse an oversized body
		// before reading it.
		r.Body, r.ContentLength = req.Body, req.ContentLength
	}
}

func (framework) RouteName(c call) string { return c.c.Path() }

// Mark finds the mark a layer left in the request's context.
func (framework) Mark(c call) *adapterkit.Mark[call] {
	return adapterkit.MarkFrom[call](c.c.Request().Context())
}

func (framework) Hand(c call, h adapterkit.Handoff[call]) call {
	req := c.c.Request()
	ctx := req.Context()
	handed := h.Context(ctx)
	if _, read := h.Body(); read || handed != ctx {
		req = req.WithContext(handed)
		if read {
			req.Body = h.BodyReader()
		}
		c.c.SetRequest(req)
	}
	if h.Lease() != nil {
		// The kit's recording writer wraps the context's response (echo's
		// *Response, whose hooks run and which is marked Committed when
		// the header goes out); it unwraps to it for echo.UnwrapResponse
		// and http.ResponseController.
		c.sent = c.c.Response()
		c.wrapped = h.Wrap(c.sent)
		c.c.SetResponse(c.wrapped)
	}
	return c
}

func (framework) Next(c call) error {
	if c.sent != nil {
		defer c.c.SetResponse(c.sent)
	}
	return c.next(c.c)
}

// Write writes through the context's response, echo's *Response, so that
// its hooks run and it is marked Committed.
func (framework) Write(c call, resp *idem.Response) { adapterkit.WriteResponse(c.c.Response(), resp) }

// Fail renders err with the echo instance's HTTPErrorHandler, through the
// recording writer as the handler wrote, so the response is final when
// the key is released (B15); then it hands the error on to the outer
// middleware, as echo's RequestLogger does with HandleError: echo's
// DefaultHTTPErrorHandler leaves a committed response alone.
func (framework) Fail(c call, err error) error {
	if c.sent != nil {
		c.c.SetResponse(c.wrapped)
		defer c.c.SetResponse(c.sent)
	}
	c.c.Echo().HTTPErrorHandler(c.c, err)
	return err
}
