package idem_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	idem "github.com/idemkit/idem/core"
)

// fixture is one engine over a memory store and a fake clock, recording
// every event.
type fixture struct {
	t      *testing.T
	clock  *fakeClock
	store  *idem.MemoryStore
	eng    *idem.Engine
	mu     sync.Mutex
	events []idem.Event
}

func newFixture(t *testing.T, configure func(*idem.Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: newFakeClock()}
	f.store = idem.NewMemoryStore(idem.MemoryOptions{Clock: f.clock, SweepInterval: -1})
	cfg := idem.Config{Store: f.store, Clock: f.clock, Observer: idem.ObserverFunc(func(_ context.Context, ev idem.Event) {
		f.mu.Lock()
		f.events = append(f.events, ev)
		f.mu.Unlock()
	})}
	if configure != nil {
		configure(&cfg)
	}
	eng, err := idem.New(cfg)
	if err != nil {
		t.Fatalf("idem.New: %v", err)
	}
	f.eng = eng
	t.Cleanup(func() { _ = eng.Close(); _ = f.store.Close() })
	return f
}

func (f *fixture) outcomes() []idem.Outcome {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]idem.Outcome, len(f.events))
	for i, ev := range f.events {
		out[i] = ev.Outcome
	}
	return out
}

func (f *fixture) eventsWith(o idem.Outcome) []idem.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []idem.Event
	for _, ev := range f.events {
		if ev.Outcome == o {
			out = append(out, ev)
		}
	}
	return out
}

func (f *fixture) records() int {
	n, _ := f.store.Stats()
	return n
}

// req builds a POST /orders request with the given key ("" for none) and
// body, from one client: its Authorization scopes its keys (B8), so that
// no test but those of B32 meets the empty scope and its report.
func req(key, body string) *idem.Request {
	h := http.Header{"Authorization": {"Bearer test-client"}}
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	return &idem.Request{Method: "POST", Path: "/orders", Header: h, Body: strings.NewReader(body)}
}

// handled is what a client saw for one request.
type handled struct {
	action   idem.Action
	ran      bool
	status   int
	header   http.Header
	body     string
	problem  *idem.Problem
	finding  *idem.Finding
	seenBody string
}

// serve drives one request through the engine, running handler (which
// returns status, headers and body) when the engine says so, and completing
// the lease with what it returned.
func (f *fixture) serve(r *idem.Request, handler func(body []byte) (int, http.Header, string)) handled {
	f.t.Helper()
	d := f.eng.Begin(r)
	out := handled{action: d.Action, problem: d.Problem, finding: d.Finding, header: http.Header{}}
	switch d.Action {
	case idem.Respond:
		out.status = d.Response.Status
		for _, h := range d.Response.Header {
			out.header.Add(h.Name, h.Value)
		}
		out.body = string(d.Response.Body)
		return out
	case idem.Pass, idem.Run:
		body := d.Body
		if !d.BodyRead && r.Body != nil {
			body, _ = io.ReadAll(r.Body)
		}
		out.ran = true
		out.seenBody = string(body)
		status, header, respBody := handler(body)
		out.status, out.header, out.body = status, header, respBody
		if d.Action == idem.Run {
			if err := d.Lease.Complete(idem.Recorded{Status: status, Header: header, Body: []byte(respBody)}); err != nil {
				f.t.Logf("Complete: %v", err)
			}
		}
		return out
	}
	f.t.Fatalf("unknown action %v", d.Action)
	return out
}

// created answers 201 with a JSON body and a few headers.
func created(counter *atomic.Int64) func([]byte) (int, http.Header, string) {
	return func(body []byte) (int, http.Header, string) {
		n := counter.Add(1)
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("Location", "/orders/1")
		h.Set("Set-Cookie", "session=secret")
		h.Set("Date", "Mon, 02 Jan 2006 15:04:05 GMT")
		h.Set("X-Trace", "abc")
		return 201, h, `{"n":` + string(rune('0'+n)) + `,"echo":` + string(body) + `}`
	}
}

func mustStatus(t *testing.T, got handled, want int) {
	t.Helper()
	if got.status != want {
		t.Fatalf("status %d, want %d (body %q)", got.status, want, got.body)
	}
}

func mustProblem(t *testing.T, got handled, status int, typ string) {
	t.Helper()
	mustStatus(t, got, status)
	if got.ran {
		t.Fatalf("the handler ran; want a problem %s", typ)
	}
	if ct := got.header.Get("Content-Type"); ct != idem.ProblemContentType {
		t.Fatalf("Content-Type %q, want %q", ct, idem.ProblemContentType)
	}
	var p struct {
		Type, Title, Detail string
		Status              int
	}
	if err := json.Unmarshal([]byte(got.body), &p); err != nil {
		t.Fatalf("problem body %q: %v", got.body, err)
	}
	if p.Type != typ || p.Status != status || p.Title == "" || p.Detail == "" {
		t.Fatalf("problem %+v, want type %s status %d with title and detail", p, typ, status)
	}
}

