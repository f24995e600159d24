package idemfiber3_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v3"

	idemfiber3 "github.com/idemkit/idem/adapters/fiber3"
	idem "github.com/idemkit/idem/core"
)

func newEngine(t testing.TB, cfg idem.Config) *idem.Engine {
	t.Helper()
	e, err := idem.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

type answer struct {
	status   int
	body     string
	header   http.Header
	replayed bool
}

// send serves a POST with the given header fields (names as given, not
// canonicalized) in memory.
func send(t *testing.T, app *fiber.App, path string, header map[string]string) answer {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"n":1}`))
	for k, v := range header {
		req.Header[k] = []string{v}
	}
	resp, err := app.Test(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(body), resp.Header, resp.Header.Get(idem.ReplayedHeader) == "true"}
}

type tenantKey struct{}

// TestFiberContext: the engine reads the request's context from Fiber v3's
// c.Context(), where an authentication middleware leaves what scopes a
// key (here through Config.Scope): the same key sent by two tenants runs
// twice, and each tenant's retry is its own replay.
func TestFiberContext(t *testing.T) {
	e := newEngine(t, idem.Config{Scope: func(r *idem.Request) string {
		s, _ := r.Context.Value(tenantKey{}).(string)
		return s
	}})
	app := fiber.New()
	app.Use(func(c fiber.Ctx) error {
		c.SetContext(context.WithValue(c.Context(), tenantKey{}, strings.Clone(c.Get("X-Tenant"))))
		return c.Next()
	})
	app.Use(idemfiber3.New(e))
	runs := 0
	app.Post("/orders", func(c fiber.Ctx) error {
		runs++
		return c.Status(fiber.StatusCreated).SendString(c.Get("X-Tenant"))
	})
	for _, tenant := range []string{"a", "b", "a", "b"} {
		a := send(t, app, "/orders", map[string]string{"Idempotency-Key": "k1", "X-Tenant": tenant})
		if a.status != fiber.StatusCreated || a.body != tenant {
			t.Fatalf("tenant %s: %d %q", tenant, a.status, a.body)
		}
	}
	if runs != 2 {
		t.Fatalf("the handler ran %d times for one key sent by two tenants twice each, want 2", runs)
	}
}

// TestFiberErrors: an error the handler returns is rendered by the app's
// ErrorHandler inside the middleware and releases the key; a
// ProblemHandler may answer problems with a fiber.Error.
func TestFiberErrors(t *testing.T) {
	e := newEngine(t, idem.Config{})
	app := fiber.New()
	runs := 0
	app.Post("/fails", idemfiber3.New(e), func(c fiber.Ctx) error {
		runs++
		return fiber.NewError(fiber.StatusServiceUnavailable, "try later")
	})
	app.Post("/orders", idemfiber3.Required(e, idemfiber3.Config{ProblemHandler: func(c fiber.Ctx, p *idem.Problem) error {
		return fiber.NewError(p.Status, p.Title)
	}}), func(c fiber.Ctx) error { return c.SendStatus(fiber.StatusCreated) })
	for i := range 2 {
		if a := send(t, app, "/fails", map[string]string{"Idempotency-Key": "k1"}); a.status != fiber.StatusServiceUnavailable || a.body != "try later" {
			t.Fatalf("attempt %d: %d %q, want the ErrorHandler's 503", i+1, a.status, a.body)
		}
	}
	if runs != 2 {
		t.Fatalf("the failing handler ran %d times for two attempts, want 2", runs)
	}
	if a := send(t, app, "/orders", nil); a.status != fiber.StatusBadRequest || a.body != "Idempotency key missing" {
		t.Fatalf("no key with a ProblemHandler: %d %q", a.status, a.body)
	}
}

// TestFiberHeaderCase: an app that keeps header names as sent
// (DisableHeaderNormalizing) still finds the key under any case (B4), and
// still records the response's headers.
func TestFiberHeaderCase(t *testing.T) {
	app := fiber.New(fiber.Config{DisableHeaderNormalizing: true})
	app.Use(idemfiber3.New(newEngine(t, idem.Config{})))
	runs := 0
	app.Post("/orders", func(c fiber.Ctx) error {
		runs++
		c.Set("location", "/orders/1")
		return c.Status(fiber.StatusCreated).SendString("made")
	})
	first := send(t, app, "/orders", map[string]string{"idempotency-key": "k1"})
	again := send(t, app, "/orders", map[string]string{"IDEMPOTENCY-KEY": "k1"})
	if runs != 1 || !again.replayed || again.header.Get("Location") != "/orders/1" || again.body != first.body {
		t.Fatalf("ran %d times; retry %d %q replayed %v Location %q", runs, again.status, again.body, again.replayed, again.header.Get("Location"))
	}
}

// TestFiberBodyLimitIsAProblem (B21, B25): Fiber refuses a body over its
// BodyLimit before any handler runs; with ErrorHandler that 413 is idem's
// problem document, and other errors still reach the app's own handler.
func TestFiberBodyLimitIsAProblem(t *testing.T) {
	e := newEngine(t, idem.Config{})
	const limit = 1 << 10
	app := fiber.New(fiber.Config{BodyLimit: limit, ErrorHandler: idemfiber3.ErrorHandler(e, func(c fiber.Ctx, err error) error {
		return c.Status(fiber.StatusTeapot).SendString("app's own")
	})})
	runs := 0
	app.Post("/orders", idemfiber3.Required(e), func(c fiber.Ctx) error {
		runs++
		return c.SendStatus(fiber.StatusCreated)
	})
	app.Post("/fails", func(fiber.Ctx) error { return errors.New("boom") })
	base := serve(t, app) // app.Test refuses the body itself
	req, _ := http.NewRequest(http.MethodPost, base+"/orders", strings.NewReader(strings.Repeat("x", 2*limit)))
	req.Header.Set(idem.DefaultHeaderName, "k1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != fiber.StatusRequestEntityTooLarge || resp.Header.Get("Content-Type") != idem.ProblemContentType ||
		!strings.Contains(string(body), idem.ProblemRequestTooLarge) || runs != 0 {
		t.Fatalf("body over BodyLimit: %d %q %s, handler ran %d times; want idem's 413 problem", resp.StatusCode, resp.Header.Get("Content-Type"), body, runs)
	}
	if a := send(t, app, "/fails", nil); a.status != fiber.StatusTeapot {
		t.Fatalf("another error: %d %q, want the app's own answer", a.status, a.body)
	}
}
