package idemchi_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-chi/chi/v5"

	idemchi "github.com/idemkit/idem/adapters/chi"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// routes records the route name of every engine decision.
type routes struct{ conformance.EventRecorder }

// take returns the route names recorded so far and forgets them.
func (o *routes) take() []string {
	var names []string
	for _, ev := range o.Take() {
		names = append(names, ev.Route)
	}
	return names
}

// newEngine is the conformance suite's engine helper: closed at cleanup.
var newEngine = conformance.NewEngine

// counter is a handler that counts its runs and answers 201 with the run's
// number.
type counter struct{ n atomic.Int64 }

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := c.n.Add(1)
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write([]byte{byte('0' + n)})
}

func send(h http.Handler, method, path, key, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if key != "" {
		r.Header.Set("Idempotency-Key", key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestNearestPolicyWins(t *testing.T) {
	e := newEngine(t, idem.Config{})
	var hook, order, pay, strict counter
	r := chi.NewRouter()
	r.Group(func(r chi.Router) {
		r.Use(idemchi.Required(e))
		r.Post("/orders", order.ServeHTTP)
		r.With(idemchi.Exempt(e)).Post("/hooks", hook.ServeHTTP)
		r.With(idemchi.Optional(e)).With(idemchi.Required(e)).Post("/strict", strict.ServeHTTP)
		r.With(idemchi.Exempt(e), idemchi.Optional(e)).Post("/payments", pay.ServeHTTP)
	})

	tests := []struct {
		name, path, key string
		want            int
		runs            *counter
		wantRuns        int64
	}{
		{"group Required, no key", "/orders", "", http.StatusBadRequest, &order, 0},
		{"group Required, key", "/orders", "k1", http.StatusCreated, &order, 1},
		{"group Required, same key replays", "/orders", "k1", http.StatusCreated, &order, 1},
		{"With(Exempt) inside a Required group, no key", "/hooks", "", http.StatusCreated, &hook, 1},
		{"With(Exempt) inside a Required group, key", "/hooks", "k2", http.StatusCreated, &hook, 2},
		{"With(Exempt) inside a Required group, same key runs again", "/hooks", "k2", http.StatusCreated, &hook, 3},
		{"With(Optional).With(Required), no key", "/strict", "", http.StatusBadRequest, &strict, 0},
		{"With(Exempt, Optional), no key", "/payments", "", http.StatusCreated, &pay, 1},
		{"With(Exempt, Optional), key", "/payments", "k3", http.StatusCreated, &pay, 2},
		{"With(Exempt, Optional), same key replays", "/payments", "k3", http.StatusCreated, &pay, 2},
	}
	for _, tt := range tests {
		w := send(r, http.MethodPost, tt.path, tt.key, "{}")
		if w.Code != tt.want {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, w.Code, tt.want, w.Body)
		}
		if got := tt.runs.n.Load(); got != tt.wantRuns {
			t.Errorf("%s: handler ran %d times, want %d", tt.name, got, tt.wantRuns)
		}
	}
}

func TestRouterWideExemptRoutesOptIn(t *testing.T) {
	e := newEngine(t, idem.Config{})
	var order, hook counter
	r := chi.NewRouter()
	r.Use(idemchi.Middleware(e, idemchi.Policy(idem.Exempt)))
	r.With(idemchi.Required(e)).Post("/orders", order.ServeHTTP)
	r.Post("/hooks", hook.ServeHTTP)

	if w := send(r, http.MethodPost, "/orders", "", "{}"); w.Code != http.StatusBadRequest {
		t.Errorf("POST /orders without a key: %d, want 400 from the route's Required layer", w.Code)
	}
	first := send(r, http.MethodPost, "/orders", "k", "{}")
	retry := send(r, http.MethodPost, "/orders", "k", "{}")
	if first.Code != http.StatusCreated || retry.Header().Get(idem.ReplayedHeader) != "true" || order.n.Load() != 1 {
		t.Errorf("POST /orders twice with one key: %d then %d (replayed %q), ran %d times; want one run and a replay",
			first.Code, retry.Code, retry.Header().Get(idem.ReplayedHeader), order.n.Load())
	}
	send(r, http.MethodPost, "/hooks", "k2", "{}")
	send(r, http.MethodPost, "/hooks", "k2", "{}")
	if hook.n.Load() != 2 {
		t.Errorf("POST /hooks twice under the router-wide Exempt layer ran %d times, want 2", hook.n.Load())
	}
}

func TestIgnoredRouteSettingWarnsOnce(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e := newEngine(t, idem.Config{Logger: logger})
	var hook counter
	r := chi.NewRouter()
	r.Use(idemchi.Middleware(e)) // the engine's default: Required
	r.With(idemchi.Exempt(e)).Post("/hooks", hook.ServeHTTP)

	for i := range 3 {
		if w := send(r, http.MethodPost, "/hooks", "k", "{}"); w.Code != http.StatusCreated {
			t.Fatalf("request %d: %d", i, w.Code)
		}
	}
	if hook.n.Load() != 1 {
		t.Errorf("the router-wide Required layer handled the key: want one run, got %d", hook.n.Load())
	}
	if n := strings.Count(logs.String(), "route-level setting ignored"); n != 1 {
		t.Errorf("%d warnings about the ignored Exempt layer, want 1; log:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "route=/hooks") {
		t.Errorf("the warning does not name the route /hooks:\n%s", logs.String())
	}
}

func TestRoutePatternNamesRoute(t *testing.T) {
	obs := &routes{}
	e := newEngine(t, idem.Config{Observer: obs})
	var h counter
	api := chi.NewRouter()
	api.With(idemchi.Required(e)).Post("/orders/{id}", h.ServeHTTP)
	api.Route("/shops/{shop}", func(r chi.Router) {
		r.Use(idemchi.Required(e)) // a mounted router's r.Use runs before its routing
		r.Post("/carts/{cart}", h.ServeHTTP)
	})
	root := chi.NewRouter()
	root.Mount("/api", api)

	global := chi.NewRouter()
	global.Use(idemchi.Middleware(e)) // runs before any routing
	global.Mount("/api", api)

	tests := []struct {
		name    string
		handler http.Handler
		path    string
		want    string
	}{
		{"r.With in a mounted router", root, "/api/orders/7", "/api/orders/{id}"},
		{"r.Use of a router mounted in a mounted router", root, "/api/shops/s1/carts/c9", "/api/shops/{shop}/carts/{cart}"},
		{"r.Use of the root router", global, "/api/orders/7", "/api/orders/{id}"},
		{"r.Use of the root router, deeper route", global, "/api/shops/s1/carts/c9", "/api/shops/{shop}/carts/{cart}"},
	}
	for i, tt := range tests {
		obs.take()
		if w := send(tt.handler, http.MethodPost, tt.path, "key-"+string(rune('a'+i)), "{}"); w.Code != http.StatusCreated {
			t.Fatalf("%s: status %d (%s)", tt.name, w.Code, w.Body)
		}
		names := obs.take()
		if len(names) == 0 {
			t.Fatalf("%s: no events", tt.name)
		}
		for _, got := range names {
			if got != tt.want {
				t.Errorf("%s: route named %q, want %q (events %q)", tt.name, got, tt.want, names)
				break
			}
		}
	}

	obs.take()
	custom := chi.NewRouter()
	custom.With(idemchi.Required(e, idemchi.RouteName(func(*http.Request) string { return "create-order" }))).
		Post("/orders", h.ServeHTTP)
	send(custom, http.MethodPost, "/orders", "key-custom", "{}")
	if names := obs.take(); len(names) == 0 || names[0] != "create-order" {
		t.Errorf("RouteName: events named %q, want create-order", names)
	}
}

func TestRoutePatternOutsideChi(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/orders/1", nil)
	if got := idemchi.RoutePattern(r); got != "" {
		t.Errorf("RoutePattern of a request chi never saw = %q, want \"\"", got)
	}
}

func TestPatternFingerprint(t *testing.T) {
	for _, tt := range []struct {
		name        string
		fingerprint func(*idem.Request, []byte) []byte
		want        int
		replayed    bool
	}{
		{"default: the path tells the orders apart", nil, http.StatusUnprocessableEntity, false},
		{"PatternFingerprint: one pattern, one operation", idemchi.PatternFingerprint(idem.DefaultFingerprint), http.StatusCreated, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, idem.Config{Fingerprint: tt.fingerprint})
			var h counter
			r := chi.NewRouter()
			r.With(idemchi.Required(e)).Post("/orders/{id}/refund", h.ServeHTTP)

			if w := send(r, http.MethodPost, "/orders/1/refund", "k", "{}"); w.Code != http.StatusCreated {
				t.Fatalf("first: %d", w.Code)
			}
			w := send(r, http.MethodPost, "/orders/2/refund", "k", "{}")
			if w.Code != tt.want || (w.Header().Get(idem.ReplayedHeader) == "true") != tt.replayed {
				t.Errorf("same key, other id: %d (replayed %q), want %d (replayed %v)",
					w.Code, w.Header().Get(idem.ReplayedHeader), tt.want, tt.replayed)
			}
			if w := send(r, http.MethodPost, "/orders/1/refund", "k", `{"other":1}`); w.Code != http.StatusUnprocessableEntity {
				t.Errorf("same key, other body: %d, want 422 (the body still counts)", w.Code)
			}
			if h.n.Load() != 1 {
				t.Errorf("handler ran %d times, want 1", h.n.Load())
			}
		})
	}
}
