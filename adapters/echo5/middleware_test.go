package idemecho5_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v5"
	"github.com/labstack/echo/v5/middleware"

	idemecho5 "github.com/idemkit/idem/adapters/echo5"
	idem "github.com/idemkit/idem/core"
)

func newEngine(t testing.TB) *idem.Engine {
	t.Helper()
	e, err := idem.New(idem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func post(h http.Handler, path, key string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"n":1}`))
	if key != "" {
		req.Header.Set(idem.DefaultHeaderName, key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestEchoErrors: an error the handler returns is rendered once, by the
// echo instance's HTTPErrorHandler inside the middleware (the global one
// then leaves the committed response alone), and the key is released. A
// panic that echo v5's Recover, mounted inside the middleware, turns into
// an error does the same.
func TestEchoErrors(t *testing.T) {
	e := echo.New()
	e.Logger = slog.New(slog.DiscardHandler)
	var finalInside bool
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc { // sees what idemecho5 returns
		return func(c *echo.Context) error {
			err := next(c)
			res, _ := echo.UnwrapResponse(c.Response())
			finalInside = err != nil && res != nil && res.Committed
			return err
		}
	})
	e.Use(idemecho5.Middleware(newEngine(t)))
	calls := map[string]int{}
	e.POST("/fails", func(c *echo.Context) error {
		calls["fails"]++
		return echo.NewHTTPError(http.StatusServiceUnavailable, "try later")
	})
	e.POST("/panics", func(c *echo.Context) error {
		calls["panics"]++
		panic("boom")
	}, middleware.Recover())
	for _, path := range []string{"/fails", "/panics"} {
		for i := range 2 {
			rec := post(e, path, "k"+path)
			var doc map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || rec.Code < 500 {
				t.Fatalf("%s attempt %d: %d %q, want one JSON error document with a 5xx status (%v)", path, i+1, rec.Code, rec.Body, err)
			}
			if !finalInside {
				t.Fatalf("%s attempt %d: the middleware returned before the error's response was committed", path, i+1)
			}
		}
		if calls[path[1:]] != 2 {
			t.Fatalf("%s ran %d times for two attempts, want 2: the key was not released", path, calls[path[1:]])
		}
	}
}

// TestEchoResponseUnwraps: while the handler runs under a lease, the
// context's response is the middleware's recording writer, and it unwraps
// to echo's *Response: its Before hooks run when the header goes out and
// it is marked Committed, as without the middleware. The status and the
// Content-Type of c.JSON are recorded and replayed.
func TestEchoResponseUnwraps(t *testing.T) {
	e := echo.New()
	e.Use(idemecho5.Middleware(newEngine(t)))
	var hooked, committed bool
	e.POST("/orders", func(c *echo.Context) error {
		res, err := echo.UnwrapResponse(c.Response())
		if err != nil {
			return err
		}
		res.Before(func() { hooked = true })
		if err := c.JSON(http.StatusCreated, map[string]int{"id": 1}); err != nil {
			return err
		}
		committed = res.Committed
		return nil
	})
	first := post(e, "/orders", "k1")
	if first.Code != http.StatusCreated || !hooked || !committed {
		t.Fatalf("first: %d, Before hook ran %v, Committed %v; want 201, true, true", first.Code, hooked, committed)
	}
	replay := post(e, "/orders", "k1")
	if replay.Code != http.StatusCreated || replay.Header().Get(idem.ReplayedHeader) != "true" ||
		replay.Body.String() != first.Body.String() || replay.Header().Get("Content-Type") != first.Header().Get("Content-Type") {
		t.Fatalf("replay %d %q %q, want the first answer %d %q %q replayed", replay.Code, replay.Header().Get("Content-Type"), replay.Body,
			first.Code, first.Header().Get("Content-Type"), first.Body)
	}
}

// TestEchoManual: a Manual handler reads what the engine found from the
// request's context.
func TestEchoManual(t *testing.T) {
	e := echo.New()
	e.POST("/transfers", func(c *echo.Context) error {
		if f, ok := idem.FindingFrom(c.Request().Context()); ok {
			return c.String(http.StatusOK, "found "+f.Kind.String())
		}
		return c.String(http.StatusCreated, "first")
	}, idemecho5.Manual(newEngine(t)))
	if rec := post(e, "/transfers", "k1"); rec.Code != http.StatusCreated {
		t.Fatalf("first: %d %q", rec.Code, rec.Body)
	}
	if rec := post(e, "/transfers", "k1"); rec.Code != http.StatusOK || rec.Body.String() != "found completed" {
		t.Fatalf("retry: %d %q, want 200 \"found completed\"", rec.Code, rec.Body)
	}
}

// TestProblemAsError: a ProblemHandler that returns the problem itself
// leaves it to echo's default HTTPErrorHandler, which answers with the
// problem's status (idem.Problem reports it through StatusCode), not 500.
func TestProblemAsError(t *testing.T) {
	e := echo.New()
	e.Logger = slog.New(slog.DiscardHandler)
	e.Use(idemecho5.Middleware(newEngine(t),
		idemecho5.ProblemHandler(func(_ *echo.Context, p *idem.Problem) error { return p })))
	e.POST("/orders", func(c *echo.Context) error { return c.String(http.StatusCreated, "made") })
	if rec := post(e, "/orders", ""); rec.Code != http.StatusBadRequest {
		t.Fatalf("no key, the problem returned as an error: %d %q, want 400 (key missing)", rec.Code, rec.Body)
	}
}
