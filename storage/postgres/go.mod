module github.com/idemkit/idem/storage/postgres

go 1.25.0

require (
	github.com/idemkit/idem/conformance v0.0.0
	github.com/idemkit/idem/core v0.0.0
	github.com/jackc/pgx/v5 v5.12.0
)

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	github.com/klauspost/cpuid/v2 v2.2.10 // indirect
	github.com/zeebo/xxh3 v1.1.0 // indirect
	golang.org/x/sync v0.22.0 // indirect
	golang.org/x/sys v0.30.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)

replace github.com/idemkit/idem/core => ../../core

replace github.com/idemkit/idem/conformance => ../../conformance
