package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gofiber/fiber/v2"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	idemchi "github.com/idemkit/idem/adapters/chi"
	idemecho "github.com/idemkit/idem/adapters/echo"
	idemfiber "github.com/idemkit/idem/adapters/fiber"
	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	idem "github.com/idemkit/idem/core"
)

// server is what an adapter builds: it serves on a listener until it is
// shut down. *http.Server is one; a framework with its own server (fiber)
// wraps it in a small type.
type server interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

// adapters maps each -adapter name to the function that mounts the API's
// routes with that adapter. Every adapter serves the same operations with
// the same idempotency policies:
//
//	POST /orders       Required
//	GET  /orders       (safe method, no layer)
//	GET  /orders/{id}  (safe method, no layer)
//	POST /payments     Optional
//	POST /webhooks     Exempt
var adapters = map[string]func(e *idem.Engine, a *api) server{
	"nethttp": netHTTPServer,
	"chi":     chiServer,
	"echo":    echoServer,
	"fiber":   fiberServer,
}

// netHTTPServer mounts the routes on a net/http ServeMux, each wrapped in
// its route-level idem layer.
func netHTTPServer(e *idem.Engine, a *api) server {
	mux := http.NewServeMux()
	mux.Handle("POST /orders", idemhttp.Required(e)(serveHTTP(a.createOrder)))
	mux.Handle("GET /orders", serveHTTP(a.listOrders))
	mux.Handle("GET /orders/{id}", serveHTTP(a.getOrder))
	mux.Handle("POST /payments", idemhttp.Optional(e)(serveHTTP(a.createPayment)))
	mux.Handle("POST /webhooks", idemhttp.Exempt(e)(serveHTTP(a.receiveWebhook)))
	return newHTTPServer(authenticate(mux))
}

// chiServer mounts the routes on a chi router, with the policies as
// r.With(...) layers; idemchi names each route by its pattern.
func chiServer(e *idem.Engine, a *api) server {
	r := chi.NewRouter()
	r.Use(authenticate)
	r.With(idemchi.Required(e)).Post("/orders", serveHTTP(a.createOrder))
	r.Get("/orders", serveHTTP(a.listOrders))
	r.Get("/orders/{id}", serveHTTP(a.getOrder))
	r.With(idemchi.Optional(e)).Post("/payments", serveHTTP(a.createPayment))
	r.With(idemchi.Exempt(e)).Post("/webhooks", serveHTTP(a.receiveWebhook))
	return newHTTPServer(r)
}

// echoServer mounts the routes on an echo instance, with the policies as
// route-level middleware. Recover is mounted outside them, where idemecho
// expects it: a panicking handler gives its key's lease up, then echo
// answers 500. The echo instance is an http.Handler, so the same
// http.Server as for net/http serves it.
func echoServer(e *idem.Engine, a *api) server {
	app := echo.New()
	app.Use(middleware.Recover(), echo.WrapMiddleware(authenticate))
	app.POST("/orders", serveEcho(a.createOrder), idemecho.Required(e))
	app.GET("/orders", serveEcho(a.listOrders))
	app.GET("/orders/:id", serveEcho(a.getOrder))
	app.POST("/payments", serveEcho(a.createPayment), idemecho.Optional(e))
	app.POST("/webhooks", serveEcho(a.receiveWebhook), idemecho.Exempt(e))
	return newHTTPServer(app)
}

