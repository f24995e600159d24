// Package idemgin is the gin (github.com/gin-gonic/gin) adapter of idem,
// named idemgin so it does not collide with the gin package imported
// beside it, as OpenTelemetry's otelgin does.
//
// It turns an [idem.Engine] into a [gin.HandlerFunc]: a client that
// retries an unsafe request with the same Idempotency-Key gets the
// original response replayed instead of a second execution of the
// handler.
//
// # Mounting
//
// [Middleware] is the layer for a whole engine or group, with the
// engine's default policy. [Required], [Optional], [Exempt] and [Manual]
// are the same middleware with a policy of its own, meant for single
// routes, in front of the route's handler. The options are named as in
// every idem adapter: [Policy], [Store] and [Retention] for a route's own
// policy, store and retention, [RouteName] for its name in logs and events
// (default: the gin route pattern, c.FullPath()), [ProblemHandler] for the
// application's own problem rendering; and [Skip], after gin's own
// Skipper, to leave requests to an inner layer:
//
//	r := gin.New()
//	r.Use(gin.Recovery(), idemgin.Optional(engine, idemgin.Store(shared)))
//	r.POST("/orders", idemgin.Required(engine), createOrder)
//	r.POST("/payments", createPayment) // keyed requests tracked, others not
//	r.POST("/transfers", idemgin.Manual(engine), transfer)
//
// # What the middleware does
//
// The middleware asks the engine what to do with each request. It answers
// replays and problems (RFC 9457 application/problem+json) itself through
// c.Writer and aborts the chain (c.Abort), so the handler does not run.
// When the handler runs, the middleware swaps c.Writer for a writer that
// records what reaches the client, built on the adapter kit
// (github.com/idemkit/idem/core/adapterkit): gin's writer chooses the
// status lazily, and c.JSON sets Content-Type after c.Status, so the
// status and the header are recorded as they stand when the first body
// byte is written, the handler flushes or calls WriteHeaderNow, or the
// handler returns; the status may change until then, as gin allows, and
// c.Writer.Status, Size and Written answer as gin's own writer does. A
// status-only response (c.Status(202), c.AbortWithStatus(204)) is
// recorded with its status. The request body is restored byte for byte
// after the engine read it for the fingerprint.
//
// A panic releases the key and goes on to gin's Recovery (mounted outside
// this middleware); so does a handler that hijacks the connection. Gin
// handlers return no error: a handler that records an error with c.Error
// and writes no response leaves the response to the application's error
// middleware (the gin idiom: a middleware that renders c.Errors after
// c.Next), and the key is released (B15) so the client may retry. A
// handler that wrote a response and also recorded an error is judged by
// its status, like any other.
//
// A Manual handler reads what the engine found with
// idem.FindingFrom(c.Request.Context()). An authentication middleware
// hands the engine the principal a key belongs to (B32) with
// c.Request = c.Request.WithContext(idem.WithPrincipal(...)).
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
// inner layers, which take the settings they leave unset from it. Gin runs
// an engine's and a group's middleware before a route's handlers, so mount
// engine-wide and group layers as Optional or Exempt and let routes opt
// in, or skip the routes that have layers of their own with [Skip]. When
// an inner layer is passed through although its own settings would have
// changed the outcome, it logs a warning once through the engine's
// Config.Logger, when one is set.
package idemgin
