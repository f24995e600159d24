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
// the same middleware with a policy of its own, meant for single routes,
// with options for a route's own store and retention ([WithStore],
// [WithRetention]) and for the application's own problem rendering
// ([WithProblemHandler]). Mount the application-wide layer on a group, and
// a route's layer merges with it, the route's settings winning:
//
//	api := e.Group("", idemecho.Middleware(engine)) // default: Required
//	api.POST("/orders", createOrder)
//	api.POST("/payments", createPayment, idemecho.Optional(engine))
//	api.POST("/webhooks", webhook, idemecho.Exempt(engine))
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
// one set of settings (B2):
//
//   - Layers that wrap each other directly merge into one layer, the one
//     nearest the handler winning each setting it sets. Echo composes a
//     route's group middleware and route middleware into one chain, so a
//     group's layer followed by the route's layer merges, as do consecutive
//     route layers. A layer whose Skipper skips the request takes no part
//     in the merge.
//   - Otherwise (a layer mounted with e.Use runs before any group or route
//     middleware; another middleware may sit between two layers) the
//     outermost layer whose decision takes part in idempotency processes
//     the request and marks it, and every inner idem layer passes it
//     straight through. A layer whose decision does not take part (a safe
//     method, an Exempt policy, an Optional policy without a key) leaves
//     the request unmarked, so an inner layer decides.
//
// So with e.Use, mount the application-wide layer as Optional or Exempt and
// let routes opt in with Required or Manual:
//
//	e.Use(idemecho.Optional(engine))
//	e.POST("/orders", createOrder, idemecho.Required(engine))
//
// When an inner layer is passed through although its own settings would
// have changed the outcome (another policy, store or retention), it logs a
// warning once through the engine's Config.Logger, when one is set, naming
// the route and the settings that were ignored.
package idemecho
