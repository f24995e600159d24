package idemchi_test

import (
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	idemchi "github.com/idemkit/idem/adapters/chi"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// harness serves conformance apps with a chi router: chi's Recoverer for
// the whole router, the idemchi Middleware in a Group's r.Use (which chi
// chains around each route, after routing), and each route with its own
// settings as an r.With layer, which merges with the Group's layer and
// wins where it sets something.
type harness struct{}

func (harness) Serve(t testing.TB, app conformance.App) string {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Group(func(r chi.Router) {
		r.Use(idemchi.Middleware(app.Engine))
		for _, rt := range app.Routes {
			router := r
			if s := rt.Settings; s.Policy != idem.Inherit || s.Store != nil || s.Retention != 0 {
				router = r.With(idemchi.Middleware(app.Engine,
					idemchi.Policy(s.Policy), idemchi.Store(s.Store), idemchi.Retention(s.Retention)))
			}
			router.Method(rt.Method, rt.Path, rt.Handler)
		}
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv.URL
}

func (harness) Lacks() map[conformance.Capability]string {
	return map[conformance.Capability]string{
		conformance.HandlerError: "chi handlers are net/http handlers: they return no error for chi to render",
	}
}

func TestConformance(t *testing.T) {
	conformance.Run(t, harness{})
}
