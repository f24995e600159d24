package idemecho5_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/labstack/echo/v5"

	idemecho5 "github.com/idemkit/idem/adapters/echo5"
	idem "github.com/idemkit/idem/core"
)

// A client retries POST /orders with the same Idempotency-Key: the order
// is created once and the retry gets the original response, marked as
// replayed. Requests without a key are refused on /orders only, because
// the application-wide layer is Optional and the route opts in with
// Required.
func Example() {
	engine, err := idem.New(idem.Config{})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	e := echo.New()
	e.Use(idemecho5.Optional(engine))
	created := 0
	e.POST("/orders", func(c *echo.Context) error {
		created++
		return c.JSON(http.StatusCreated, map[string]int{"order": created})
	}, idemecho5.Required(engine))

	send := func(key string) {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"sku":"book"}`))
		req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		fmt.Printf("%d replayed=%q %s\n", rec.Code, rec.Header().Get(idem.ReplayedHeader), strings.TrimSpace(rec.Body.String()))
	}
	send("order-7f3a")
	send("order-7f3a")
	send("")
	fmt.Println("orders created:", created)
	// Output:
	// 201 replayed="" {"order":1}
	// 201 replayed="true" {"order":1}
	// 400 replayed="" {"type":"https://idemkit.github.io/idem/problems/key-missing","title":"Idempotency key missing","status":400,"detail":"This operation requires an Idempotency-Key header. Send a unique key (for instance a UUID) and reuse it when you retry the same operation.","rule":"B6"}
	// orders created: 1
}

// Config.ToMiddleware reports a bad configuration instead of panicking.
func ExampleConfig_ToMiddleware() {
	engine, err := idem.New(idem.Config{})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	_, err = idemecho5.Config{Engine: engine, Retention: -time.Hour}.ToMiddleware()
	fmt.Println(err)

	mw, err := idemecho5.Config{
		Engine:  engine,
		Policy:  idem.Required,
		Skipper: func(c *echo.Context) bool { return c.Request().Header.Get("X-Internal") == "true" },
		ProblemHandler: func(c *echo.Context, p *idem.Problem) error {
			return c.JSON(p.Status, map[string]string{"error": p.Title, "rule": p.Rule})
		},
	}.ToMiddleware()
	if err != nil {
		panic(err)
	}
	e := echo.New()
	e.POST("/payments", func(c *echo.Context) error { return c.NoContent(http.StatusAccepted) }, mw)

	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/payments", nil))
	fmt.Println(rec.Code, strings.TrimSpace(rec.Body.String()))
	// Output:
	// idemecho5: config: Retention -1h0m0s is neither 0 nor at least 1ms
	// 400 {"error":"Idempotency key missing","rule":"B6"}
}
