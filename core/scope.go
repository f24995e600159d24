package idem

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"unsafe"
)

// scopeSeed hashes scopes for the per-scope accounting of bounded stores
// (B30): one seed per process, so that every engine sharing a store hashes
// a scope alike.
var scopeSeed = maphash.MakeSeed()

// scopeKey is the context key under which a *scopeCtx finds itself.
type scopeKey struct{}

// scopeCtx is the context the engine hands a store: the request's context,
// plus a hash of the request's scope (never the scope itself) for a store
// that bounds what one scope may hold (B30). Each Lease embeds one, so it
// costs no allocation.
type scopeCtx struct {
	context.Context
	hash uint64
}

// Value returns c for scopeKey and asks the parent otherwise.
func (c *scopeCtx) Value(key any) any {
	if _, ok := key.(scopeKey); ok {
		return c
	}
	return c.Context.Value(key)
}

// scopeOf returns the scope hash the engine attached to ctx, or 0 when
// the call did not come from an engine.
func scopeOf(ctx context.Context) uint64 {
	if c, ok := ctx.(*scopeCtx); ok {
		return c.hash
	}
	if c, ok := ctx.Value(scopeKey{}).(*scopeCtx); ok {
		return c.hash
	}
	return 0
}

// scopeStripes is how many independently locked parts a scopeUse has.
const scopeStripes = 16

// scopeUse counts the records and bytes a store holds, in all and, while
// the store is pressed, per scope, and decides whether a scope may add a
// record (B30). Every call of add is made under the lock of one of the
// store's shards; start and stop take every shard's lock, so that no add
// runs while they change whether scopes are counted.
type scopeUse struct {
	maxEntries, maxBytes int64
	entries, bytes       atomic.Int64
	// counting is set while the scopes are counted: from the moment the
	// store is half full (by entries or bytes) until it is less than three
	// eighths full, so that a store under no pressure pays for no count.
	// Between the two, at least an eighth of the store's records come or
	// go, which pays for the scan that starts the count.
	counting atomic.Bool
	// scopes is the number of scopes holding at least one record.
	scopes  atomic.Int64
	stripes [scopeStripes]scopeStripe
}

type scopeStripe struct {
	scopeStripeState
	_ [(64 - unsafe.Sizeof(scopeStripeState{})%64) % 64]byte // keep stripes on separate cache lines
}

type scopeStripeState struct {
	mu sync.Mutex
	// counts holds a scope while it holds a record.
	counts map[uint64]scopeCount
}

type scopeCount struct{ entries, bytes int64 }

func newScopeUse() *scopeUse {
	u := &scopeUse{}
	for i := range u.stripes {
		u.stripes[i].counts = make(map[uint64]scopeCount)
	}
	return u
}

// pressed reports whether the store is at least half full, by entries and
// by bytes.
func (u *scopeUse) pressed() (entries, bytes bool) {
	return 2*u.entries.Load() >= u.maxEntries, 2*u.bytes.Load() >= u.maxBytes
}

// slack reports whether the store is less than three eighths full by
// entries and by bytes.
func (u *scopeUse) slack() bool {
	return 8*u.entries.Load() < 3*u.maxEntries && 8*u.bytes.Load() < 3*u.maxBytes
}

// shouldSwitch reports whether the scopes should start or stop being
// counted; the caller then calls start or stop holding no shard's lock.
func (u *scopeUse) shouldSwitch() bool {
	if u.counting.Load() {
		return u.slack()
	}
	e, b := u.pressed()
	return e || b
}

// add counts entries more records and bytes more bytes for scope.
func (u *scopeUse) add(scope uint64, entries, bytes int64) {
	if entries == 0 && bytes == 0 {
		return
	}
	u.entries.Add(entries)
	u.bytes.Add(bytes)
	if u.counting.Load() {
		u.count(scope, entries, bytes)
	}
}

// count counts entries more records and bytes more bytes in scope's count.
func (u *scopeUse) count(scope uint64, entries, bytes int64) {
	st := &u.stripes[scope%scopeStripes]
	st.mu.Lock()
	c := st.counts[scope]
	was := c.entries
	c.entries += entries
	c.bytes += bytes
	switch {
	case c.entries <= 0:
		delete(st.counts, scope)
		if was > 0 {
			u.scopes.Add(-1)
		}
	default:
		st.counts[scope] = c
		if was <= 0 {
			u.scopes.Add(1)
		}
	}
	st.mu.Unlock()
}

// admits reports whether scope may add a record. Below half the store's
// entries and bytes, every scope may. At or above half of either, a scope
// that holds more of it than the average scope holding records does is
// refused, so a scope that floods the store is refused first while the
// others keep their room; a single scope is never refused this way.
func (u *scopeUse) admits(scope uint64) bool {
	entriesPressed, bytesPressed := u.pressed()
	if !entriesPressed && !bytesPressed || !u.counting.Load() {
		// Not pressed, or pressed a moment ago: the next Acquire starts
		// the count.
		return true
	}
	entries, bytes := u.entries.Load(), u.bytes.Load()
	n := u.scopes.Load()
	if n <= 1 {
		// The counts are read without one lock over them all, so a lone
		// scope may seem to hold more than the total: it is never refused.
		return true
	}
	st := &u.stripes[scope%scopeStripes]
	st.mu.Lock()
	c := st.counts[scope]
	st.mu.Unlock()
	return !(entriesPressed && c.entries*n > entries) && !(bytesPressed && c.bytes*n > bytes)
}

// principalKey is the context key of a *principal.
type principalKey struct{}

// principal is what WithPrincipal puts in a context: the principal and
// the scope the default Scope derives from it, made once.
type principal struct {
	name, scope string
}

// principalScopePrefix starts the scope of a principal. No Authorization
// value holds a NUL byte, so a principal's scope never equals the scope a
// client could name with an Authorization header of its choosing.
const principalScopePrefix = "\x00principal\x00"

// WithPrincipal returns a copy of ctx that carries the authenticated
// principal of the request (an account, a tenant, an API client: whoever
// the idempotency keys belong to). An auth middleware calls it before the
// idem layer runs; the default Config.Scope then scopes keys by the
// principal instead of the Authorization header, so that clients who
// authenticate by cookie or API-key header never share keys, and a client
// that refreshes its token between retries keeps its key (B32). An empty
// principal is no principal: ctx is returned as it is.
//
// net/http, chi and echo: r = r.WithContext(idem.WithPrincipal(r.Context(), id)).
// Fiber: c.SetUserContext(idem.WithPrincipal(c.UserContext(), id)).
func WithPrincipal(ctx context.Context, principal string) context.Context {
	if principal == "" {
		return ctx
	}
	return context.WithValue(ctx, principalKey{}, newPrincipal(principal))
}

func newPrincipal(name string) *principal {
	return &principal{name: name, scope: principalScopePrefix + name}
}

// PrincipalFrom returns the principal WithPrincipal put in ctx.
func PrincipalFrom(ctx context.Context) (string, bool) {
	if p := principalOf(ctx); p != nil {
		return p.name, true
	}
	return "", false
}

func principalOf(ctx context.Context) *principal {
	p, _ := ctx.Value(principalKey{}).(*principal)
	return p
}
