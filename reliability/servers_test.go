package reliability

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-chi/chi/v5"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	fiber3 "github.com/gofiber/fiber/v3"
	recover3 "github.com/gofiber/fiber/v3/middleware/recover"
	idemchi "github.com/idemkit/idem/adapters/chi"
	idemecho "github.com/idemkit/idem/adapters/echo"
	idemecho5 "github.com/idemkit/idem/adapters/echo5"
	idemfiber "github.com/idemkit/idem/adapters/fiber"
	idemfiber3 "github.com/idemkit/idem/adapters/fiber3"
	idemgin "github.com/idemkit/idem/adapters/gin"
	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	idem "github.com/idemkit/idem/core"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	echo5 "github.com/labstack/echo/v5"
	middleware5 "github.com/labstack/echo/v5/middleware"
	"github.com/valyala/fasthttp"
)

// orderPath is the one route every test server serves, for POST.
const orderPath = "/orders"

// reply is what a test handler answers.
type reply struct {
	Status int
	Header []idem.HeaderField
	Body   []byte
}

// handlerFunc is a test handler, independent of the framework: it gets the
// request's context, its headers and the body it read, and says what to
// answer.
type handlerFunc func(ctx context.Context, header http.Header, body []byte) reply

// adapter serves a handler through one of idem's adapters on a real
// loopback listener, with the adapter's middleware built from engine and
// the route-level settings in route, and returns the base URL. The server
// stops when the test ends.
type adapter struct {
	name  string
	serve func(t testing.TB, engine *idem.Engine, route idem.Route, h handlerFunc) string
}

// adapters lists every adapter, each mounted the way its package documents
// for one route.
var adapters = []adapter{
	{"nethttp", serveNetHTTP},
	{"chi", serveChi},
	{"echo", serveEcho},
	{"fiber", serveFiber},
	{"gin", serveGin},
	{"echo5", serveEcho5},
	{"fiber3", serveFiber3},
}

// listen opens a loopback listener on a free port.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := netListen()
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return ln
}

// netListen opens a loopback listener on a free port.
func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// httpOptions turns route-level settings into the options of idemhttp and
// idemchi (idemchi.Option is idemhttp.Option).
func httpOptions(route idem.Route) []idemhttp.Option {
	opts := []idemhttp.Option{idemhttp.Policy(route.Policy)}
	if route.Store != nil {
		opts = append(opts, idemhttp.Store(route.Store))
	}
	if route.Retention != 0 {
		opts = append(opts, idemhttp.Retention(route.Retention))
	}
	return opts
}

// stdHandler runs h as an http.Handler.
func stdHandler(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rep := h(r.Context(), r.Header, body)
		for _, f := range rep.Header {
			w.Header().Add(f.Name, f.Value)
		}
		w.WriteHeader(rep.Status)
		_, _ = w.Write(rep.Body)
	})
}

// serveStd serves h with net/http on a loopback listener.
func serveStd(t testing.TB, h http.Handler) string {
	ln := listen(t)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

func serveNetHTTP(t testing.TB, engine *idem.Engine, route idem.Route, h handlerFunc) string {
	mux := http.NewServeMux()
	mux.Handle("POST "+orderPath, idemhttp.Middleware(engine, httpOptions(route)...)(stdHandler(h)))
	return serveStd(t, mux)
}

func serveChi(t testing.TB, engine *idem.Engine, route idem.Route, h handlerFunc) string {
	r := chi.NewRouter()
	r.With(idemchi.Middleware(engine, httpOptions(route)...)).Post(orderPath, stdHandler(h).ServeHTTP)
	return serveStd(t, r)
}

func serveEcho(t testing.TB, engine *idem.Engine, route idem.Route, h handlerFunc) string {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Logger.SetOutput(io.Discard)
	e.Use(middleware.Recover())
	mw, err := idemecho.Config{Engine: engine, Policy: route.Policy, Store: route.Store, Retention: route.Retention}.ToMiddleware()
	if err != nil {
		t.Fatalf("idemecho: %v", err)
	}
	e.POST(orderPath, func(c echo.Context) error {
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		rep := h(c.Request().Context(), c.Request().Header, body)
		for _, f := range rep.Header {
			c.Response().Header().Add(f.Name, f.Value)
		}
		c.Response().WriteHeader(rep.Status)
		_, err = c.Response().Write(rep.Body)
		return err
	}, mw)
	return serveStd(t, e)
}

func serveFiber(t testing.TB, engine *idem.Engine, route idem.Route, h handlerFunc) string {
	app := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: 16 << 20})
	app.Use(recover.New())
	app.Post(orderPath, idemfiber.New(engine, idemfiber.Config{Policy: route.Policy, Store: route.Store, Retention: route.Retention}),
		func(c *fiber.Ctx) error { return fasthttpReply(c.Context(), c.UserContext(), h) })
	return serveFasthttp(t, "fiber", func(ln net.Listener) error { return app.Listener(ln) },
		func() error { return app.ShutdownWithTimeout(5 * time.Second) })
}

