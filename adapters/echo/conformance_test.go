package idemecho_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	idemecho "github.com/idemkit/idem/adapters/echo"
	"github.com/idemkit/idem/conformance"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// harness serves conformance apps with echo: Recover outermost, the
// app-wide idem layer, and on each route with settings a route-level layer.
// Echo runs the app-wide layer first, so it skips the routes that have
// layers of their own (its Skipper), the echo way to let a route's
// settings win (B2).
type harness struct{}

var _ conformance.Harness = harness{}

func (harness) Lacks() map[conformance.Capability]string { return nil }

func (harness) Serve(t testing.TB, a conformance.App) string {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Logger.SetOutput(io.Discard) // Recover's stack traces
	e.Use(middleware.Recover())
	own := map[string]bool{}
	for _, r := range a.Routes {
		if s := r.Settings; s.Policy != 0 || s.Store != nil || s.Retention != 0 {
			own[r.Method+" "+r.Path] = true
		}
	}
	global, err := idemecho.Config{Engine: a.Engine, Skipper: func(c echo.Context) bool {
		return own[c.Request().Method+" "+c.Path()]
	}}.ToMiddleware()
	if err != nil {
		t.Fatal(err)
	}
	app := e.Group("", global)
	for _, r := range a.Routes {
		var layers []echo.MiddlewareFunc
		if own[r.Method+" "+r.Path] {
			s := r.Settings
			mw, err := idemecho.Config{Engine: a.Engine, Policy: s.Policy, Store: s.Store, Retention: s.Retention}.ToMiddleware()
			if err != nil {
				t.Fatalf("route %s %s: %v", r.Method, r.Path, err)
			}
			layers = append(layers, mw)
		}
		app.Add(r.Method, r.Path, scripted(r.Handler), layers...)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv.URL
}

// scripted runs a conformance handler as an echo handler.
func scripted(h *conformance.Handler) echo.HandlerFunc {
	return func(c echo.Context) error {
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		st := h.Serve(c.Request().Context(), body)
		res := c.Response()
		switch {
		case st.Panic:
			panic("conformance: scripted panic")
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
		res.WriteHeader(st.Status)
		if st.Flush {
			half := len(st.Body) / 2
			if _, err := res.Write(st.Body[:half]); err != nil {
				return err
			}
			res.Flush()
			st.Body = st.Body[half:]
		}
		_, err = res.Write(st.Body)
		return err
	}
}

// TestConformance runs the adapter conformance suite against idemecho.
func TestConformance(t *testing.T) {
	conformance.Run(t, harness{})
}
