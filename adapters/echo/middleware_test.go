package idemecho_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	idemecho "github.com/idemkit/idem/adapters/echo"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// newEngine is the conformance suite's engine helper: closed at cleanup.
var newEngine = conformance.NewEngine

func newEcho() *echo.Echo {
	e := echo.New()
	e.Logger.SetOutput(new(bytes.Buffer))
	return e
}

// send serves one request in process; key "" sends no Idempotency-Key.
func send(h http.Handler, method, path, key, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if key != "" {
		req.Header.Set(idem.DefaultHeaderName, key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func expect(t *testing.T, rec *httptest.ResponseRecorder, status int, replayed, body string) {
	t.Helper()
	if rec.Code != status || rec.Header().Get(idem.ReplayedHeader) != replayed || rec.Body.String() != body {
		t.Fatalf("got %d, %s=%q, body %q; want %d, %q, %q",
			rec.Code, idem.ReplayedHeader, rec.Header().Get(idem.ReplayedHeader), rec.Body.String(), status, replayed, body)
	}
}

// failFirst returns a handler that counts its runs in calls and, on the
// first, returns what fail returns (or panics with it); later runs answer
// 201 "created".
func failFirst(calls *int, fail func() error) echo.HandlerFunc {
	return func(c echo.Context) error {
		*calls++
		if *calls == 1 {
			return fail()
		}
		return c.String(http.StatusCreated, "created")
	}
}

// The handler's error is rendered by the app's HTTPErrorHandler before the
// middleware returns (an outer middleware sees a committed response), the
// lease is released so a retry runs again (B15), and the error still
// reaches the outer middleware.
func TestHandlerErrorRenderedByHTTPErrorHandlerThenReleased(t *testing.T) {
	engine := newEngine(t, idem.Config{})
	e := newEcho()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		// A 2xx on purpose: were it recorded, the retry would be replayed.
		_ = c.String(http.StatusOK, "handled: "+err.Error())
	}
	errBoom := errors.New("boom")
	var seen []string
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			err := next(c)
			seen = append(seen, strings.Join([]string{
				http.StatusText(c.Response().Status), map[bool]string{true: "committed", false: "open"}[c.Response().Committed],
				map[bool]string{true: "boom", false: "nil"}[errors.Is(err, errBoom)]}, "/"))
			return err
		}
	})
	e.Use(idemecho.Middleware(engine))
	calls := 0
	e.POST("/orders", failFirst(&calls, func() error { return errBoom }))

	expect(t, send(e, "POST", "/orders", "k1", "{}"), 200, "", "handled: boom")
	expect(t, send(e, "POST", "/orders", "k1", "{}"), 201, "", "created")
	expect(t, send(e, "POST", "/orders", "k1", "{}"), 201, "true", "created")
	if calls != 2 {
		t.Fatalf("handler ran %d times, want 2", calls)
	}
	want := "OK/committed/boom Created/committed/nil Created/committed/nil"
	if got := strings.Join(seen, " "); got != want {
		t.Fatalf("outer middleware saw %q, want %q", got, want)
	}
}

// Response hooks registered outside the middleware run for executions and
// replays alike, a Before hook's header is recorded as sent, and echo's
// Response reports the status, size and commitment of what was sent.
func TestResponseHooksCommittedAndSize(t *testing.T) {
	engine := newEngine(t, idem.Config{})
	e := newEcho()
	type seen struct {
		committed bool
		status    int
		size      int64
		afters    int
	}
	var log []seen
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			s := seen{}
			c.Response().Before(func() { c.Response().Header().Set("X-Before", "outer") })
			c.Response().After(func() { s.afters++ })
			err := next(c)
			res := c.Response()
			s.committed, s.status, s.size = res.Committed, res.Status, res.Size
			log = append(log, s)
			return err
		}
	})
	e.Use(idemecho.Middleware(engine))
	e.POST("/orders", func(c echo.Context) error {
		c.Response().Before(func() { c.Response().Header().Set("ETag", `"v1"`) })
		return c.String(http.StatusCreated, "created")
	})

	for i, replayed := range []string{"", "true"} {
		rec := send(e, "POST", "/orders", "k1", "{}")
		expect(t, rec, 201, replayed, "created")
		if got := rec.Header().Get("X-Before"); got != "outer" {
			t.Errorf("request %d: X-Before = %q, want the outer Before hook's value", i, got)
		}
		if got := rec.Header().Get("ETag"); got != `"v1"` {
			t.Errorf("request %d: ETag = %q, want the handler's Before hook value, recorded and replayed", i, got)
		}
	}
	want := seen{committed: true, status: 201, size: int64(len("created")), afters: 1}
	for i, s := range log {
		if s != want {
			t.Errorf("request %d: outer middleware saw %+v, want %+v", i, s, want)
		}
	}
}

