// Package idemecho is the echo (github.com/labstack/echo/v4) adapter of idem,
// named idemecho so it does not collide with the echo package imported
// beside it, as OpenTelemetry's otelecho does.
//
// It turns an [idem.Engine] into an [echo.MiddlewareFunc]: a client that
// retries an unsafe request with the same Idempotency-Key gets the original
// response replayed instead of a second execution of the handler.
//
// # Mounting
//
// [Middleware] is the layer for a whole application or group, with the
// engine's default policy. [Required], [Optional], [Exempt] and [Manual] are
// the same middleware with a policy of its own, meant for single routes.
// The options are named as in every idem adapter: [Policy], [Store] and
// [Retention] for a route's own policy, store and retention, [RouteName]
// for its name in logs and events, [ProblemHandler] for the application's
// own problem rendering. Echo runs an application's or group's middleware
// before a route's, so the application-wide layer decides first: mount it
// Optional or Exempt and let routes opt in (or skip them with its Skipper),
// and routes take the Store, Retention and ProblemHandler they leave unset
// from it:
//
//	e.Use(idemecho.Optional(engine, idemecho.Store(shared)))
//	e.POST("/orders", createOrder, idemecho.Required(engine))
//	e.POST("/payments", createPayment) // keyed requests tracked, others not
//	e.POST("/transfers", transfer, idemecho.Manual(engine))
//
// [Config] is the echo-style form of all of this: documented fields,
// defaults from [DefaultConfig], and [Config.ToMiddleware], which reports a
// bad configuration as an error instead of panicking.
//
// # What the middleware does
//
// The middleware asks the engine what to do with each request. It answers
// replays and problems (RFC 9457 application/problem+json) itself through
// c.Response(), so echo's Response hooks (Before and After), Status, Size and
// Committed stay right. When the handler runs, the middleware wraps
// c.Response().Writer: the response streams to the client while it is
// recorded. A handler's request body is restored byte for byte after the
// engine read it for the fingerprint.
//
// An error returned by the handler is rendered with c.Error, that is by the
// echo instance's HTTPErrorHandler, inside the middleware, so the response
// is final before the lease is released and the key may be retried. The
// error is then returned to the outer middleware, as echo's RequestLogger
// does with HandleError set; echo's DefaultHTTPErrorHandler ignores an error
// whose response is already committed, and a custom HTTPErrorHandler should
// do the same. A panic releases the lease and is re-raised, so echo's
// Recover middleware (mounted outside this one) still sees it. A handler
// that hijacks the connection releases the lease too.
//
// Each request's route name in logs and events is its echo route pattern,
// c.Path().
//
// # Stacked layers
//
// When several idem layers see one request, only one processes it, with
// one set of settings (B2). The layers are built on
// github.com/idemkit/idem/core/adapterkit, and stack the way it does, by
// a mark on each request: the outermost layer whose decision takes part in
// idempotency (the request carries a key, or lacks one on a Required
// route) processes the request and marks it, and every inner idem layer
// passes it straight through. A layer whose decision does not take part (a
// safe method, an Exempt policy, an Optional policy without a key) leaves
// the request to the inner layers, which take from it the Store, Retention
// and ProblemHandler they leave unset (their policy is their own). A layer
// whose Skipper skips the request takes no part.
//
// So mount application-wide and group layers as Optional or Exempt and
// let routes opt in with Required or Manual, or skip the routes that have
// layers of their own with the Skipper. When an inner layer is passed
// through although its own settings would have changed the outcome
// (another policy, store or retention), it logs a warning once through the
// engine's Config.Logger, when one is set, naming the route and the
// settings that were ignored.
package idemecho
