package reliability

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	idemchi "github.com/idemkit/idem/adapters/chi"
	idemecho "github.com/idemkit/idem/adapters/echo"
	idemfiber "github.com/idemkit/idem/adapters/fiber"
	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	idem "github.com/idemkit/idem/core"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
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
		func(c *fiber.Ctx) error {
			header := http.Header{}
			c.Request().Header.VisitAll(func(k, v []byte) { header.Add(string(k), string(v)) })
			rep := h(c.UserContext(), header, append([]byte(nil), c.Body()...))
			for _, f := range rep.Header {
				c.Response().Header.Add(f.Name, f.Value)
			}
			c.Status(rep.Status)
			return c.Send(rep.Body)
		})
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- app.Listener(ln) }()
	t.Cleanup(func() {
		_ = app.ShutdownWithTimeout(5 * time.Second)
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Logf("fiber: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}
