module github.com/idemkit/idem/examples/adapter

go 1.25.0

require (
	github.com/idemkit/idem/conformance v0.0.0
	github.com/idemkit/idem/core v0.0.0
)

replace github.com/idemkit/idem/conformance => ../../conformance

replace github.com/idemkit/idem/core => ../../core