// fiberServer mounts the routes on a fiber app, with the policies as
// route handlers in front of each operation. Fiber refuses bodies over
// maxBody itself, before any handler runs; idemfiber.ErrorHandler makes
// that 413 idem's problem document, as the other adapters answer it.
func fiberServer(e *idem.Engine, a *api) server {
	app := fiber.New(fiber.Config{
		DisableStartupMessage: true,
		BodyLimit:             maxBody,
		ReadTimeout:           readTimeout,
		ErrorHandler:          idemfiber.ErrorHandler(e, nil),
	})
	app.Use(func(c *fiber.Ctx) error {
		if p := principal(c.Get("X-Api-Key"), c.Get(fiber.HeaderAuthorization)); p != "" {
			c.SetUserContext(idem.WithPrincipal(c.UserContext(), p))
		}
		return c.Next()
	})
	app.Post("/orders", idemfiber.Required(e), serveFiber(a.createOrder))
	app.Get("/orders", serveFiber(a.listOrders))
	app.Get("/orders/:id", serveFiber(a.getOrder))
	app.Post("/payments", idemfiber.Optional(e), serveFiber(a.createPayment))
	app.Post("/webhooks", idemfiber.Exempt(e), serveFiber(a.receiveWebhook))
	return fiberApp{app}
}

// fiberApp is a fiber app as a server.
type fiberApp struct{ app *fiber.App }

// Serve serves the app on ln until Shutdown.
func (f fiberApp) Serve(ln net.Listener) error { return f.app.Listener(ln) }

// Shutdown stops accepting connections and waits for requests in progress
// until ctx is done.
func (f fiberApp) Shutdown(ctx context.Context) error { return f.app.ShutdownWithContext(ctx) }

// readTimeout bounds how long a server waits for a request's headers.
const readTimeout = 10 * time.Second

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: readTimeout}
}

// authenticate stands in for the API's authentication: it hands idem the
// client a request comes from, so that every client's idempotency keys
// are its own (B32). A real one checks the API key or token first and
// hands over the account it belongs to, which stays the same when a
// client refreshes its token between retries.
func authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := principal(r.Header.Get("X-Api-Key"), r.Header.Get("Authorization")); p != "" {
			r = r.WithContext(idem.WithPrincipal(r.Context(), p))
		}
		next.ServeHTTP(w, r)
	})
}

// principal names the client of a request: its API key, else its
// Authorization value, else nobody ("").
func principal(apiKey, authorization string) string {
	if apiKey != "" {
		return "key:" + apiKey
	}
	if authorization != "" {
		return "auth:" + authorization
	}
	return ""
}

// maxBody bounds what an operation reads of a request body.
const maxBody = 1 << 20

// serveHTTP runs op as a net/http handler (for net/http and chi).
func serveHTTP(op operation) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		serveOperation(w, r, r.PathValue, op)
	}
}

// serveEcho runs op as an echo handler. The operation writes its reply
// itself, so the handler returns no error for echo to render.
func serveEcho(op operation) echo.HandlerFunc {
	return func(c echo.Context) error {
		serveOperation(c.Response(), c.Request(), c.Param, op)
		return nil
	}
}

// serveOperation reads r's body and writes op's reply to w; param finds
// the route's path parameters.
func serveOperation(w http.ResponseWriter, r *http.Request, param func(string) string, op operation) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeReply(w, problem(http.StatusBadRequest, "Unreadable body", err.Error()))
		return
	}
	writeReply(w, op(call{ctx: r.Context(), body: body, param: param}))
}

// serveFiber runs op as a fiber handler. fasthttp reuses the body and
// parameter buffers once the handler returns, so the operation gets
// copies it may keep.
func serveFiber(op operation) fiber.Handler {
	return func(c *fiber.Ctx) error {
		rep := op(call{
			ctx:   c.UserContext(),
			body:  bytes.Clone(c.Body()),
			param: func(name string) string { return strings.Clone(c.Params(name)) },
		})
		if rep.location != "" {
			c.Set(fiber.HeaderLocation, rep.location)
		}
		c.Set(fiber.HeaderContentType, rep.contentType)
		return c.Status(rep.status).Send(rep.body)
	}
}

func writeReply(w http.ResponseWriter, rep reply) {
	h := w.Header()
	if rep.location != "" {
		h.Set("Location", rep.location)
	}
	h.Set("Content-Type", rep.contentType)
	h.Set("Content-Length", strconv.Itoa(len(rep.body)))
	w.WriteHeader(rep.status)
	_, _ = w.Write(rep.body)
}
