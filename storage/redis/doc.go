// Package idemredis is the Redis store for idem; it is named idemredis so
// that it does not collide with go-redis's own package redis.
//
// A [Store] keeps idempotency records in Redis (or Valkey) through any
// redis.UniversalClient: a single node, Sentinel or Cluster. Several
// servers of one API share a Store to see each other's keys, which the
// in-memory store cannot do.
//
// Every store operation is one round trip: a Lua script run with EVALSHA
// (falling back to EVAL once when the server does not know the script yet)
// that touches exactly one key, so it is safe under Redis Cluster. Redis
// expires the records itself (PX): an in-flight record when its lease ends,
// a completed one after its retention. Complete, Release and Renew check the
// lease's token inside the script and return idem.ErrLeaseLost when it is
// stale, so a late owner never overwrites a newer request's record.
//
// Set ContextTimeoutEnabled in the client's options so that the engine's
// StoreTimeout (and a client's cancellation before the store is reached)
// bounds each call; without it go-redis applies only its own read and
// write timeouts once a command is sent. Keep go-redis's command retries
// (MaxRetries): after a Redis restart they move a call off a connection the
// server closed, and the engine treats a retried Acquire that already took
// effect as its own lease. During an outage each call waits out the
// client's dial retries (DialerRetries, DialerRetryTimeout) before the
// engine answers 503, bounded by StoreTimeout; lower them to fail faster.
//
// [New] reads the server's maxmemory-policy and fails with
// [ErrEvictingPolicy] when it may evict idem's keys (allkeys-* or
// volatile-*): an evicted record lets its retry run a second time (B30).
// Run Redis for idem with maxmemory-policy noeviction; a full server then
// refuses new records, which Acquire reports as idem.ErrStoreFull (503,
// never an untracked run).
//
// Records are stored in a compact, versioned binary encoding; bodies and
// header values round-trip byte for byte. The keys that reach Redis are
// the engine's hashed storage keys behind a prefix (default "idem:"),
// never a client's raw Idempotency-Key.
package idemredis