func TestEngine(t *testing.T) {
	t.Run("B1_safe_methods_pass_without_key_or_store", func(t *testing.T) {
		f := newFixture(t, nil)
		for _, m := range []string{"GET", "HEAD", "OPTIONS", "TRACE"} {
			r := req("bad key, with list", "")
			r.Method = m
			d := f.eng.Begin(r)
			if d.Action != idem.Pass || d.BodyRead || d.TookPart() {
				t.Fatalf("%s: decision %+v, want an untouched pass", m, d)
			}
		}
		if f.records() != 0 {
			t.Fatalf("store holds %d records after safe requests", f.records())
		}
	})

	t.Run("B1_safe_methods_are_configurable", func(t *testing.T) {
		f := newFixture(t, func(c *idem.Config) { c.SafeMethods = []string{"GET"} })
		r := req("", "")
		r.Method = "HEAD"
		mustProblem(t, f.serve(r, nil), 400, idem.ProblemKeyMissing)
	})

	t.Run("B2_route_policy_overrides_engine_default", func(t *testing.T) {
		f := newFixture(t, func(c *idem.Config) { c.DefaultPolicy = idem.Exempt })
		var n atomic.Int64
		if got := f.serve(req("", "{}"), created(&n)); !got.ran {
			t.Fatal("default Exempt: the handler did not run")
		}
		r := req("", "{}")
		r.Route.Policy = idem.Required
		mustProblem(t, f.serve(r, nil), 400, idem.ProblemKeyMissing)

		g := newFixture(t, nil)
		r = req("", "{}")
		r.Route.Policy = idem.Exempt
		if got := g.serve(r, created(&n)); !got.ran {
			t.Fatal("route Exempt over default Required: the handler did not run")
		}
	})

	t.Run("B3_exempt_ignores_key_and_store", func(t *testing.T) {
		f := newFixture(t, nil)
		var n atomic.Int64
		for range 3 {
			r := req("k1", "{}")
			r.Route.Policy = idem.Exempt
			if got := f.serve(r, created(&n)); !got.ran || got.action != idem.Pass {
				t.Fatalf("exempt request: %+v", got)
			}
		}
		if n.Load() != 3 || f.records() != 0 {
			t.Fatalf("ran %d times with %d records; want 3 and 0", n.Load(), f.records())
		}
	})

	t.Run("B4_custom_header_name", func(t *testing.T) {
		f := newFixture(t, func(c *idem.Config) { c.HeaderName = "x-request-key" })
		var n atomic.Int64
		r := req("", "{}")
		r.Header.(http.Header).Set("X-Request-Key", "k1")
		mustStatus(t, f.serve(r, created(&n)), 201)
		r = req("", "{}")
		r.Header.(http.Header).Set("X-REQUEST-KEY", "k1")
		got := f.serve(r, created(&n))
		if got.ran || got.header.Get(idem.ReplayedHeader) != "true" {
			t.Fatalf("second request with the custom header was not replayed: %+v", got)
		}
		mustProblem(t, f.serve(req("k1", "{}"), nil), 400, idem.ProblemKeyMissing)
	})

	t.Run("B5_quoted_and_bare_forms_name_one_key", func(t *testing.T) {
		f := newFixture(t, nil)
		var n atomic.Int64
		mustStatus(t, f.serve(req("abc-123", "{}"), created(&n)), 201)
		got := f.serve(req(`"abc-123"`, "{}"), created(&n))
		if got.ran || got.header.Get(idem.ReplayedHeader) != "true" {
			t.Fatalf("quoted form of the same key was not replayed: %+v", got)
		}
	})

	t.Run("B5_invalid_keys_answer_400", func(t *testing.T) {
		f := newFixture(t, func(c *idem.Config) {
			c.ValidateKey = func(k string) error {
				if strings.HasPrefix(k, "reject") {
					return errors.New("keys must not start with reject")
				}
				return nil
			}
		})
		for name, value := range map[string]string{
			"empty-quoted": `""`, "comma-list": "a,b", "control": "a\x01b", "too-long": strings.Repeat("k", 256),
			"non-ascii": "clé", "space": "a b", "unclosed": `"abc`, "two-strings": `"a" "b"`, "validator": "reject-me",
		} {
			r := req(value, "{}")
			got := f.serve(r, nil)
			mustProblem(t, got, 400, idem.ProblemKeyInvalid)
			if name == "validator" && !strings.Contains(got.body, "keys must not start with reject") {
				t.Fatalf("validator message missing from %s", got.body)
			}
		}
		r := req("a", "{}")
		r.Header.(http.Header).Add("Idempotency-Key", "b")
		mustProblem(t, f.serve(r, nil), 400, idem.ProblemKeyInvalid)
		r = req("", "{}")
		r.Header.(http.Header)["Idempotency-Key"] = []string{""}
		mustProblem(t, f.serve(r, nil), 400, idem.ProblemKeyInvalid)
		if f.records() != 0 {
			t.Fatalf("invalid keys left %d records", f.records())
		}
	})

	t.Run("B6_missing_key", func(t *testing.T) {
		f := newFixture(t, nil)
		mustProblem(t, f.serve(req("", "{}"), nil), 400, idem.ProblemKeyMissing)
		r := req("", "{}")
		r.Route.Policy = idem.Manual
		mustProblem(t, f.serve(r, nil), 400, idem.ProblemKeyMissing)
		var n atomic.Int64
		for range 2 {
			r = req("", "{}")
			r.Route.Policy = idem.Optional
			if got := f.serve(r, created(&n)); !got.ran || got.action != idem.Pass {
				t.Fatalf("optional without key: %+v", got)
			}
		}
		if n.Load() != 2 || f.records() != 0 {
			t.Fatalf("optional without key ran %d times, %d records; want 2, 0", n.Load(), f.records())
		}
	})

	t.Run("B7_invalid_key_on_optional_route_is_400", func(t *testing.T) {
		f := newFixture(t, nil)
		r := req("a,b", "{}")
		r.Route.Policy = idem.Optional
		mustProblem(t, f.serve(r, nil), 400, idem.ProblemKeyInvalid)
	})

	t.Run("B8_scopes_never_share_records", func(t *testing.T) {
		f := newFixture(t, nil)
		var n atomic.Int64
		for _, auth := range []string{"Bearer alice", "Bearer bob", ""} {
			r := req("shared", "{}")
			r.Header.(http.Header).Set("Authorization", auth)
			if auth == "" {
				r.Header.(http.Header).Del("Authorization")
			}
			if got := f.serve(r, created(&n)); !got.ran {
				t.Fatalf("scope %q was answered from another scope's record: %+v", auth, got)
			}
		}
		// A different body under another scope is not a mismatch either.
		r := req("shared", `{"other":1}`)
		r.Header.(http.Header).Set("Authorization", "Bearer carol")
		if got := f.serve(r, created(&n)); !got.ran {
			t.Fatalf("fourth scope did not run: %+v", got)
		}
	})

	t.Run("B8_custom_scope_and_separators", func(t *testing.T) {
		if idem.DefaultEncodeKey("ab", "c") == idem.DefaultEncodeKey("a", "bc") {
			t.Fatal(`("ab","c") and ("a","bc") share a storage key`)
		}
		f := newFixture(t, func(c *idem.Config) {
			c.Scope = func(r *idem.Request) string { return r.Header.Values("X-Tenant")[0] }
		})
		var n atomic.Int64
		for _, tenant := range []string{"t1", "t2"} {
			r := req("k", "{}")
			r.Header.(http.Header).Set("X-Tenant", tenant)
			f.serve(r, created(&n))
		}
		if n.Load() != 2 {
			t.Fatalf("two tenants ran %d times, want 2", n.Load())
		}
	})

	t.Run("B10_key_reused_with_other_payload", func(t *testing.T) {
		f := newFixture(t, nil)
		var n atomic.Int64
		mustStatus(t, f.serve(req("k", `{"a":1}`), created(&n)), 201)
		variants := map[string]func(*idem.Request){
			"body":   func(r *idem.Request) { r.Body = strings.NewReader(`{"a":2}`) },
			"path":   func(r *idem.Request) { r.Path = "/payments" },
			"query":  func(r *idem.Request) { r.RawQuery = "x=1" },
			"method": func(r *idem.Request) { r.Method = "PUT" },
		}
		for name, change := range variants {
			r := req("k", `{"a":1}`)
			change(r)
			got := f.serve(r, nil)
			mustProblem(t, got, 422, idem.ProblemKeyReused)
			_ = name
		}
		got := f.serve(req("k", `{"a":1}`), nil)
		if got.ran || got.status != 201 {
			t.Fatalf("the original record changed after mismatches: %+v", got)
		}
		if n.Load() != 1 {
			t.Fatalf("handler ran %d times, want 1", n.Load())
		}
	})

	t.Run("B10_mismatch_while_in_flight", func(t *testing.T) {
		f := newFixture(t, nil)
		d := f.eng.Begin(req("k", `{"a":1}`))
		if d.Action != idem.Run {
			t.Fatalf("first request: %v", d.Action)
		}
		mustProblem(t, f.serve(req("k", `{"a":2}`), nil), 422, idem.ProblemKeyReused)
		_ = d.Lease.Complete(idem.Recorded{Status: 201})
	})

	t.Run("B9_records_of_the_sha256_default_still_match", func(t *testing.T) {
		// An engine of a version whose default fingerprint was SHA-256
		// records a request; an engine with today's default, on the same
		// store, replays its retry and still refuses another request
		// under the key (a rolling upgrade within the retention).
		old := newFixture(t, func(c *idem.Config) { c.Fingerprint = idem.SHA256Fingerprint })
		var n atomic.Int64
		mustStatus(t, old.serve(req("k", `{"a":1}`), created(&n)), 201)
		inFlight := old.eng.Begin(req("held", `{"a":1}`))
		if inFlight.Action != idem.Run {
			t.Fatalf("first request of held: %v", inFlight.Action)
		}
		defer func() { _ = inFlight.Lease.Complete(idem.Recorded{Status: 201}) }()

		eng, err := idem.New(idem.Config{Store: old.store, Clock: old.clock})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = eng.Close() })
		upgraded := &fixture{t: t, clock: old.clock, store: old.store, eng: eng}
		if got := upgraded.serve(req("k", `{"a":1}`), created(&n)); got.ran || got.status != 201 {
			t.Fatalf("the retry of a request recorded with a SHA-256 fingerprint: %+v, want its replay", got)
		}
		mustProblem(t, upgraded.serve(req("k", `{"a":2}`), nil), 422, idem.ProblemKeyReused)
		mustProblem(t, upgraded.serve(req("held", `{"a":1}`), nil), 409, idem.ProblemInFlight)
		mustProblem(t, upgraded.serve(req("held", `{"a":2}`), nil), 422, idem.ProblemKeyReused)
		if n.Load() != 1 {
			t.Fatalf("handler ran %d times, want 1", n.Load())
		}
		if fp := idem.DefaultFingerprint(req("", ""), nil); len(fp) != idem.FingerprintSize {
			t.Fatalf("DefaultFingerprint returned %d bytes, want %d", len(fp), idem.FingerprintSize)
		}
	})

	t.Run("B9_fingerprint_can_be_turned_off", func(t *testing.T) {
		f := newFixture(t, func(c *idem.Config) { c.Fingerprint = idem.NoFingerprint })
		var n atomic.Int64
		f.serve(req("k", `{"a":1}`), created(&n))
		got := f.serve(req("k", `{"a":2}`), created(&n))
		if got.ran || got.status != 201 {
			t.Fatalf("with fingerprints off a different body should replay: %+v", got)
		}
	})

	t.Run("B11_exactly_one_winner_among_concurrent_requests", func(t *testing.T) {
		f := newFixture(t, nil)
		var runs, conflicts atomic.Int64
		var wg sync.WaitGroup
		leases := make(chan *idem.Lease, 200)
		for range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := f.eng.Begin(req("race", "{}"))
				switch {
				case d.Action == idem.Run:
					runs.Add(1)
					leases <- d.Lease
				case d.Action == idem.Respond && d.Response.Status == 409:
					conflicts.Add(1)
				}
			}()
		}
		wg.Wait()
		close(leases)
		for l := range leases {
			_ = l.Complete(idem.Recorded{Status: 201})
		}
		if runs.Load() != 1 || conflicts.Load() != 199 {
			t.Fatalf("runs %d, conflicts %d; want 1 and 199", runs.Load(), conflicts.Load())
		}
	})

	t.Run("B12_duplicate_in_flight_gets_409_with_retry_after", func(t *testing.T) {
		f := newFixture(t, nil)
		d := f.eng.Begin(req("k", "{}"))
		got := f.serve(req("k", "{}"), nil)
		mustProblem(t, got, 409, idem.ProblemInFlight)
		if got.header.Get("Retry-After") == "" {
			t.Fatal("409 without Retry-After")
		}
		_ = d.Lease.Complete(idem.Recorded{Status: 201})
	})

	t.Run("B12_wait_then_replay", func(t *testing.T) {
		f := newFixture(t, func(c *idem.Config) { c.InFlightWait = 5 * time.Second })
		d := f.eng.Begin(req("k", "{}"))
		go func() {
			time.Sleep(30 * time.Millisecond)
			_ = d.Lease.Complete(idem.Recorded{Status: 201, Body: []byte("first")})
		}()
		got := f.serve(req("k", "{}"), nil)
		if got.ran || got.status != 201 || got.body != "first" || got.header.Get(idem.ReplayedHeader) != "true" {
			t.Fatalf("waiting duplicate: %+v; want the replay of the first", got)
		}
	})

	t.Run("B12_wait_runs_out_with_configured_status", func(t *testing.T) {
		store := idem.NewMemoryStore(idem.MemoryOptions{})
		t.Cleanup(func() { _ = store.Close() })
		eng, err := idem.New(idem.Config{Store: store, InFlightWait: 40 * time.Millisecond, InFlightStatus: 423})
		if err != nil {
			t.Fatal(err)
		}
		d := eng.Begin(req("k", "{}"))
		start := time.Now()
		d2 := eng.Begin(req("k", "{}"))
		if d2.Action != idem.Respond || d2.Response.Status != 423 || d2.Problem.Type != idem.ProblemInFlight {
			t.Fatalf("duplicate after wait: %+v", d2)
		}
		if waited := time.Since(start); waited < 40*time.Millisecond {
			t.Fatalf("answered after %v, before the configured wait", waited)
		}
		_ = d.Lease.Complete(idem.Recorded{Status: 201})
	})

	t.Run("B13_replay_is_the_original_response", func(t *testing.T) {
		f := newFixture(t, nil)
		var n atomic.Int64
		first := f.serve(req("k", `{"a":1}`), created(&n))
		got := f.serve(req("k", `{"a":1}`), created(&n))
		if got.ran || n.Load() != 1 {
			t.Fatal("the handler ran again")
		}
		if got.status != 201 || got.body != first.body {
			t.Fatalf("replay %d %q, want 201 %q", got.status, got.body, first.body)
		}
		if got.header.Get("Content-Type") != "application/json" || got.header.Get("Location") != "/orders/1" {
			t.Fatalf("replayed headers %v lack the allowlisted ones", got.header)
		}
		if got.header.Get(idem.ReplayedHeader) != "true" {
			t.Fatal("replay without Idempotent-Replayed: true")
		}
	})

	t.Run("B13_configured_replay_status", func(t *testing.T) {
		f := newFixture(t, func(c *idem.Config) { c.ReplayStatus = 409 })
		var n atomic.Int64
		f.serve(req("k", "{}"), created(&n))
		if got := f.serve(req("k", "{}"), nil); got.status != 409 || got.ran {
			t.Fatalf("replay status %d, want 409", got.status)
		}
	})

	t.Run("B14_unstored_status_releases_the_key", func(t *testing.T) {
		f := newFixture(t, nil)
		fail := func([]byte) (int, http.Header, string) { return 500, nil, "oops" }
		mustStatus(t, f.serve(req("k", "{}"), fail), 500)
		var n atomic.Int64
		if got := f.serve(req("k", "{}"), created(&n)); !got.ran {
			t.Fatalf("retry after a 500 did not run: %+v", got)
		}
	})

	t.Run("B14_stored_statuses_are_configurable", func(t *testing.T) {
		f := newFixture(t, func(c *idem.Config) { c.StoredStatuses = []int{201, 404} })
		notFound := func([]byte) (int, http.Header, string) { return 404, nil, "none" }
		f.serve(req("k404", "{}"), notFound)
		if got := f.serve(req("k404", "{}"), nil); got.ran || got.status != 404 {
			t.Fatalf("404 in the stored set was not replayed: %+v", got)
		}
		ok := func([]byte) (int, http.Header, string) { return 200, nil, "ok" }
		f.serve(req("k200", "{}"), ok)
		if got := f.serve(req("k200", "{}"), ok); !got.ran {
			t.Fatal("200 outside the stored set was replayed")
		}
		g := newFixture(t, func(c *idem.Config) { c.ShouldStore = func(s int) bool { return s == 202 } })
		g.serve(req("k", "{}"), func([]byte) (int, http.Header, string) { return 202, nil, "" })
		if got := g.serve(req("k", "{}"), nil); got.ran {
			t.Fatal("ShouldStore(202) record was not replayed")
		}
	})

	t.Run("B15_handler_failure_releases_the_lease", func(t *testing.T) {
		f := newFixture(t, nil)
		d := f.eng.Begin(req("k", "{}"))
		if err := d.Lease.Release(errors.New("panic: boom")); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if err := d.Lease.Complete(idem.Recorded{Status: 201}); err == nil {
			t.Fatal("Complete after Release succeeded")
		}
		var n atomic.Int64
		if got := f.serve(req("k", "{}"), created(&n)); !got.ran {
			t.Fatal("retry after a released lease did not run")
		}
	})

	t.Run("B16_long_handler_keeps_its_lease", func(t *testing.T) {
		store := idem.NewMemoryStore(idem.MemoryOptions{})
		t.Cleanup(func() { _ = store.Close() })
		eng, err := idem.New(idem.Config{Store: store, LeaseTime: 400 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		d := eng.Begin(req("k", "{}"))
		time.Sleep(1200 * time.Millisecond) // three lease times
		if d2 := eng.Begin(req("k", "{}")); d2.Action != idem.Respond || d2.Response.Status != 409 {
			t.Fatalf("duplicate during a renewed lease: %v %+v", d2.Action, d2.Response)
		}
		if err := d.Lease.Complete(idem.Recorded{Status: 201, Body: []byte("late")}); err != nil {
			t.Fatalf("Complete after renewals: %v", err)
		}
	})

	t.Run("B16_stale_owner_changes_nothing", func(t *testing.T) {
		f := newFixture(t, nil)
		old := f.eng.Begin(req("k", "{}"))
		f.clock.Advance(idem.DefaultLeaseTime + time.Second)
		cur := f.eng.Begin(req("k", "{}"))
		if cur.Action != idem.Run || cur.Lease.Token() == old.Lease.Token() {
			t.Fatalf("after lease expiry: %v; want a new lease with a new token", cur.Action)
		}
		if err := old.Lease.Complete(idem.Recorded{Status: 201, Body: []byte("stale")}); !errors.Is(err, idem.ErrLeaseLost) {
			t.Fatalf("stale Complete: %v, want ErrLeaseLost", err)
		}
		if err := cur.Lease.Complete(idem.Recorded{Status: 201, Body: []byte("current")}); err != nil {
			t.Fatal(err)
		}
		if got := f.serve(req("k", "{}"), nil); got.body != "current" {
			t.Fatalf("replayed %q, want the new owner's response", got.body)
		}
		if !contains(f.outcomes(), idem.LeaseLost) {
			t.Fatalf("no lease-lost event in %v", f.outcomes())
		}
	})

	t.Run("B17_crashed_owner_frees_the_key_after_the_lease", func(t *testing.T) {
		f := newFixture(t, nil)
		f.eng.Begin(req("k", "{}")) // the process dies: no Complete, no Release
		mustProblem(t, f.serve(req("k", "{}"), nil), 409, idem.ProblemInFlight)
		f.clock.Advance(idem.DefaultLeaseTime)
		var n atomic.Int64
		if got := f.serve(req("k", "{}"), created(&n)); !got.ran {
			t.Fatalf("after the lease: %+v", got)
		}
	})

	t.Run("B18_records_expire_after_retention", func(t *testing.T) {
		f := newFixture(t, nil)
		var n atomic.Int64
		f.serve(req("k", "{}"), created(&n))
		f.clock.Advance(idem.DefaultRetention - time.Second)
		if got := f.serve(req("k", "{}"), created(&n)); got.ran {
			t.Fatal("ran again before retention ended")
		}
		f.clock.Advance(2 * time.Second)
		if got := f.serve(req("k", "{}"), created(&n)); !got.ran {
			t.Fatal("did not run again after retention ended")
		}
	})

	t.Run("B19_truncated_or_streamed_response_is_not_replayed", func(t *testing.T) {
		f := newFixture(t, nil)
		for i, rec := range []idem.Recorded{{Status: 200, Truncated: true}, {Status: 200, Streamed: true}} {
			key := string(rune('a' + i))
			d := f.eng.Begin(req(key, "{}"))
			if d.Lease.MaxBody() != idem.DefaultMaxResponseBody {
				t.Fatalf("MaxBody %d", d.Lease.MaxBody())
			}
			if err := d.Lease.Complete(rec); err != nil {
				t.Fatal(err)
			}
			mustProblem(t, f.serve(req(key, "{}"), nil), 410, idem.ProblemNotReplayable)
		}
	})

	t.Run("B20_only_allowlisted_headers_are_stored", func(t *testing.T) {
		f := newFixture(t, nil)
		var n atomic.Int64
		f.serve(req("k", "{}"), created(&n))
		got := f.serve(req("k", "{}"), nil)
		for _, h := range []string{"Set-Cookie", "Date", "X-Trace", "Content-Length"} {
			if v := got.header.Get(h); v != "" {
				t.Fatalf("replayed %s: %q", h, v)
			}
		}
		g := newFixture(t, func(c *idem.Config) { c.ReplayHeaders = []string{"x-trace"} })
		g.serve(req("k", "{}"), created(&n))
		got = g.serve(req("k", "{}"), nil)
		if got.header.Get("X-Trace") != "abc" || got.header.Get("Location") != "" {
			t.Fatalf("custom allowlist: replayed %v", got.header)
		}
		if _, err := idem.New(idem.Config{ReplayHeaders: []string{"Set-Cookie"}}); err == nil {
			t.Fatal("Set-Cookie in ReplayHeaders was accepted")
		}
	})

	t.Run("B21_request_body_limit_and_exact_bytes", func(t *testing.T) {
		f := newFixture(t, func(c *idem.Config) { c.MaxRequestBody = 1024 })
		body := make([]byte, 1024)
		for i := range body {
			body[i] = byte(i)
		}
		// A reader without Len, one byte at a time.
		r := req("k", "")
		r.Body = iotest.OneByteReader(bytes.NewReader(body))
		got := f.serve(r, func(b []byte) (int, http.Header, string) { return 201, nil, "" })
		if got.seenBody != string(body) {
			t.Fatal("the handler did not read the exact bytes sent")
		}
		r = req("k2", "")
		r.Body = iotest.OneByteReader(bytes.NewReader(append(body, 'x')))
		mustProblem(t, f.serve(r, nil), 413, idem.ProblemRequestTooLarge)
		r = req("k3", string(append(body, 'x')))
		mustProblem(t, f.serve(r, nil), 413, idem.ProblemRequestTooLarge)
	})

	t.Run("B22_store_unavailable_fails_closed", func(t *testing.T) {
		fs := &faultyStore{Store: idem.NewMemoryStore(idem.MemoryOptions{})}
		fs.failAcquire.Store(true)
		eng, _ := idem.New(idem.Config{Store: fs})
		d := eng.Begin(req("k", "{}"))
		if d.Action != idem.Respond || d.Response.Status != 503 || d.Problem.Type != idem.ProblemStoreUnavailable {
			t.Fatalf("store down: %+v", d)
		}
		if retry := headerValue(d.Response.Header, "Retry-After"); retry == "" {
			t.Fatal("503 without Retry-After")
		}
	})

	t.Run("B22_fail_open_runs_untracked_and_reports", func(t *testing.T) {
		fs := &faultyStore{Store: idem.NewMemoryStore(idem.MemoryOptions{})}
		fs.failAcquire.Store(true)
		var untracked atomic.Int64
		eng, _ := idem.New(idem.Config{Store: fs, FailOpen: true, Observer: idem.ObserverFunc(func(_ context.Context, ev idem.Event) {
			if ev.Outcome == idem.Untracked && ev.Err != nil {
				untracked.Add(1)
			}
		})})
		d := eng.Begin(req("k", `{"a":1}`))
		if d.Action != idem.Pass || !d.BodyRead || string(d.Body) != `{"a":1}` || !d.TookPart() {
			t.Fatalf("fail-open: %+v", d)
		}
		if untracked.Load() != 1 {
			t.Fatal("the untracked run was not reported")
		}
	})

	t.Run("B23_completion_failure_keeps_the_key_in_flight", func(t *testing.T) {
		clock := newFakeClock()
		fs := &faultyStore{Store: idem.NewMemoryStore(idem.MemoryOptions{Clock: clock})}
		var storeErrors atomic.Int64
		eng, _ := idem.New(idem.Config{Store: fs, Clock: clock, Observer: idem.ObserverFunc(func(_ context.Context, ev idem.Event) {
			if ev.Outcome == idem.StoreError {
				storeErrors.Add(1)
			}
		})})
		d := eng.Begin(req("k", "{}"))
		fs.failComplete.Store(true)
		if err := d.Lease.Complete(idem.Recorded{Status: 201}); err == nil {
			t.Fatal("Complete with a failing store returned nil")
		}
		if storeErrors.Load() != 1 {
			t.Fatal("the completion failure was not reported")
		}
		fs.failComplete.Store(false)
		if d2 := eng.Begin(req("k", "{}")); d2.Action != idem.Respond || d2.Response.Status != 409 {
			t.Fatalf("retry before the lease ends: %+v, want 409", d2)
		}
		clock.Advance(idem.DefaultLeaseTime)
		if d3 := eng.Begin(req("k", "{}")); d3.Action != idem.Run {
			t.Fatalf("retry after the lease: %v, want a run", d3.Action)
		}
	})

	t.Run("B24_completion_survives_client_cancellation", func(t *testing.T) {
		f := newFixture(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		r := req("k", "{}")
		r.Context = ctx
		d := f.eng.Begin(r)
		cancel()
		if err := d.Lease.Complete(idem.Recorded{Status: 201, Body: []byte("kept")}); err != nil {
			t.Fatalf("Complete after the client left: %v", err)
		}
		if got := f.serve(req("k", "{}"), nil); got.body != "kept" {
			t.Fatalf("replay %q, want kept", got.body)
		}
	})

	t.Run("B25_problems_are_rfc9457_and_renderable", func(t *testing.T) {
		f := newFixture(t, func(c *idem.Config) {
			c.RenderProblem = func(p *idem.Problem) *idem.Response {
				return &idem.Response{Status: p.Status, Body: []byte("custom " + p.Rule)}
			}
		})
		got := f.serve(req("", "{}"), nil)
		if got.status != 400 || got.body != "custom B6" || got.problem == nil || got.problem.Type != idem.ProblemKeyMissing {
			t.Fatalf("custom renderer: %+v", got)
		}
		resp := idem.RenderProblem(got.problem)
		var m map[string]any
		if err := json.Unmarshal(resp.Body, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"type", "title", "status", "detail"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("problem JSON lacks %s: %s", k, resp.Body)
			}
		}
	})

	t.Run("B26_manual_route_hands_findings_to_the_handler", func(t *testing.T) {
		f := newFixture(t, nil)
		manual := func(key, body string) *idem.Request {
			r := req(key, body)
			r.Route.Policy = idem.Manual
			return r
		}
		var n atomic.Int64
		first := f.serve(manual("k", "{}"), created(&n))
		if first.finding != nil || first.action != idem.Pass && first.action != idem.Run {
			t.Fatalf("first manual request: %+v", first)
		}
		got := f.serve(manual("k", "{}"), func([]byte) (int, http.Header, string) { return 200, nil, "manual" })
		if !got.ran || got.finding == nil || got.finding.Kind != idem.FoundCompleted || got.finding.Response == nil ||
			got.finding.Response.Status != 201 || string(got.finding.Response.Body) != first.body {
			t.Fatalf("completed finding: %+v", got)
		}
		got = f.serve(manual("k", `{"x":1}`), func([]byte) (int, http.Header, string) { return 200, nil, "" })
		if got.finding == nil || got.finding.Kind != idem.FoundMismatch {
			t.Fatalf("mismatch finding: %+v", got.finding)
		}
		d := f.eng.Begin(manual("k2", "{}"))
		got = f.serve(manual("k2", "{}"), func([]byte) (int, http.Header, string) { return 200, nil, "" })
		if got.finding == nil || got.finding.Kind != idem.FoundInFlight {
			t.Fatalf("in-flight finding: %+v", got.finding)
		}
		_ = d.Lease.Complete(idem.Recorded{Status: 201})
		// The manual handler's own responses were not stored.
		if got := f.serve(req("k", "{}"), nil); got.body != first.body {
			t.Fatalf("record changed by a manual response: %q", got.body)
		}
	})

	t.Run("B27_route_store_and_retention", func(t *testing.T) {
		f := newFixture(t, nil)
		routeStore := idem.NewMemoryStore(idem.MemoryOptions{Clock: f.clock})
		t.Cleanup(func() { _ = routeStore.Close() })
		var n atomic.Int64
		r := req("k", "{}")
		r.Route = idem.Route{Store: routeStore, Retention: time.Minute}
		f.serve(r, created(&n))
		if got, _ := routeStore.Stats(); got != 1 || f.records() != 0 {
			t.Fatalf("route store holds %d, engine store %d; want 1 and 0", got, f.records())
		}
		f.clock.Advance(time.Minute)
		r = req("k", "{}")
		r.Route = idem.Route{Store: routeStore, Retention: time.Minute}
		if got := f.serve(r, created(&n)); !got.ran {
			t.Fatal("route retention of a minute was not honoured")
		}
	})

	t.Run("B28_every_decision_is_observed_and_logged_without_secrets", func(t *testing.T) {
		var logs bytes.Buffer
		f := newFixture(t, func(c *idem.Config) {
			c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		})
		var n atomic.Int64
		// Secrets made of letters no log line holds by chance (a digit
		// string can appear in a timestamp).
		const secretKey, secretBody = "very-secret-key-qxjw", `{"card":"zqxjwvkpzqxjwvkp"}`
		f.serve(req(secretKey, secretBody), created(&n))
		f.serve(req(secretKey, secretBody), nil)
		f.serve(req(secretKey, `{"other":1}`), nil)
		f.serve(req("", secretBody), nil)
		f.serve(req("a,b", secretBody), nil)
		want := []idem.Outcome{idem.Executed, idem.Stored, idem.Replayed, idem.Mismatch, idem.Missing, idem.Invalid}
		if got := f.outcomes(); !equalOutcomes(got, want) {
			t.Fatalf("outcomes %v, want %v", got, want)
		}
		out := logs.String()
		if strings.Contains(out, secretKey) || strings.Contains(out, "zqxjw") {
			t.Fatalf("logs leak the key or body:\n%s", out)
		}
		if !strings.Contains(out, `"key_id"`) || strings.Count(out, "\n") != len(want) {
			t.Fatalf("logs lack key ids or lines:\n%s", out)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]idem.Config{
		"both stored forms":   {StoredStatuses: []int{200}, ShouldStore: func(int) bool { return true }},
		"bad stored status":   {StoredStatuses: []int{42}},
		"bad policy":          {DefaultPolicy: 9},
		"bad header":          {HeaderName: "Idempotency Key"},
		"negative key length": {MaxKeyLength: -1},
		"bad in-flight":       {InFlightStatus: 200},
		"wait past lease":     {InFlightWait: time.Minute, LeaseTime: time.Second},
		"negative body":       {MaxRequestBody: -1},
		"hop-by-hop":          {ReplayHeaders: []string{"Transfer-Encoding"}},
		"bad replay status":   {ReplayStatus: 99},
	} {
		if _, err := idem.New(cfg); err == nil {
			t.Errorf("%s: New accepted a contradictory config", name)
		}
	}
}

func TestParseKey(t *testing.T) {
	for in, want := range map[string]string{
		"abc": "abc", `"abc"`: "abc", `"a\"b"`: `a"b`, `"a\\b"`: `a\b`, "A-Za-z0-9_~!": "A-Za-z0-9_~!",
		strings.Repeat("k", 255): strings.Repeat("k", 255),
	} {
		got, err := idem.ParseKey(in, 255)
		if err != nil || got != want {
			t.Errorf("ParseKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", `""`, "a,b", `"a",`, "a\tb", "é", `"a\x"`, `"abc`, "a\"b", strings.Repeat("k", 256),
		`"` + strings.Repeat("k", 256) + `"`, "a\x7fb", `"a b"`} {
		if got, err := idem.ParseKey(in, 255); err == nil {
			t.Errorf("ParseKey(%q) = %q, want an error", in, got)
		}
	}
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"abc", `"abc"`, `"a\"b"`, "a,b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		key, err := idem.ParseKey(in, 255)
		if err != nil {
			return
		}
		if key == "" || len(key) > 255 {
			t.Fatalf("ParseKey(%q) accepted %q", in, key)
		}
		for i := 0; i < len(key); i++ {
			if key[i] <= 0x20 || key[i] >= 0x7f {
				t.Fatalf("ParseKey(%q) accepted a non-visible byte in %q", in, key)
			}
		}
	})
}

// faultyStore fails on demand.
type faultyStore struct {
	idem.Store
	failAcquire, failComplete atomic.Bool
}

var errInjected = errors.New("injected store failure")

func (s *faultyStore) Acquire(ctx context.Context, key string, token idem.Token, fp []byte, lease time.Duration) (*idem.Record, error) {
	if s.failAcquire.Load() {
		return nil, errInjected
	}
	return s.Store.Acquire(ctx, key, token, fp, lease)
}

func (s *faultyStore) Complete(ctx context.Context, key string, token idem.Token, rec *idem.Record, retention time.Duration) error {
	if s.failComplete.Load() {
		return errInjected
	}
	return s.Store.Complete(ctx, key, token, rec, retention)
}

func headerValue(h []idem.HeaderField, name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

func contains(list []idem.Outcome, o idem.Outcome) bool {
	for _, x := range list {
		if x == o {
			return true
		}
	}
	return false
}

func equalOutcomes(a, b []idem.Outcome) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBodyBytesAreFingerprintedInPlace(t *testing.T) {
	f := newFixture(t, func(c *idem.Config) { c.MaxRequestBody = 8 })
	r := req("k", "")
	r.Body, r.BodyBytes = nil, []byte("12345678")
	d := f.eng.Begin(r)
	if d.Action != idem.Run || d.BodyRead || d.Body != nil {
		t.Fatalf("decision %+v: want a run that leaves the body to the adapter", d)
	}
	_ = d.Lease.Complete(idem.Recorded{Status: 201})
	r.BodyBytes = []byte("12345679")
	mustProblem(t, f.serve(r, nil), 422, idem.ProblemKeyReused)
	r.BodyBytes = []byte("123456789")
	mustProblem(t, f.serve(r, nil), 413, idem.ProblemRequestTooLarge)
}

// replayingStore runs every Acquire twice, as a store client does that
// retries a call whose reply it lost: the second attempt finds the record
// the first one created.
type replayingStore struct{ idem.Store }

func (s replayingStore) Acquire(ctx context.Context, key string, token idem.Token, fp []byte, lease time.Duration) (*idem.Record, error) {
	if _, err := s.Store.Acquire(ctx, key, token, fp, lease); err != nil {
		return nil, err
	}
	return s.Store.Acquire(ctx, key, token, fp, lease)
}

func TestRetriedAcquireKeepsTheLease(t *testing.T) {
	f := newFixture(t, nil)
	eng, err := idem.New(idem.Config{Store: replayingStore{f.store}, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	d := eng.Begin(req("k", "{}"))
	if d.Action != idem.Run {
		t.Fatalf("a retried Acquire that took effect: %v, want the lease (Run)", d.Action)
	}
	if d2 := eng.Begin(req("k", "{}")); d2.Action != idem.Respond || d2.Response.Status != 409 {
		t.Fatalf("another request with the key: %+v, want 409", d2)
	}
	_ = d.Lease.Complete(idem.Recorded{Status: 201})
}
