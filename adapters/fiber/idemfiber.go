package idemfiber

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
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

	// RouteName names each request's route in the engine's logs and
	// events.
	//
	// Optional. Default: the path of the route fiber matched the handler
	// on: the route's pattern for a handler mounted on a route, the mount
	// prefix for one mounted with app.Use (fiber runs middleware before it
	// knows the final route).
	RouteName func(c *fiber.Ctx) string

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
	s := adapterkit.Settings[call]{Policy: cfg.Policy, Store: cfg.Store, Retention: cfg.Retention}
	if f := cfg.RouteName; f != nil {
		s.RouteName = func(c call) string { return f(c.c) }
	}
	if f := cfg.ProblemHandler; f != nil {
		s.ProblemHandler = func(c call, p *idem.Problem) error { return f(c.c, p) }
	}
	kit, err := adapterkit.NewLayer[call](e, framework{}, s)
	if err != nil {
		panic("idemfiber: Config: " + strings.ReplaceAll(err.Error(), "\n", "; "))
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
// idem.FindingFrom(c.UserContext()). Any Policy in config is replaced.
func Manual(e *idem.Engine, config ...Config) fiber.Handler {
	return withPolicy(e, idem.Manual, config)
}

func withPolicy(e *idem.Engine, p idem.Policy, config []Config) fiber.Handler {
	cfg := configDefault(config...)
	cfg.Policy = p
	return New(e, cfg)
}

// layer is one idemfiber handler.
type layer struct {
	kit  *adapterkit.Layer[call]
	next func(c *fiber.Ctx) bool
	fold atomic.Pointer[appFold]
}

func (l *layer) handle(c *fiber.Ctx) error {
	if l.next != nil && l.next(c) {
		return c.Next()
	}
	st := scratchPool.Get().(*scratch)
	err := l.kit.Serve(call{c: c, st: st, fold: l.foldFor(c.App())})
	st.put()
	return err
}

// call is the kit's handle on one request.
type call struct {
	c    *fiber.Ctx
	st   *scratch
	fold bool
}

// scratch holds the views of fasthttp's headers that the engine reads
// inside Begin and Lease.Complete, which keep neither: it is pooled
// rather than allocated for every request.
type scratch struct {
	reqHdr  requestHeader
	respHdr responseHeader
}

// put clears st and returns it to the pool.
func (st *scratch) put() {
	*st = scratch{}
	scratchPool.Put(st)
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// markKey is the fasthttp user value under which a layer leaves its mark
// for the layers inside it.
type markKey struct{}

// framework tells the kit how Fiber does things. Fiber holds the whole
// response until the handler returns, so it is Buffered.
type framework struct{}

func (framework) Request(c call, r *idem.Request) {
	fctx := c.c.Context()
	*r = idem.Request{
		Method:   method(c.c.Method()),
		Path:     c.c.Path(),
		RawQuery: utils.UnsafeString(fctx.URI().QueryString()),
		Header:   viewRequestHeader(&c.st.reqHdr, &fctx.Request.Header, c.fold),
		Context:  c.c.UserContext(),
	}
	// fasthttp holds the body in memory unless StreamRequestBody is on: the
	// engine then fingerprints fasthttp's buffer in place, without a copy,
	// and the handler reads that buffer untouched (B21).
	if stream := fctx.RequestBodyStream(); stream != nil {
		r.Body = stream
	} else if b := fctx.Request.Body(); len(b) > 0 {
		r.BodyBytes = b
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
		framework{}.Write(call{c: c}, e.RenderProblem(idem.NewTooLargeProblem(limit)))
		return nil
	}
}

func (framework) RouteName(c call) string { return c.c.Route().Path }

func (framework) Mark(c call) *adapterkit.Mark[call] {
	m, _ := c.c.Context().UserValue(markKey{}).(*adapterkit.Mark[call])
	return m
}

func (framework) Hand(c call, h adapterkit.Handoff[call]) call {
	fctx := c.c.Context()
	if h.Mark != nil {
		fctx.SetUserValue(markKey{}, h.Mark)
	}
	if ctx, ok := h.HandlerContext(); ok {
		c.c.SetUserContext(ctx)
	}
	if body, read := h.Body(); read {
		// The engine drained the request stream: hand the handler the
		// bytes read.
		fctx.Request.SetBodyRaw(body)
	}
	return c
}

func (framework) Next(c call) error { return c.c.Next() }

// Write writes an engine response: its header fields in order, replacing
// fields of the same name already set; its status and its body. fasthttp
// sets Content-Length from the body.
func (framework) Write(c call, r *idem.Response) {
	resp := c.c.Response()
	for i, f := range r.Header {
		switch {
		case repeated(r.Header[:i], f.Name):
			resp.Header.Add(f.Name, f.Value)
		case canonicalName(f.Name) && strings.IndexByte(f.Value, '\r') < 0 && strings.IndexByte(f.Value, '\n') < 0:
			// Set would copy the name to normalise it and strip line
			// breaks from the value: neither changes such a field, and
			// SetCanonical copies both as they are.
			resp.Header.SetCanonical(unsafe.Slice(unsafe.StringData(f.Name), len(f.Name)),
				unsafe.Slice(unsafe.StringData(f.Value), len(f.Value)))
		default:
			resp.Header.Set(f.Name, f.Value)
		}
	}
	resp.SetStatusCode(r.Status)
	// The body may be shared with the store or other requests: copy it
	// into fasthttp's own buffer, which later handlers may write into.
	resp.SetBody(r.Body)
}

// Fail renders err as fiber would after the chain returns, so that the
// client's response is final before the key is released (B15). The error
// is handled: outer handlers see nil, as with fiber's logger middleware.
func (framework) Fail(c call, err error) error {
	if herr := c.c.App().ErrorHandler(c.c, err); herr != nil {
		_ = c.c.SendStatus(fiber.StatusInternalServerError)
	}
	return nil
}

// Recorded reads the response fiber holds: status, the engine's view of
// its header, and its body when it fits.
func (framework) Recorded(c call, maxBody int) (idem.Recorded, bool) {
	fctx := c.c.Context()
	if fctx.Hijacked() {
		return idem.Recorded{}, true // B19
	}
	resp := &fctx.Response
	rec := idem.Recorded{Status: resp.StatusCode(), Header: viewResponseHeader(&c.st.respHdr, &resp.Header, c.fold)}
	if resp.IsBodyStream() {
		// SendStream, SetBodyStreamWriter, large files: the body is sent
		// after the handler returns and cannot be recorded (B19).
		rec.Streamed = true
	} else if body := resp.Body(); len(body) > maxBody {
		rec.Truncated = true
	} else {
		// Complete hands the body to the store before it returns, and a
		// store copies what it keeps (idem.Store contract), so fasthttp's
		// buffer is safe to pass as is.
		rec.Body = body
	}
	return rec, false
}

// Discard drops the response the chain left, before the kit writes a
// problem in its place.
func (framework) Discard(c call) { c.c.Response().Reset() }

// repeated reports whether a field called name is among fields.
func repeated(fields []idem.HeaderField, name string) bool {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// canonicalName reports whether name is a non-empty header name of
// letters, digits and '-' that fasthttp's normalisation leaves as it is:
// the first character and the one after each '-' upper case (that one
// is not looked at further), every other letter lower case.
func canonicalName(name string) bool {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		lower, capital := 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z'
		if !lower && !capital && c != '-' && (c < '0' || c > '9') {
			return false
		}
		if upper {
			if lower {
				return false
			}
			upper = false
			continue
		}
		if capital {
			return false
		}
		upper = c == '-'
	}
	return name != ""
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
