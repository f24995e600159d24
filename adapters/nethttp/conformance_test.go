package idemhttp_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"

	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// harness serves a conformance App with http.ServeMux. Each route's
// handler is wrapped directly by the router-wide Middleware, built with
// the App's settings, and, when the route has settings, by a route-level
// layer inside it (two, with Route.Outer), so the layers merge and the
// route's settings win (B2).
type harness struct{}

func (harness) Lacks() map[conformance.Capability]string {
	return map[conformance.Capability]string{
		conformance.HandlerError: "net/http handlers return no error; a failure is a response status, which B14 covers",
	}
}

func (harness) Serve(t testing.TB, app conformance.App) string {
	mux := http.NewServeMux()
	global := layer(app.Engine, app.Settings)
	for _, rt := range app.Routes {
		var h http.Handler = rt.Handler
		if rt.Settings != (idem.Route{}) {
			h = layer(app.Engine, rt.Settings)(h)
		}
		if rt.Outer != (idem.Route{}) {
			h = layer(app.Engine, rt.Outer)(h)
		}
		mux.Handle(rt.Method+" "+rt.Path, global(h))
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // scripted panics
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// layer is the idemhttp middleware with settings s.
func layer(e *idem.Engine, s idem.Route) func(http.Handler) http.Handler {
	return idemhttp.Middleware(e, idemhttp.Policy(s.Policy), idemhttp.Store(s.Store), idemhttp.Retention(s.Retention))
}

func TestConformance(t *testing.T) {
	conformance.Run(t, harness{})
}

// TestConformanceWithStore runs the suite on stores the test supplies, as
// a user pairs their own store with an adapter.
func TestConformanceWithStore(t *testing.T) {
	conformance.Run(t, harness{}, conformance.WithStore(func(t testing.TB) idem.Store {
		s := idem.NewMemoryStore(idem.MemoryOptions{Shards: 1, SweepInterval: -1})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}))
}
