package idemhttp

import (
	"net/http"
	"time"

	idem "github.com/idemkit/idem/core"
)

// Option configures a layer built by Middleware, Required, Optional,
// Exempt or Manual.
type Option func(*layerConfig)

// layerConfig holds a layer's settings.
type layerConfig struct {
	route     idem.Route
	routeName func(*http.Request) string
	problem   func(http.ResponseWriter, *http.Request, *idem.Problem)
}

// Policy sets the layer's policy, overriding the engine's default policy
// (B2). idem.Inherit keeps the engine's default.
func Policy(p idem.Policy) Option {
	return func(c *layerConfig) { c.route.Policy = p }
}

// Store makes the layer keep its records in s instead of the engine's
// store (B27).
func Store(s idem.Store) Option {
	return func(c *layerConfig) { c.route.Store = s }
}

// Retention sets how long the layer's completed records are kept,
// overriding the engine's retention time (B18, B27).
func Retention(d time.Duration) Option {
	return func(c *layerConfig) { c.route.Retention = d }
}

// RouteName names the route of each request in logs and events, for
// instance by its pattern. Without it the layer uses r.Pattern, the pattern
// of the http.ServeMux route when the layer runs inside the mux.
func RouteName(f func(*http.Request) string) Option {
	return func(c *layerConfig) { c.routeName = f }
}

// ProblemHandler lets the application render the engine's problem
// responses (400, 409, 410, 413, 422, 503) its own way (B25). f must write
// a complete response with p.Status; when p.RetryAfter is positive it
// should send a Retry-After header. Without it the layer writes the engine's
// rendering, an application/problem+json body.
func ProblemHandler(f func(w http.ResponseWriter, r *http.Request, p *idem.Problem)) Option {
	return func(c *layerConfig) { c.problem = f }
}
