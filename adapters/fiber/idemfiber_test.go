package idemfiber_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	idemfiber "github.com/idemkit/idem/adapters/fiber"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// newEngine is the conformance suite's engine helper: closed at cleanup.
var newEngine = conformance.NewEngine

// serve runs f on a loopback listener until t's cleanup.
func serve(t testing.TB, f *fiber.App) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Listener(ln)
	}()
	t.Cleanup(func() {
		_ = f.Shutdown()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// client speaks to a test server; keep-alives stay on so that fasthttp
// reuses its per-connection buffers between requests.
type client struct {
	t    testing.TB
	base string
	http *http.Client
}

func newClient(t testing.TB, base string) *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, base: base, http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// do sends method path with body; header holds name, value pairs, set
// verbatim (without canonicalizing the name).
func (c *client) do(method, path string, body []byte, header ...string) reply {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header[header[i]] = append(req.Header[header[i]], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

func (c *client) post(path, key string, body []byte, header ...string) reply {
	c.t.Helper()
	if key != "" {
		header = append(header, "Idempotency-Key", key)
	}
	return c.do(http.MethodPost, path, body, header...)
}

func problemType(t testing.TB, r reply) string {
	t.Helper()
	var p struct{ Type string }
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("status %d, body %q is not a problem: %v", r.status, r.body, err)
	}
	return p.Type
}

// TestReplayedResponseSurvivesBufferReuse records many responses under
// concurrent load on keep-alive connections, then replays them while other
// requests churn fasthttp's reused buffers: every replay must still be the
// original body and headers byte for byte.
func TestReplayedResponseSurvivesBufferReuse(t *testing.T) {
	e := newEngine(t, idem.Config{})
	var calls atomic.Int64
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Post("/orders", idemfiber.Required(e), func(c *fiber.Ctx) error {
		calls.Add(1)
		c.Set(fiber.HeaderLocation, "/orders/"+c.Get("X-Order"))
		c.Set(fiber.HeaderContentType, "application/x-order-"+c.Get("X-Order"))
		return c.Status(fiber.StatusCreated).Send(c.Body())
	})
	cl := newClient(t, serve(t, app))

	const n, workers = 400, 8
	rng := rand.New(rand.NewPCG(1, 2))
	bodies := make([][]byte, n)
	for i := range bodies {
		b := make([]byte, 1+rng.IntN(4000))
		for j := range b {
			b[j] = byte('a' + rng.IntN(26))
		}
		bodies[i] = b
	}
	key := func(i int) string { return "order-key-" + strconv.Itoa(i) }
	check := func(i int, r reply, replayed bool) error {
		switch {
		case r.status != fiber.StatusCreated:
			return fmt.Errorf("request %d: status %d, body %q", i, r.status, r.body)
		case !bytes.Equal(r.body, bodies[i]):
			return fmt.Errorf("request %d (replayed %v): body differs from the one sent (%d bytes, want %d)", i, replayed, len(r.body), len(bodies[i]))
		case r.header.Get("Location") != "/orders/"+strconv.Itoa(i):
			return fmt.Errorf("request %d (replayed %v): Location %q", i, replayed, r.header.Get("Location"))
		case r.header.Get("Content-Type") != "application/x-order-"+strconv.Itoa(i):
			return fmt.Errorf("request %d (replayed %v): Content-Type %q", i, replayed, r.header.Get("Content-Type"))
		case (r.header.Get(idem.ReplayedHeader) == "true") != replayed:
			return fmt.Errorf("request %d: Idempotent-Replayed %q, want replayed %v", i, r.header.Get(idem.ReplayedHeader), replayed)
		}
		return nil
	}
	parallel := func(do func(i int) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		next := atomic.Int64{}
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					if err := do(i); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}

	parallel(func(i int) error {
		return check(i, cl.post("/orders", key(i), bodies[i], "X-Order", strconv.Itoa(i)), false)
	})
	if got := calls.Load(); got != n {
		t.Fatalf("handler ran %d times for %d keys", got, n)
	}
	// Replays, each followed by a fresh request with other bytes on the
	// same connections.
	parallel(func(i int) error {
		if err := check(i, cl.post("/orders", key(i), bodies[i], "X-Order", strconv.Itoa(i)), true); err != nil {
			return err
		}
		other := bytes.Repeat([]byte{'#'}, len(bodies[(i+1)%n]))
		r := cl.post("/orders", "churn-"+strconv.Itoa(i), other, "X-Order", "churn")
		if r.status != fiber.StatusCreated || !bytes.Equal(r.body, other) {
			return fmt.Errorf("churn request %d: status %d", i, r.status)
		}
		return nil
	})
	if got := calls.Load(); got != 2*n {
		t.Errorf("handler ran %d times, want %d (%d keys, %d churn keys)", got, 2*n, n, n)
	}
}

var errPayment = errors.New("payment provider unavailable")

// TestHandlerErrorRenderedByErrorHandler: an error the handler returns is
// rendered once by the app's ErrorHandler, that rendering is what the
// client gets, and the key stays free for a retry (B15).
func TestHandlerErrorRenderedByErrorHandler(t *testing.T) {
	obs := &conformance.EventRecorder{}
	e := newEngine(t, idem.Config{Observer: obs})
	var rendered, calls atomic.Int64
	var outerSaw atomic.Value
	app := fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ErrorHandler: func(c *fiber.Ctx, err error) error {
			rendered.Add(1)
			return c.Status(fiber.StatusServiceUnavailable).SendString("rendered: " + err.Error())
		},
	})
	app.Use(func(c *fiber.Ctx) error {
		err := c.Next()
		outerSaw.Store(fmt.Sprint(err))
		return err
	})
	app.Use(idemfiber.New(e))
	app.Post("/pay", func(c *fiber.Ctx) error {
		if calls.Add(1) == 1 {
			return errPayment
		}
		return c.Status(fiber.StatusCreated).SendString("paid")
	})
	cl := newClient(t, serve(t, app))

	r := cl.post("/pay", "pay-1", []byte(`{"amount":10}`))
	if r.status != fiber.StatusServiceUnavailable || string(r.body) != "rendered: "+errPayment.Error() {
		t.Fatalf("first request: %d %q, want the ErrorHandler's 503", r.status, r.body)
	}
	if got := rendered.Load(); got != 1 {
		t.Errorf("ErrorHandler ran %d times, want once", got)
	}
	if got := outerSaw.Load(); got != "<nil>" {
		t.Errorf("outer middleware saw error %v, want nil (the error is rendered inside)", got)
	}
	rel := obs.With(idem.Released)
	if len(rel) != 1 || !errors.Is(rel[0].Err, errPayment) {
		t.Errorf("released events %+v, want one carrying the handler's error", rel)
	}

	r = cl.post("/pay", "pay-1", []byte(`{"amount":10}`))
	if r.status != fiber.StatusCreated || string(r.body) != "paid" {
		t.Fatalf("retry: %d %q, want the handler to run again", r.status, r.body)
	}
	r = cl.post("/pay", "pay-1", []byte(`{"amount":10}`))
	if r.status != fiber.StatusCreated || r.header.Get(idem.ReplayedHeader) != "true" {
		t.Fatalf("second retry: %d %q, want a replay", r.status, r.body)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("handler ran %d times, want 2", got)
	}
}

// TestPanicReachesRecover: a panic gives the lease up and still reaches
// fiber's recover middleware.
func TestPanicReachesRecover(t *testing.T) {
	e := newEngine(t, idem.Config{})
	var calls atomic.Int64
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	var recovered atomic.Value
	app.Use(recover.New(recover.Config{EnableStackTrace: true, StackTraceHandler: func(_ *fiber.Ctx, r interface{}) {
		recovered.Store(fmt.Sprint(r))
	}}))
	app.Use(idemfiber.New(e))
	app.Post("/orders", func(c *fiber.Ctx) error {
		if calls.Add(1) == 1 {
			panic("database gone")
		}
		return c.SendString("ok")
	})
	cl := newClient(t, serve(t, app))
	if r := cl.post("/orders", "k-panic", nil); r.status != fiber.StatusInternalServerError {
		t.Fatalf("panicking request: status %d, want 500 from recover", r.status)
	}
	if got := recovered.Load(); got != "database gone" {
		t.Errorf("recover saw %v, want the handler's panic value", got)
	}
	if r := cl.post("/orders", "k-panic", nil); r.status != fiber.StatusOK || string(r.body) != "ok" {
		t.Fatalf("retry: %d %q, want the handler to run again", r.status, r.body)
	}
}

// TestNextSkips: requests for which Config.Next returns true are not
// tracked at all.
func TestNextSkips(t *testing.T) {
	e := newEngine(t, idem.Config{})
	var calls atomic.Int64
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(idemfiber.New(e, idemfiber.Config{Next: func(c *fiber.Ctx) bool {
		return strings.HasPrefix(c.Path(), "/internal/")
	}}))
	handler := func(c *fiber.Ctx) error { return c.SendString("n=" + strconv.FormatInt(calls.Add(1), 10)) }
	app.Post("/internal/jobs", handler)
	app.Post("/orders", handler)
	cl := newClient(t, serve(t, app))

	if r := cl.post("/internal/jobs", "", nil); r.status != fiber.StatusOK {
		t.Errorf("skipped route without a key: status %d, want 200", r.status)
	}
	a := cl.post("/internal/jobs", "same", nil)
	b := cl.post("/internal/jobs", "same", nil)
	if string(a.body) == string(b.body) || b.header.Get(idem.ReplayedHeader) != "" {
		t.Errorf("skipped route replayed: %q then %q", a.body, b.body)
	}
	r := cl.post("/orders", "", nil)
	if r.status != fiber.StatusBadRequest || problemType(t, r) != idem.ProblemKeyMissing {
		t.Errorf("tracked route without a key: %d %q, want 400 key-missing", r.status, r.body)
	}
}

// TestSendStreamNotReplayable: a streamed body reaches the client whole but
// is not replayable (B19).
func TestSendStreamNotReplayable(t *testing.T) {
	e := newEngine(t, idem.Config{})
	payload := bytes.Repeat([]byte("report line\n"), 5000)
	var calls atomic.Int64
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Post("/reports", idemfiber.Required(e), func(c *fiber.Ctx) error {
		calls.Add(1)
		c.Set(fiber.HeaderContentType, "text/plain")
		return c.SendStream(bytes.NewReader(payload))
	})
	cl := newClient(t, serve(t, app))

	r := cl.post("/reports", "k-stream", nil)
	if r.status != fiber.StatusOK || !bytes.Equal(r.body, payload) {
		t.Fatalf("first request: status %d, %d bytes, want 200 with the whole %d-byte stream", r.status, len(r.body), len(payload))
	}
	r = cl.post("/reports", "k-stream", nil)
	if r.status != fiber.StatusGone || problemType(t, r) != idem.ProblemNotReplayable {
		t.Fatalf("retry: %d %q, want 410 not-replayable", r.status, r.body)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("handler ran %d times, want once", got)
	}
}

// TestStreamRequestBody: with fiber's StreamRequestBody the engine reads the
// body stream for the fingerprint, the handler still reads the bytes the
// client sent (B21) and the request body limit holds (413).
func TestStreamRequestBody(t *testing.T) {
	e := newEngine(t, idem.Config{MaxRequestBody: 256 << 10})
	var calls atomic.Int64
	var streamed atomic.Bool
	app := fiber.New(fiber.Config{DisableStartupMessage: true, StreamRequestBody: true})
	app.Use(func(c *fiber.Ctx) error {
		if c.Context().RequestBodyStream() != nil {
			streamed.Store(true)
		}
		return c.Next()
	})
	app.Post("/upload", idemfiber.Required(e), func(c *fiber.Ctx) error {
		calls.Add(1)
		return c.Send(c.Body())
	})
	cl := newClient(t, serve(t, app))

	body := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
	r := cl.post("/upload", "k-up", body)
	if r.status != fiber.StatusOK || !bytes.Equal(r.body, body) {
		t.Fatalf("first request: status %d, %d bytes echoed, want 200 with the %d bytes sent", r.status, len(r.body), len(body))
	}
	if !streamed.Load() {
		t.Fatal("fiber did not stream the request body; the test checks nothing")
	}
	r = cl.post("/upload", "k-up", body)
	if r.header.Get(idem.ReplayedHeader) != "true" || !bytes.Equal(r.body, body) {
		t.Fatalf("retry: status %d, replayed %q, want a byte-identical replay", r.status, r.header.Get(idem.ReplayedHeader))
	}
	other := append(bytes.Clone(body[:len(body)-1]), '!')
	if r = cl.post("/upload", "k-up", other); r.status != fiber.StatusUnprocessableEntity {
		t.Fatalf("same key, other body: status %d, want 422", r.status)
	}
	if r = cl.post("/upload", "k-big", bytes.Repeat([]byte("x"), 300<<10)); r.status != fiber.StatusRequestEntityTooLarge {
		t.Fatalf("body over the limit: status %d, want 413", r.status)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("handler ran %d times, want once", got)
	}
}

// TestHeaderNamesAsSent: with DisableHeaderNormalizing fasthttp keeps header
// names as sent; the key header still matches case-insensitively (B4), and
// a response header set in lower case is still recorded and replayed.
func TestHeaderNamesAsSent(t *testing.T) {
	e := newEngine(t, idem.Config{})
	var calls atomic.Int64
	app := fiber.New(fiber.Config{DisableStartupMessage: true, DisableHeaderNormalizing: true})
	app.Post("/orders", idemfiber.Required(e), func(c *fiber.Ctx) error {
		n := calls.Add(1)
		c.Response().Header.Set("location", "/orders/"+strconv.FormatInt(n, 10))
		return c.Status(fiber.StatusCreated).SendString("created")
	})
	cl := newClient(t, serve(t, app))

	a := cl.post("/orders", "", nil, "idempotency-key", "lower-1")
	b := cl.post("/orders", "", nil, "IDEMPOTENCY-KEY", "lower-1")
	if a.status != fiber.StatusCreated || b.header.Get(idem.ReplayedHeader) != "true" {
		t.Fatalf("statuses %d, %d (replayed %q): the key was not read", a.status, b.status, b.header.Get(idem.ReplayedHeader))
	}
	if got := b.header.Get("Location"); got != "/orders/1" {
		t.Errorf("replayed Location %q, want /orders/1", got)
	}
	if r := cl.post("/orders", "", nil); r.status != fiber.StatusBadRequest {
		t.Errorf("no key: status %d, want 400", r.status)
	}
}

// countingStore counts the calls that reach a store and the retention of
// completed records.
type countingStore struct {
	idem.Store
	acquires  atomic.Int64
	retention atomic.Int64
}

func (s *countingStore) Acquire(ctx context.Context, key string, token idem.Token, fp []byte, lease time.Duration) (*idem.Record, error) {
	s.acquires.Add(1)
	return s.Store.Acquire(ctx, key, token, fp, lease)
}

func (s *countingStore) Complete(ctx context.Context, key string, token idem.Token, rec *idem.Record, retention time.Duration) error {
	s.retention.Store(int64(retention))
	return s.Store.Complete(ctx, key, token, rec, retention)
}

func newCountingStore(t testing.TB) *countingStore {
	m := idem.NewMemoryStore(idem.MemoryOptions{})
	t.Cleanup(func() { _ = m.Close() })
	return &countingStore{Store: m}
}

// captureHandler is a slog.Handler that keeps warning messages.
type captureHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *captureHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

func (h *captureHandler) count(sub string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if strings.Contains(m, sub) {
			n++
		}
	}
	return n
}

