package idemfiber_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/gofiber/fiber/v2"
	idemfiber "github.com/idemkit/idem/adapters/fiber"
	idem "github.com/idemkit/idem/core"
)

// TestB21FiberBodyLimitIsAProblem: fiber refuses a body over its
// BodyLimit before any handler runs, so the idem handler never sees it;
// with idemfiber.ErrorHandler that 413 is idem's problem document, as on
// every other adapter (B21, B25), and other errors still reach the app's
// own error handler.
func TestB21FiberBodyLimitIsAProblem(t *testing.T) {
	engine := newEngine(t, idem.Config{})
	const limit = 1 << 10
	var others []error
	app := fiber.New(fiber.Config{BodyLimit: limit, ErrorHandler: idemfiber.ErrorHandler(engine, func(c *fiber.Ctx, err error) error {
		others = append(others, err)
		return c.Status(fiber.StatusTeapot).SendString("app's own")
	})})
	runs := 0
	app.Post("/orders", idemfiber.Required(engine), func(c *fiber.Ctx) error {
		runs++
		return c.SendStatus(fiber.StatusCreated)
	})
	app.Post("/fails", func(*fiber.Ctx) error { return errors.New("boom") })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	base := "http://" + ln.Addr().String()
	req, _ := http.NewRequest("POST", base+"/orders", bytes.NewReader(make([]byte, 2*limit)))
	req.Header.Set("Idempotency-Key", "k1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var p idem.Problem
	if resp.StatusCode != 413 || resp.Header.Get("Content-Type") != idem.ProblemContentType || json.Unmarshal(body, &p) != nil ||
		p.Type != idem.ProblemRequestTooLarge || p.Status != 413 {
		t.Fatalf("body over fiber's BodyLimit: %d %q %s; want idem's 413 problem", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if runs != 0 {
		t.Fatalf("the handler ran %d times", runs)
	}
	resp, err = http.Post(base+"/fails", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != fiber.StatusTeapot || len(others) != 1 {
		t.Fatalf("another error: %d, %d errors reached the app's handler; want the app's own answer", resp.StatusCode, len(others))
	}
}
