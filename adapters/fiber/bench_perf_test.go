package idemfiber_test

import (
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/idempotency"
	idemfiber "github.com/idemkit/idem/adapters/fiber"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
	"github.com/valyala/fasthttp"
)

// perfApp serves POST /orders in process through fiber's fasthttp
// handler, behind mw when it is not nil. The handler checks that the whole
// 1 KiB body arrived and answers 201 with a 1 KiB JSON body; calls counts
// its executions.
func perfApp(mw fiber.Handler, calls *atomic.Int64) func() conformance.BenchClient {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	if mw != nil {
		app.Use(mw)
	}
	app.Post(conformance.BenchPath, func(c *fiber.Ctx) error {
		calls.Add(1)
		if len(c.Body()) != len(conformance.BenchRequestBody) {
			return fiber.NewError(fiber.StatusBadRequest, "the request body did not arrive whole")
		}
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		c.Set(fiber.HeaderLocation, conformance.BenchPath+"/1")
		return c.Status(fiber.StatusCreated).Send(conformance.BenchResponseBody)
	})
	h := app.Handler()
	return func() conformance.BenchClient { return newFiberClient(h) }
}

// fiberClient serves requests on one fasthttp.RequestCtx, as fasthttp's
// server does on a connection, without a network (app.Test would add a
// loopback round trip).
type fiberClient struct {
	h    fasthttp.RequestHandler
	fctx fasthttp.RequestCtx
}

func newFiberClient(h fasthttp.RequestHandler) *fiberClient {
	var req fasthttp.Request
	req.Header.SetMethod(fiber.MethodPost)
	req.SetRequestURI(conformance.BenchPath)
	req.Header.SetContentType(fiber.MIMEApplicationJSON)
	req.SetBody(conformance.BenchRequestBody)
	c := &fiberClient{h: h}
	c.fctx.Init(&req, nil, nil)
	return c
}

func (c *fiberClient) Post(key string) (int, bool) {
	c.fctx.Request.Header.Set(idem.DefaultHeaderName, key)
	c.fctx.Response.Reset()
	c.fctx.ResetUserValues() // as fasthttp's server does between requests
	c.h(&c.fctx)
	return c.fctx.Response.StatusCode(), string(c.fctx.Response.Header.Peek(idem.ReplayedHeader)) == "true"
}

// BenchmarkHTTP serves POST /orders through fiber in process, with 1 KiB
// request and response bodies: the bare handler, and the same handler
// behind an application-wide idemfiber handler with the memory store
// (first request, replay, in-flight duplicate), serially and in parallel.
// See BENCHMARKS.md.
func BenchmarkHTTP(b *testing.B) {
	conformance.RunBenchmarks(b, func(b *testing.B, e *idem.Engine) func() conformance.BenchClient {
		var mw fiber.Handler
		if e != nil {
			mw = idemfiber.New(e)
		}
		return perfApp(mw, new(atomic.Int64))
	})
}

// BenchmarkPeer races idemfiber against fiber's own idempotency
// middleware (github.com/gofiber/fiber/v2/middleware/idempotency, in
// memory, reading the same Idempotency-Key header) on the same app and the
// same requests: a first request with a new key, and a replay; and
// idemfiber without a fingerprint, to show what the fingerprint costs.
// Compare with benchstat -col /mw.
func BenchmarkPeer(b *testing.B) {
	peers := []struct {
		name     string
		mw       func(b *testing.B) fiber.Handler
		replayed bool // marks replays with Idempotent-Replayed
	}{
		{"idemfiber", func(b *testing.B) fiber.Handler {
			e, err := idem.New(idem.Config{Store: benchStore(b)})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = e.Close() })
			return idemfiber.New(e)
		}, true},
		// The same without the fingerprint (B9 allows turning it off):
		// how much of idemfiber's cost is the SHA-256 of the body, which
		// Fiber's middleware does not compute.
		{"idemfiber-nofingerprint", func(b *testing.B) fiber.Handler {
			e, err := idem.New(idem.Config{Store: benchStore(b), Fingerprint: idem.NoFingerprint})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = e.Close() })
			return idemfiber.New(e)
		}, true},
		{"fiber-idempotency", func(*testing.B) fiber.Handler {
			return idempotency.New(idempotency.Config{KeyHeader: idem.DefaultHeaderName})
		}, false},
	}
	for _, mode := range []string{"serial", "parallel"} {
		parallel := mode == "parallel"
		for _, path := range []string{"first", "replay"} {
			for _, p := range peers {
				b.Run("mode="+mode+"/path="+path+"/mw="+p.name, func(b *testing.B) {
					var calls atomic.Int64
					newClient := perfApp(p.mw(b), &calls)
					if path == "first" {
						keys := conformance.NewKeySet(b.N)
						conformance.WarmHeap(b.N * conformance.FirstRequestHeap)
						conformance.MeasureRequests(b, newClient, keys, http.StatusCreated, false, parallel)
						if got := calls.Load(); got != int64(b.N) {
							b.Fatalf("the handler ran %d times for %d new keys", got, b.N)
						}
						return
					}
					keys := conformance.RepeatKey(b.N)
					if status, _ := newClient().Post(keys.Key(0)); status != http.StatusCreated {
						b.Fatalf("the first request answered %d, want 201", status)
					}
					conformance.MeasureRequests(b, newClient, keys, http.StatusCreated, p.replayed, parallel)
					if got := calls.Load(); got != 1 {
						b.Fatalf("the handler ran %d times for one key", got)
					}
				})
			}
		}
	}
}

// benchStore returns a memory store with room for a record per request of
// the run: a first request keeps one, and a full store refuses new keys
// rather than evict records (B30).
func benchStore(b *testing.B) *idem.MemoryStore {
	s := conformance.BenchMemoryStore(b.N)
	b.Cleanup(func() { _ = s.Close() })
	return s
}
