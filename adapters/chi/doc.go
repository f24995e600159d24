// Package idemchi is the chi adapter of idem; its name carries an idem
// prefix so it does not collide with chi's own package name, as otelhttp
// and otelecho do.
//
// It builds on the net/http adapter (package idemhttp): every layer here is
// an idemhttp layer, so requests are recorded, replayed and released the
// same way, and what chi adds is chi's own: the matched route pattern (such
// as "/orders/{id}") names each request's route in logs and events, and,
// with [PatternFingerprint], stands in for the raw path in the request's
// fingerprint.
//
// Use [Middleware] for a whole router, and the route-level layers
// [Required], [Optional], [Exempt] and [Manual] (Middleware with that
// policy) with r.With and r.Group:
//
//	r := chi.NewRouter()
//	r.Group(func(r chi.Router) {
//		r.Use(idemchi.Middleware(engine)) // the engine's default policy
//		r.Post("/orders", createOrder)
//		r.With(idemchi.Optional(engine, idemchi.Retention(time.Hour))).Post("/payments", createPayment)
//		r.With(idemchi.Exempt(engine)).Post("/webhooks", receiveWebhook)
//	})
//
// [Store] and [Retention] give a route its own store and retention time,
// and [ProblemHandler] lets the application render the engine's problem
// responses its own way.
//
// # Stacking layers
//
// Only one idem layer processes a request. Where it matters is whether a
// layer runs before chi picks the route or after:
//
//   - Layers that chi chains around a route's handler — r.With, and r.Use
//     inside r.Group (a Group's middlewares wrap each of its routes) — run
//     after routing and merge into one layer when the route is registered:
//     each setting of the layer nearest the handler wins, the rest come
//     from the outer ones (B2). This is the way to give a router a default
//     that routes override, as above.
//
//   - A router's own r.Use (the root router, or one made with r.Route or
//     mounted with r.Mount) runs before routing, so it decides first. When
//     the request takes part in idempotency (it carries a key, or lacks one
//     on a Required layer), that layer handles it and every inner layer
//     passes it straight through, logging a warning once through the
//     engine's Config.Logger when its own settings were ignored. When it
//     does not (a safe method, an Exempt layer, an Optional layer without a
//     key), the next layer decides, taking the Store, Retention and
//     ProblemHandler it leaves unset from the outer one.
//
// So a layer in a router's own r.Use should be Exempt or Optional, with
// routes opting in through Required or Manual (or put the default in an
// r.Group, as above):
//
//	r.Use(idemchi.Middleware(engine, idemchi.Policy(idem.Exempt)))
//	r.With(idemchi.Required(engine)).Post("/orders", createOrder)
//
// # Route names
//
// Each layer names the request's route by its full chi pattern, across
// mounted sub-routers ("/api/orders/{id}"), whether it runs in r.Use before
// routing or in r.With after it; see [RoutePattern]. [RouteName] replaces
// that.
package idemchi
