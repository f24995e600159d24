package idemfiber3_test

import (
	"sync/atomic"
	"testing"

	"github.com/gofiber/fiber/v3"
	"github.com/gofiber/fiber/v3/middleware/idempotency"

	idemfiber3 "github.com/idemkit/idem/adapters/fiber3"
	"github.com/idemkit/idem/adapters/internal/fasthttpkit/fasthttpbench"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// perfApp serves POST /orders in process through Fiber v3's fasthttp
// handler, behind mw when it is not nil. The handler checks that the whole
// 1 KiB body arrived and answers 201 with a 1 KiB JSON body; calls counts
// its executions.
func perfApp(mw fiber.Handler, calls *atomic.Int64) func() conformance.BenchClient {
	app := fiber.New()
	if mw != nil {
		app.Use(mw)
	}
	app.Post(conformance.BenchPath, func(c fiber.Ctx) error {
		calls.Add(1)
		if len(c.Body()) != len(conformance.BenchRequestBody) {
			return fiber.NewError(fiber.StatusBadRequest, "the request body did not arrive whole")
		}
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		c.Set(fiber.HeaderLocation, conformance.BenchPath+"/1")
		return c.Status(fiber.StatusCreated).Send(conformance.BenchResponseBody)
	})
	h := app.Handler()
	return func() conformance.BenchClient { return fasthttpbench.Client(h) }
}

// BenchmarkHTTP serves POST /orders through Fiber v3 in process, with
// 1 KiB request and response bodies: the bare handler, and the same
// handler behind an application-wide idemfiber3 handler with the memory
// store (first request, replay, in-flight duplicate), serially and in
// parallel. See BENCHMARKS.md.
func BenchmarkHTTP(b *testing.B) {
	conformance.RunBenchmarks(b, func(b *testing.B, e *idem.Engine) func() conformance.BenchClient {
		var mw fiber.Handler
		if e != nil {
			mw = idemfiber3.New(e)
		}
		return perfApp(mw, new(atomic.Int64))
	})
}

// BenchmarkPeer races idemfiber3 against Fiber v3's own idempotency
// middleware (github.com/gofiber/fiber/v3/middleware/idempotency, in
// memory, reading the same Idempotency-Key header) in the same binary, on
// the same app and the same requests: a first request with a new key, and
// a replay; and idemfiber3 without a fingerprint, to show what the
// fingerprint costs. Compare with benchstat -col /mw.
func BenchmarkPeer(b *testing.B) {
	idemApp := func(cfg idem.Config) func(*testing.B, *atomic.Int64) func() conformance.BenchClient {
		return func(b *testing.B, calls *atomic.Int64) func() conformance.BenchClient {
			return perfApp(idemfiber3.New(fasthttpbench.Engine(b, cfg)), calls)
		}
	}
	fasthttpbench.RunPeer(b, []fasthttpbench.Peer{
		{Name: "idemfiber3", App: idemApp(idem.Config{}), Replayed: true},
		{Name: "idemfiber3-nofingerprint", App: idemApp(idem.Config{Fingerprint: idem.NoFingerprint}), Replayed: true},
		{Name: "fiber-idempotency", App: func(_ *testing.B, calls *atomic.Int64) func() conformance.BenchClient {
			return perfApp(idempotency.New(idempotency.Config{KeyHeader: idem.DefaultHeaderName}), calls)
		}},
	})
}
