package idem

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"sync/atomic"
	"time"
)

// State is the state of a stored record.
type State uint8

const (
	// InFlight means a request holds the lease for the key and its handler
	// may be running. The record expires when the lease does.
	InFlight State = iota + 1
	// Completed means the handler ran and its response was recorded. The
	// record expires after the retention time.
	Completed
)

// String returns "in-flight" or "completed".
func (s State) String() string {
	switch s {
	case InFlight:
		return "in-flight"
	case Completed:
		return "completed"
	}
	return "unknown"
}

// Token identifies one lease. The engine draws a fresh token for every
// lease; a store compares tokens byte for byte and never interprets them.
type Token [16]byte

// String returns the token in hexadecimal.
func (t Token) String() string { return hex.EncodeToString(t[:]) }

// tokenSource hands out tokens that are unique across processes: a random
// 64-bit prefix drawn once per source, followed by a counter.
type tokenSource struct {
	prefix [8]byte
	next   atomic.Uint64
}

func newTokenSource() *tokenSource {
	s := &tokenSource{}
	if _, err := rand.Read(s.prefix[:]); err != nil {
		panic("idem: crypto/rand failed: " + err.Error())
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	s.next.Store(binary.BigEndian.Uint64(seed[:]))
	return s
}

func (s *tokenSource) token() Token {
	var t Token
	copy(t[:8], s.prefix[:])
	binary.BigEndian.PutUint64(t[8:], s.next.Add(1))
	return t
}

// HeaderField is one response header line.
type HeaderField struct {
	Name  string
	Value string
}

// Record is what a store keeps for one storage key.
//
// An in-flight record carries Token, Fingerprint and ExpiresAt (the end of
// the lease). A completed record also carries the recorded response: Status,
// Header and Body, or NotReplayable when the response could not be recorded
// whole (B19); its ExpiresAt is the end of the retention time.
type Record struct {
	State       State
	Token       Token
	Fingerprint []byte
	ExpiresAt   time.Time

	Status        int
	Header        []HeaderField
	Body          []byte
	NotReplayable bool
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// ErrLeaseLost is returned by Store.Complete, Store.Release and Store.Renew
// when the token presented is not the token of the key's current in-flight
// record: the lease expired and another request took the key over, or the
// record was completed, released or expired. Such a write changes nothing.
var ErrLeaseLost = errors.New("idem: lease lost: the token is not the current owner of the key")

// Store keeps idempotency records. Every method must be safe for concurrent
// use, from one process or many processes sharing the store. Keys are
// storage keys derived by the engine (never a client's raw key); tokens and
// fingerprints are opaque bytes.
//
// The contract, as the storetest package checks it:
//
//   - Acquire atomically looks up key. When there is no live record (none,
//     or one whose ExpiresAt has passed) it stores an in-flight record with
//     the given token and fingerprint, expiring after lease, and returns
//     (nil, nil): the caller now holds the lease. Otherwise it returns the
//     live record unchanged. Of any number of concurrent Acquire calls for
//     one key, exactly one returns (nil, nil).
//   - Complete replaces the in-flight record held by token with rec as a
//     completed record that expires after retention. Release deletes the
//     in-flight record held by token. Renew extends the lease held by token
//     to lease from now. When token does not hold the key's in-flight
//     record, each returns ErrLeaseLost and changes nothing (fencing).
//   - The completed record keeps the token and fingerprint given to
//     Acquire; the State, Token, Fingerprint and ExpiresAt of rec are
//     ignored. A record completed as NotReplayable keeps only its status.
//   - A nil fingerprint stays nil and an empty one stays empty (non-nil):
//     the engine skips the mismatch check only for nil.
//   - A returned record's Header slice is the caller's own: the caller may
//     change its fields and append to it. Its Fingerprint and Body bytes
//     and its header strings may be shared with the store, which then
//     never writes into them again (a later Complete stores new bytes, a
//     removal only drops the store's reference), so that the record stays
//     as it was while the store changes; the caller never writes into
//     them. A store on a network decodes fresh bytes anyway; a store in
//     memory spares the replay path a copy of the response.
//   - A store keeps neither the key nor the fingerprint passed to Acquire,
//     nor rec passed to Complete, once the call returns: it copies what it
//     keeps, so the caller may reuse their memory.
//   - A store honours ctx: when ctx is done before the operation takes
//     effect it returns an error that wraps ctx.Err().
//   - Bodies and header values are arbitrary bytes and round-trip exactly.
type Store interface {
	Acquire(ctx context.Context, key string, token Token, fingerprint []byte, lease time.Duration) (*Record, error)
	Complete(ctx context.Context, key string, token Token, rec *Record, retention time.Duration) error
	Release(ctx context.Context, key string, token Token) error
	Renew(ctx context.Context, key string, token Token, lease time.Duration) error
}

// LocalStore is an optional interface of a Store whose records live in the
// process's memory and whose calls never wait on I/O, as MemoryStore's do.
// The engine calls such a store without a StoreTimeout timer: a call that
// never waits needs no deadline. After the handler (Complete, Release,
// Renew) it passes a context that is never done and carries none of the
// request's values.
//
// A store that wraps another by embedding its concrete type (a
// *MemoryStore, say) inherits Local: when the wrapper may wait (it calls
// a network, say), it must embed the Store interface instead, which hides
// it.
type LocalStore interface {
	Store
	// Local does nothing: it marks a store as local.
	Local()
}

// TransactionalStore is an optional interface of a Store that commits a
// completed record together with the handler's own writes, in one
// transaction of its database (B35).
//
// When a request wins the lease for key, the engine calls BeginRun before
// the handler runs. The context BeginRun returns is the handler's context
// (Lease.Context): it carries whatever the handler needs to write inside
// the transaction, for instance the transaction itself, under a key the
// store documents. The engine then ends the lease with Complete or Release
// called with a context derived from that one (without its cancellation,
// with StoreTimeout): Complete writes the record inside the transaction
// and commits it, Release rolls the transaction back and deletes the
// in-flight record. Renew is called with a context derived from the
// request's own context instead, on another goroutine while the handler
// may be using the transaction, so it must not use it.
//
// Since the record commits with the handler's writes, the client must get
// the response only once Complete succeeded: Lease.HoldResponse reports
// true, and adapters hold the whole response until then, writing the
// problem of Lease.CommitFailure instead when Complete fails.
//
// A BeginRun error is a store failure before the handler: the engine
// releases the lease and answers 503 (or, with Config.FailOpen, runs the
// handler untracked).
type TransactionalStore interface {
	Store
	BeginRun(ctx context.Context, key string, token Token) (context.Context, error)
}