// fasthttpReply runs h for the request fctx holds, with the handler's
// context ctx, and writes its reply to fctx (for the Fiber adapters).
func fasthttpReply(fctx *fasthttp.RequestCtx, ctx context.Context, h handlerFunc) error {
	header := http.Header{}
	for k, v := range fctx.Request.Header.All() {
		header.Add(string(k), string(v))
	}
	rep := h(ctx, header, bytes.Clone(fctx.Request.Body()))
	for _, f := range rep.Header {
		fctx.Response.Header.Add(f.Name, f.Value)
	}
	fctx.Response.SetStatusCode(rep.Status)
	fctx.Response.SetBody(rep.Body)
	return nil
}

// serveFasthttp runs serve on a loopback listener until the test
// ends, then stops with shutdown.
func serveFasthttp(t testing.TB, name string, serve func(net.Listener) error, shutdown func() error) string {
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- serve(ln) }()
	t.Cleanup(func() {
		_ = shutdown()
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Logf("%s: %v", name, err)
		}
	})
	return "http://" + ln.Addr().String()
}

func serveGin(t testing.TB, engine *idem.Engine, route idem.Route, h handlerFunc) string {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.RecoveryWithWriter(io.Discard))
	mw := idemgin.Middleware(engine, idemgin.Policy(route.Policy), idemgin.Store(route.Store), idemgin.Retention(route.Retention))
	r.POST(orderPath, mw, func(c *gin.Context) {
		body, err := io.ReadAll(c.Request.Body)
		if err != nil {
			c.String(http.StatusBadRequest, err.Error())
			return
		}
		rep := h(c.Request.Context(), c.Request.Header, body)
		for _, f := range rep.Header {
			c.Writer.Header().Add(f.Name, f.Value)
		}
		c.Status(rep.Status)
		_, _ = c.Writer.Write(rep.Body)
	})
	return serveStd(t, r)
}

func serveEcho5(t testing.TB, engine *idem.Engine, route idem.Route, h handlerFunc) string {
	e := echo5.New()
	e.Logger = slog.New(slog.DiscardHandler)
	e.Use(middleware5.Recover())
	mw, err := idemecho5.Config{Engine: engine, Policy: route.Policy, Store: route.Store, Retention: route.Retention}.ToMiddleware()
	if err != nil {
		t.Fatalf("idemecho5: %v", err)
	}
	e.POST(orderPath, func(c *echo5.Context) error {
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		rep := h(c.Request().Context(), c.Request().Header, body)
		w := c.Response()
		for _, f := range rep.Header {
			w.Header().Add(f.Name, f.Value)
		}
		w.WriteHeader(rep.Status)
		_, err = w.Write(rep.Body)
		return err
	}, mw)
	return serveStd(t, e)
}

func serveFiber3(t testing.TB, engine *idem.Engine, route idem.Route, h handlerFunc) string {
	app := fiber3.New(fiber3.Config{BodyLimit: 16 << 20})
	app.Use(recover3.New())
	app.Post(orderPath, idemfiber3.New(engine, idemfiber3.Config{Policy: route.Policy, Store: route.Store, Retention: route.Retention}),
		func(c fiber3.Ctx) error { return fasthttpReply(c.RequestCtx(), c.Context(), h) })
	return serveFasthttp(t, "fiber3", func(ln net.Listener) error {
		return app.Listener(ln, fiber3.ListenConfig{DisableStartupMessage: true})
	}, func() error { return app.ShutdownWithTimeout(5 * time.Second) })
}
