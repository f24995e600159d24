// Package adapterkit is what an idem adapter is built on: the part of an
// adapter that is the same for every web framework. An adapter supplies
// only what its framework does its own way — how to describe a request to
// the engine, where to leave a mark on a request, how to wrap its response
// writer (or read the response it buffers) and how to write a response —
// by implementing [Framework]; the kit does everything else:
//
//   - deciding with the engine (idem.Engine.Begin) and acting on the
//     decision: pass the request on, answer it (a replay, or a problem
//     through the layer's ProblemHandler), or run the handler once under a
//     lease and complete or release the lease;
//   - stacking: when several idem layers see one request, exactly one
//     processes it, with merged settings (see Stacking);
//   - the warn-once of a route-level setting an outer layer ignored;
//   - a panic, runtime.Goexit, a hijacked connection or a framework error
//     releases the key (B15, B19); a panic goes on to the framework's
//     recovery with its own stack;
//   - recording the response the way the client gets it (see
//     [Handoff.Wrap]): headers as they stand when the first body byte is
//     written or when the handler returns, not when the status is chosen;
//     status-only responses with their status; repeated fields in order;
//   - holding the response until the record commits, for a transactional
//     store (idem.Lease.HoldResponse, B35);
//   - writing an engine response to an http.ResponseWriter
//     ([WriteResponse]).
//
// The framework adapters of this repository (net/http, chi, gin, echo v4
// and v5, Fiber v2 and v3) are built on it, and so can yours: see the
// checklist below, and the complete adapter for a small router in
// examples/adapter.
//
// # Shape
//
// C is the adapter's handle on one request, a small struct of the
// framework's own values (net/http: the ResponseWriter, the *http.Request
// and the next handler; echo: the echo.Context and next; Fiber: the
// *fiber.Ctx). For every middleware it builds, an adapter makes a [Layer]
// with [NewLayer] from the engine, its Framework and the layer's
// [Settings], and for every request calls [Layer.Serve]:
//
//	func (l *layer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
//		_ = l.kit.Serve(call{w: w, r: r, next: l.next})
//	}
//
// Settings use the same words in every adapter: Policy, Store, Retention,
// RouteName and ProblemHandler; adapters expose them under those names
// (as options or Config fields).
//
// # Stacking
//
// One mechanism, per request: a layer that processes a request leaves a
// taken Mark on it ([Handoff].Mark, found again by [Framework].Mark), and
// every inner layer that sees the mark passes the request straight
// through, logging once (through the engine's Config.Logger) when its own
// settings would have changed the outcome (another policy, store or
// retention; the warning names them). A layer
// whose decision does not take part in idempotency (a safe method, an
// Exempt policy, an Optional policy and no key) leaves the request to the
// inner layers; when it sets a Store, a Retention or a ProblemHandler it
// hands them on with a mark, and an inner layer takes those it leaves
// unset itself (its own settings win, B2; its Policy is its own: the
// outer layer's policy already had its say by letting the request
// through). So the outermost layer that takes part processes the request.
// A layer with no settings to hand on leaves no mark, which costs nothing. A layer that runs before the router picks the route cannot
// know the route's own layer: mount it Exempt or Optional and let routes
// opt in, or let it skip routes that have layers of their own.
//
// Where an adapter sees at build time that one of its layers directly
// wraps another (net/http: the next handler is a layer; a mux whose
// route's handler is one), it merges the two with [Layer.Under] and serves
// requests with the merged layer alone. No other recognition: no function
// pointers, nothing that depends on the compiler.
//
// # Responses
//
// A framework that writes through an http.ResponseWriter (net/http, chi,
// echo, gin) hands the handler h.Wrap(w) in [Framework].Hand: the kit's
// recording writer. A framework that holds the whole response in memory
// until the handler returns (fasthttp, Fiber) implements [Buffered]
// instead, and the kit reads the response after the chain returned.
//
// # Transactional stores (B35)
//
// With an idem.TransactionalStore the handler must run with the lease's
// context (idem.Lease.Context, which carries the store's transaction; the
// kit hands it over as [Handoff.HandlerContext] and in [Handoff.Context])
// and the client must get the response only once the record committed
// (idem.Lease.HoldResponse). The kit does both: its recording writer holds
// the whole response until Complete returns and writes the held response
// or, when Complete failed, the lease's CommitFailure problem; for a
// Buffered framework it replaces the buffered response with that problem
// (Buffered.Discard, then Framework.Write).
//
// # Checklist for an adapter of your own
//
//  1. Request: fill Method, Path (escaped, as sent), RawQuery, Header
//     (any idem.Header; names match case-insensitively), Context, and the
//     body: Body plus ContentLength, or BodyBytes when the framework
//     holds the whole body in memory (no copy; Begin then does not consume
//     Body). Views of the framework's buffers are fine: Begin keeps
//     nothing, except that Method must be a stable string.
//  2. RouteName: the route's pattern ("/orders/{id}"), "" when there is
//     none; it names the route in logs and events.
//  3. Mark and Hand: store h.Mark where Mark finds it again, per request
//     (a context value via h.Context and [MarkFrom], or the framework's
//     per-request store). Hand must also hand the handler the body the
//     engine consumed (h.Body, h.BodyReader: the handler reads exactly the
//     bytes the client sent, B21), the handler's context (h.Context or
//     h.HandlerContext: a Manual route's finding, idem.FindingFrom, B26;
//     a transactional store's transaction), and, under a lease, h.Wrap of
//     the response writer.
//  4. Next: run the rest of the chain; undo what Hand swapped into shared
//     state (a response's writer) in a deferred call.
//  5. Write: write an engine response whole (WriteResponse for an
//     http.ResponseWriter); Fail: render a handler error the framework's
//     way so the response is final, and return what your middleware
//     returns up the chain.
//  6. Test it: implement conformance.Harness (serve an App with your
//     middleware, route settings the way your adapter documents) and call
//     conformance.Run from a _test.go file.
package adapterkit
