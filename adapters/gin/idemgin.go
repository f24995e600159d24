package idemgin

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
)

// Option configures a layer built by Middleware, Required, Optional,
// Exempt or Manual. The options are named as in every idem adapter:
// Policy, Store, Retention, RouteName, ProblemHandler; and Skip, after
// gin's own Skipper.
type Option func(*config)

// config holds a layer's settings.
type config struct {
	adapterkit.Settings[call]
	skip gin.Skipper
}

// Policy sets the layer's policy, overriding the engine's default policy
// (B2). idem.Inherit keeps the engine's default.
func Policy(p idem.Policy) Option { return func(c *config) { c.Policy = p } }

// Store makes the layer keep its records in s instead of the engine's
// store (B27).
func Store(s idem.Store) Option { return func(c *config) { c.Store = s } }

// Retention sets how long the layer's completed records are kept,
// overriding the engine's retention time (B18, B27).
func Retention(d time.Duration) Option { return func(c *config) { c.Retention = d } }

// RouteName names each request's route in logs and events. Without it the
// layer uses the gin route's pattern, c.FullPath().
func RouteName(f func(c *gin.Context) string) Option {
	return func(cfg *config) { cfg.RouteName = func(c call) string { return f(c.c) } }
}

// ProblemHandler lets the application render the engine's problem
// responses (400, 409, 410, 413, 422, 503) its own way (B25), for instance
// with c.AbortWithStatusJSON(p.Status, ...). f must write a complete
// response with p.Status; when p.RetryAfter is positive it should send a
// Retry-After header. The layer aborts the chain after f, so the handler
// does not run. Without it the layer writes the engine's rendering, an
// application/problem+json body. Replays never go through it.
func ProblemHandler(f func(c *gin.Context, p *idem.Problem)) Option {
	return func(cfg *config) {
		cfg.ProblemHandler = func(c call, p *idem.Problem) error {
			f(c.c, p)
			c.c.Abort()
			return nil
		}
	}
}

// Skip lets the requests for which f returns true through untouched, as if
// the layer were not there: an inner idem layer, if any, decides them. An
// engine-wide layer skips the routes that have layers of their own (see
// the package documentation).
func Skip(f gin.Skipper) Option { return func(c *config) { c.skip = f } }

// Middleware returns a gin middleware that runs each unsafe request
// carrying an idempotency key once and answers its retries with the
// recorded response. Options set the layer's policy and other route-level
// settings; without them the engine's configuration applies. Mount it with
// r.Use for the whole engine or a group, or in front of one route's
// handler for that route alone.
//
// It panics when e is nil, or an option sets a policy that is not one of
// idem's or a retention that is negative or shorter than 1ms.
func Middleware(e *idem.Engine, opts ...Option) gin.HandlerFunc {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	kit, err := adapterkit.NewLayer[call](e, framework{}, cfg.Settings)
	if err != nil {
		panic("idemgin: " + err.Error())
	}
	skip := cfg.skip
	return func(c *gin.Context) {
		if skip != nil && skip(c) {
			return // gin runs the next handler
		}
		_ = kit.Serve(call{c: c})
	}
}

// Required is Middleware with the Required policy: a request without a key
// is answered 400 (B6).
func Required(e *idem.Engine, opts ...Option) gin.HandlerFunc {
	return withPolicy(e, idem.Required, opts)
}

// Optional is Middleware with the Optional policy: a request without a key
// runs untracked; one with a key is handled as on a Required route.
func Optional(e *idem.Engine, opts ...Option) gin.HandlerFunc {
	return withPolicy(e, idem.Optional, opts)
}

// Exempt is Middleware with the Exempt policy: the handler runs every time
// and the key is never read (B3). As an outer layer it lets inner layers
// decide.
func Exempt(e *idem.Engine, opts ...Option) gin.HandlerFunc {
	return withPolicy(e, idem.Exempt, opts)
}

// Manual is Middleware with the Manual policy: where the engine would
// answer a retry itself, the handler runs instead and reads what the engine
// found with idem.FindingFrom(c.Request.Context()) (B26). Its response is
// then not stored.
func Manual(e *idem.Engine, opts ...Option) gin.HandlerFunc {
	return withPolicy(e, idem.Manual, opts)
}

func withPolicy(e *idem.Engine, p idem.Policy, opts []Option) gin.HandlerFunc {
	return Middleware(e, append([]Option{Policy(p)}, opts...)...)
}

// call is the kit's handle on one request.
type call struct {
	c *gin.Context
	// sent is gin's writer that Hand replaced with w, the writer that
	// records, while Next runs.
	sent gin.ResponseWriter
	w    *writer
}

// framework tells the kit how gin does things.
type framework struct{}

func (framework) Request(c call, r *idem.Request) {
	req := c.c.Request
	*r = idem.Request{
		Method:   req.Method,
		Path:     req.URL.EscapedPath(),
		RawQuery: req.URL.RawQuery,
		Header:   req.Header,
		Context:  req.Context(),
	}
	if req.Body != nil && req.Body != http.NoBody {
		r.Body, r.ContentLength = req.Body, req.ContentLength
	}
}

func (framework) RouteName(c call) string { return c.c.FullPath() }

// Mark finds the mark a layer left in the request's context.
func (framework) Mark(c call) *adapterkit.Mark[call] {
	return adapterkit.MarkFrom[call](c.c.Request.Context())
}

func (framework) Hand(c call, h adapterkit.Handoff[call]) call {
	req := c.c.Request
	ctx := req.Context()
	handed := h.Context(ctx)
	if _, read := h.Body(); read || handed != ctx {
		req = req.WithContext(handed)
		if read {
			req.Body = h.BodyReader()
		}
		c.c.Request = req
	}
	if h.Lease() != nil {
		c.sent = c.c.Writer
		c.w = &writer{ResponseWriter: c.sent, rec: h.Wrap(c.sent), size: -1}
		c.c.Writer = c.w
	}
	return c
}

// Next runs the rest of the chain. A handler that records an error with
// c.Error and writes nothing leaves its response to the application's
// error middleware: Next returns the error, and the kit releases the key
// (B15).
func (framework) Next(c call) error {
	if c.w == nil {
		c.c.Next()
		return nil
	}
	defer func() { c.c.Writer = c.sent }()
	errs := len(c.c.Errors)
	c.c.Next()
	if !c.w.Written() && len(c.c.Errors) > errs {
		return c.c.Errors.Last()
	}
	c.w.end()
	return nil
}

// Write writes an engine response through gin's writer and aborts the
// chain: the handler does not run.
func (framework) Write(c call, resp *idem.Response) {
	adapterkit.WriteResponse(c.c.Writer, resp)
	c.c.Abort()
}

// Fail leaves the error in c.Errors for the application's error
// middleware, which renders it once this middleware returns: gin renders
// no error itself.
func (framework) Fail(_ call, err error) error { return err }