// TestStacking: an outer handler that does not take part lets the route's
// handler decide, with the route's settings winning and the outer ones
// filling the gaps; an outer handler that took part wins and the ignored
// route-level setting is logged once.
func TestStacking(t *testing.T) {
	t.Run("outer exempt, routes opt in", func(t *testing.T) {
		engineStore, outerStore, routeStore := newCountingStore(t), newCountingStore(t), newCountingStore(t)
		obs := &conformance.EventRecorder{}
		e := newEngine(t, idem.Config{Store: engineStore, Observer: obs})
		app := fiber.New(fiber.Config{DisableStartupMessage: true})
		app.Use(idemfiber.New(e, idemfiber.Config{Policy: idem.Exempt, Store: outerStore, Retention: time.Hour,
			ProblemHandler: func(c *fiber.Ctx, p *idem.Problem) error { return c.Status(p.Status).SendString("app: " + p.Rule) }}))
		ok := func(c *fiber.Ctx) error { return c.SendString("ok") }
		app.Post("/orders", idemfiber.Required(e), ok)
		app.Post("/refunds", idemfiber.Required(e, idemfiber.Config{Store: routeStore, Retention: time.Minute}), ok)
		app.Post("/notes", ok)
		cl := newClient(t, serve(t, app))

		if r := cl.post("/orders", "", nil); r.status != fiber.StatusBadRequest || string(r.body) != "app: B6" {
			t.Errorf("route-level Required without a key: %d %q, want 400 rendered by the outer ProblemHandler", r.status, r.body)
		}
		if r := cl.post("/notes", "", nil); r.status != fiber.StatusOK {
			t.Errorf("outer Exempt without a key: status %d, want 200", r.status)
		}
		a, b := cl.post("/notes", "n1", nil), cl.post("/notes", "n1", nil)
		if a.status != fiber.StatusOK || b.header.Get(idem.ReplayedHeader) != "" {
			t.Errorf("outer Exempt with a key: statuses %d, %d, replayed %q; want no tracking", a.status, b.status, b.header.Get(idem.ReplayedHeader))
		}
		cl.post("/orders", "k1", nil)
		if got := outerStore.retention.Load(); outerStore.acquires.Load() != 1 || got != int64(time.Hour) {
			t.Errorf("/orders: outer store saw %d acquires, retention %v; want the outer handler's store and retention", outerStore.acquires.Load(), time.Duration(got))
		}
		cl.post("/refunds", "k2", nil)
		if got := routeStore.retention.Load(); routeStore.acquires.Load() != 1 || got != int64(time.Minute) {
			t.Errorf("/refunds: route store saw %d acquires, retention %v; want the route's store and retention", routeStore.acquires.Load(), time.Duration(got))
		}
		if n := engineStore.acquires.Load(); n != 0 {
			t.Errorf("the engine's store saw %d acquires, want none", n)
		}
		executed := obs.With(idem.Executed)
		if len(executed) != 2 || executed[0].Route != "/orders" || executed[1].Route != "/refunds" {
			t.Errorf("executed events %+v, want routes /orders and /refunds", executed)
		}
	})

	// An outer handler takes part in keyed requests: the route-level
	// handler passes through, with a warning where its setting differs.
	for _, tc := range []struct {
		name      string
		outer     idem.Policy
		route     func(*idem.Engine, ...idemfiber.Config) fiber.Handler
		warnings  int
		noKeyFrom string
	}{
		{"outer optional, route required", idem.Optional, idemfiber.Required, 0, "the route's Required handler"},
		{"outer required, route exempt", idem.Inherit, idemfiber.Exempt, 1, "the outer Required handler"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &captureHandler{}
			e := newEngine(t, idem.Config{Logger: slog.New(logs)})
			app := fiber.New(fiber.Config{DisableStartupMessage: true})
			app.Use(idemfiber.New(e, idemfiber.Config{Policy: tc.outer}))
			var calls atomic.Int64
			app.Post("/orders", tc.route(e), func(c *fiber.Ctx) error {
				return c.SendString(strconv.FormatInt(calls.Add(1), 10))
			})
			cl := newClient(t, serve(t, app))
			if r := cl.post("/orders", "", nil); r.status != fiber.StatusBadRequest {
				t.Errorf("no key: status %d, want 400 from %s", r.status, tc.noKeyFrom)
			}
			cl.post("/orders", "o1", nil)
			if r := cl.post("/orders", "o1", nil); r.header.Get(idem.ReplayedHeader) != "true" || calls.Load() != 1 {
				t.Errorf("retry: replayed %q after %d calls, want a replay", r.header.Get(idem.ReplayedHeader), calls.Load())
			}
			cl.post("/orders", "o2", nil)
			if n := logs.count("route-level setting ignored"); n != tc.warnings {
				t.Errorf("warning logged %d times, want %d", n, tc.warnings)
			}
		})
	}
}

