package idemfiber3_test

import (
	"bufio"
	"encoding/json"
	"net"
	"testing"

	"github.com/gofiber/fiber/v3"
	"github.com/gofiber/fiber/v3/middleware/recover"

	idemfiber3 "github.com/idemkit/idem/adapters/fiber3"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// harness serves conformance apps with Fiber v3 on a loopback listener.
type harness struct{}

var _ conformance.Harness = harness{}

func (harness) Lacks() map[conformance.Capability]string {
	return map[conformance.Capability]string{
		conformance.Goexit: "fasthttp serves a connection on a worker goroutine with no deferred cleanup: a handler that calls runtime.Goexit leaves the connection open and the client waiting",
	}
}

// Serve mounts recover and the app-wide idem handler with the App's
// settings on the app, and a route-level handler on each route with its
// own settings. Fiber runs app-wide middleware before it matches the
// route, so the app-wide handler cannot see a route's own handler; the
// Fiber way to give a route its own settings is to skip the route in the
// app-wide handler's Next (see the package doc), and the route's handlers
// then take what they leave zero from the app-wide settings.
func (harness) Serve(t testing.TB, app conformance.App) string {
	own := map[string]bool{}
	for _, r := range app.Routes {
		if r.Settings != (idem.Route{}) || r.Outer != (idem.Route{}) {
			own[r.Method+" "+r.Path] = true
		}
	}
	f := fiber.New()
	f.Use(recover.New())
	f.Use(layer(app.Engine, app.Settings, func(c fiber.Ctx) bool { return own[c.Method()+" "+c.Path()] }))
	for _, r := range app.Routes {
		var handlers []any
		for _, s := range []idem.Route{r.Outer, r.Settings} {
			if s != (idem.Route{}) {
				handlers = append(handlers, layer(app.Engine, conformance.Merge(s, app.Settings), nil))
			}
		}
		handlers = append(handlers, scripted(r.Handler))
		f.Add([]string{r.Method}, r.Path, handlers[0], handlers[1:]...)
	}
	return serve(t, f)
}

// layer is the idemfiber3 handler with the settings s, skipping the
// requests next says.
func layer(e *idem.Engine, s idem.Route, next func(fiber.Ctx) bool) fiber.Handler {
	return idemfiber3.New(e, idemfiber3.Config{Next: next, Policy: s.Policy, Store: s.Store, Retention: s.Retention})
}

// scripted runs a conformance handler as a Fiber v3 handler.
func scripted(h *conformance.Handler) fiber.Handler {
	return func(c fiber.Ctx) error {
		step := h.Serve(c.Context(), c.Body())
		fctx := c.RequestCtx()
		switch {
		case step.Panic:
			panic("conformance: scripted panic")
		case step.Fail:
			return conformance.ErrScripted
		case step.Hijack:
			fctx.HijackSetNoResponse(true)
			fctx.Hijack(func(conn net.Conn) {
				_, _ = conn.Write([]byte(conformance.HijackedResponse))
			})
			return nil
		}
		for _, f := range step.Header {
			c.Response().Header.Add(f.Name, f.Value)
		}
		if step.JSON {
			return c.Status(step.Status).JSON(json.RawMessage(step.Body))
		}
		c.Status(step.Status)
		for _, f := range step.Late {
			c.Response().Header.Add(f.Name, f.Value)
		}
		if len(step.Body) == 0 {
			return nil
		}
		if !step.Flush {
			return c.Send(step.Body)
		}
		body := step.Body
		fctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.Write(body[:len(body)/2])
			_ = w.Flush()
			_, _ = w.Write(body[len(body)/2:])
			_ = w.Flush()
		})
		return nil
	}
}

// serve serves f on a loopback listener until the test ends.
func serve(t testing.TB, f *fiber.App) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Listener(ln, fiber.ListenConfig{DisableStartupMessage: true})
	}()
	t.Cleanup(func() {
		_ = f.Shutdown()
		<-done
	})
	return "http://" + ln.Addr().String()
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
