module github.com/idemkit/idem/adapters/nethttp

go 1.25

require (
	github.com/idemkit/idem/conformance v0.0.0
	github.com/idemkit/idem/core v0.0.0
)

replace github.com/idemkit/idem/core => ../../core

replace github.com/idemkit/idem/conformance => ../../conformance