// A flush through echo's Response reaches the client and makes the record
// not replayable (B19).
func TestFlushThroughEchoResponse(t *testing.T) {
	engine := newEngine(t, idem.Config{})
	e := newEcho()
	e.Use(idemecho.Middleware(engine))
	calls := 0
	e.POST("/export", func(c echo.Context) error {
		calls++
		res := c.Response()
		res.WriteHeader(http.StatusOK)
		_, _ = res.Write([]byte("part 1,"))
		res.Flush()
		_, err := res.Write([]byte("part 2"))
		return err
	})
	expect(t, send(e, "POST", "/export", "k1", ""), 200, "", "part 1,part 2")
	rec := send(e, "POST", "/export", "k1", "")
	if rec.Code != http.StatusGone || !strings.Contains(rec.Body.String(), idem.ProblemNotReplayable) {
		t.Fatalf("retry got %d %q, want 410 %s", rec.Code, rec.Body.String(), idem.ProblemNotReplayable)
	}
	if calls != 1 {
		t.Fatalf("handler ran %d times, want 1", calls)
	}
}

// A panic releases the lease and still reaches echo's Recover middleware.
func TestPanicReachesRecover(t *testing.T) {
	engine := newEngine(t, idem.Config{})
	e := newEcho()
	var recovered []string
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			recovered = append(recovered, err.Error())
			return err
		},
	}))
	e.Use(idemecho.Middleware(engine))
	calls := 0
	e.POST("/orders", failFirst(&calls, func() error { panic("card declined by a bug") }))
	rec := send(e, "POST", "/orders", "k1", "{}")
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("panicking request got %d, want Recover's 500", rec.Code)
	}
	if len(recovered) != 1 || recovered[0] != "card declined by a bug" {
		t.Fatalf("Recover saw %q, want the handler's panic", recovered)
	}
	expect(t, send(e, "POST", "/orders", "k1", "{}"), 201, "", "created")
	if calls != 2 {
		t.Fatalf("handler ran %d times, want 2 (the panic released the key)", calls)
	}
}

// The Skipper lets requests through untouched.
func TestSkipper(t *testing.T) {
	engine := newEngine(t, idem.Config{})
	mw, err := idemecho.Config{
		Engine:  engine,
		Skipper: func(c echo.Context) bool { return strings.HasPrefix(c.Path(), "/internal/") },
	}.ToMiddleware()
	if err != nil {
		t.Fatal(err)
	}
	e := newEcho()
	e.Use(mw)
	calls := 0
	handler := func(c echo.Context) error {
		calls++
		return c.String(http.StatusCreated, "ok")
	}
	e.POST("/internal/jobs", handler)
	e.POST("/orders", handler)

	expect(t, send(e, "POST", "/internal/jobs", "", ""), 201, "", "ok")
	expect(t, send(e, "POST", "/internal/jobs", "k1", ""), 201, "", "ok")
	expect(t, send(e, "POST", "/internal/jobs", "k1", ""), 201, "", "ok")
	if calls != 3 {
		t.Fatalf("skipped route ran %d times, want 3", calls)
	}
	if rec := send(e, "POST", "/orders", "", ""); rec.Code != http.StatusBadRequest {
		t.Fatalf("route not skipped got %d without a key, want 400", rec.Code)
	}
}

func TestToMiddlewareReportsBadConfig(t *testing.T) {
	engine := newEngine(t, idem.Config{})
	cases := []struct {
		name string
		cfg  idemecho.Config
		want string // "" means valid
	}{
		{"no engine", idemecho.Config{}, "Engine is nil"},
		{"bad policy", idemecho.Config{Engine: engine, Policy: idem.Manual + 1}, "Policy 5 is not a policy"},
		{"negative retention", idemecho.Config{Engine: engine, Retention: -time.Second}, "Retention -1s"},
		{"tiny retention", idemecho.Config{Engine: engine, Retention: time.Microsecond}, "Retention 1µs"},
		{"everything wrong", idemecho.Config{Policy: 9, Retention: -1}, "Engine is nil"},
		{"engine only", idemecho.Config{Engine: engine}, ""},
		{"route settings", idemecho.Config{Engine: engine, Policy: idem.Manual, Store: idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1}), Retention: time.Hour}, ""},
	}
	for _, c := range cases {
		mw, err := c.cfg.ToMiddleware()
		switch {
		case c.want == "" && (err != nil || mw == nil):
			t.Errorf("%s: got %v, want a middleware", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || mw != nil):
			t.Errorf("%s: got error %v, want one containing %q and no middleware", c.name, err, c.want)
		}
	}
	_, err := idemecho.Config{Policy: 9, Retention: -1}.ToMiddleware()
	if n := strings.Count(err.Error(), "idemecho: config:"); n != 3 {
		t.Errorf("got %d problems in %q, want all 3 reported", n, err)
	}

	defer func() {
		if recover() == nil {
			t.Error("Required(nil) did not panic")
		}
	}()
	idemecho.Required(nil)
}

