module github.com/idemkit/idem/storage/redis

go 1.25.0

require (
	github.com/idemkit/idem/conformance v0.0.0
	github.com/idemkit/idem/core v0.0.0
	github.com/redis/go-redis/v9 v9.22.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/klauspost/cpuid/v2 v2.2.10 // indirect
	github.com/zeebo/xxh3 v1.1.0 // indirect
	go.uber.org/atomic v1.11.0 // indirect
	golang.org/x/sys v0.30.0 // indirect
)

replace github.com/idemkit/idem/core => ../../core

replace github.com/idemkit/idem/conformance => ../../conformance
