package idemgin_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/gin-gonic/gin"

	idemgin "github.com/idemkit/idem/adapters/gin"
	idem "github.com/idemkit/idem/core"
)

// A client retries POST /orders with the same Idempotency-Key: the order
// is created once and the retry gets the original response, marked as
// replayed, with the Content-Type c.JSON set after the status. Requests
// without a key are refused on /orders only, because the engine-wide
// layer is Optional and the route opts in with Required.
func Example() {
	engine, err := idem.New(idem.Config{})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery(), idemgin.Optional(engine))
	created := 0
	r.POST("/orders", idemgin.Required(engine), func(c *gin.Context) {
		created++
		c.JSON(http.StatusCreated, gin.H{"order": created})
	})

	send := func(key string) {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"sku":"book"}`))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		fmt.Printf("%d %s replayed=%q %s\n", rec.Code, rec.Header().Get("Content-Type"),
			rec.Header().Get(idem.ReplayedHeader), strings.TrimSpace(rec.Body.String()))
	}
	send("order-7f3a")
	send("order-7f3a")
	send("")
	fmt.Println("orders created:", created)
	// Output:
	// 201 application/json; charset=utf-8 replayed="" {"order":1}
	// 201 application/json; charset=utf-8 replayed="true" {"order":1}
	// 400 application/problem+json replayed="" {"type":"https://idemkit.github.io/idem/problems/key-missing","title":"Idempotency key missing","status":400,"detail":"This operation requires an Idempotency-Key header. Send a unique key (for instance a UUID) and reuse it when you retry the same operation.","rule":"B6"}
	// orders created: 1
}

// ProblemHandler renders the engine's problems the application's way; the
// layer aborts the chain after it, so the handler does not run.
func ExampleProblemHandler() {
	engine, err := idem.New(idem.Config{})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.POST("/payments", idemgin.Required(engine, idemgin.ProblemHandler(func(c *gin.Context, p *idem.Problem) {
		c.JSON(p.Status, gin.H{"error": p.Title, "rule": p.Rule})
	})), func(c *gin.Context) { c.Status(http.StatusAccepted) })

	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/payments", nil))
	fmt.Println(rec.Code, strings.TrimSpace(rec.Body.String()))
	// Output:
	// 400 {"error":"Idempotency key missing","rule":"B6"}
}
