package idemchi

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	idem "github.com/idemkit/idem/core"
)

// Option configures a layer. It is the net/http adapter's option type, so
// every idemhttp option works here as well.
type Option = idemhttp.Option

// Middleware returns chi middleware that runs each unsafe request carrying
// an idempotency key once and answers its retries with the recorded
// response. Options set its policy and other settings; without them the
// engine's configuration applies. Put it in an r.Group's r.Use for a
// default that routes override with r.With, or in a router's r.Use (see
// the package documentation for how the two stack). Each request's route
// is named by its chi pattern (see RoutePattern).
func Middleware(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return idemhttp.Middleware(e, withPatternName(opts)...)
}

// Required is Middleware with the Required policy, for r.With or a
// Group's r.Use: a request without a key is answered 400 (B6).
func Required(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return idemhttp.Required(e, withPatternName(opts)...)
}

// Optional is Middleware with the Optional policy: a request without a key
// runs untracked; one with a key is handled as on a Required route.
func Optional(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return idemhttp.Optional(e, withPatternName(opts)...)
}

// Exempt is Middleware with the Exempt policy: the handler runs every time
// and the key is never read (B3).
func Exempt(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return idemhttp.Exempt(e, withPatternName(opts)...)
}

// Manual is Middleware with the Manual policy: where the engine would
// answer a retry itself, the handler runs instead and reads what the engine
// found with idem.FindingFrom(r.Context()) (B26). Its response is then not
// stored.
func Manual(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return idemhttp.Manual(e, withPatternName(opts)...)
}

// withPatternName puts the chi route pattern as the route name before the
// caller's options, so that a RouteName among them wins.
func withPatternName(opts []Option) []Option {
	all := make([]Option, 0, len(opts)+1)
	all = append(all, idemhttp.RouteName(RoutePattern))
	return append(all, opts...)
}

// Policy sets the layer's policy, overriding the engine's default policy
// (B2). idem.Inherit keeps the engine's default.
func Policy(p idem.Policy) Option { return idemhttp.Policy(p) }

// Store makes the layer keep its records in s instead of the engine's
// store (B27).
func Store(s idem.Store) Option { return idemhttp.Store(s) }

// Retention sets how long the layer's completed records are kept,
// overriding the engine's retention time (B18, B27).
func Retention(d time.Duration) Option { return idemhttp.Retention(d) }

// RouteName names the route of each request in logs and events, in place
// of its chi pattern.
func RouteName(f func(*http.Request) string) Option { return idemhttp.RouteName(f) }

// ProblemHandler lets the application render the engine's problem
// responses (400, 409, 410, 413, 422, 503) its own way (B25). f must write
// a complete response with p.Status, and a Retry-After header when
// p.RetryAfter is positive. Without it the layer writes the engine's
// rendering, an application/problem+json body.
func ProblemHandler(f func(w http.ResponseWriter, r *http.Request, p *idem.Problem)) Option {
	return idemhttp.ProblemHandler(f)
}

// RoutePattern returns the full chi route pattern that serves r, such as
// "/api/orders/{id}" for a route "/orders/{id}" of a router mounted at
// "/api", or "" when no chi route matches. It works in a layer that runs
// after routing (r.With, a Group's r.Use) and in one that runs before it
// (a router's r.Use), where it looks the route up in the router.
func RoutePattern(r *http.Request) string {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil {
		return ""
	}
	// After routing to an endpoint the context holds the whole pattern. A
	// last part that ends in "*" may be a mounted sub-router still to
	// route, so that case, like a request not routed yet, is looked up.
	if n := len(rctx.RoutePatterns); n > 0 && !strings.HasSuffix(rctx.RoutePatterns[n-1], "*") {
		return rctx.RoutePattern()
	}
	if rctx.Routes == nil {
		return ""
	}
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	if path == "" {
		path = "/"
	}
	find := findContexts.Get().(*chi.Context)
	pattern := rctx.Routes.Find(find, r.Method, path)
	find.Reset()
	findContexts.Put(find)
	return pattern
}

// findContexts recycles the routing contexts RoutePattern looks routes up
// with; Find returns a string, which keeps nothing of the context.
var findContexts = sync.Pool{New: func() any { return chi.NewRouteContext() }}

// PatternFingerprint returns an idem.Config.Fingerprint function that
// hands base the request's route name — the chi route pattern, unless
// RouteName replaces it — in place of its path, for the routes of the
// layers of this package:
//
//	engine, err := idem.New(idem.Config{
//		Fingerprint: idemchi.PatternFingerprint(idem.DefaultFingerprint),
//	})
//
// Requests whose route has no name keep their path. Use it where several
// paths mean one operation, for instance when a key already names the
// resource. Path parameters then no longer tell requests apart: the same
// key sent to /orders/1 and to /orders/2 counts as one operation and is
// replayed instead of answered 422.
func PatternFingerprint(base func(r *idem.Request, body []byte) []byte) func(r *idem.Request, body []byte) []byte {
	return func(r *idem.Request, body []byte) []byte {
		if r.Route.Name == "" {
			return base(r, body)
		}
		byPattern := *r
		byPattern.Path = r.Route.Name
		return base(&byPattern, body)
	}
}
