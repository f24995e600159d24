// Package reliability holds idem's reliability and security tests: it has
// no API of its own, only tests that drive real servers on loopback
// listeners, real stores and real faults through every adapter (net/http,
// chi, gin, echo v4 and v5, Fiber v2 and v3) and every store (memory,
// Redis, PostgreSQL).
//
// What the tests prove, each named after the rules of the behaviour
// contract it checks:
//
//   - Exactly once under load (B11, B12, B13): 64 concurrent clients send
//     duplicates of hundreds of keys; each key's handler runs once, and every
//     other answer is a byte-identical replay of that key's first response
//     or a 409.
//   - Crash mid-request (B17): a server process killed with SIGKILL while
//     its handler runs leaves an in-flight record; a second process sharing
//     the store answers 409 until the lease ends, then runs the handler once
//     under a new token.
//   - Stale owner (B16): a handler that outlives a lease it could not renew
//     changes nothing when it finishes; the new owner's record stands and
//     the late client still gets its own response.
//   - Store outage (B22, B23): with the store unreachable mid-load, requests
//     that need it get 503 with Retry-After and their handlers do not run;
//     the service recovers without a restart when the store returns; in
//     fail-open mode handlers run and each untracked run is reported.
//   - Hostile input (B5, B7, B19, B21): malformed keys, oversized bodies and
//     oversized responses through every adapter, and a fuzz target that
//     drives the net/http adapter with arbitrary requests.
//   - Isolation (B8, B20, B28): keys never cross scopes; Set-Cookie and other
//     headers off the allowlist are never replayed; no raw key and no body
//     reaches a store's key names or values or the log output.
//   - Bounded memory (B30, B31): the memory store under a flood of distinct
//     keys stays within its entry and byte limits by refusing new keys,
//     never by evicting a record; idle connections declaring large bodies
//     hold memory for the bytes they sent only.
//   - Client disconnects (B29): copies of a completed request whose
//     connections close at once never run the handler again, on Redis in
//     fail-open mode.
//
// Run them with the rest of the workspace:
//
//	IDEM_REDIS_URL=redis://127.0.0.1:6379/0 \
//	IDEM_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//	go test -race ./reliability
//
// Without IDEM_REDIS_URL or IDEM_POSTGRES_URL the parts that need that store
// skip with a message; the outage test also needs a redis-server binary on
// the PATH. With -v each load run prints a summary line.
package reliability
