package idemfiber_test

import (
	"testing"

	"github.com/gofiber/fiber/v2"
	idemfiber "github.com/idemkit/idem/adapters/fiber"
	idem "github.com/idemkit/idem/core"
	"github.com/valyala/fasthttp"
)

// benchApp serves POST and GET /orders through fasthttp's handler directly,
// without a network, with or without idemfiber in front.
func benchApp(b testing.TB, withIdem bool) fasthttp.RequestHandler {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	if withIdem {
		app.Use(idemfiber.New(newEngine(b, idem.Config{})))
	}
	h := func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderLocation, "/orders/1")
		return c.Status(fiber.StatusCreated).Send(c.Body())
	}
	app.Post("/orders", h)
	app.Get("/orders", h)
	return app.Handler()
}

func benchRequest(method, key string) *fasthttp.Request {
	req := &fasthttp.Request{}
	req.Header.SetMethod(method)
	req.SetRequestURI("/orders?source=bench")
	req.Header.SetContentType("application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	req.SetBodyString(`{"item":"coffee","quantity":2,"customer":"c-1234"}`)
	return req
}

func serveBench(b *testing.B, h fasthttp.RequestHandler, req *fasthttp.Request, next func(i int, req *fasthttp.Request), want int, replayed bool) {
	var fctx fasthttp.RequestCtx
	fctx.Init(req, nil, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if next != nil {
			next(i, &fctx.Request)
		}
		fctx.Response.Reset()
		fctx.ResetUserValues() // as fasthttp's server does between requests
		h(&fctx)
		if fctx.Response.StatusCode() != want || (len(fctx.Response.Header.Peek(idem.ReplayedHeader)) > 0) != replayed {
			b.Fatalf("status %d, want %d (replayed %v): %s", fctx.Response.StatusCode(), want, replayed, fctx.Response.Body())
		}
	}
}

// BenchmarkSafeMethod: a GET passes straight through idemfiber; compare
// with BenchmarkSafeMethodBare, the same GET without it. The keyed paths
// are measured by BenchmarkHTTP and BenchmarkPeer.
func BenchmarkSafeMethod(b *testing.B) {
	serveBench(b, benchApp(b, true), benchRequest("GET", ""), nil, fiber.StatusCreated, false)
}

// BenchmarkSafeMethodBare is BenchmarkSafeMethod without idemfiber.
func BenchmarkSafeMethodBare(b *testing.B) {
	serveBench(b, benchApp(b, false), benchRequest("GET", ""), nil, fiber.StatusCreated, false)
}
