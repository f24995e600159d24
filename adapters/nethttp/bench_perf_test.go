package idemhttp_test

import (
	"net/http"
	"testing"

	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// BenchmarkHTTP serves POST /orders through http.ServeMux in process, with
// 1 KiB request and response bodies: the bare handler, and the same
// handler behind Middleware with the memory store (first request, replay,
// in-flight duplicate), serially and in parallel. See BENCHMARKS.md.
func BenchmarkHTTP(b *testing.B) {
	conformance.RunBenchmarks(b, func(b *testing.B, e *idem.Engine) func() conformance.BenchClient {
		h := conformance.BenchHandler
		if e != nil {
			h = idemhttp.Middleware(e)(h)
		}
		mux := http.NewServeMux()
		mux.Handle("POST "+conformance.BenchPath, h)
		return func() conformance.BenchClient { return conformance.HTTPBenchClient(mux) }
	})
}
