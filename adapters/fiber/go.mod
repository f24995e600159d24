module github.com/idemkit/idem/adapters/fiber

go 1.25.0

require (
	github.com/gofiber/fiber/v2 v2.52.15
	github.com/idemkit/idem/conformance v0.0.0
	github.com/idemkit/idem/core v0.0.0
	github.com/valyala/fasthttp v1.51.0
)

require (
	github.com/andybalholm/brotli v1.2.7 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/idemkit/idem/adapters/internal/fasthttpkit v0.0.0
	github.com/klauspost/compress v1.20.2 // indirect
	github.com/klauspost/cpuid/v2 v2.2.10 // indirect
	github.com/mattn/go-colorable v0.1.13 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/mattn/go-runewidth v0.0.16 // indirect
	github.com/philhofer/fwd v1.1.3-0.20240916144458-20a13a1f6b7c // indirect
	github.com/rivo/uniseg v0.2.0 // indirect
	github.com/tinylib/msgp v1.2.5 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	github.com/valyala/tcplisten v1.0.0 // indirect
	github.com/zeebo/xxh3 v1.1.0 // indirect
	golang.org/x/sys v0.30.0 // indirect
)

replace github.com/idemkit/idem/core => ../../core

replace github.com/idemkit/idem/conformance => ../../conformance

replace github.com/idemkit/idem/adapters/internal/fasthttpkit => ../internal/fasthttpkit
