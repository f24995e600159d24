// Package idemecho5 is the echo v5 (github.com/labstack/echo/v5) adapter of
// idem. It is named idemecho5, in the directory adapters/echo5, so that it
// collides neither with the echo package imported beside it (as
// OpenTelemetry's otelecho does) nor with idemecho, the echo v4 adapter,
// which a program moving from echo v4 to v5 may import in the same build.
// A /v5 suffix would not do: in Go it names a major version of idem's own
// module, not of echo.
//
// It turns an [idem.Engine] into an [echo.MiddlewareFunc]: a client that
// retries an unsafe request with the same Idempotency-Key gets the
// original response replayed instead of a second execution of the
// handler.
//
// # Mounting
//
// [Middleware] is the layer for a whole application or group, with the
// engine's default policy. [Required], [Optional], [Exempt] and [Manual]
// are the same middleware with a policy of its own, meant for single
// routes. The options are named as in every idem adapter: [Policy],
// [Store] and [Retention] for a route's own policy, store and retention,
// [RouteName] for its name in logs and events (default: the echo route
// pattern, c.Path()), [ProblemHandler] for the application's own problem
// rendering. Echo runs an application's or group's middleware before a
// route's, so the application-wide layer decides first: mount it Optional
// or Exempt and let routes opt in (or skip them with its Skipper), and
// routes take what they leave unset (a store, say) from it:
//
//	e.Use(middleware.Recover(), idemecho5.Optional(engine, idemecho5.Store(shared)))
//	e.POST("/orders", createOrder, idemecho5.Required(engine))
//	e.POST("/payments", createPayment) // keyed requests tracked, others not
//	e.POST("/transfers", transfer, idemecho5.Manual(engine))
//
// [Config] is the echo form of all of this: documented fields, defaults
// from [DefaultConfig], and [Config.ToMiddleware] (Config is an
// echo.MiddlewareConfigurator), which reports a bad configuration as an
// error instead of panicking.
//
// # What the middleware does
//
// The middleware asks the engine what to do with each request and answers
// replays and problems (RFC 9457 application/problem+json) itself through
// c.Response(), echo's *Response, so its Before and After hooks run and it
// is marked Committed. When the handler runs, the middleware sets the
// context's response (c.SetResponse, echo v5's way) to a writer that
// records what reaches the client, built on the adapter kit
// (github.com/idemkit/idem/core/adapterkit): the status and the header
// are recorded as they stand when the first body byte is written, so the
// Content-Type of c.JSON, which echo v5 writes through a writer that
// delays the status, is recorded with it, and a status-only response
// (c.NoContent) with its status. That writer unwraps to echo's *Response
// (echo.UnwrapResponse, http.ResponseController), so middleware and
// handlers that look for it still find it. The request body is restored
// byte for byte after the engine read it for the fingerprint.
//
// An error returned by the chain is rendered inside the middleware by the
// echo instance's HTTPErrorHandler (c.Echo().HTTPErrorHandler(c, err):
// echo v5 has no c.Error), so the response is final before the key is
// released and may be retried (B15). The error is then returned to the
// outer middleware, as echo's RequestLogger does with HandleError set;
// echo's DefaultHTTPErrorHandler leaves a committed response alone, and a
// custom HTTPErrorHandler should do the same (echo.UnwrapResponse(
// c.Response()).Committed). Echo v5's Recover turns a panic into such an
// error: mounted inside this middleware, the panic is rendered and
// releases the key; mounted outside, as above, the panic passes through
// this middleware, which releases the key on its way to Recover. A
// handler that hijacks the connection releases the key too.
//
// A Manual handler reads what the engine found with
// idem.FindingFrom(c.Request().Context()). An authentication middleware
// hands the engine the principal a key belongs to (B32) through the
// request's context (c.SetRequest(c.Request().WithContext(...))).
//
// # Stacked layers
//
// When several idem layers see one request, only one processes it, with
// one set of settings (B2), the way the adapter kit stacks layers: the
// outermost layer whose decision takes part in idempotency (the request
// carries a key, or lacks one on a Required route) processes the request
// and marks it, and every inner idem layer passes it straight through. A
// layer whose decision does not take part (a safe method, an Exempt
// policy, an Optional policy without a key) leaves the request to the
// inner layers, which take the settings they leave unset from it. A layer
// whose Skipper skips the request takes no part. When an inner layer is
// passed through although its own settings would have changed the
// outcome, it logs a warning once through the engine's Config.Logger,
// when one is set.
package idemecho5