// TestProblemHandler: the application renders the engine's problems its
// own way (B25); replays do not go through it.
func TestProblemHandler(t *testing.T) {
	e := newEngine(t, idem.Config{})
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(idemfiber.New(e, idemfiber.Config{ProblemHandler: func(c *fiber.Ctx, p *idem.Problem) error {
		return c.Status(p.Status).JSON(fiber.Map{"error": p.Rule})
	}}))
	app.Post("/orders", func(c *fiber.Ctx) error { return c.SendString("created") })
	cl := newClient(t, serve(t, app))

	r := cl.post("/orders", "", nil)
	if r.status != fiber.StatusBadRequest || string(r.body) != `{"error":"B6"}` {
		t.Errorf("missing key: %d %q, want the application's rendering", r.status, r.body)
	}
	cl.post("/orders", "k", nil)
	if r = cl.post("/orders", "k", nil); string(r.body) != "created" {
		t.Errorf("replay: %q, want the recorded body", r.body)
	}
	if r = cl.post("/orders", "k", []byte("other")); r.status != fiber.StatusUnprocessableEntity || string(r.body) != `{"error":"B10"}` {
		t.Errorf("key reused: %d %q, want the application's rendering", r.status, r.body)
	}
}

// TestManualFindingInUserContext: a Manual handler reads what the engine
// found from c.UserContext() (B26).
func TestManualFindingInUserContext(t *testing.T) {
	e := newEngine(t, idem.Config{})
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Post("/transfers", idemfiber.Manual(e), func(c *fiber.Ctx) error {
		if f, ok := idem.FindingFrom(c.UserContext()); ok {
			return c.Status(fiber.StatusOK).SendString("found " + f.Kind.String() + ": " + string(f.Response.Body))
		}
		return c.Status(fiber.StatusCreated).SendString("transfer 1")
	})
	cl := newClient(t, serve(t, app))
	if r := cl.post("/transfers", "t1", nil); r.status != fiber.StatusCreated {
		t.Fatalf("first request: status %d", r.status)
	}
	r := cl.post("/transfers", "t1", nil)
	if string(r.body) != "found completed: transfer 1" || r.header.Get(idem.ReplayedHeader) != "" {
		t.Errorf("retry: %q, want the handler's answer from the finding", r.body)
	}
}

