package idemfiber3_test

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"

	"github.com/gofiber/fiber/v3"

	idemfiber3 "github.com/idemkit/idem/adapters/fiber3"
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
	app.Use(idemfiber3.New(engine))
	orders := 0
	app.Post("/orders", func(c fiber.Ctx) error {
		orders++
		return c.Status(fiber.StatusCreated).SendString(fmt.Sprintf("order %d for %s", orders, c.Body()))
	})

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

// Routes choose their policy with route handlers in front of the route's
// own handler; a Manual handler reads what the engine found from
// c.Context().
func ExampleManual() {
	engine, err := idem.New(idem.Config{})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	app := fiber.New()
	app.Post("/transfers", idemfiber3.Manual(engine), func(c fiber.Ctx) error {
		if f, ok := idem.FindingFrom(c.Context()); ok {
			return c.Status(fiber.StatusOK).SendString("already done: " + f.Kind.String())
		}
		return c.Status(fiber.StatusCreated).SendString("transferred")
	})
	for range 2 {
		req := httptest.NewRequest("POST", "/transfers", strings.NewReader(`{"amount":100}`))
		req.Header.Set("Idempotency-Key", "t-1")
		resp, _ := app.Test(req)
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, string(body))
	}
	// Output:
	// 201 transferred
	// 200 already done: completed
}
