package idemfiber_test

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"

	"github.com/gofiber/fiber/v2"
	idemfiber "github.com/idemkit/idem/adapters/fiber"
	idem "github.com/idemkit/idem/core"
)

// A client retries POST /orders with the same Idempotency-Key: the order
// is created once and the retry gets the original response back.
// app.Test serves the requests in memory; a real app calls app.Listen.
func ExampleNew() {
	engine, err := idem.New(idem.Config{}) // in-memory store, key required
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	app := fiber.New()
	app.Use(idemfiber.New(engine))
	orders := 0
	app.Post("/orders", func(c *fiber.Ctx) error {
		orders++
		return c.Status(fiber.StatusCreated).SendString(fmt.Sprintf("order %d for %s", orders, c.Body()))
	})
	app.Post("/webhooks", func(c *fiber.Ctx) error { return c.SendString("ok") })

	for range 2 {
		req := httptest.NewRequest("POST", "/orders", strings.NewReader("2 coffees"))
		req.Header.Set("Idempotency-Key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
		resp, err := app.Test(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, string(body), "replayed:", resp.Header.Get("Idempotent-Replayed") == "true")
	}
	resp, _ := app.Test(httptest.NewRequest("POST", "/orders", nil))
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"))
	// Output:
	// 201 order 1 for 2 coffees replayed: false
	// 201 order 1 for 2 coffees replayed: true
	// 400 application/problem+json
}

// Routes choose their policy: Required, Optional and Manual route handlers
// in front of the route's own handler, per-route stores and retention in
// the Config.
func ExampleRequired() {
	engine, err := idem.New(idem.Config{DefaultPolicy: idem.Exempt})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	app := fiber.New()
	// The app-wide handler leaves requests alone; routes opt in.
	app.Use(idemfiber.New(engine))
	app.Post("/orders", idemfiber.Required(engine), func(c *fiber.Ctx) error {
		return c.Status(fiber.StatusCreated).SendString("created")
	})
	app.Post("/payments", idemfiber.Optional(engine), func(c *fiber.Ctx) error {
		return c.SendString("paid")
	})
	app.Post("/webhooks", func(c *fiber.Ctx) error { return c.SendString("received") })

	for _, path := range []string{"/orders", "/payments", "/webhooks"} {
		resp, _ := app.Test(httptest.NewRequest("POST", path, nil)) // no key
		fmt.Println(path, resp.StatusCode)
	}
	// Output:
	// /orders 400
	// /payments 200
	// /webhooks 200
}

// A Manual route answers retries itself from what the engine found.
func ExampleManual() {
	engine, err := idem.New(idem.Config{})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	app := fiber.New()
	app.Post("/transfers", idemfiber.Manual(engine), func(c *fiber.Ctx) error {
		if f, ok := idem.FindingFrom(c.UserContext()); ok {
			return c.Status(fiber.StatusOK).SendString("already done: " + f.Kind.String())
		}
		return c.Status(fiber.StatusCreated).SendString("transferred")
	})
	for range 2 {
		req := httptest.NewRequest("POST", "/transfers", nil)
		req.Header.Set("Idempotency-Key", "t-1")
		resp, _ := app.Test(req)
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, string(body))
	}
	// Output:
	// 201 transferred
	// 200 already done: completed
}
