// Package idemfiber is the Fiber (gofiber/fiber/v2) adapter of idem; it is
// named idemfiber so that it does not collide with Fiber's own package name
// fiber, as otelfiber does.
//
// It makes unsafe requests idempotent: a client that lost a response
// retries with the same Idempotency-Key header and gets the original
// result instead of a second execution. The behaviour is the engine's
// (package idem, github.com/idemkit/idem/core); this package turns each
// fiber request into an idem.Request and acts on the engine's decision.
//
// # Mounting
//
// [New] returns a fiber.Handler for the whole application or for one route;
// [Required], [Optional], [Exempt] and [Manual] are the same handler with
// that policy, mounted on routes. Either every unsafe request of the app
// takes part, with the engine's default policy:
//
//	app.Use(idemfiber.New(engine))
//
// or routes choose:
//
//	app.Post("/orders", idemfiber.Required(engine), createOrder)  // key required
//	app.Post("/payments", idemfiber.Optional(engine), pay)        // key optional
//	app.Post("/webhooks", webhook)                                // never tracked
//
// [Config] holds the rest, named as in every idem adapter: Policy, a
// per-route Store and Retention (B27), RouteName for the route's name in
// logs and events, and a ProblemHandler that renders the engine's problems
// the application's way (B25); and, the Fiber way, Next to skip requests.
//
// # Stacking
//
// The handlers are built on github.com/idemkit/idem/core/adapterkit,
// which every idem adapter shares, and stack the way it does. When several
// idemfiber handlers see one request, only one processes it.
// A handler that takes part (the request carries a key, or its policy
// requires one) marks the request, and every inner idemfiber handler passes
// it straight on. A handler that does not take part (a safe method, an
// Exempt policy, an Optional policy and no key) leaves the request
// to an inner handler, which decides with its own policy and takes the
// Store, Retention and ProblemHandler it leaves unset from the outer
// handler (the one nearest the handler wins). Fiber runs
// middleware before it matches the final route, so an outer handler cannot
// know what the route's handler would decide: the way to mix policies is a
// global Exempt handler, which carries the shared settings, with routes
// opting in:
//
//	app.Use(idemfiber.New(engine, idemfiber.Config{Policy: idem.Exempt, Store: shared}))
//	app.Post("/orders", idemfiber.Required(engine), createOrder)   // uses shared
//	app.Post("/transfers", idemfiber.Manual(engine), transfer)
//	app.Post("/webhooks", webhook)                                  // exempt
//
// A global Optional handler with a route-level Required works for requests
// without a key (the route answers 400); a request with a key is processed
// by the global handler with its settings. A global Required handler with a
// route-level Exempt or Manual does not work at all: the global handler
// already processed the request when the route's handler sees it. The
// route-level handler then passes through and, when its settings would
// have changed the outcome (another policy, store or retention) and the engine has a
// Logger, logs once a warning naming the settings ignored and how to mount
// it instead (mount the global handler with Exempt, or give it a Next that
// skips the route).
//
// # What the handler sees
//
// The handler reads the request body with c.Body() as usual: it is exactly
// what the client sent (B21), also with fiber's StreamRequestBody, where the
// engine reads the stream and hands the handler the same bytes.
//
// On a Manual route (B26), where the engine would answer a retry itself the
// handler runs instead; it finds what the engine found in its user context:
//
//	f, ok := idem.FindingFrom(c.UserContext())
//
// # Responses
//
// The handler runs once, and its response is recorded as fiber sends it:
// status, the engine's allowlisted headers and the body. An error the
// handler returns is rendered by the app's ErrorHandler inside this
// handler, so that what the client got is final, and the lease is given up
// so the client may retry (B15); outer handlers then see a nil error, as
// with fiber's logger middleware. A panic gives the lease up and goes on to
// fiber's recover middleware. A body sent as a stream (c.SendStream,
// SetBodyStreamWriter, large files) reaches the client whole but is not
// replayable: retries get 410 (B19). A connection taken over with
// fasthttp's Hijack (a WebSocket upgrade) gives the lease up.
//
// fasthttp reuses its buffers once a handler returns: this package copies
// every header value it hands the engine, and the engine's store copies the
// body it keeps before the handler returns; it never keeps the *fiber.Ctx.
// The idem.Request's Path and RawQuery are views of fasthttp's buffers,
// valid while Engine.Begin runs: a custom Config.Scope or
// Config.Fingerprint must not keep them.
package idemfiber
