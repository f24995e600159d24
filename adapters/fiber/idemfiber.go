package idemfiber

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
	idem "github.com/idemkit/idem/core"
)

// Config configures one idemfiber handler. The zero value, like
// ConfigDefault, means the engine's own configuration for every setting.
type Config struct {
	// Next, when it returns true, skips the handler for the request: the
	// request goes on untouched and an inner idemfiber handler, if any,
	// decides it.
	//
	// Optional. Default: nil, skip nothing.
	Next func(c *fiber.Ctx) bool

	// Policy is the idempotency policy of the requests this handler sees
	// (B2). Required, Optional, Exempt and Manual set it themselves.
	//
	// Optional. Default: idem.Inherit, the engine's Config.DefaultPolicy.
	Policy idem.Policy

	// Store keeps the records of the requests this handler sees, in place
	// of the engine's store (B27).
	//
	// Optional. Default: nil, the engine's store.
	Store idem.Store

	// Retention is how long completed records of these requests are kept,
	// in place of the engine's Config.Retention (B27).
	//
	// Optional. Default: 0, the engine's retention.
	Retention time.Duration

	// Name names the route in the engine's logs and events.
	//
	// Optional. Default: the path of the route fiber matched the handler
	// on: the route's pattern for a handler mounted on a route, the mount
	// prefix for one mounted with app.Use (fiber runs middleware before it
	// knows the final route).
	Name string

	// ProblemHandler renders the problems the engine answers with itself
	// (missing or invalid key, key reused, request in flight, ...) the
	// application's way (B25). It runs in place of the handler; an error
	// it returns goes to fiber's ErrorHandler as usual, so returning
	// fiber.NewError(p.Status, p.Detail) is a valid ProblemHandler.
	// Replays of recorded responses never go through it. An inner
	// handler without a ProblemHandler uses the one of an outer handler
	// that left the request to it (see Stacking in the package doc).
	//
	// Optional. Default: nil, the engine's rendering
	// (application/problem+json, see idem.RenderProblem).
	ProblemHandler func(c *fiber.Ctx, p *idem.Problem) error
}

// ConfigDefault is the default Config: every setting comes from the
// engine.
var ConfigDefault = Config{}

func configDefault(config ...Config) Config {
	if len(config) == 0 {
		return ConfigDefault
	}
	return config[0]
}

// New returns a fiber.Handler that makes the requests it sees idempotent
// with e: mount it with app.Use for the whole application, or on a route
// for that route alone. config is optional; only its first element is
// used. New panics when e is nil or the Config is contradictory, as fiber's
// own middleware do.
func New(e *idem.Engine, config ...Config) fiber.Handler {
	cfg := configDefault(config...)
	if e == nil {
		panic("idemfiber: New needs an engine")
	}
	route := idem.Route{Policy: cfg.Policy, Store: cfg.Store, Retention: cfg.Retention}
	if err := route.Validate(); err != nil {
		panic("idemfiber: Config." + err.Error())
	}
	l := &layer{
		engine: e,
		next:   cfg.Next,
		name:   cfg.Name,
		own:    settings{route: route, problem: cfg.ProblemHandler},
		logger: e.Config().Logger,
	}
	l.hasSettings = l.own.route != (idem.Route{}) || l.own.problem != nil
	return l.handle
}

// Required returns a route-level handler with the Required policy: a
// request without a key is answered 400; with a key it runs once and its
// retries are replayed. Any Policy in config is replaced.
func Required(e *idem.Engine, config ...Config) fiber.Handler {
	return withPolicy(e, idem.Required, config)
}

// Optional returns a route-level handler with the Optional policy: a
// request without a key runs untracked; with a key it is handled as
// Required handles it. Any Policy in config is replaced.
func Optional(e *idem.Engine, config ...Config) fiber.Handler {
	return withPolicy(e, idem.Optional, config)
}

// Exempt returns a route-level handler with the Exempt policy: the key is
// never read and the store never touched, for instance for webhooks that
// carry their own deduplication. Any Policy in config is replaced.
func Exempt(e *idem.Engine, config ...Config) fiber.Handler {
	return withPolicy(e, idem.Exempt, config)
}

// Manual returns a route-level handler with the Manual policy (B26): where
// the engine would answer a retry itself (replay, 409, 410, 422), the
// handler runs instead and reads what the engine found with
// idem.FindingFrom(c.UserContext()). Any Policy in config is replaced.
func Manual(e *idem.Engine, config ...Config) fiber.Handler {
	return withPolicy(e, idem.Manual, config)
}

func withPolicy(e *idem.Engine, p idem.Policy, config []Config) fiber.Handler {
	cfg := configDefault(config...)
	cfg.Policy = p
	return New(e, cfg)
}

