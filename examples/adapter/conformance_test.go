package tiny_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"

	tiny "github.com/idemkit/idem/examples/adapter"

	"github.com/idemkit/idem/conformance"
)

// harness serves a conformance App with the tiny router: the router-wide
// idem layer skips the routes that have layers of their own, which carry
// the route's settings (the router runs Use handlers before the route's).
type harness struct{}

func (harness) Lacks() map[conformance.Capability]string { return nil }

func (harness) Serve(t testing.TB, app conformance.App) string {
	r := tiny.New()
	own := map[string]bool{}
	for _, rt := range app.Routes {
		if rt.Settings.Policy != 0 || rt.Settings.Store != nil || rt.Settings.Retention != 0 {
			own[rt.Method+" "+rt.Path] = true
		}
	}
	global, err := tiny.Idem(app.Engine, tiny.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	r.Use(func(c *tiny.Ctx) error {
		if own[c.Pattern] {
			return c.Next()
		}
		return global(c)
	})
	for _, rt := range app.Routes {
		var chain []tiny.Handler
		if own[rt.Method+" "+rt.Path] {
			s := rt.Settings
			layer, err := tiny.Idem(app.Engine, tiny.Settings{Policy: s.Policy, Store: s.Store, Retention: s.Retention})
			if err != nil {
				t.Fatal(err)
			}
			chain = append(chain, layer)
		}
		r.Handle(rt.Method, rt.Path, append(chain, scripted(rt.Handler))...)
	}
	srv := httptest.NewUnstartedServer(r)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // scripted panics
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// scripted runs a conformance handler as a tiny handler.
func scripted(h *conformance.Handler) tiny.Handler {
	return func(c *tiny.Ctx) error {
		body, err := io.ReadAll(c.R.Body)
		if err != nil {
			return err
		}
		st := h.Serve(c.R.Context(), body)
		switch {
		case st.Panic:
			panic("conformance: scripted panic")
		case st.Fail:
			return conformance.ErrScripted
		case st.Hijack:
			conn, _, err := http.NewResponseController(c.W).Hijack()
			if err != nil {
				return err
			}
			_, _ = io.WriteString(conn, conformance.HijackedResponse)
			return conn.Close()
		}
		for _, f := range st.Header {
			c.W.Header().Add(f.Name, f.Value)
		}
		c.W.WriteHeader(st.Status)
		if st.Flush {
			half := len(st.Body) / 2
			_, _ = c.W.Write(st.Body[:half])
			_ = http.NewResponseController(c.W).Flush()
			st.Body = st.Body[half:]
		}
		_, err = c.W.Write(st.Body)
		return err
	}
}

func TestConformance(t *testing.T) {
	conformance.Run(t, harness{})
}