// Events name the request's route by its echo pattern.
func TestRouteNameIsEchoPath(t *testing.T) {
	var mu sync.Mutex
	var routes []string
	engine := newEngine(t, idem.Config{Scope: oneTenant, Observer: idem.ObserverFunc(func(_ context.Context, ev idem.Event) {
		mu.Lock()
		routes = append(routes, ev.Outcome.String()+" "+ev.Route)
		mu.Unlock()
	})})
	e := newEcho()
	e.Use(idemecho.Middleware(engine))
	e.POST("/orders/:id/refunds", func(c echo.Context) error { return c.NoContent(http.StatusCreated) })
	send(e, "POST", "/orders/42/refunds", "k1", "")
	mu.Lock()
	defer mu.Unlock()
	want := "executed /orders/:id/refunds,stored /orders/:id/refunds"
	if got := strings.Join(routes, ","); got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// stackApp returns an echo app with a logger that keeps warnings, and a
// handler that counts its runs per route and answers with any finding.
func stackApp(t *testing.T) (*echo.Echo, *idem.Engine, *bytes.Buffer, echo.HandlerFunc, map[string]int) {
	logs := new(bytes.Buffer) // requests are served on the test's goroutine
	engine := newEngine(t, idem.Config{Scope: oneTenant, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	calls := map[string]int{}
	handler := func(c echo.Context) error {
		calls[c.Path()]++
		if f, ok := idem.FindingFrom(c.Request().Context()); ok {
			return c.String(http.StatusOK, "found "+f.Kind.String())
		}
		return c.String(http.StatusCreated, "ran")
	}
	return newEcho(), engine, logs, handler, calls
}

func expectCalls(t *testing.T, calls, want map[string]int) {
	t.Helper()
	for path, n := range want {
		if calls[path] != n {
			t.Errorf("%s ran %d times, want %d", path, calls[path], n)
		}
	}
}

// A group's layer runs before the route's layers (echo composes them per
// request, and the kit recognises layers only by the mark a layer leaves
// on a request). Mounted Exempt, it leaves every request to the routes'
// layers, which take the settings they leave unset from it (its store) and
// win with the ones they set (B2, B27); nothing is ignored, nothing
// logged.
func TestGroupLayerLeavesRequestsToRouteLayers(t *testing.T) {
	e, engine, logs, handler, calls := stackApp(t)
	newStore := func() *idem.MemoryStore {
		s := idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	groupStore, routeStore := newStore(), newStore()

	api := e.Group("/api", idemecho.Exempt(engine, idemecho.Store(groupStore)))
	api.POST("/required", handler, idemecho.Required(engine))
	api.POST("/optional", handler, idemecho.Optional(engine))
	api.POST("/manual", handler, idemecho.Manual(engine))
	api.POST("/own-store", handler, idemecho.Required(engine, idemecho.Store(routeStore)))
	api.POST("/plain", handler)

	if rec := send(e, "POST", "/api/required", "", ""); rec.Code != http.StatusBadRequest {
		t.Errorf("/api/required without a key: %d, want 400", rec.Code)
	}
	expect(t, send(e, "POST", "/api/optional", "", ""), 201, "", "ran")
	for i := 0; i < 2; i++ {
		replayed := "true"[:4*i]
		expect(t, send(e, "POST", "/api/required", "k1", ""), 201, replayed, "ran")
		expect(t, send(e, "POST", "/api/optional", "k2", ""), 201, replayed, "ran")
		expect(t, send(e, "POST", "/api/own-store", "k4", ""), 201, replayed, "ran")
		expect(t, send(e, "POST", "/api/plain", "k5", ""), 201, "", "ran")
	}
	expect(t, send(e, "POST", "/api/manual", "k3", ""), 201, "", "ran")
	expect(t, send(e, "POST", "/api/manual", "k3", ""), 200, "", "found completed")
	expectCalls(t, calls, map[string]int{"/api/required": 1, "/api/optional": 2, "/api/manual": 2, "/api/own-store": 1, "/api/plain": 2})

	// Each record is in the store its route's merged settings name.
	ctx := context.Background()
	for key, store := range map[string]*idem.MemoryStore{"k1": groupStore, "k4": routeStore} {
		storageKey := idem.DefaultEncodeKey(oneTenant(nil), key)
		if rec, err := store.Acquire(ctx, storageKey, idem.Token{1}, nil, time.Minute); err != nil || rec == nil || rec.State != idem.Completed {
			t.Errorf("%s: store holds %+v (%v), want the completed record", key, rec, err)
		}
		if rec, err := engine.Store().Acquire(ctx, storageKey, idem.Token{1}, nil, time.Minute); err != nil || rec != nil {
			t.Errorf("%s: engine store holds %+v (%v), want nothing", key, rec, err)
		}
	}
	if out := logs.String(); out != "" {
		t.Errorf("layers logged:\n%s", out)
	}
}

// An application-wide layer mounted with e.Use runs before the route's
// layer: when it ignores a request (Optional without a key, Exempt) the
// route's layer decides; when it processes one, it wins, and a route layer
// whose settings it ignored warns once.
func TestUseLayerAndRouteLayers(t *testing.T) {
	e, engine, logs, handler, calls := stackApp(t)
	routeStore := idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1})
	t.Cleanup(func() { _ = routeStore.Close() })

	e.Use(idemecho.Optional(engine, idemecho.ProblemHandler(func(c echo.Context, p *idem.Problem) error {
		return c.String(p.Status, "outer problem "+p.Rule)
	})))
	e.POST("/required", handler, idemecho.Required(engine))
	e.POST("/manual", handler, idemecho.Manual(engine))
	e.POST("/exempt", handler, idemecho.Exempt(engine))
	e.POST("/own-store", handler, idemecho.Optional(engine, idemecho.Store(routeStore), idemecho.Retention(time.Hour)))

	// Without a key the outer Optional layer leaves the request to the
	// route's layer, which renders its problem with the outer layer's
	// ProblemHandler, as it sets none of its own.
	if rec := send(e, "POST", "/required", "", ""); rec.Code != http.StatusBadRequest || rec.Body.String() != "outer problem B6" {
		t.Fatalf("/required without a key: %d %q, want the route layer's 400 through the outer ProblemHandler", rec.Code, rec.Body.String())
	}
	expect(t, send(e, "POST", "/exempt", "", ""), 201, "", "ran")
	// With a key the outer layer processes the request.
	expect(t, send(e, "POST", "/required", "k1", ""), 201, "", "ran")
	expect(t, send(e, "POST", "/required", "k1", ""), 201, "true", "ran")
	expect(t, send(e, "POST", "/required", "k1", "other"), 422, "", "outer problem B10")
	for i := 0; i < 2; i++ {
		expect(t, send(e, "POST", "/exempt", "k2", ""), 201, "true"[:4*i], "ran")
		expect(t, send(e, "POST", "/manual", "k3", ""), 201, "true"[:4*i], "ran")
		expect(t, send(e, "POST", "/own-store", "k4", ""), 201, "true"[:4*i], "ran")
	}
	expectCalls(t, calls, map[string]int{"/required": 1, "/exempt": 2, "/manual": 1, "/own-store": 1})

	out := logs.String()
	for _, w := range []string{
		`route=/exempt ignored="policy exempt (the request ran as optional)"`,
		`route=/manual ignored="policy manual (the request ran as optional)"`,
		`route=/own-store ignored="store, retention 1h0m0s (the request used 24h0m0s)"`,
	} {
		if strings.Count(out, w) != 1 {
			t.Errorf("log should hold %q once; log:\n%s", w, out)
		}
	}
	if n := strings.Count(out, "level=WARN"); n != 3 {
		t.Errorf("got %d warnings, want 3 (none for Required under Optional); log:\n%s", n, out)
	}
}

// ProblemHandler hands problems to the application; returning the
// problem lets the app's HTTPErrorHandler render it.
func TestProblemHandler(t *testing.T) {
	engine := newEngine(t, idem.Config{})
	e := newEcho()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		var p *idem.Problem
		if errors.As(err, &p) && !c.Response().Committed {
			_ = c.JSON(p.Status, map[string]string{"code": p.Rule})
		}
	}
	e.POST("/orders", func(c echo.Context) error { return c.NoContent(http.StatusCreated) },
		idemecho.Required(engine, idemecho.ProblemHandler(func(c echo.Context, p *idem.Problem) error { return p })))
	expect(t, send(e, "POST", "/orders", "", ""), 400, "", `{"code":"B6"}`+"\n")
	expect(t, send(e, "POST", "/orders", "a,b", ""), 400, "", `{"code":"B7"}`+"\n")
	expect(t, send(e, "POST", "/orders", "k1", "one"), 201, "", "")
	expect(t, send(e, "POST", "/orders", "k1", "two"), 422, "", `{"code":"B10"}`+"\n")
	// Replays are not problems: the middleware writes them.
	expect(t, send(e, "POST", "/orders", "k1", "one"), 201, "true", "")
}

// oneTenant scopes every request to one tenant, so that the events and
// warnings the tests check are about routes and stacking only, not about
// an empty scope (B32).
func oneTenant(*idem.Request) string { return "tenant" }