// TestManyResponseFields replays the stored fields of a response that
// sets more fields than idemfiber lists in place (it then asks fasthttp
// for each stored name), repeated fields in their order, and leaves the
// others out (B20), with few fields and with many.
func TestManyResponseFields(t *testing.T) {
	for _, extra := range []int{0, 20} {
		e := newEngine(t, idem.Config{})
		app := fiber.New(fiber.Config{DisableStartupMessage: true})
		app.Post("/orders", idemfiber.Required(e), func(c *fiber.Ctx) error {
			for i := range extra {
				c.Set("X-Extra-"+strconv.Itoa(i), "v")
			}
			c.Set(fiber.HeaderContentType, "application/json")
			c.Append(fiber.HeaderLink, "</a>; rel=a")
			c.Append(fiber.HeaderLink, "</b>; rel=b")
			c.Set(fiber.HeaderVary, "Accept")
			return c.Status(fiber.StatusCreated).SendString(`{"id":1}`)
		})
		cl := newClient(t, serve(t, app))
		first := cl.post("/orders", "many-fields", []byte(`{}`))
		replay := cl.post("/orders", "many-fields", []byte(`{}`))
		if first.status != 201 || replay.status != 201 || replay.header.Get(idem.ReplayedHeader) != "true" {
			t.Fatalf("%d extra: statuses %d, %d; replayed %q", extra, first.status, replay.status, replay.header.Get(idem.ReplayedHeader))
		}
		for _, name := range []string{"Content-Type", "Link", "Vary"} {
			if got, want := replay.header.Values(name), first.header.Values(name); !slices.Equal(got, want) || len(want) == 0 {
				t.Errorf("%d extra: replayed %s = %q, the first response had %q", extra, name, got, want)
			}
		}
		if got := replay.header.Get("X-Extra-0"); got != "" {
			t.Errorf("%d extra: X-Extra-0 = %q replayed, but it is not a stored field", extra, got)
		}
		if string(replay.body) != `{"id":1}` {
			t.Errorf("%d extra: replayed body %q", extra, replay.body)
		}
	}
}

// A replay replaces a field an earlier handler already set under a stored
// name instead of adding a second one, as idemhttp's replay does.
func TestReplayReplacesFieldsSetBefore(t *testing.T) {
	e := newEngine(t, idem.Config{})
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderCacheControl, "no-store")
		c.Set("X-Request-Id", "r-1")
		return c.Next()
	})
	app.Post("/orders", idemfiber.Required(e), func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderCacheControl, "max-age=60")
		return c.Status(fiber.StatusCreated).SendString("created")
	})
	cl := newClient(t, serve(t, app))
	cl.post("/orders", "replace", nil)
	r := cl.post("/orders", "replace", nil)
	if r.header.Get(idem.ReplayedHeader) != "true" {
		t.Fatalf("not replayed: %d %v", r.status, r.header)
	}
	if got := r.header.Values(fiber.HeaderCacheControl); !slices.Equal(got, []string{"max-age=60"}) {
		t.Errorf("replayed Cache-Control = %q, want only the stored max-age=60", got)
	}
	if got := r.header.Get("X-Request-Id"); got != "r-1" {
		t.Errorf("X-Request-Id = %q: a field the replay does not store was touched", got)
	}
}
