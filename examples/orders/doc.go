// Command orders is a small orders API that shows idem at work: clients
// retry POST requests with the same Idempotency-Key and the server runs each
// operation once.
//
// From the repository root:
//
//	go run ./examples/orders
//
// serves on 127.0.0.1:8080 with the in-memory store. Flags:
//
//	-addr     listen address (default 127.0.0.1:8080)
//	-adapter  which adapter serves the routes: nethttp or chi (default nethttp)
//	-store    where idempotency records live: memory (default memory)
//	-latency  simulated work per order, such as 2s (default 0)
//
// Routes:
//
//	POST /orders       key required; {"sku": "...", "qty": 1} answers 201
//	GET  /orders       every order created, as a JSON array
//	GET  /orders/{id}  one order
//	POST /payments     key optional; {"amount": 100, "currency": "EUR"} answers 201
//	POST /webhooks     exempt from idempotency; answers 202 every time
//
// Every idempotency decision is logged through log/slog. SIGINT or SIGTERM
// shuts the server down gracefully.
//
// The business logic in api.go knows no framework: each adapter is one
// small function in adapters.go that mounts the same operations, and each
// store is one entry in stores.go.
package main
