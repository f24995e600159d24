package idem

import (
	"context"
	"log/slog"
	"time"
)

// Outcome names one decision of the engine (B28).
type Outcome uint8

const (
	// Passed: the request took no part (safe method, exempt route, or an
	// optional route without a key) and ran untracked.
	Passed Outcome = iota + 1
	// Executed: the request won the lease and its handler runs.
	Executed
	// Replayed: a completed record was replayed.
	Replayed
	// InFlightConflict: another request holds the key; answered 409 (or the
	// configured in-flight status).
	InFlightConflict
	// Mismatch: the key was used for a different request; answered 422.
	Mismatch
	// Missing: no key on a route that requires one; answered 400.
	Missing
	// Invalid: a malformed key; answered 400.
	Invalid
	// TooLarge: the request body exceeded the limit; answered 413.
	TooLarge
	// NotReplayableRecord: the key's response was not stored; answered 410.
	NotReplayableRecord
	// StoreError: the store failed. Before the handler this means 503 (or
	// an untracked run in fail-open mode); after it, the response was sent
	// but not recorded (B23).
	StoreError
	// Untracked: fail-open mode ran the handler without a record (B22).
	Untracked
	// Stored: the handler's response completed the record.
	Stored
	// Released: the lease was given up (non-stored status, handler failure,
	// hijack), so the key may be retried.
	Released
	// LeaseLost: the lease expired or was taken over before the handler
	// finished; the late completion changed nothing (B16).
	LeaseLost
	// ManualFound: on a Manual route the handler runs with what was found.
	ManualFound
	// ClientGone: the request's context was done (the client disconnected,
	// or a server-side deadline passed) before the request held a lease;
	// the handler did not run and the answer is a 503 problem that usually
	// nobody reads (B29). Never reported as StoreError, never an
	// untracked run in fail-open mode. Logged at DEBUG, as the other
	// outcomes a client causes are.
	ClientGone
	// StoreFull: a bounded store refused a new key because it is full
	// (503 with Retry-After) or because the key's scope holds more than its
	// share of the store (429 with Retry-After); no record was evicted to
	// make room (B30).
	StoreFull
	// Unscoped is a notice, not a decision: a tracked request of the route
	// had an empty scope, so every client of the route shares one key
	// space. It is reported once per route, before the request's own
	// decision, and logged at WARN (B32).
	Unscoped
)

var outcomeNames = [...]string{
	Passed: "passed", Executed: "executed", Replayed: "replayed",
	InFlightConflict: "in-flight", Mismatch: "mismatch", Missing: "missing",
	Invalid: "invalid", TooLarge: "too-large", NotReplayableRecord: "not-replayable",
	StoreError: "store-error", Untracked: "untracked", Stored: "stored",
	Released: "released", LeaseLost: "lease-lost", ManualFound: "manual-found",
	ClientGone: "client-gone", StoreFull: "store-full", Unscoped: "unscoped",
}

// String returns the outcome's name, as it appears in logs.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return "unknown"
}

// Event reports one decision. It never holds a raw key or a body (B28).
type Event struct {
	Outcome Outcome
	// Route is Route.Name of the request's route.
	Route  string
	Method string
	// KeyID is a short prefix of the storage key ("" when there is none),
	// enough to correlate log lines, useless to replay a request.
	KeyID string
	// Status is the status answered or recorded, when there is one.
	Status int
	// BodySize is the length of the replayed body of a Replayed event;
	// the body itself is never reported.
	BodySize int
	// Err is the store error or handler failure behind the outcome.
	Err error
	// Op is the store call whose result the event reports: OpAcquire for
	// what Begin decided after asking the store (OpBeginRun when a
	// transactional store could not open the handler's transaction),
	// OpRenew for a renewal
	// that failed while the handler ran, and OpComplete or OpRelease for
	// how a lease ended, which every Executed event is followed by exactly
	// once. It is 0 when the decision needed no store call.
	Op StoreOp
}

// StoreOp names a Store method the engine calls.
type StoreOp uint8

