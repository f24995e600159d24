package idemfiber3

import (
	"errors"
	"strings"
	"time"

	"github.com/gofiber/fiber/v3"

	"github.com/idemkit/idem/adapters/internal/fasthttpkit"
	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
)

// Config configures one idemfiber3 handler. The zero value, like
// ConfigDefault, means the engine's own configuration for every setting.
type Config struct {
	// Next, when it returns true, skips the handler for the request: the
	// request goes on untouched and an inner idemfiber3 handler, if any,
	// decides it.
	//
	// Optional. Default: nil, skip nothing.
	Next func(c fiber.Ctx) bool

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

	// RouteName names each request's route in the engine's logs and
	// events.
	//
	// Optional. Default: c.FullPath(), the path of the route Fiber matched
	// the handler on: the route's pattern for a handler mounted on a
	// route, the mount prefix for one mounted with app.Use (Fiber runs
	// middleware before it knows the final route).
	RouteName func(c fiber.Ctx) string

	// ProblemHandler renders the problems the engine answers with itself
	// (missing or invalid key, key reused, request in flight, ...) the
	// application's way (B25). It runs in place of the handler; an error
	// it returns goes to Fiber's ErrorHandler as usual, so returning
	// fiber.NewError(p.Status, p.Detail) is a valid ProblemHandler.
	// Replays of recorded responses never go through it.
	//
	// Optional. Default: nil, the engine's rendering
	// (application/problem+json, see idem.RenderProblem).
	ProblemHandler func(c fiber.Ctx, p *idem.Problem) error
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
// used. New panics when e is nil or the Config is contradictory, as
// Fiber's own middleware do.
func New(e *idem.Engine, config ...Config) fiber.Handler {
	cfg := configDefault(config...)
	s := adapterkit.Settings[call]{Policy: cfg.Policy, Store: cfg.Store, Retention: cfg.Retention}
	if f := cfg.RouteName; f != nil {
		s.RouteName = func(c call) string { return f(c.c) }
	}
	if f := cfg.ProblemHandler; f != nil {
		s.ProblemHandler = func(c call, p *idem.Problem) error { return f(c.c, p) }
	}
	kit, err := adapterkit.NewLayer[call](e, framework{}, s)
	if err != nil {
		panic("idemfiber3: Config: " + strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	l := &layer{kit: kit, next: cfg.Next}
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
// idem.FindingFrom(c.Context()). Any Policy in config is replaced.
func Manual(e *idem.Engine, config ...Config) fiber.Handler {
	return withPolicy(e, idem.Manual, config)
}

func withPolicy(e *idem.Engine, p idem.Policy, config []Config) fiber.Handler {
	cfg := configDefault(config...)
	cfg.Policy = p
	return New(e, cfg)
}

// ErrorHandler returns a fiber.ErrorHandler that answers Fiber's own 413
// (a body over fiber.Config.BodyLimit, refused before any handler runs)
// with idem's request-too-large problem document, rendered by e, as every
// other adapter answers an oversized body (B21, B25); every other error
// goes to next, or to fiber.DefaultErrorHandler when next is nil. Set it
// when the app is made:
//
//	app := fiber.New(fiber.Config{BodyLimit: 1 << 20, ErrorHandler: idemfiber3.ErrorHandler(engine, nil)})
func ErrorHandler(e *idem.Engine, next fiber.ErrorHandler) fiber.ErrorHandler {
	if e == nil {
		panic("idemfiber3: ErrorHandler needs an engine")
	}
	if next == nil {
		next = fiber.DefaultErrorHandler
	}
	return func(c fiber.Ctx, err error) error {
		var ferr *fiber.Error
		if !errors.As(err, &ferr) || ferr.Code != fiber.StatusRequestEntityTooLarge {
			return next(c, err)
		}
		fasthttpkit.WriteTooLarge(e, c.Response(), c.App().Config().BodyLimit, fiber.DefaultBodyLimit)
		return nil
	}
}

// layer is one idemfiber3 handler.
type layer struct {
	kit  *adapterkit.Layer[call]
	next func(c fiber.Ctx) bool
	fold fasthttpkit.Fold[*fiber.App]
}

func (l *layer) handle(c fiber.Ctx) error {
	if l.next != nil && l.next(c) {
		return c.Next()
	}
	st := fasthttpkit.GetScratch()
	err := l.kit.Serve(call{c: c, st: st, fold: l.fold.For(c.App(), headerNormalizingOff)})
	st.Put()
	return err
}

// headerNormalizingOff reports whether app keeps header names as sent.
func headerNormalizingOff(app *fiber.App) bool { return app.Config().DisableHeaderNormalizing }

// call is the kit's handle on one request. c is valid only while the
// handler runs: Fiber recycles it, and fasthttp its buffers, afterwards.
type call struct {
	c    fiber.Ctx
	st   *fasthttpkit.Scratch
	fold bool
}

// framework tells the kit how Fiber v3 does things; fasthttpkit does what
// only concerns fasthttp. Fiber holds the whole response until the
// handler returns, so it is Buffered.
type framework struct{}

// Request describes the request with views of fasthttp's buffers, which
// the engine keeps only during Begin; its context is c.Context(), where
// an auth middleware leaves the principal (c.SetContext).
func (framework) Request(c call, r *idem.Request) {
	fasthttpkit.Request(c.c.RequestCtx(), r, c.st, c.fold, c.c.Method(), c.c.Path(), c.c.Context())
}

func (framework) RouteName(c call) string { return c.c.FullPath() }

func (framework) Mark(c call) *adapterkit.Mark[call] {
	return fasthttpkit.Mark[call](c.c.RequestCtx())
}

// Hand hands the handler the context with what the engine found (a
// Manual route's finding, a transactional store's transaction) through
// c.SetContext, Fiber v3's request context.
func (framework) Hand(c call, h adapterkit.Handoff[call]) call {
	if ctx, ok := fasthttpkit.Hand(c.c.RequestCtx(), h); ok {
		c.c.SetContext(ctx)
	}
	return c
}

func (framework) Next(c call) error { return c.c.Next() }

func (framework) Write(c call, r *idem.Response) { fasthttpkit.Write(c.c.Response(), r) }

// Fail renders err with the app's ErrorHandler, as Fiber would after the
// chain returns, so that the client's response is final before the key is
// released (B15). The error is handled: outer handlers see nil, as with
// Fiber's logger middleware.
func (framework) Fail(c call, err error) error {
	if herr := c.c.App().ErrorHandler(c.c, err); herr != nil {
		_ = c.c.SendStatus(fiber.StatusInternalServerError)
	}
	return nil
}

func (framework) Recorded(c call, maxBody int) (idem.Recorded, bool) {
	return fasthttpkit.Recorded(c.c.RequestCtx(), c.st, c.fold, maxBody)
}

// Discard drops the response the chain left, before the kit writes a
// problem in its place.
func (framework) Discard(c call) { c.c.Response().Reset() }
