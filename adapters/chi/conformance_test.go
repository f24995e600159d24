package idemchi_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	idemchi "github.com/idemkit/idem/adapters/chi"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// harness serves conformance apps with a chi router: chi's Recoverer for
// the whole router, the idemchi Middleware with the App's settings in a
// Group's r.Use (which chi chains around each route, after routing), and
// each route with its own settings as an r.With layer, which merges with
// the Group's layer and wins where it sets something.
type harness struct{}

func (harness) Serve(t testing.TB, app conformance.App) string {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Group(func(r chi.Router) {
		r.Use(layer(app.Engine, app.Settings))
		for _, rt := range app.Routes {
			var own []func(http.Handler) http.Handler
			if rt.Outer != (idem.Route{}) {
				own = append(own, layer(app.Engine, rt.Outer))
			}
			if rt.Settings != (idem.Route{}) {
				own = append(own, layer(app.Engine, rt.Settings))
			}
			router := r
			if len(own) > 0 {
				router = r.With(own...)
			}
			router.Method(rt.Method, rt.Path, rt.Handler)
		}
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv.URL
}

// layer is the idemchi middleware with settings s.
func layer(e *idem.Engine, s idem.Route) func(http.Handler) http.Handler {
	return idemchi.Middleware(e, idemchi.Policy(s.Policy), idemchi.Store(s.Store), idemchi.Retention(s.Retention))
}

func (harness) Lacks() map[conformance.Capability]string {
	return map[conformance.Capability]string{
		conformance.HandlerError: "chi handlers are net/http handlers: they return no error for chi to render",
	}
}

func TestConformance(t *testing.T) {
	conformance.Run(t, harness{})
}
