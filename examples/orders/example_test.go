package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	idem "github.com/idemkit/idem/core"
)

// The API as the net/http adapter mounts it, served in memory: a retried
// order is replayed, not created twice, while webhooks run every time.
func Example() {
	engine, err := idem.New(idem.Config{}) // in-memory store
	if err != nil {
		panic(err)
	}
	defer engine.Close()
	h := adapters["nethttp"](engine, newAPI(0)).(*http.Server).Handler

	send := func(path, key, body string) {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Idempotency-Key", key)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Printf("%s %d replayed=%q %s\n", path, rec.Code, rec.Header().Get(idem.ReplayedHeader), strings.TrimSpace(rec.Body.String()))
	}
	send("/orders", "order-8f2c", `{"sku":"MUG","qty":1}`)
	send("/orders", "order-8f2c", `{"sku":"MUG","qty":1}`)
	send("/webhooks", "hook-1", `{"event":"shipped"}`)
	send("/webhooks", "hook-1", `{"event":"shipped"}`)
	// Output:
	// /orders 201 replayed="" {"id":"ord_1","sku":"MUG","qty":1}
	// /orders 201 replayed="true" {"id":"ord_1","sku":"MUG","qty":1}
	// /webhooks 202 replayed="" {"delivery":1}
	// /webhooks 202 replayed="" {"delivery":2}
}
