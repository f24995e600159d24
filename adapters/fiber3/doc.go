// Package idemfiber3 is the Fiber v3 (github.com/gofiber/fiber/v3) adapter
// of idem. It is named idemfiber3, in the directory adapters/fiber3, so
// that it collides neither with the fiber package imported beside it (as
// otelfiber does) nor with idemfiber, the Fiber v2 adapter, which a
// program moving from Fiber v2 to v3 may import in the same build. A /v3
// suffix would not do: in Go it names a major version of idem's own
// module, not of Fiber.
//
// It makes unsafe requests idempotent: a client that lost a response
// retries with the same Idempotency-Key header and gets the original
// result instead of a second execution. The behaviour is the engine's
// (package idem, github.com/idemkit/idem/core); this package describes
// each Fiber request to it and acts on its decision, on the adapter kit
// (github.com/idemkit/idem/core/adapterkit).
//
// # Mounting
//
// [New] returns a fiber.Handler, func(fiber.Ctx) error, for the whole
// application or for one route; [Required], [Optional], [Exempt] and
// [Manual] are the same handler with that policy, mounted on routes.
// Either every unsafe request of the app takes part, with the engine's
// default policy:
//
//	app.Use(idemfiber3.New(engine))
//
// or routes choose:
//
//	app.Post("/orders", idemfiber3.Required(engine), createOrder)  // key required
//	app.Post("/payments", idemfiber3.Optional(engine), pay)        // key optional
//	app.Post("/webhooks", webhook)                                 // never tracked
//
// [Config] holds the rest, named as in every idem adapter: Policy, a
// per-route Store and Retention (B27), RouteName for the route's name in
// logs and events (default: c.FullPath()), and a ProblemHandler that
// renders the engine's problems the application's way (B25); and, the
// Fiber way, Next to skip requests.
//
// # Stacking
//
// When several idemfiber3 handlers see one request, only one processes
// it, the way the adapter kit stacks layers. A handler that takes part
// (the request carries a key, or its policy requires one) marks the
// request, and every inner handler passes it straight on. A handler that
// does not take part (a safe method, an Exempt policy, an Optional policy
// and no key) leaves the request to an inner handler, whose settings win
// and which takes the ones it leaves unset from the outer handler. Fiber
// runs app-wide middleware before it matches the final route, so an outer
// handler cannot know what the route's handler would decide: mount the
// app-wide handler Exempt (it then carries the shared settings) and let
// routes opt in, or skip the routes that have handlers of their own with
// its Next:
//
//	app.Use(idemfiber3.New(engine, idemfiber3.Config{Policy: idem.Exempt, Store: shared}))
//	app.Post("/orders", idemfiber3.Required(engine), createOrder)  // uses shared
//	app.Post("/transfers", idemfiber3.Manual(engine), transfer)
//
// An inner handler passed through although its own settings would have
// changed the outcome logs a warning once through the engine's Logger.
//
// Fiber refuses a body over its BodyLimit before any handler runs, with a
// plain-text 413; [ErrorHandler] makes it idem's problem document, as
// every other adapter answers (B21, B25):
//
//	app := fiber.New(fiber.Config{BodyLimit: 1 << 20, ErrorHandler: idemfiber3.ErrorHandler(engine, nil)})
//
// # What the handler sees
//
// The handler reads the request body with c.Body() as usual: it is exactly
// what the client sent (B21), also with Fiber's StreamRequestBody, where
// the engine reads the stream and hands the handler the same bytes.
//
// The request's context is Fiber v3's c.Context(): the engine reads it,
// so an authentication middleware hands the engine the principal a key
// belongs to (B32) with c.SetContext; and on a Manual route (B26), where
// the engine would answer a retry itself, the handler runs instead and
// finds what the engine found there:
//
//	f, ok := idem.FindingFrom(c.Context())
//
// # Responses
//
// The handler runs once, and its response is recorded as Fiber sends it,
// after the handler returned: status, the engine's allowlisted headers and
// the body. An error the handler returns is rendered by the app's
// ErrorHandler inside this handler, so that what the client got is final,
// and the key is released so the client may retry (B15); outer handlers
// then see a nil error, as with Fiber's logger middleware. A panic
// releases the key and goes on to Fiber's recover middleware. A body sent
// as a stream (c.SendStream, SetBodyStreamWriter) reaches the client
// whole but is not replayable: retries get 410 (B19). A connection taken
// over with fasthttp's Hijack releases the key.
//
// fasthttp reuses its buffers, and Fiber its Ctx, once a handler returns:
// this package hands the engine views of fasthttp's buffers only while
// Engine.Begin and Lease.Complete run (the store copies what it keeps),
// and never keeps the fiber.Ctx. A custom Config.Scope or
// Config.Fingerprint must not keep the idem.Request's Path, RawQuery or
// header values.
package idemfiber3
