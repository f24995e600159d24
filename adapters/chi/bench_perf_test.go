package idemchi_test

import (
	"testing"

	"github.com/go-chi/chi/v5"
	idemchi "github.com/idemkit/idem/adapters/chi"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// BenchmarkHTTP serves POST /orders through a chi router in process, with
// 1 KiB request and response bodies: the bare handler, and the same
// handler behind the router-wide Middleware with the memory store (first
// request, replay, in-flight duplicate), serially and in parallel. See
// BENCHMARKS.md.
func BenchmarkHTTP(b *testing.B) {
	conformance.RunBenchmarks(b, func(b *testing.B, e *idem.Engine) func() conformance.BenchClient {
		r := chi.NewRouter()
		if e != nil {
			r.Use(idemchi.Middleware(e))
		}
		r.Method("POST", conformance.BenchPath, conformance.BenchHandler)
		return func() conformance.BenchClient { return conformance.HTTPBenchClient(r) }
	})
}
