package idemhttp_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

func newMemory(t *testing.T) *idem.MemoryStore {
	s := idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1})
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// do serves one POST through h without a network.
func do(h http.Handler, path, key, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// counter is a handler that counts its runs and answers 201.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, "created")
}

func (c *counter) runs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func replayed(rec *httptest.ResponseRecorder) bool {
	return rec.Header().Get(idem.ReplayedHeader) == "true"
}

// A flush through http.ResponseController reaches the Recorder, so the
// response is recorded as streamed and a retry gets 410 (B19).
func TestResponseControllerFlushIsSeen(t *testing.T) {
	e := conformance.NewEngine(t, idem.Config{})
	h := idemhttp.Middleware(e)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "part one,")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("ResponseController.Flush: %v", err)
		}
		_, _ = io.WriteString(w, "part two")
	}))
	if rec := do(h, "/stream", "k1", ""); rec.Body.String() != "part one,part two" || !rec.Flushed {
		t.Fatalf("first response %q (flushed %v), want the whole body, flushed", rec.Body, rec.Flushed)
	}
	if rec := do(h, "/stream", "k1", ""); rec.Code != http.StatusGone {
		t.Fatalf("retry of a flushed response: %d, want 410", rec.Code)
	}
}

// Deadlines set through http.ResponseController reach the connection
// through Unwrap.
func TestUnwrapReachesTheConnection(t *testing.T) {
	e := conformance.NewEngine(t, idem.Config{})
	var unwrapped, deadlineErr error
	h := idemhttp.Middleware(e)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok || u.Unwrap() == nil {
			unwrapped = errors.New("the handler's writer has no Unwrap")
		}
		deadlineErr = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute))
		w.WriteHeader(http.StatusCreated)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	req.Header.Set("Idempotency-Key", "k1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if unwrapped != nil || deadlineErr != nil {
		t.Fatalf("unwrap: %v; SetWriteDeadline: %v", unwrapped, deadlineErr)
	}
}

// io.Copy into the handler's writer uses the Recorder's ReadFrom: a body
// within the limit is replayed byte for byte, a larger one reaches the
// client whole and is not replayable.
func TestReaderFrom(t *testing.T) {
	e := conformance.NewEngine(t, idem.Config{MaxResponseBody: 1000})
	payload := bytes.Repeat([]byte("0123456789"), 300)
	h := idemhttp.Middleware(e)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(io.ReaderFrom); !ok {
			t.Error("the handler's writer is not an io.ReaderFrom")
		}
		n := len(payload)
		if r.URL.Path == "/small" {
			n = 1000
		}
		// A reader without WriteTo, so io.Copy calls ReadFrom.
		_, _ = io.Copy(w, io.LimitReader(bytes.NewReader(payload), int64(n)))
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, nil)
		req.Header.Set("Idempotency-Key", "k"+path)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for range 2 {
		if code, b := get("/small"); code != 200 || !bytes.Equal(b, payload[:1000]) {
			t.Fatalf("/small: %d, %d bytes; want 200 and the 1000 bytes", code, len(b))
		}
	}
	if code, b := get("/large"); code != 200 || !bytes.Equal(b, payload) {
		t.Fatalf("/large: %d, %d bytes; want 200 and %d bytes", code, len(b), len(payload))
	}
	if code, _ := get("/large"); code != http.StatusGone {
		t.Fatalf("/large retry: %d, want 410", code)
	}
}

// A panic releases the key and still reaches the caller's recovery with
// its own value (B15).
func TestPanicReachesRecovery(t *testing.T) {
	e := conformance.NewEngine(t, idem.Config{})
	boom := errors.New("boom")
	runs := 0
	h := idemhttp.Middleware(e)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		panic(boom)
	}))
	for i := range 2 {
		func() {
			defer func() {
				if v := recover(); v != boom {
					t.Fatalf("request %d: recovered %v, want the handler's panic", i, v)
				}
			}()
			do(h, "/orders", "k1", "")
		}()
	}
	if runs != 2 {
		t.Fatalf("the handler ran %d times, want 2: the panic did not release the key", runs)
	}
}

