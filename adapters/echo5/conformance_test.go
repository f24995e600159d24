package idemecho5_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/labstack/echo/v5"
	"github.com/labstack/echo/v5/middleware"

	idemecho5 "github.com/idemkit/idem/adapters/echo5"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// harness serves conformance apps with echo v5: Recover outermost, the
// app-wide idem layer with the App's settings, and on each route with
// settings its route layers. Echo runs the app-wide layer first, so it
// skips the routes that have layers of their own (its Skipper), the echo
// way to let a route's settings win (B2); a route layer then takes what
// it leaves zero from the App's settings.
type harness struct{}

var _ conformance.Harness = harness{}

func (harness) Lacks() map[conformance.Capability]string { return nil }

func (harness) Serve(t testing.TB, a conformance.App) string {
	e := echo.New()
	e.Logger = slog.New(slog.DiscardHandler) // Recover's stack traces
	e.Use(middleware.Recover())
	own := map[string]bool{}
	for _, r := range a.Routes {
		if r.Settings != (idem.Route{}) || r.Outer != (idem.Route{}) {
			own[r.Method+" "+r.Path] = true
		}
	}
	e.Use(layer(t, idemecho5.Config{Engine: a.Engine, Skipper: func(c *echo.Context) bool {
		return own[c.Request().Method+" "+c.Path()]
	}}, a.Settings))
	for _, r := range a.Routes {
		var layers []echo.MiddlewareFunc
		for _, s := range []idem.Route{r.Outer, r.Settings} {
			if s != (idem.Route{}) {
				layers = append(layers, layer(t, idemecho5.Config{Engine: a.Engine}, conformance.Merge(s, a.Settings)))
			}
		}
		e.Add(r.Method, r.Path, scripted(r.Handler), layers...)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv.URL
}

// layer is the idemecho5 middleware of cfg with the settings s.
func layer(t testing.TB, cfg idemecho5.Config, s idem.Route) echo.MiddlewareFunc {
	cfg.Policy, cfg.Store, cfg.Retention = s.Policy, s.Store, s.Retention
	mw, err := cfg.ToMiddleware()
	if err != nil {
		t.Fatalf("idemecho5.Config%+v: %v", s, err)
	}
	return mw
}

// scripted runs a conformance handler as an echo v5 handler.
func scripted(h *conformance.Handler) echo.HandlerFunc {
	return func(c *echo.Context) error {
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		st := h.Serve(c.Request().Context(), body)
		res := c.Response()
		switch {
		case st.Panic:
			panic("conformance: scripted panic")
		case st.Goexit:
			runtime.Goexit()
		case st.Fail:
			return conformance.ErrScripted
		case st.Hijack:
			conn, _, err := http.NewResponseController(res).Hijack()
			if err != nil {
				return err
			}
			_, _ = io.WriteString(conn, conformance.HijackedResponse)
			return conn.Close()
		}
		for _, f := range st.Header {
			res.Header().Add(f.Name, f.Value)
		}
		if st.JSON {
			return c.JSON(st.Status, json.RawMessage(st.Body))
		}
		res.WriteHeader(st.Status)
		for _, f := range st.Late {
			res.Header().Add(f.Name, f.Value)
		}
		if len(st.Body) == 0 {
			return nil
		}
		if st.Flush {
			half := len(st.Body) / 2
			if _, err := res.Write(st.Body[:half]); err != nil {
				return err
			}
			if err := http.NewResponseController(res).Flush(); err != nil {
				return err
			}
			st.Body = st.Body[half:]
		}
		_, err = res.Write(st.Body)
		return err
	}
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
