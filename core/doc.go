// Package idem is the framework-neutral engine of idem: idempotency keys
// for HTTP APIs, so that a client that lost a response can retry an unsafe
// request with the same Idempotency-Key and get the original result instead
// of a second execution.
//
// An adapter (net/http, chi, echo, fiber) turns each request into a
// [Request] and calls [Engine.Begin]. The [Decision] says whether to pass the
// request through untouched, to answer with a replay or an RFC 9457 problem,
// or to run the handler once under a [Lease] and report the response it
// recorded with [Lease.Complete] (or give the lease up with
// [Lease.Release]).
//
// Records live in a [Store]. [MemoryStore] is the embedded default; shared
// stores for fleets of servers live in separate modules (Redis,
// PostgreSQL). The Store contract is written as observable behaviour and
// checked by the storetest package of the conformance module.
//
// The scope of a key (whose key it is) is by default the principal an auth
// middleware hands over with [WithPrincipal], else the Authorization
// header (B32).
//
// The fingerprint (B9) that tells a retry from another request under the
// same key is by default the 128-bit XXH3 hash of method, path, raw query
// and body ([DefaultFingerprint]), not a cryptographic one: every input
// is the requester's own and it is compared only within one storage key,
// so it must make an accidental match negligible (2^-128), not resist an
// adversary. The storage key (B8), which keeps scopes apart, stays
// SHA-256 ([DefaultEncodeKey]). XXH3 hashes a 1 KiB body about ten times
// faster than SHA-256 here (BENCHMARKS.md), which is why this package
// depends on github.com/zeebo/xxh3. Records fingerprinted with SHA-256 by
// earlier versions still match ([SHA256Fingerprint]).
//
// The engine implements the behaviour contract of the project (B1–B34);
// the comments name the rule each piece serves.
package idem
