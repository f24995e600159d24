package idemchi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/go-chi/chi/v5"

	idemchi "github.com/idemkit/idem/adapters/chi"
	idem "github.com/idemkit/idem/core"
)

// A Group's r.Use gives its routes a default (here the engine's, Required)
// that a route overrides with r.With. Each route is named by its pattern.
func Example() {
	engine, err := idem.New(idem.Config{
		Observer: idem.ObserverFunc(func(_ context.Context, ev idem.Event) {
			if ev.Outcome == idem.Executed || ev.Outcome == idem.Replayed {
				fmt.Println("idem:", ev.Outcome, ev.Route)
			}
		}),
	})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	refunds, deliveries := 0, 0
	r := chi.NewRouter()
	r.Group(func(r chi.Router) {
		r.Use(idemchi.Middleware(engine))
		r.Post("/orders/{id}/refund", func(w http.ResponseWriter, r *http.Request) {
			refunds++
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, "refund %d of order %s", refunds, chi.URLParam(r, "id"))
		})
		r.With(idemchi.Exempt(engine)).Post("/webhooks", func(w http.ResponseWriter, r *http.Request) {
			deliveries++
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, "delivery %d", deliveries)
		})
	})

	post := func(path, key string) {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{}`))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		fmt.Printf("POST %s key=%q: %d %s", path, key, w.Code, w.Body)
		if w.Header().Get("Idempotent-Replayed") == "true" {
			fmt.Print(" (replayed)")
		}
		fmt.Println()
	}
	post("/orders/7/refund", "rf-7")
	post("/orders/7/refund", "rf-7")
	post("/webhooks", "wh-1")
	post("/webhooks", "wh-1")
	// Output:
	// idem: executed /orders/{id}/refund
	// POST /orders/7/refund key="rf-7": 201 refund 1 of order 7
	// idem: replayed /orders/{id}/refund
	// POST /orders/7/refund key="rf-7": 201 refund 1 of order 7 (replayed)
	// POST /webhooks key="wh-1": 202 delivery 1
	// POST /webhooks key="wh-1": 202 delivery 2
}
