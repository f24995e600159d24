package idemfiber_test

import (
	"bufio"
	"encoding/json"
	"net"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	idemfiber "github.com/idemkit/idem/adapters/fiber"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// harness serves conformance apps with fiber on a loopback listener.
type harness struct{}

// Serve mounts the engine's handler with the App's settings on the app
// and a route-level handler on each route with its own settings. Fiber runs app-wide middleware
// before it matches the route, so the app-wide handler cannot see a
// route's own handler; the fiber way to give a route its own settings is
// to skip the route in the app-wide handler's Next (see the package doc).
func (harness) Serve(t testing.TB, app conformance.App) string {
	own := map[string]bool{}
	for _, r := range app.Routes {
		if r.Settings != (idem.Route{}) || r.Outer != (idem.Route{}) {
			own[r.Method+" "+r.Path] = true
		}
	}
	f := fiber.New(fiber.Config{DisableStartupMessage: true})
	f.Use(recover.New())
	f.Use(idemfiber.New(app.Engine, idemfiber.Config{Next: func(c *fiber.Ctx) bool {
		return own[c.Method()+" "+c.Path()]
	}, Policy: app.Settings.Policy, Store: app.Settings.Store, Retention: app.Settings.Retention}))
	for _, r := range app.Routes {
		handlers := []fiber.Handler{}
		for _, s := range []idem.Route{r.Outer, r.Settings} {
			if s == (idem.Route{}) {
				continue
			}
			// The route's own handlers replace the app-wide one, so they
			// take what they leave zero from the app-wide settings.
			s = conformance.Merge(s, app.Settings)
			handlers = append(handlers, idemfiber.New(app.Engine, idemfiber.Config{
				Policy: s.Policy, Store: s.Store, Retention: s.Retention,
			}))
		}
		handlers = append(handlers, scripted(r.Handler))
		f.Add(r.Method, r.Path, handlers...)
	}
	return serve(t, f)
}

func (harness) Lacks() map[conformance.Capability]string {
	return map[conformance.Capability]string{
		conformance.Goexit: "fasthttp serves a connection on a worker goroutine with no deferred cleanup: a handler that calls runtime.Goexit leaves the connection open and the client waiting",
	}
}

// scripted runs a conformance handler as a fiber handler.
func scripted(h *conformance.Handler) fiber.Handler {
	return func(c *fiber.Ctx) error {
		step := h.Serve(c.UserContext(), c.Body())
		switch {
		case step.Panic:
			panic("conformance: scripted panic")
		case step.Fail:
			return conformance.ErrScripted
		case step.Hijack:
			c.Context().HijackSetNoResponse(true)
			c.Context().Hijack(func(conn net.Conn) {
				_, _ = conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
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
		c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.Write(body[:len(body)/2])
			_ = w.Flush()
			_, _ = w.Write(body[len(body)/2:])
			_ = w.Flush()
		})
		return nil
	}
}

func TestConformance(t *testing.T) {
	conformance.Run(t, harness{})
}