// Keys of the fasthttp user values through which stacked layers see each
// other. A handledKey value is the *settings that the layer which took
// part in the request applied; an outerKey value is the *settings of the
// outer layers that did not.
type (
	handledKey struct{}
	outerKey   struct{}
)

// beginState holds what one call of Engine.Begin needs, and the view of
// the response header a run hands to Lease.Complete. The engine keeps
// neither past those calls, so it is pooled rather than allocated for
// every request.
type beginState struct {
	req     idem.Request
	reqHdr  requestHeader
	respHdr responseHeader
}

// put clears st and returns it to the pool.
func (st *beginState) put() {
	*st = beginState{}
	beginPool.Put(st)
}

var beginPool = sync.Pool{New: func() any { return new(beginState) }}

// settings are what a layer passes on to inner layers when it does not
// take part in a request: its route settings (without a name) and its
// problem rendering.
type settings struct {
	route   idem.Route
	problem func(c *fiber.Ctx, p *idem.Problem) error
}

// merge returns s with every unset field taken from outer.
func (s settings) merge(outer *settings) settings {
	s.route = s.route.Merge(outer.route)
	if s.problem == nil {
		s.problem = outer.problem
	}
	return s
}

// layer is one idemfiber handler.
type layer struct {
	engine      *idem.Engine
	next        func(c *fiber.Ctx) bool
	name        string
	own         settings
	hasSettings bool
	logger      *slog.Logger
	warned      atomic.Bool
	fold        atomic.Pointer[appFold]
}

func (l *layer) handle(c *fiber.Ctx) error {
	if l.next != nil && l.next(c) {
		return c.Next()
	}
	fctx := c.Context()
	if outer, ok := fctx.UserValue(handledKey{}).(*settings); ok {
		l.warnIgnored(c, outer)
		return c.Next()
	}
	eff := &l.own
	if outer, ok := fctx.UserValue(outerKey{}).(*settings); ok {
		merged := l.own.merge(outer)
		eff = &merged
	}
	route := eff.route
	route.Name = l.name
	if route.Name == "" {
		route.Name = c.Route().Path
	}

	fold := l.foldFor(c.App())
	st := beginPool.Get().(*beginState)
	st.req = idem.Request{
		Method:   method(c.Method()),
		Path:     c.Path(),
		RawQuery: utils.UnsafeString(fctx.URI().QueryString()),
		Header:   viewRequestHeader(&st.reqHdr, &fctx.Request.Header, fold),
		Context:  c.UserContext(),
		Route:    route,
	}
	// fasthttp holds the body in memory unless StreamRequestBody is on: the
	// engine then fingerprints fasthttp's buffer in place, without a copy,
	// and the handler reads that buffer untouched (B21).
	stream := fctx.RequestBodyStream()
	if stream != nil {
		st.req.Body = stream
	} else if b := fctx.Request.Body(); len(b) > 0 {
		st.req.BodyBytes = b
	}
	d := l.engine.Begin(&st.req)
	if d.Action == idem.Run {
		st.req, st.reqHdr = idem.Request{}, requestHeader{}
	} else {
		st.put()
	}

	if stream != nil && d.BodyRead {
		// The engine drained the stream: hand the handler the bytes read.
		fctx.Request.SetBodyRaw(d.Body)
	}
	if !d.TookPart() {
		// Let an inner layer decide, with these settings for what it
		// leaves unset.
		if eff != &l.own || l.hasSettings {
			fctx.SetUserValue(outerKey{}, eff)
		}
		return c.Next()
	}
	fctx.SetUserValue(handledKey{}, eff)

	switch d.Action {
	case idem.Respond:
		if d.Problem != nil && eff.problem != nil {
			return eff.problem(c, d.Problem)
		}
		writeResponse(c, d.Response)
		return nil
	case idem.Run:
		return l.run(c, d.Lease, fold, st)
	default: // Pass that took part: a Manual finding, or fail-open.
		if d.Finding != nil {
			c.SetUserContext(idem.WithFinding(c.UserContext(), d.Finding))
		}
		return c.Next()
	}
}

// ErrorHandler returns a fiber.ErrorHandler that answers fiber's own 413
// (a body over fiber.Config.BodyLimit, refused before any handler runs)
// with idem's request-too-large problem document, rendered by e, as every
// other adapter answers an oversized body (B21, B25); every other error
// goes to next, or to fiber.DefaultErrorHandler when next is nil. Set it
// when the app is made:
//
//	app := fiber.New(fiber.Config{BodyLimit: 1 << 20, ErrorHandler: idemfiber.ErrorHandler(engine, nil)})
func ErrorHandler(e *idem.Engine, next fiber.ErrorHandler) fiber.ErrorHandler {
	if e == nil {
		panic("idemfiber: ErrorHandler needs an engine")
	}
	if next == nil {
		next = fiber.DefaultErrorHandler
	}
	return func(c *fiber.Ctx, err error) error {
		var ferr *fiber.Error
		if !errors.As(err, &ferr) || ferr.Code != fiber.StatusRequestEntityTooLarge {
			return next(c, err)
		}
		limit := int64(c.App().Config().BodyLimit)
		if limit <= 0 {
			limit = fiber.DefaultBodyLimit
		}
		writeResponse(c, e.RenderProblem(idem.NewTooLargeProblem(limit)))
		return nil
	}
}

