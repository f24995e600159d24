package idem

import (
	"context"
	"log/slog"
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
)

var outcomeNames = [...]string{
	Passed: "passed", Executed: "executed", Replayed: "replayed",
	InFlightConflict: "in-flight", Mismatch: "mismatch", Missing: "missing",
	Invalid: "invalid", TooLarge: "too-large", NotReplayableRecord: "not-replayable",
	StoreError: "store-error", Untracked: "untracked", Stored: "stored",
	Released: "released", LeaseLost: "lease-lost", ManualFound: "manual-found",
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
	// Err is the store error or handler failure behind the outcome.
	Err error
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

func (e *Engine) report(ctx context.Context, ev Event) {
	if e.observer != nil {
		e.observer.Observe(ctx, ev)
	}
	if e.logger == nil {
		return
	}
	level := slog.LevelDebug
	switch ev.Outcome {
	case StoreError, LeaseLost, Untracked:
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
