package tiny_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	tiny "github.com/idemkit/idem/examples/adapter"

	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// harness serves a conformance App with the tiny router: the router-wide
// idem layer, with the App's settings, skips the routes that have layers
// of their own, which carry the route's settings over the App's (the
// router runs Use handlers before the route's).
type harness struct{}

func (harness) Lacks() map[conformance.Capability]string { return nil }

func (harness) Serve(t testing.TB, app conformance.App) string {
	r := tiny.New()
	own := map[string]bool{}
	for _, rt := range app.Routes {
		if rt.Settings != (idem.Route{}) || rt.Outer != (idem.Route{}) {
			own[rt.Method+" "+rt.Path] = true
		}
	}
	global, err := layer(app.Engine, app.Settings)
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
		for _, s := range []idem.Route{rt.Outer, rt.Settings} {
			if s == (idem.Route{}) {
				continue
			}
			l, err := layer(app.Engine, conformance.Merge(s, app.Settings))
			if err != nil {
				t.Fatal(err)
			}
			chain = append(chain, l)
		}
		r.Handle(rt.Method, rt.Path, append(chain, scripted(rt.Handler))...)
	}
	srv := httptest.NewUnstartedServer(r)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // scripted panics
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// layer is the tiny idem layer with the settings s.
func layer(e *idem.Engine, s idem.Route) (tiny.Handler, error) {
	return tiny.Idem(e, tiny.Settings{Policy: s.Policy, Store: s.Store, Retention: s.Retention})
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
		case st.Goexit:
			runtime.Goexit()
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
		if st.JSON {
			// The tiny router has no JSON responder: a handler sets
			// Content-Type, then the status, then writes.
			c.W.Header().Set("Content-Type", "application/json")
		}
		c.W.WriteHeader(st.Status)
		for _, f := range st.Late {
			c.W.Header().Add(f.Name, f.Value)
		}
		if len(st.Body) == 0 {
			return nil
		}
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
