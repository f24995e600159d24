package idemhttp_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	idem "github.com/idemkit/idem/core"
)

// Wrap a mux with Middleware: a retried POST with the same Idempotency-Key
// gets the original response instead of creating a second order.
func Example() {
	engine, err := idem.New(idem.Config{})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	orders := 0
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		orders++
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"order":%d}`, orders)
	})
	handler := idemhttp.Middleware(engine)(mux)

	for range 2 {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"sku":"A1"}`))
		req.Header.Set("Idempotency-Key", "6f1c2b9e-order-1")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Body.String(), "replayed:", rec.Header().Get("Idempotent-Replayed") == "true")
	}
	// Output:
	// 201 {"order":1} replayed: false
	// 201 {"order":1} replayed: true
}