// writeResponse writes an engine response: its header fields in order,
// replacing fields of the same name already set, as idemhttp's
// WriteResponse does; its status and its body. fasthttp sets
// Content-Length from the body.
func writeResponse(c *fiber.Ctx, r *idem.Response) {
	resp := c.Response()
	for i, f := range r.Header {
		if repeated(r.Header[:i], f.Name) {
			resp.Header.Add(f.Name, f.Value)
		} else {
			resp.Header.Set(f.Name, f.Value)
		}
	}
	resp.SetStatusCode(r.Status)
	// The body may be shared with the store or other requests: copy it
	// into fasthttp's own buffer, which later handlers may write into.
	resp.SetBody(r.Body)
}

// repeated reports whether a field called name is among fields.
func repeated(fields []idem.HeaderField, name string) bool {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

var errHijacked = errors.New("idemfiber: the handler hijacked the connection")

// run runs the rest of the chain under lease and reports how it ended. It
// returns st to its pool when the chain returned.
func (l *layer) run(c *fiber.Ctx, lease *idem.Lease, fold bool, st *beginState) error {
	finished := false
	defer func() {
		if finished {
			return
		}
		// The chain panicked (or called runtime.Goexit): give the lease up
		// and let the panic go on to fiber's recover middleware (B15).
		if r := recover(); r != nil {
			_ = lease.Release(fmt.Errorf("idemfiber: handler panicked: %v", r))
			panic(r)
		}
		_ = lease.Release(errors.New("idemfiber: handler did not return"))
	}()
	err := c.Next()
	finished = true
	defer st.put()

	fctx := c.Context()
	if err != nil {
		// Render the error here, as fiber would after the chain returns, so
		// that the client's response is final; then give the lease up
		// (B15). The error is handled: outer handlers see nil, as with
		// fiber's logger middleware.
		if herr := c.App().ErrorHandler(c, err); herr != nil {
			_ = c.SendStatus(fiber.StatusInternalServerError)
		}
		_ = lease.Release(err)
		return nil
	}
	if fctx.Hijacked() {
		_ = lease.Release(errHijacked) // B19
		return nil
	}
	resp := &fctx.Response
	rec := idem.Recorded{Status: resp.StatusCode(), Header: viewResponseHeader(&st.respHdr, &resp.Header, fold)}
	if resp.IsBodyStream() {
		// SendStream, SetBodyStreamWriter, large files: the body is sent
		// after the handler returns and cannot be recorded (B19).
		rec.Streamed = true
	} else if body := resp.Body(); len(body) > lease.MaxBody() {
		rec.Truncated = true
	} else {
		// Complete hands the body to the store before it returns, and a
		// store copies what it keeps (idem.Store contract), so fasthttp's
		// buffer is safe to pass as is.
		rec.Body = body
	}
	_ = lease.Complete(rec) // a failure is reported by the engine (B23)
	return nil
}

// warnIgnored logs, once per layer, that an outer layer which handled the
// request with the settings outer ignored settings of l that would have
// changed the outcome (B2).
func (l *layer) warnIgnored(c *fiber.Ctx, outer *settings) {
	if l.logger == nil || outer == &l.own || l.warned.Load() {
		return
	}
	ignored := l.engine.Overrides(l.own.route, outer.route)
	if len(ignored) == 0 || l.warned.Swap(true) {
		return
	}
	l.logger.LogAttrs(context.Background(), slog.LevelWarn,
		"idemfiber: route-level idempotency setting ignored: an outer idemfiber handler already handled the request",
		slog.String("route", c.Route().Path),
		slog.String("ignored", strings.Join(ignored, ", ")),
		slog.String("fix", "mount the outer idemfiber handler with the Exempt policy (or skip this route with its Config.Next) and opt routes in with Required, Optional or Manual"),
	)
}

// appFold remembers whether an app matches header names as sent.
type appFold struct {
	app  *fiber.App
	fold bool
}

// foldFor reports whether app disables fasthttp's header name
// normalization, so that header names must be matched case-insensitively
// by hand (B4). It is cached per layer and app.
func (l *layer) foldFor(app *fiber.App) bool {
	if f := l.fold.Load(); f != nil && f.app == app {
		return f.fold
	}
	f := &appFold{app: app, fold: app.Config().DisableHeaderNormalizing}
	l.fold.Store(f)
	return f.fold
}
