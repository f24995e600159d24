module github.com/idemkit/idem/examples/orders

go 1.25

require (
	github.com/go-chi/chi/v5 v5.5.0
	github.com/idemkit/idem/adapters/chi v0.0.0
	github.com/idemkit/idem/adapters/nethttp v0.0.0
	github.com/idemkit/idem/core v0.0.0
)

replace github.com/idemkit/idem/adapters/chi => ../../adapters/chi

replace github.com/idemkit/idem/adapters/nethttp => ../../adapters/nethttp

replace github.com/idemkit/idem/conformance => ../../conformance

replace github.com/idemkit/idem/core => ../../core
