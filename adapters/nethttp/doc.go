// Package idemhttp is the net/http adapter of idem; its name carries an idem
// prefix so it does not collide with net/http's own package name, as
// otelhttp does.
//
// [Middleware] wraps an http.Handler so that unsafe requests carrying an
// Idempotency-Key run once and every retry gets the original response (see
// the core package idem for the rules). Wrap a whole mux with Middleware,
// and single handlers with the route-level layers [Required], [Optional],
// [Exempt] and [Manual], which are Middleware with that policy. [Store] and
// [Retention] give a route its own store and retention time, [RouteName]
// names routes in logs and events, and [ProblemHandler] lets the
// application render the engine's problem responses its own way.
//
// # Stacking layers
//
// Several idem layers may see one request, for instance a Middleware around
// the mux and a Required layer around a handler. Only one of them processes
// it:
//
//   - When one layer directly wraps another layer of the same engine, as in
//     Middleware(e)(Required(e)(h)) or a chain of route middlewares, the two
//     merge into one when the handler is built: every setting the inner
//     layer (the one nearer the handler) sets wins, the rest come from the
//     outer one, and a single layer runs.
//   - A layer around an [http.ServeMux] looks up the route a request is for
//     (ServeMux.Handler): when the route's handler is itself a layer of
//     the same engine, the two merge for that request as above, the
//     route's settings winning, and the route's layer passes the request
//     through. Events then name the route by its pattern.
//   - Otherwise, as with a Middleware around another router, or around a
//     mux whose route handlers wrap their layer in other middleware, the
//     outermost layer decides first. When the request takes part in
//     idempotency (it carries a key, or lacks one on a Required route),
//     that layer handles it and every inner layer passes it straight
//     through. When it does not (a safe method, an Exempt layer, an
//     Optional layer without a key), it leaves the request to the next
//     inner layer, which decides with its own policy and takes the Store,
//     Retention and ProblemHandler it leaves unset from the outer one. So
//     a global Exempt or Optional Middleware with routes that opt
//     in with Required or Manual works as expected, and the routes share
//     the global layer's Store or Retention unless they set their own.
//
// When an inner layer passes a request through although its own settings
// would have changed the outcome (another policy, store or retention), its
// settings were ignored: it logs a warning once through the engine's
// Config.Logger, when one is set, naming the route and the settings
// ignored. Mount such route-level settings directly around the handler,
// or make the global Middleware Exempt or Optional so routes can opt in.
//
// # Responses
//
// The layers are built on github.com/idemkit/idem/core/adapterkit, which
// every idem adapter shares. A handler that runs under a lease writes
// through the kit's recording writer, which passes every byte on to the
// client at once while it records the status, the header as it stands
// when the first body byte is written (or when the handler returns, for a
// status-only response) and up to the engine's response body limit. It
// keeps http.Flusher, http.Hijacker and io.ReaderFrom working and has an
// Unwrap method for http.ResponseController. A flushed response, or one
// over the limit, is recorded as not replayable; a hijacked connection
// releases the key as soon as the handler holds it; a handler that panics
// releases the key and the panic goes on to net/http's own recovery. With
// a transactional store (idem.TransactionalStore) the response is held
// until the record commits.
//
// The handler reads exactly the bytes the client sent, even though the
// engine read the body first to fingerprint it.
package idemhttp
