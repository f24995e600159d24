package reliability_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	idem "github.com/idemkit/idem/core"
)

// Example shows, in miniature, the property this package's tests check at
// scale: retries of one key run the handler once and replay its response.
func Example() {
	engine, err := idem.New(idem.Config{})
	if err != nil {
		panic(err)
	}
	defer engine.Close()
	var runs atomic.Int64
	h := idemhttp.Middleware(engine)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order %d", runs.Add(1))
	}))
	for range 3 {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"amount":100}`))
		req.Header.Set("Idempotency-Key", "order-42")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Body.String(), "replayed:", rec.Header().Get(idem.ReplayedHeader) == "true")
	}
	fmt.Println("handler runs:", runs.Load())
	// Output:
	// 201 order 1 replayed: false
	// 201 order 1 replayed: true
	// 201 order 1 replayed: true
	// handler runs: 1
}
