// Command orders is a small orders API that shows idem at work: clients
// retry POST requests with the same Idempotency-Key and the server runs each
// operation once.
//
// From the repository root:
//
//	go run ./examples/orders
//
// serves on 127.0.0.1:8080 with the net/http adapter and the in-memory
// store. Flags:
//
//	-addr          listen address (default 127.0.0.1:8080)
//	-adapter       which adapter serves the routes: nethttp, chi, echo
//	               (echo v4), echo5, fiber (Fiber v2), fiber3 or gin
//	               (default nethttp)
//	-store         where idempotency records live: memory, redis, postgres
//	               or postgres-tx, PostgreSQL's transactional mode, which
//	               creates each order in the request's transaction, committed
//	               with its idempotency record (default memory)
//	-latency       simulated work per order, such as 2s (default 0)
//	-redis-url     Redis for -store redis (default $IDEM_REDIS_URL, else
//	               redis://127.0.0.1:6379/0)
//	-key-prefix    prefix of idem's keys in Redis (default idem:)
//	-postgres-url  database for -store postgres (default $IDEM_POSTGRES_URL,
//	               else postgres://postgres@127.0.0.1:5432/test?sslmode=disable)
//	-table         table of the records in PostgreSQL, created when missing
//	               (default idem_records)
//	-orders        where the orders live: memory or postgres (default
//	               postgres with -store postgres-tx, else memory)
//	-orders-table  table of the orders in PostgreSQL, created when missing
//	               (default orders)
//	-lease         lease time of a request's key, such as 5s: how long a
//	               crashed request blocks its retry (default 30s)
//	-fresh         with redis or postgres, a random key prefix or table of
//	               this run's own, removed at shutdown, so a new run does
//	               not replay an earlier run's records
//	-metrics-addr  serve the engine's OpenTelemetry metrics for Prometheus
//	               there (GET /metrics), such as 127.0.0.1:9464
//	-exit-with-parent
//	               shut down when the process that started the server exits
//	               (default true when started by go run)
//
// Routes:
//
//	POST /orders       key required; {"sku": "...", "qty": 1} answers 201
//	GET  /orders       every order created, as a JSON array
//	GET  /orders/{id}  one order
//	POST /payments     key optional; {"amount": 100, "currency": "EUR"} answers 201
//	POST /webhooks     exempt from idempotency; answers 202 every time
//
// With -store redis or -store postgres, several processes serving the API
// share their idempotency records: a retry sent to another process is
// replayed there, and a duplicate that reaches another process while the
// first request runs gets 409. The orders themselves stay in the memory of
// the process that created them, as an example's business data may, unless
// -orders postgres keeps them in a table every process shares. With
// -store postgres-tx an order commits together with its idempotency record
// or not at all, so that a crash at any point of a request leaves exactly
// one order for its key once the client has retried (the README's
// guarantee matrix, which TestCrash checks by killing processes).
//
// Every idempotency decision is logged through log/slog. SIGINT (Ctrl-C),
// SIGTERM or SIGHUP shuts the server down gracefully: requests in progress
// finish, then the store's connections close. So does the exit of the
// go run that started it, which dies of any signal but Ctrl-C without
// passing it on.
//
// The business logic in api.go knows no framework: each adapter is one
// small function in adapters.go that mounts the same operations, and each
// store is one entry in stores.go.
package main
