package idemhttp

import (
	"net/http"
	"time"

	"github.com/idemkit/idem/core/adapterkit"

	idem "github.com/idemkit/idem/core"
)

// Option configures a layer built by Middleware, Required, Optional,
// Exempt or Manual. The options are named as in every idem adapter:
// Policy, Store, Retention, RouteName, ProblemHandler.
type Option func(*layerConfig)

// layerConfig holds a layer's settings.
type layerConfig struct{ adapterkit.Settings[call] }

// Policy sets the layer's policy, overriding the engine's default policy
// (B2). idem.Inherit keeps the engine's default.
func Policy(p idem.Policy) Option {
	return func(s *layerConfig) { s.Policy = p }
}

// Store makes the layer keep its records in s instead of the engine's
// store (B27).
func Store(store idem.Store) Option {
	return func(s *layerConfig) { s.Store = store }
}

// Retention sets how long the layer's completed records are kept,
// overriding the engine's retention time (B18, B27).
func Retention(d time.Duration) Option {
	return func(s *layerConfig) { s.Retention = d }
}

// RouteName names the route of each request in logs and events, for
// instance by its pattern. Without it the layer uses r.Pattern, the pattern
// of the http.ServeMux route when the layer runs inside the mux, or the
// pattern of the route the mux picks when the layer wraps the mux.
func RouteName(f func(*http.Request) string) Option {
	return func(s *layerConfig) {
		s.RouteName = func(c call) string { return f(c.r) }
	}
}

// ProblemHandler lets the application render the engine's problem
// responses (400, 409, 410, 413, 422, 503) its own way (B25). f must write
// a complete response with p.Status; when p.RetryAfter is positive it
// should send a Retry-After header. Without it the layer writes the engine's
// rendering, an application/problem+json body.
func ProblemHandler(f func(w http.ResponseWriter, r *http.Request, p *idem.Problem)) Option {
	return func(s *layerConfig) {
		s.ProblemHandler = func(c call, p *idem.Problem) error {
			f(c.w, c.r, p)
			return nil
		}
	}
}
