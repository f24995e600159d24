package idemgin_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/gin-gonic/gin"

	idemgin "github.com/idemkit/idem/adapters/gin"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// harness serves conformance apps with gin: gin's Recovery outermost, an
// error middleware that renders the errors handlers record with c.Error
// (gin's idiom: gin itself renders none), the engine-wide idem layer with
// the App's settings, and on each route with settings its route layers in
// front of the handler. Gin runs the engine-wide layer first, so it skips
// the routes that have layers of their own (Skip), the gin way to let a
// route's settings win (B2); a route layer then takes what it leaves zero
// from the App's settings.
type harness struct{}

var _ conformance.Harness = harness{}

func (harness) Lacks() map[conformance.Capability]string { return nil }

func (harness) Serve(t testing.TB, app conformance.App) string {
	own := map[string]bool{}
	for _, rt := range app.Routes {
		if rt.Settings != (idem.Route{}) || rt.Outer != (idem.Route{}) {
			own[rt.Method+" "+rt.Path] = true
		}
	}
	r := gin.New()
	r.Use(gin.RecoveryWithWriter(io.Discard), renderErrors)
	r.Use(layer(app.Engine, app.Settings, idemgin.Skip(func(c *gin.Context) bool {
		return own[c.Request.Method+" "+c.FullPath()]
	})))
	for _, rt := range app.Routes {
		var handlers []gin.HandlerFunc
		for _, s := range []idem.Route{rt.Outer, rt.Settings} {
			if s != (idem.Route{}) {
				handlers = append(handlers, layer(app.Engine, conformance.Merge(s, app.Settings)))
			}
		}
		r.Handle(rt.Method, rt.Path, append(handlers, scripted(rt.Handler))...)
	}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv.URL
}

// layer is the idemgin middleware with the settings s.
func layer(e *idem.Engine, s idem.Route, opts ...idemgin.Option) gin.HandlerFunc {
	return idemgin.Middleware(e, append(opts, idemgin.Policy(s.Policy), idemgin.Store(s.Store), idemgin.Retention(s.Retention))...)
}

// renderErrors answers 500 for a request whose handler recorded an error
// with c.Error and wrote nothing, as gin applications do.
func renderErrors(c *gin.Context) {
	c.Next()
	if len(c.Errors) > 0 && !c.Writer.Written() {
		c.JSON(http.StatusInternalServerError, gin.H{"error": c.Errors.Last().Error()})
	}
}

// scripted runs a conformance handler as a gin handler. Fail records the
// error with c.Error, gin's way for a handler to fail.
func scripted(h *conformance.Handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		body, err := io.ReadAll(c.Request.Body)
		if err != nil {
			_ = c.AbortWithError(http.StatusBadRequest, err)
			return
		}
		step := h.Serve(c.Request.Context(), body)
		w := c.Writer
		switch {
		case step.Panic:
			panic("conformance: scripted panic")
		case step.Goexit:
			runtime.Goexit()
		case step.Fail:
			_ = c.Error(conformance.ErrScripted)
			return
		case step.Hijack:
			conn, _, err := w.Hijack()
			if err != nil {
				_ = c.Error(err)
				return
			}
			_, _ = io.WriteString(conn, conformance.HijackedResponse)
			_ = conn.Close()
			return
		}
		for _, f := range step.Header {
			w.Header().Add(f.Name, f.Value)
		}
		if step.JSON {
			c.JSON(step.Status, json.RawMessage(step.Body))
			return
		}
		c.Status(step.Status)
		for _, f := range step.Late {
			w.Header().Add(f.Name, f.Value)
		}
		if len(step.Body) == 0 {
			return
		}
		if step.Flush {
			half := len(step.Body) / 2
			_, _ = w.Write(step.Body[:half])
			w.Flush()
			step.Body = step.Body[half:]
		}
		_, _ = w.Write(step.Body)
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
