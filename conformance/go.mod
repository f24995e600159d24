module github.com/idemkit/idem/conformance

go 1.25

require github.com/idemkit/idem/core v0.0.0

replace github.com/idemkit/idem/core => ../core
