package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	idemchi "github.com/idemkit/idem/adapters/chi"
	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	idem "github.com/idemkit/idem/core"
)

// server is what an adapter builds: it serves on a listener until it is
// shut down. *http.Server is one; a framework with its own server (fiber)
// wraps it in a small type.
type server interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

// adapters maps each -adapter name to the function that mounts the API's
// routes with that adapter. Every adapter serves the same operations with
// the same idempotency policies:
//
//	POST /orders       Required
//	GET  /orders       (safe method, no layer)
//	GET  /orders/{id}  (safe method, no layer)
//	POST /payments     Optional
//	POST /webhooks     Exempt
var adapters = map[string]func(e *idem.Engine, a *api) server{
	"nethttp": netHTTPServer,
	"chi":     chiServer,
}

// netHTTPServer mounts the routes on a net/http ServeMux, each wrapped in
// its route-level idem layer.
func netHTTPServer(e *idem.Engine, a *api) server {
	mux := http.NewServeMux()
	mux.Handle("POST /orders", idemhttp.Required(e)(serveHTTP(a.createOrder)))
	mux.Handle("GET /orders", serveHTTP(a.listOrders))
	mux.Handle("GET /orders/{id}", serveHTTP(a.getOrder))
	mux.Handle("POST /payments", idemhttp.Optional(e)(serveHTTP(a.createPayment)))
	mux.Handle("POST /webhooks", idemhttp.Exempt(e)(serveHTTP(a.receiveWebhook)))
	return newHTTPServer(mux)
}

// chiServer mounts the routes on a chi router, with the policies as
// r.With(...) layers; idemchi names each route by its pattern.
func chiServer(e *idem.Engine, a *api) server {
	r := chi.NewRouter()
	r.With(idemchi.Required(e)).Post("/orders", serveHTTP(a.createOrder))
	r.Get("/orders", serveHTTP(a.listOrders))
	r.Get("/orders/{id}", serveHTTP(a.getOrder))
	r.With(idemchi.Optional(e)).Post("/payments", serveHTTP(a.createPayment))
	r.With(idemchi.Exempt(e)).Post("/webhooks", serveHTTP(a.receiveWebhook))
	return newHTTPServer(r)
}

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
}

// maxBody bounds what an operation reads of a request body.
const maxBody = 1 << 20

// serveHTTP runs op as a net/http handler (for net/http and chi; echo can
// mount it with echo.WrapHandler).
func serveHTTP(op operation) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeReply(w, problem(http.StatusBadRequest, "Unreadable body", err.Error()))
			return
		}
		writeReply(w, op(call{ctx: r.Context(), body: body, param: r.PathValue}))
	}
}

func writeReply(w http.ResponseWriter, rep reply) {
	h := w.Header()
	if rep.location != "" {
		h.Set("Location", rep.location)
	}
	h.Set("Content-Type", rep.contentType)
	h.Set("Content-Length", strconv.Itoa(len(rep.body)))
	w.WriteHeader(rep.status)
	_, _ = w.Write(rep.body)
}
