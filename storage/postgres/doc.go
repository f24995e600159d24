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
package idempg
