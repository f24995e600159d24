package idemecho5_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/labstack/echo/v5"

	idemecho5 "github.com/idemkit/idem/adapters/echo5"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// BenchmarkHTTP serves POST /orders through echo v5 in process, with 1 KiB
// request and response bodies: the bare handler, and the same handler
// behind the application-wide Middleware with the memory store (first
// request, replay, in-flight duplicate), serially and in parallel. See
// BENCHMARKS.md.
func BenchmarkHTTP(b *testing.B) {
	conformance.RunBenchmarks(b, func(b *testing.B, e *idem.Engine) func() conformance.BenchClient {
		app := echo.New()
		if e != nil {
			app.Use(idemecho5.Middleware(e))
		}
		app.POST(conformance.BenchPath, func(c *echo.Context) error {
			body, err := io.ReadAll(c.Request().Body)
			if err != nil || len(body) != len(conformance.BenchRequestBody) {
				return echo.NewHTTPError(http.StatusBadRequest, "the request body did not arrive whole")
			}
			c.Response().Header().Set(echo.HeaderLocation, conformance.BenchPath+"/1")
			return c.Blob(http.StatusCreated, echo.MIMEApplicationJSON, conformance.BenchResponseBody)
		})
		return func() conformance.BenchClient { return conformance.HTTPBenchClient(app) }
	})
}