// Directly nested layers merge: the inner layer's settings win and only one
// layer runs (B2).
func TestNestedLayersMerge(t *testing.T) {
	engineStore, routeStore := newMemory(t), newMemory(t)
	e := conformance.NewEngine(t, idem.Config{Store: engineStore})

	exempt := &counter{}
	h := idemhttp.Middleware(e)(idemhttp.Exempt(e)(exempt))
	do(h, "/hooks", "", "")
	do(h, "/hooks", "k1", "")
	do(h, "/hooks", "k1", "")
	if exempt.runs() != 3 {
		t.Fatalf("Exempt inside Middleware ran %d times, want 3", exempt.runs())
	}

	// The outer store, the inner policy.
	manual := &counter{}
	h = idemhttp.Required(e, idemhttp.Store(routeStore))(idemhttp.Manual(e)(manual))
	do(h, "/orders", "k2", "a")
	rec := do(h, "/orders", "k2", "a")
	if manual.runs() != 2 || replayed(rec) {
		t.Fatalf("Manual inside Required: %d runs, replayed %v; want the Manual handler to run twice", manual.runs(), replayed(rec))
	}
	if n, _ := routeStore.Stats(); n != 1 {
		t.Fatalf("the outer layer's store holds %d records, want 1", n)
	}
	if n, _ := engineStore.Stats(); n != 0 {
		t.Fatalf("the engine's store holds %d records, want 0", n)
	}
}

