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

	"github.com/gin-gonic/gin"
	"github.com/go-chi/chi/v5"
	"github.com/gofiber/fiber/v2"
	fiber3 "github.com/gofiber/fiber/v3"
	recover3 "github.com/gofiber/fiber/v3/middleware/recover"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	echo5 "github.com/labstack/echo/v5"
	middleware5 "github.com/labstack/echo/v5/middleware"

	idemchi "github.com/idemkit/idem/adapters/chi"
	idemecho "github.com/idemkit/idem/adapters/echo"
	idemecho5 "github.com/idemkit/idem/adapters/echo5"
	idemfiber "github.com/idemkit/idem/adapters/fiber"
	idemfiber3 "github.com/idemkit/idem/adapters/fiber3"
	idemgin "github.com/idemkit/idem/adapters/gin"
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
	"echo5":   echo5Server,
	"fiber":   fiberServer,
	"fiber3":  fiber3Server,
	"gin":     ginServer,
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

// echo5Server mounts the routes on an echo v5 instance, the same way as
// echoServer: Recover outside the route-level idem middleware, which gives a
// panicking handler's key up before Recover turns the panic into an error
// for echo's error handler.
func echo5Server(e *idem.Engine, a *api) server {
	app := echo5.New()
	app.Use(middleware5.Recover(), echo5.WrapMiddleware(authenticate))
	app.POST("/orders", serveEcho5(a.createOrder), idemecho5.Required(e))
	app.GET("/orders", serveEcho5(a.listOrders))
	app.GET("/orders/:id", serveEcho5(a.getOrder))
	app.POST("/payments", serveEcho5(a.createPayment), idemecho5.Optional(e))
	app.POST("/webhooks", serveEcho5(a.receiveWebhook), idemecho5.Exempt(e))
	return newHTTPServer(app)
}

// ginServer mounts the routes on a gin engine, with the policies as route
// handlers in front of each operation; gin's Recovery is outside them. The
// gin engine is an http.Handler, served by the same http.Server as
// net/http behind the same authenticate.
func ginServer(e *idem.Engine, a *api) server {
	gin.SetMode(gin.ReleaseMode)
	app := gin.New()
	app.Use(gin.Recovery())
	app.POST("/orders", idemgin.Required(e), serveGin(a.createOrder))
	app.GET("/orders", serveGin(a.listOrders))
	app.GET("/orders/:id", serveGin(a.getOrder))
	app.POST("/payments", idemgin.Optional(e), serveGin(a.createPayment))
	app.POST("/webhooks", idemgin.Exempt(e), serveGin(a.receiveWebhook))
	return newHTTPServer(authenticate(app))
}

// fiber3Server mounts the routes on a Fiber v3 app, the same way as
// fiberServer; Fiber v3's request context is c.Context().
func fiber3Server(e *idem.Engine, a *api) server {
	app := fiber3.New(fiber3.Config{
		BodyLimit:    maxBody,
		ReadTimeout:  readTimeout,
		ErrorHandler: idemfiber3.ErrorHandler(e, nil),
	})
	app.Use(recover3.New(), func(c fiber3.Ctx) error {
		if p := principal(c.Get("X-Api-Key"), c.Get(fiber3.HeaderAuthorization)); p != "" {
			c.SetContext(idem.WithPrincipal(c.Context(), p))
		}
		return c.Next()
	})
	app.Post("/orders", idemfiber3.Required(e), serveFiber3(a.createOrder))
	app.Get("/orders", serveFiber3(a.listOrders))
	app.Get("/orders/:id", serveFiber3(a.getOrder))
	app.Post("/payments", idemfiber3.Optional(e), serveFiber3(a.createPayment))
	app.Post("/webhooks", idemfiber3.Exempt(e), serveFiber3(a.receiveWebhook))
	return fiber3App{app}
}

// fiber3App is a Fiber v3 app as a server.
type fiber3App struct{ app *fiber3.App }

// Serve serves the app on ln until Shutdown.
func (f fiber3App) Serve(ln net.Listener) error {
	return f.app.Listener(ln, fiber3.ListenConfig{DisableStartupMessage: true})
}

// Shutdown stops accepting connections and waits for requests in progress
// until ctx is done.
func (f fiber3App) Shutdown(ctx context.Context) error { return f.app.ShutdownWithContext(ctx) }

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

// serveEcho5 runs op as an echo v5 handler.
func serveEcho5(op operation) echo5.HandlerFunc {
	return func(c *echo5.Context) error {
		serveOperation(c.Response(), c.Request(), c.Param, op)
		return nil
	}
}

// serveGin runs op as a gin handler.
func serveGin(op operation) gin.HandlerFunc {
	return func(c *gin.Context) {
		serveOperation(c.Writer, c.Request, c.Param, op)
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

// serveFiber3 runs op as a Fiber v3 handler; like serveFiber, it hands
// the operation copies of fasthttp's buffers.
func serveFiber3(op operation) fiber3.Handler {
	return func(c fiber3.Ctx) error {
		rep := op(call{
			ctx:   c.Context(),
			body:  bytes.Clone(c.Body()),
			param: func(name string) string { return strings.Clone(c.Params(name)) },
		})
		if rep.location != "" {
			c.Set(fiber3.HeaderLocation, rep.location)
		}
		c.Set(fiber3.HeaderContentType, rep.contentType)
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
