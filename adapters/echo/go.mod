module github.com/idemkit/idem/adapters/echo

go 1.25.0

require (
	github.com/idemkit/idem/conformance v0.0.0
	github.com/idemkit/idem/core v0.0.0
	github.com/labstack/echo/v4 v4.16.0
)

require (
	github.com/klauspost/cpuid/v2 v2.2.10 // indirect
	github.com/labstack/gommon v0.5.0 // indirect
	github.com/mattn/go-colorable v0.1.15 // indirect
	github.com/mattn/go-isatty v0.0.22 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	github.com/valyala/fasttemplate v1.2.2 // indirect
	github.com/zeebo/xxh3 v1.1.0 // indirect
	golang.org/x/crypto v0.53.0 // indirect
	golang.org/x/net v0.56.0 // indirect
	golang.org/x/sys v0.46.0 // indirect
	golang.org/x/text v0.40.0 // indirect
	golang.org/x/time v0.15.0 // indirect
)

replace github.com/idemkit/idem/adapters/nethttp => ../nethttp

replace github.com/idemkit/idem/core => ../../core

replace github.com/idemkit/idem/conformance => ../../conformance