// Behind a global Exempt or Optional Middleware, routes opt in with their
// own layers (B2).
func TestGlobalLayerLetsRoutesOptIn(t *testing.T) {
	for _, policy := range []idem.Policy{idem.Exempt, idem.Optional} {
		t.Run(policy.String(), func(t *testing.T) {
			var logs lockedBuffer
			e := conformance.NewEngine(t, idem.Config{Scope: oneTenant,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
			plain, orders := &counter{}, &counter{}
			mux := http.NewServeMux()
			mux.Handle("POST /plain", plain)
			mux.Handle("POST /orders", idemhttp.Required(e)(orders))
			h := idemhttp.Middleware(e, idemhttp.Policy(policy))(mux)

			if rec := do(h, "/plain", "", ""); rec.Code != http.StatusCreated {
				t.Fatalf("plain route without a key: %d", rec.Code)
			}
			if rec := do(h, "/orders", "", ""); rec.Code != http.StatusBadRequest {
				t.Fatalf("Required route without a key: %d, want 400", rec.Code)
			}
			do(h, "/orders", "k1", "")
			if rec := do(h, "/orders", "k1", ""); !replayed(rec) || orders.runs() != 1 {
				t.Fatalf("Required route retry: replayed %v after %d runs; want a replay after 1", replayed(rec), orders.runs())
			}
			if logs.String() != "" {
				t.Fatalf("warnings for a route that opted in as documented:\n%s", logs.String())
			}
		})
	}
}

// When an outer layer handled a request, an inner layer with other
// settings passes it through and warns once (B2). The outer layer here
// wraps a router it cannot look into (a ServeMux behind a HandlerFunc; a
// ServeMux itself is looked into, see TestMiddlewareAroundServeMux).
func TestIgnoredInnerLayerWarnsOnce(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e := conformance.NewEngine(t, idem.Config{Logger: logger})
	hooks := &counter{}
	mux := http.NewServeMux()
	mux.Handle("POST /hooks", idemhttp.Exempt(e)(hooks))
	h := idemhttp.Middleware(e)(http.HandlerFunc(mux.ServeHTTP)) // Required by default

	do(h, "/hooks", "k1", "")
	if rec := do(h, "/hooks", "k1", ""); !replayed(rec) || hooks.runs() != 1 {
		t.Fatalf("the outer Required layer did not handle the request: replayed %v, %d runs", replayed(rec), hooks.runs())
	}
	if n := strings.Count(logs.String(), "route-level setting ignored"); n != 1 {
		t.Fatalf("%d warnings, want 1; logs:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "route=\"POST /hooks\"") {
		t.Fatalf("the warning does not name the route: %s", logs.String())
	}
}

// A Middleware around an http.ServeMux applies the settings of the layer a
// route's handler is, the route's winning (B2), although the mux runs that
// layer after it: an Exempt route runs every time, an Optional route with
// a store of its own runs without a key and keeps its records there, a
// route without a layer gets the Middleware's settings, and nothing warns.
// Events name routes by their pattern.
func TestMiddlewareAroundServeMux(t *testing.T) {
	var logs lockedBuffer
	var routes routeNames
	engineStore, routeStore := newMemory(t), newMemory(t)
	e := conformance.NewEngine(t, idem.Config{Store: engineStore, Observer: &routes, Scope: oneTenant,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	hooks, orders, plain := &counter{}, &counter{}, &counter{}
	mux := http.NewServeMux()
	mux.Handle("POST /hooks", idemhttp.Exempt(e)(hooks))
	mux.Handle("POST /orders/{id}", idemhttp.Optional(e, idemhttp.Store(routeStore))(orders))
	mux.Handle("POST /plain", plain)
	h := idemhttp.Middleware(e)(mux) // Required by default

	for range 2 {
		if rec := do(h, "/hooks", "k1", ""); rec.Code != http.StatusCreated || replayed(rec) {
			t.Fatalf("Exempt route: %d, replayed %v", rec.Code, replayed(rec))
		}
	}
	if hooks.runs() != 2 {
		t.Fatalf("the Exempt route ran %d times for 2 requests", hooks.runs())
	}
	if rec := do(h, "/orders/7", "", ""); rec.Code != http.StatusCreated {
		t.Fatalf("Optional route without a key: %d, want 201", rec.Code)
	}
	do(h, "/orders/7", "k2", "")
	if rec := do(h, "/orders/7", "k2", ""); !replayed(rec) || orders.runs() != 2 {
		t.Fatalf("Optional route with a key: replayed %v after %d runs; want a replay after 2", replayed(rec), orders.runs())
	}
	if n, _ := routeStore.Stats(); n != 1 {
		t.Fatalf("the route's store holds %d records, want 1", n)
	}
	if rec := do(h, "/plain", "", ""); rec.Code != http.StatusBadRequest || plain.runs() != 0 {
		t.Fatalf("route without a layer, without a key: %d after %d runs; want the Middleware's 400", rec.Code, plain.runs())
	}
	do(h, "/plain", "k3", "")
	if rec := do(h, "/plain", "k3", ""); !replayed(rec) || plain.runs() != 1 {
		t.Fatalf("route without a layer: replayed %v after %d runs", replayed(rec), plain.runs())
	}
	if n, _ := engineStore.Stats(); n != 1 {
		t.Fatalf("the engine's store holds %d records, want 1 (/plain)", n)
	}
	if logs.String() != "" {
		t.Fatalf("warnings although every route's settings applied:\n%s", logs.String())
	}
	routes.expect(t, "POST /hooks", "POST /orders/{id}", "POST /plain")
}

// routeNames collects the route names of events.
type routeNames struct{ conformance.EventRecorder }

// expect fails t unless every event named one of want and each of want
// named an event.
func (o *routeNames) expect(t *testing.T, want ...string) {
	t.Helper()
	seen := map[string]bool{}
	for _, ev := range o.Events() {
		if !slices.Contains(want, ev.Route) {
			t.Fatalf("event for route %q; want only %q", ev.Route, want)
		}
		seen[ev.Route] = true
	}
	if len(seen) != len(want) {
		t.Fatalf("events named %v, want all of %q", seen, want)
	}
}

// lockedBuffer collects log output from any goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ProblemHandler renders the engine's problems the application's way
// (B25).
func TestProblemHandler(t *testing.T) {
	e := conformance.NewEngine(t, idem.Config{})
	h := idemhttp.Required(e, idemhttp.ProblemHandler(func(w http.ResponseWriter, r *http.Request, p *idem.Problem) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(p.Status)
		_, _ = io.WriteString(w, "custom "+p.Rule)
	}))(&counter{})
	rec := do(h, "/orders", "", "")
	if rec.Code != 400 || rec.Body.String() != "custom B6" || rec.Header().Get("Content-Type") != "text/plain" {
		t.Fatalf("got %d %q (%s), want the application's rendering", rec.Code, rec.Body, rec.Header().Get("Content-Type"))
	}
	// A replay is not a problem: the engine writes it.
	do(h, "/orders", "k1", "")
	if rec := do(h, "/orders", "k1", ""); !replayed(rec) || rec.Body.String() != "created" {
		t.Fatalf("replay %q, replayed %v", rec.Body, replayed(rec))
	}
}

// Events name the route by the ServeMux pattern, or by RouteName.
func TestRouteNames(t *testing.T) {
	var routes routeNames
	e := conformance.NewEngine(t, idem.Config{Observer: &routes})
	mux := http.NewServeMux()
	mux.Handle("POST /orders/{id}", idemhttp.Required(e)(&counter{}))
	mux.Handle("POST /named", idemhttp.Required(e, idemhttp.RouteName(func(*http.Request) string { return "named" }))(&counter{}))
	do(mux, "/orders/7", "k1", "")
	do(mux, "/named", "k2", "")
	routes.expect(t, "POST /orders/{id}", "named")
}

// The handler reads the body the client sent although the engine read it
// first (B21).
func TestHandlerReadsBody(t *testing.T) {
	e := conformance.NewEngine(t, idem.Config{})
	var got []byte
	h := idemhttp.Required(e)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
	}))
	do(h, "/orders", "k1", "line one\r\nline two\x00")
	if string(got) != "line one\r\nline two\x00" {
		t.Fatalf("handler read %q", got)
	}
}

// A handler that hijacks the connection gives the key up as soon as it
// holds the connection (B19): a retry sent while the hijacked session is
// still open runs, instead of waiting out a 409.
func TestHijackReleasesTheKeyAtOnce(t *testing.T) {
	e := conformance.NewEngine(t, idem.Config{})
	hijacked, finish := make(chan struct{}), make(chan struct{})
	var retries counter
	h := idemhttp.Required(e)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Hijack") == "" {
			retries.ServeHTTP(w, r)
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			close(hijacked)
			return
		}
		defer conn.Close()
		close(hijacked)
		<-finish
		_, _ = io.WriteString(conn, conformance.HijackedResponse)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(hijack bool) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/ws", nil)
		req.Header.Set("Idempotency-Key", "session-1")
		if hijack {
			req.Header.Set("X-Hijack", "1")
		}
		return srv.Client().Do(req)
	}

	first := make(chan error, 1)
	go func() {
		resp, err := post(true)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		first <- err
	}()
	<-hijacked
	resp, err := post(false)
	close(finish)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || retries.runs() != 1 {
		t.Errorf("retry during the hijacked session: status %d after %d runs, want the handler run (201)", resp.StatusCode, retries.runs())
	}
	if err := <-first; err != nil {
		t.Errorf("hijacked request: %v", err)
	}
}

// Options that no route could use make Middleware panic when it is built.
func TestMiddlewareRefusesBadSettings(t *testing.T) {
	e := conformance.NewEngine(t, idem.Config{})
	for name, opt := range map[string]idemhttp.Option{
		"policy":    idemhttp.Policy(idem.Manual + 1),
		"retention": idemhttp.Retention(time.Microsecond),
	} {
		func() {
			defer func() {
				if v := recover(); v == nil || !strings.Contains(v.(string), "idemhttp: ") {
					t.Errorf("%s: recovered %v, want an idemhttp panic", name, v)
				}
			}()
			idemhttp.Middleware(e, opt)
		}()
	}
	idemhttp.Required(e, idemhttp.Retention(time.Millisecond)) // valid: no panic
}

// oneTenant scopes every request to one tenant, so that the warnings the
// tests count are about stacking only, not about an empty scope (B32).
func oneTenant(*idem.Request) string { return "tenant" }
