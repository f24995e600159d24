// Package idempg is a PostgreSQL store for idem, built on pgx/v5 and
// pgxpool, for records that must survive restarts and be shared by every
// replica of a service. Its name carries the idem prefix, as otelhttp's
// does, so that it does not collide with the PostgreSQL driver packages a
// program imports beside it.
//
// A Store keeps one row per storage key in a single table (see Schema).
// Acquire is one statement (a read of the live row and an INSERT … ON
// CONFLICT DO UPDATE in one WITH query) that inserts an in-flight row, takes
// over a row whose expiry has passed, or returns the live row, atomically:
// of any number of concurrent acquires for one key, across any number of
// processes, exactly one wins. Complete, Release and Renew are single
// statements fenced by the lease token. Every expiry is computed and
// compared with the database's clock, so the clocks of the application
// servers do not matter.
//
// The engine's settings decide how long rows live: an in-flight row
// expires after idem.Config.LeaseTime (30 seconds by default, renewed while
// the handler runs), and a completed row after idem.Config.Retention (24
// hours by default) or the route's own Retention. The table therefore holds
// about a retention time's worth of keyed requests, each with its recorded
// body of up to idem.Config.MaxResponseBody (1 MiB by default).
//
// A lookup of a live record (a replay, or a duplicate of a request in
// flight) reads and writes nothing; a new lease, a completion, a release and
// a renewal each commit one single-statement transaction.
//
// Expired rows are ignored and replaced on access. They are deleted by
// Store.DeleteExpired and by the store's background sweeper, which Close
// stops.
//
// # Transactional mode: the record commits with the handler's writes
//
// A plain store completes the record after the handler's own writes have
// committed. A process that dies between the two leaves the key in flight,
// and once the lease ends the client's retry runs the handler again: a
// second order. Store.Transactional returns the store's transactional
// mode, a TxStore over the same table: on the routes that use it, the
// handler's writes and the completed record commit in one transaction
// (rule B35), so a crash at any point leaves both or neither:
//
//	store, err := idempg.New(pool, idempg.Options{})
//	...
//	engine, err := idem.New(idem.Config{Store: store.Transactional()})
//	...
//	func createOrder(w http.ResponseWriter, r *http.Request) {
//		tx := idempg.Tx(r.Context()) // the request's transaction
//		if _, err := tx.Exec(r.Context(), "INSERT INTO orders ...", ...); err != nil {
//			http.Error(w, "...", http.StatusInternalServerError) // rolls back
//			return
//		}
//		w.WriteHeader(http.StatusCreated) // commits, with the record
//	}
//
// Or keep the plain store as the engine's and give only some routes the
// transactional one, with the adapter's route-level Store option
// (idem.Route.Store).
//
// How a request runs:
//
//   - Acquire commits the in-flight row on its own, as in the plain mode,
//     so duplicates see it at once and get 409 (or wait, with
//     idem.Config.InFlightWait).
//   - Before the handler runs, BeginRun takes a connection from the
//     pool, begins the request's transaction and locks the in-flight row
//     in it FOR KEY SHARE, in one round trip. Tx(ctx) returns the
//     transaction to the handler.
//   - Complete writes the completed record in that transaction and
//     commits it; the adapter sends the response only after the commit
//     succeeded. Release (a status that is not stored, a panic, an error
//     the framework renders, a hijacked connection) rolls the transaction
//     back and deletes the in-flight row, so the client may retry.
//
// Fencing. While the transaction is open, no other request runs the
// handler for the key, even after the lease time has passed (a stalled
// process, renewals that failed): taking over an expired lease first locks
// its row FOR UPDATE NOWAIT, which fails at once against the transaction's
// lock, and the duplicate gets the in-flight record (409) instead. The
// engine's renewals only take FOR NO KEY UPDATE, which the transaction's
// lock allows, so they go on as in the plain mode. A request whose
// transaction is open completes even when its lease time has passed: no
// one can have taken the key over. When the process dies, its connection
// closes and PostgreSQL rolls the transaction back, releasing the lock;
// the in-flight row stays until its lease ends, and the retry then runs
// against a database the first attempt left unchanged. (A process cut off
// without its connection closing holds the lock until the server notices:
// set PostgreSQL's tcp_keepalives_idle or client_connection_check_interval
// so that it does within a lease time or two.)
//
// A failed commit. When the transaction does not commit (the COMMIT fails,
// say on a deferred constraint or a serialization failure; a statement of
// the handler failed and left it aborted; the handler ended it through
// Conn; the connection broke), Complete returns an error wrapping
// ErrNotCommitted after rolling back and deleting the in-flight row, and
// the client gets a 5xx problem, never the handler's success: a retry runs
// again against an unchanged database. When the connection broke during
// the COMMIT itself the outcome is unknown; the deletion is fenced by the
// in-flight state, so a record that did commit stays and the retry
// replays it.
//
// The handler and the transaction. Commit and Rollback of the transaction
// Tx returns do nothing and return ErrTxManaged (a habitual
// defer tx.Rollback(ctx) is harmless): the response decides. A nested
// transaction, tx.Begin, is a savepoint and undoes part of the work. A
// handler that panics or returns an error is rolled back with the
// release. The transaction runs at READ COMMITTED.
//
// Connections. Each running request holds one pooled connection from
// BeginRun until Complete or Release, and the store's own statements
// (acquire, renewals) take one briefly from the same pool: size the pool
// for the requests that run at once plus some headroom (pgxpool's default
// MaxConns is 4 or the number of CPUs, whichever is larger), or requests
// queue for a connection, up to 5 seconds, and then get 503. The
// held connection is idle while the handler does other work, and the
// first request costs one round trip more than in the plain mode (see
// BENCHMARKS.md). A pool behind PgBouncer must use session pooling, or
// transaction pooling, which keeps a transaction on one server connection
// as this mode needs.
//
// A Store and its TxStore share the table, and may serve different routes
// of one engine. Only the TxStore's acquire checks the lock before taking
// an expired lease over: should a plain route take over a key whose
// transaction is still open (the same client key sent to another route,
// which a fingerprint mismatch answers while the lease is live), the
// transaction could no longer complete its record and would roll back, so
// its writes never commit twice.
package idempg