const (
	// OpAcquire: Store.Acquire, when Begin looks a key up or leases it.
	OpAcquire StoreOp = iota + 1
	// OpComplete: Store.Complete, when a handler's response completes the
	// record.
	OpComplete
	// OpRelease: Store.Release, when a lease is given up.
	OpRelease
	// OpRenew: Store.Renew, while a handler outlives half its lease.
	OpRenew
	// OpBeginRun: TransactionalStore.BeginRun, when a request won the
	// lease on a transactional store (B35).
	OpBeginRun
)

var storeOpNames = [...]string{OpAcquire: "acquire", OpComplete: "complete", OpRelease: "release", OpRenew: "renew", OpBeginRun: "begin-run"}

// String returns "acquire", "complete", "release", "renew" or
// "begin-run".
func (o StoreOp) String() string {
	if int(o) < len(storeOpNames) && storeOpNames[o] != "" {
		return storeOpNames[o]
	}
	return "unknown"
}

// StoreCall reports one call the engine made to a store. Like an Event it
// never holds a raw key, a scope or a body (B28).
type StoreCall struct {
	Op StoreOp
	// Store is the store called: Config.Store or the route's own (B27).
	Store Store
	// Route is Route.Name of the request's route.
	Route string
	// KeyID is the short prefix of the storage key, as in Event.
	KeyID string
	// Duration is how long the call took, by the monotonic clock.
	Duration time.Duration
	// Err is what the call returned: nil, ErrLeaseLost for a token that
	// no longer holds the lease (B16), or the store's failure.
	Err error
}

// StoreObserver is an Observer that also receives every store call the
// engine makes, with how long it took. New checks Config.Observer for it
// once; an engine without one reads no clock around its store calls.
// ObserveStore is called on the goroutine that made the call and should
// return quickly.
type StoreObserver interface {
	Observer
	ObserveStore(ctx context.Context, call StoreCall)
}

// Observer receives every Event (B28). Observe is called on the request's
// goroutine or, for renewals, on a timer goroutine; it must be safe for
// concurrent use and should return quickly.
type Observer interface {
	Observe(ctx context.Context, ev Event)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(ctx context.Context, ev Event)

// Observe calls f(ctx, ev).
func (f ObserverFunc) Observe(ctx context.Context, ev Event) { f(ctx, ev) }

// keyIDLen is how much of the storage key events and logs show.
const keyIDLen = 8

func keyID(storageKey string) string {
	if len(storageKey) > keyIDLen {
		return storageKey[:keyIDLen]
	}
	return storageKey
}

// storeStart returns when a store call starts, or the zero time, without
// reading the clock, when no StoreObserver listens.
func (e *Engine) storeStart() time.Time {
	if e.storeObserver == nil {
		return time.Time{}
	}
	return time.Now()
}

// storeDone reports a store call that started at start to the
// StoreObserver, if there is one.
func (e *Engine) storeDone(ctx context.Context, op StoreOp, store Store, ev *Event, start time.Time, err error) {
	if e.storeObserver != nil {
		e.storeObserver.ObserveStore(ctx, StoreCall{Op: op, Store: store, Route: ev.Route, KeyID: ev.KeyID, Duration: time.Since(start), Err: err})
	}
}

func (e *Engine) report(ctx context.Context, ev Event) {
	if e.observer != nil {
		e.observer.Observe(ctx, ev)
	}
	if e.logger == nil {
		return
	}
	level := slog.LevelDebug
	switch ev.Outcome {
	case StoreError, LeaseLost, Untracked, StoreFull, Unscoped:
		level = slog.LevelWarn
	case Executed, Replayed, Stored, InFlightConflict, Mismatch, NotReplayableRecord, ManualFound:
		level = slog.LevelInfo
	}
	if !e.logger.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 6)
	attrs = append(attrs, slog.String("outcome", ev.Outcome.String()), slog.String("method", ev.Method))
	if ev.Route != "" {
		attrs = append(attrs, slog.String("route", ev.Route))
	}
	if ev.KeyID != "" {
		attrs = append(attrs, slog.String("key_id", ev.KeyID))
	}
	if ev.Status != 0 {
		attrs = append(attrs, slog.Int("status", ev.Status))
	}
	if ev.Err != nil {
		attrs = append(attrs, slog.String("error", ev.Err.Error()))
	}
	e.logger.LogAttrs(ctx, level, "idem", attrs...)
}
