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

// scopeUse counts the records and bytes each scope holds in a store, and
// decides whether a scope may add a record (B30).
type scopeUse struct {
	maxEntries, maxBytes int64
	entries, bytes       atomic.Int64
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

// add counts entries more records and bytes more bytes for scope.
func (u *scopeUse) add(scope uint64, entries, bytes int64) {
	if entries == 0 && bytes == 0 {
		return
	}
	u.entries.Add(entries)
	u.bytes.Add(bytes)
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
	entries, bytes := u.entries.Load(), u.bytes.Load()
	entriesPressed, bytesPressed := 2*entries >= u.maxEntries, 2*bytes >= u.maxBytes
	if !entriesPressed && !bytesPressed {
		return true
	}
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
