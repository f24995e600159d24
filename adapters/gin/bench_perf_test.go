package idemgin_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/gin-gonic/gin"

	idemgin "github.com/idemkit/idem/adapters/gin"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// BenchmarkHTTP serves POST /orders through a gin engine in process, with
// 1 KiB request and response bodies: the bare handler, and the same
// handler behind the engine-wide Middleware with the memory store (first
// request, replay, in-flight duplicate), serially and in parallel. See
// BENCHMARKS.md.
func BenchmarkHTTP(b *testing.B) {
	conformance.RunBenchmarks(b, func(b *testing.B, e *idem.Engine) func() conformance.BenchClient {
		r := gin.New()
		if e != nil {
			r.Use(idemgin.Middleware(e))
		}
		r.POST(conformance.BenchPath, func(c *gin.Context) {
			body, err := io.ReadAll(c.Request.Body)
			if err != nil || len(body) != len(conformance.BenchRequestBody) {
				c.String(http.StatusBadRequest, "the request body did not arrive whole")
				return
			}
			c.Header("Location", conformance.BenchPath+"/1")
			c.Data(http.StatusCreated, "application/json", conformance.BenchResponseBody)
		})
		return func() conformance.BenchClient { return conformance.HTTPBenchClient(r) }
	})
}
