package conformance

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	idem "github.com/idemkit/idem/core"
)

// Timings of the cases that need time to pass. They are short so the suite
// stays fast, and far enough apart to hold on a loaded machine.
const (
	shortLease     = 150 * time.Millisecond
	shortRetention = 150 * time.Millisecond
	// renewedLease is the lease of the renewal cases (B16): renewals come
	// every half lease, so half of it is how late one may be on a loaded
	// machine before the lease runs out under a handler that still runs.
	renewedLease = 300 * time.Millisecond
	// pastShort is long enough for a short lease or retention to run out.
	pastShort = 350 * time.Millisecond
)

var (
	created = []byte(`{"id":"ord_1","status":"created"}`)
	jsonCT  = idem.HeaderField{Name: "Content-Type", Value: "application/json"}
)

// orderHandler answers 201 with a small JSON body.
func orderHandler() *Handler {
	return &Handler{Status: http.StatusCreated, Header: []idem.HeaderField{jsonCT}, Body: created}
}

var cases = []testCase{
	// B1
	{"B1/safe_methods_pass_through",
		"GET, HEAD and OPTIONS run every time, with or without a key, and never touch the store",
		nil, func(f *fixture) {
			st := f.probe()
			h := &Handler{Body: []byte("item")}
			f.serve(f.engine(idem.Config{Store: st}),
				route(http.MethodGet, "/items", h), route(http.MethodHead, "/items", h), route(http.MethodOptions, "/items", h))
			k := f.key()
			for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodOptions} {
				f.expect(f.send(m, "/items", nil), 200, m+" without a key")
				r := f.send(m, "/items", nil, key(k))
				f.expect(r, 200, m+" with a key")
				r = f.send(m, "/items", nil, key(k))
				f.expect(r, 200, m+" again with the same key")
				f.expectReplayed(r, false, m+" again with the same key")
			}
			f.expectCalls(h, 9, "safe methods")
			if n := st.calls.Load(); n != 0 {
				f.t.Fatalf("the store was called %d times for safe methods", n)
			}
		}},
	{"B1/safe_methods_configurable",
		"a method added to Config.SafeMethods passes straight through; POST still needs a key",
		nil, func(f *fixture) {
			st := f.probe()
			h := orderHandler()
			f.serve(f.engine(idem.Config{Store: st, SafeMethods: []string{http.MethodGet, http.MethodPut}}),
				route(http.MethodPut, "/orders", h), post("/orders", h))
			f.expect(f.send(http.MethodPut, "/orders", created), 201, "PUT without a key")
			f.expect(f.send(http.MethodPut, "/orders", created), 201, "PUT again")
			f.expectCalls(h, 2, "configured safe method")
			if n := st.calls.Load(); n != 0 {
				f.t.Fatalf("the store was called %d times for a safe method", n)
			}
			f.expectProblem(f.post("/orders", created), 400, idem.ProblemKeyMissing, "POST without a key")
		}},

	// B2
	{"B2/route_required_over_exempt_default",
		"on an engine whose default is Exempt, a route set to Required answers 400 without a key and replays with one",
		nil, func(f *fixture) {
			plain, opted := orderHandler(), orderHandler()
			f.serve(f.engine(idem.Config{DefaultPolicy: idem.Exempt}),
				post("/plain", plain), post("/opted", opted).with(idem.Route{Policy: idem.Required}))
			f.expect(f.post("/plain", created), 201, "default route without a key")
			f.expectProblem(f.post("/opted", created), 400, idem.ProblemKeyMissing, "Required route without a key")
			k := f.key()
			f.expect(f.post("/opted", created, key(k)), 201, "Required route, first request")
			r := f.post("/opted", created, key(k))
			f.expect(r, 201, "Required route, retry")
			f.expectReplayed(r, true, "Required route, retry")
			f.expectCalls(opted, 1, "Required route")
		}},
	{"B2/route_exempt_over_required_default",
		"on an engine whose default is Required, a route set to Exempt runs every request, keyed or not",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{}), post("/hooks", h).with(idem.Route{Policy: idem.Exempt}))
			k := f.key()
			f.expect(f.post("/hooks", created), 201, "no key")
			f.expect(f.post("/hooks", created, key(k)), 201, "with a key")
			r := f.post("/hooks", created, key(k))
			f.expect(r, 201, "same key again")
			f.expectReplayed(r, false, "same key again")
			f.expectCalls(h, 3, "Exempt route")
		}},
	{"B2/route_optional_over_required_default",
		"on an engine whose default is Required, an Optional route runs keyless requests untracked and replays keyed ones",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{}), post("/pay", h).with(idem.Route{Policy: idem.Optional}))
			f.expect(f.post("/pay", created), 201, "no key")
			k := f.key()
			f.expect(f.post("/pay", created, key(k)), 201, "with a key")
			r := f.post("/pay", created, key(k))
			f.expect(r, 201, "retry")
			f.expectReplayed(r, true, "retry")
			f.expectCalls(h, 2, "Optional route")
		}},

	// B3
	{"B3/exempt_ignores_key_and_store",
		"an Exempt route runs every time, ignores even a malformed key and never touches the store",
		nil, func(f *fixture) {
			st := f.probe()
			h := orderHandler()
			f.serve(f.engine(idem.Config{Store: st}), post("/hooks", h).with(idem.Route{Policy: idem.Exempt}))
			k := f.key()
			f.expect(f.post("/hooks", created, key(k)), 201, "first")
			f.expect(f.post("/hooks", created, key(k)), 201, "same key")
			f.expect(f.post("/hooks", created, key("a,b")), 201, "malformed key")
			f.expect(f.post("/hooks", created), 201, "no key")
			f.expectCalls(h, 4, "Exempt route")
			if n := st.calls.Load(); n != 0 {
				f.t.Fatalf("the store was called %d times on an Exempt route", n)
			}
		}},

	// B4
	{"B4/header_name_case_insensitive",
		"the key header matches whatever case the client writes its name in",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			f.expect(f.post("/orders", created, header("idempotency-key", k)), 201, "lower-case header name")
			r := f.post("/orders", created, header("IDEMPOTENCY-KEY", k))
			f.expect(r, 201, "upper-case header name")
			f.expectReplayed(r, true, "upper-case header name")
			f.expectCalls(h, 1, "one key in two spellings")
		}},
	{"B4/custom_header_name",
		"Config.HeaderName replaces Idempotency-Key",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{HeaderName: "Request-Key"}), post("/orders", h))
			k := f.key()
			f.expect(f.post("/orders", created, header("Request-Key", k)), 201, "first")
			r := f.post("/orders", created, header("request-key", k))
			f.expect(r, 201, "retry")
			f.expectReplayed(r, true, "retry")
			f.expectProblem(f.post("/orders", created, key(f.key())), 400, idem.ProblemKeyMissing, "key only in Idempotency-Key")
			f.expectCalls(h, 1, "custom header")
		}},

	// B5
	{"B5/quoted_and_bare_forms_are_one_key",
		`"abc" (RFC 8941 string) and abc (bare) name the same key`,
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			f.expect(f.post("/orders", created, key(`"`+k+`"`)), 201, "quoted key")
			r := f.post("/orders", created, key(k))
			f.expect(r, 201, "bare key")
			f.expectReplayed(r, true, "bare form of the quoted key")
			f.expectCalls(h, 1, "one key in two forms")
		}},
	{"B5/two_header_fields",
		"a key header sent twice is invalid: 400, the handler does not run",
		nil, func(f *fixture) { invalidKey(f, header("Idempotency-Key", f.key(), f.key())) }},
	{"B5/comma_separated_list",
		"a comma-separated list of keys is invalid: 400, the handler does not run",
		nil, func(f *fixture) { invalidKey(f, key(f.key()+","+f.key())) }},
	{"B5/empty_value",
		"an empty key header is invalid: 400, the handler does not run",
		nil, func(f *fixture) { invalidKey(f, key("")) }},
	{"B5/control_character",
		"a key holding a control character (a tab) is invalid: 400, the handler does not run",
		nil, func(f *fixture) { invalidKey(f, key("a\tb")) }},
	{"B5/over_long_key",
		"a key of 256 characters is invalid (the default limit is 255, which is accepted)",
		nil, func(f *fixture) {
			h := invalidKey(f, key(strings.Repeat("x", 256)))
			f.expect(f.post("/orders", created, key(f.prefix+strings.Repeat("y", 255-len(f.prefix)))), 201, "255 characters")
			f.expectCalls(h, 1, "a key of 255 characters")
		}},
	{"B5/custom_validator",
		"Config.ValidateKey rejects keys with 400 and its reason; keys it accepts work",
		nil, func(f *fixture) {
			h := orderHandler()
			validate := func(k string) error {
				if !strings.HasPrefix(k, "ok-") {
					return errors.New("keys must start with ok-")
				}
				return nil
			}
			f.serve(f.engine(idem.Config{ValidateKey: validate}), post("/orders", h))
			r := f.post("/orders", created, key(f.key()))
			f.expectProblem(r, 400, idem.ProblemKeyInvalid, "key the validator rejects")
			if !bytes.Contains(r.body, []byte("keys must start with ok-")) {
				f.t.Fatalf("the problem does not give the validator's reason: %s", r.body)
			}
			f.expectCalls(h, 0, "rejected key")
			f.expect(f.post("/orders", created, key("ok-"+f.key())), 201, "key the validator accepts")
		}},

	// B6, B7
	{"B6/missing_key_required",
		"a Required route answers a request without a key with 400 and does not run the handler",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			f.expectProblem(f.post("/orders", created), 400, idem.ProblemKeyMissing, "no key")
			f.expectCalls(h, 0, "no key")
		}},
	{"B6/missing_key_optional_runs_untracked",
		"an Optional route runs a request without a key every time, as if Exempt",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{DefaultPolicy: idem.Optional}), post("/orders", h))
			f.expect(f.post("/orders", created), 201, "first without a key")
			r := f.post("/orders", created)
			f.expect(r, 201, "second without a key")
			f.expectReplayed(r, false, "second without a key")
			f.expectCalls(h, 2, "no key on an Optional route")
		}},
	{"B6/missing_key_manual",
		"a Manual route answers a request without a key with 400",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{}), manualRoute(h))
			f.expectProblem(f.post("/orders", created), 400, idem.ProblemKeyMissing, "no key on a Manual route")
			f.expectCalls(h, 0, "no key on a Manual route")
		}},
	{"B7/invalid_key_on_optional_route",
		"an Optional route does not ignore a malformed key: 400, the handler does not run, nothing is stored",
		nil, func(f *fixture) {
			st := f.probe()
			h := orderHandler()
			f.serve(f.engine(idem.Config{Store: st, DefaultPolicy: idem.Optional}), post("/orders", h))
			f.expectProblem(f.post("/orders", created, key("a b")), 400, idem.ProblemKeyInvalid, "malformed key")
			f.expectCalls(h, 0, "malformed key")
			if n := st.calls.Load(); n != 0 {
				f.t.Fatalf("the store was called %d times for a malformed key", n)
			}
		}},

	// B8, B9, B10
	{"B8/scopes_are_isolated",
		"one key sent with two Authorization values names two records: neither replays, blocks or mismatches the other",
		nil, func(f *fixture) {
			h := &Handler{EchoBody: true}
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			alice, bob := header("Authorization", "Bearer alice"), header("Authorization", "Bearer bob")
			f.expectBody(f.post("/orders", []byte("alice"), key(k), alice), 200, []byte("alice"), "alice")
			r := f.post("/orders", []byte("bob"), key(k), bob)
			f.expectBody(r, 200, []byte("bob"), "bob with alice's key")
			f.expectReplayed(r, false, "bob with alice's key")
			r = f.post("/orders", []byte("alice"), key(k), alice)
			f.expectBody(r, 200, []byte("alice"), "alice's retry")
			f.expectReplayed(r, true, "alice's retry")
			f.expectCalls(h, 2, "two scopes")
		}},
	{"B9/fingerprint_off",
		"with idem.NoFingerprint a reused key replays even when the body differs",
		nil, func(f *fixture) {
			h := &Handler{EchoBody: true}
			f.serve(f.engine(idem.Config{Fingerprint: idem.NoFingerprint}), post("/orders", h))
			k := f.key()
			f.expectBody(f.post("/orders", []byte("one"), key(k)), 200, []byte("one"), "first")
			r := f.post("/orders", []byte("two"), key(k))
			f.expectBody(r, 200, []byte("one"), "other body, fingerprint off")
			f.expectReplayed(r, true, "other body, fingerprint off")
		}},
	{"B10/key_reused_with_other_body",
		"the same key with another body: 422, the handler does not run, the original record still replays",
		nil, func(f *fixture) {
			keyReused(f, http.MethodPost, "/orders", "", []byte(`{"amount":2}`))
		}},
	{"B10/key_reused_with_other_query",
		"the same key with another query string: 422",
		nil, func(f *fixture) { keyReused(f, http.MethodPost, "/orders", "?currency=usd", created) }},
	{"B10/key_reused_with_other_method",
		"the same key with another method on the same path: 422",
		nil, func(f *fixture) { keyReused(f, http.MethodPut, "/orders", "", created) }},
	{"B10/key_reused_on_other_endpoint",
		"the same key sent to another endpoint: 422",
		nil, func(f *fixture) { keyReused(f, http.MethodPost, "/refunds", "", created) }},

	// B11, B12
	{"B11/concurrent_duplicates_run_once",
		"of 6 concurrent requests with one key exactly one runs; the others get 409 with Retry-After",
		nil, func(f *fixture) {
			h, g := f.heldHandler()
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			const n = 6
			replies := make([]<-chan reply, n)
			for i := range replies {
				replies[i] = f.sendAsync(http.MethodPost, "/orders", created, key(k))
			}
			f.wait(h.Entered(), "one request runs")
			got := make([]reply, 0, n)
			pending := replies
			// Every request but the winner is answered while the winner is
			// held; then the winner is let go.
			for len(got) < n-1 {
				if c := h.Calls(); c > 1 {
					f.t.Fatalf("the handler ran %d times for one key", c)
				}
				next := pending[:0:0]
				for _, ch := range pending {
					select {
					case r := <-ch:
						got = append(got, r)
					default:
						next = append(next, ch)
					}
				}
				pending = next
				f.sleep(5 * time.Millisecond)
			}
			g.open()
			got = append(got, f.receive(pending[0], "the winner"))
			ok, conflicts := 0, 0
			for _, r := range got {
				switch {
				case r.err == nil && r.status == 201:
					ok++
				case r.err == nil && r.status == 409:
					f.expectProblem(r, 409, idem.ProblemInFlight, "duplicate")
					f.expectRetryAfter(r, "duplicate")
					conflicts++
				default:
					f.t.Fatalf("unexpected reply: status %d, error %v", r.status, r.err)
				}
			}
			if ok != 1 || conflicts != n-1 {
				f.t.Fatalf("%d requests got 201 and %d got 409, want 1 and %d", ok, conflicts, n-1)
			}
			f.expectCalls(h, 1, "concurrent duplicates")
		}},
	{"B11/record_kept_in_the_store",
		"the first request's response is recorded in the engine's store under the storage key of (scope, key)",
		nil, func(f *fixture) {
			st := f.store()
			h := orderHandler()
			f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
			k := f.key()
			f.expect(f.post("/orders", created, key(k)), 201, "first")
			var token idem.Token
			copy(token[:], "conformance-prb")
			rec, err := st.Acquire(context.Background(), idem.DefaultEncodeKey("", k), token, nil, time.Minute)
			switch {
			case err != nil:
				f.t.Fatalf("store.Acquire: %v", err)
			case rec == nil:
				f.t.Fatalf("the store holds no record for the key")
			case rec.State != idem.Completed || rec.Status != 201 || !bytes.Equal(rec.Body, created):
				f.t.Fatalf("the store holds %v record with status %d and body %q, want completed, 201, %q", rec.State, rec.Status, rec.Body, created)
			}
		}},
	{"B12/in_flight_duplicate_conflicts",
		"a duplicate of a request still running gets 409 with Retry-After; after the first finishes it gets the replay",
		nil, func(f *fixture) {
			h, g := f.heldHandler()
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			first := f.start(h, "/orders", k)
			r := f.post("/orders", created, key(k))
			f.expectProblem(r, 409, idem.ProblemInFlight, "duplicate while in flight")
			f.expectRetryAfter(r, "duplicate while in flight")
			g.open()
			f.expect(f.receive(first, "the first request"), 201, "first")
			r = f.post("/orders", created, key(k))
			f.expectBody(r, 201, created, "retry after completion")
			f.expectReplayed(r, true, "retry after completion")
			f.expectCalls(h, 1, "in-flight duplicate")
		}},
	{"B12/in_flight_wait_then_replay",
		"with Config.InFlightWait a duplicate waits for the first request and gets its replay",
		nil, func(f *fixture) {
			h, g := f.heldHandler()
			f.serve(f.engine(idem.Config{InFlightWait: 5 * time.Second}), post("/orders", h))
			k := f.key()
			first := f.start(h, "/orders", k)
			dup := f.sendAsync(http.MethodPost, "/orders", created, key(k))
			select {
			case r := <-dup:
				f.t.Fatalf("the duplicate was answered (status %d, error %v) while the first request ran", r.status, r.err)
			case <-time.After(200 * time.Millisecond):
			}
			g.open()
			f.expect(f.receive(first, "the first request"), 201, "first")
			r := f.receive(dup, "the waiting duplicate")
			f.expectBody(r, 201, created, "waiting duplicate")
			f.expectReplayed(r, true, "waiting duplicate")
			f.expectCalls(h, 1, "waiting duplicate")
		}},
	{"B12/configured_in_flight_status",
		"when the wait runs out the duplicate gets Config.InFlightStatus (here 423) with Retry-After",
		nil, func(f *fixture) {
			h, g := f.heldHandler()
			f.serve(f.engine(idem.Config{InFlightWait: 100 * time.Millisecond, InFlightStatus: http.StatusLocked}), post("/orders", h))
			k := f.key()
			first := f.start(h, "/orders", k)
			r := f.post("/orders", created, key(k))
			f.expectProblem(r, http.StatusLocked, idem.ProblemInFlight, "duplicate after the wait")
			f.expectRetryAfter(r, "duplicate after the wait")
			g.open()
			f.expect(f.receive(first, "the first request"), 201, "first")
			f.expectCalls(h, 1, "duplicate after the wait")
		}},

	// B13, B14
	{"B13/replay_is_identical",
		"a retry gets the original status, the stored headers, a byte-identical body and Idempotent-Replayed: true",
		nil, func(f *fixture) {
			body := binaryBody()
			h := &Handler{Status: 201, Body: body, Header: []idem.HeaderField{
				{Name: "Content-Type", Value: "application/octet-stream"},
				{Name: "Location", Value: "/orders/ord_1"},
				{Name: "Etag", Value: `"v1"`},
				{Name: "Link", Value: "</a>; rel=a"},
				{Name: "Link", Value: "</b>; rel=b"},
			}}
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			r := f.post("/orders", created, key(k))
			f.expectBody(r, 201, body, "first")
			f.expectReplayed(r, false, "first")
			rr := f.post("/orders", created, key(k))
			f.expectBody(rr, 201, body, "replay")
			f.expectReplayed(rr, true, "replay")
			for _, name := range []string{"Content-Type", "Location", "Etag", "Link"} {
				if got, want := rr.header.Values(name), r.header.Values(name); strings.Join(got, "\n") != strings.Join(want, "\n") {
					f.t.Fatalf("replayed %s is %q, the original was %q", name, got, want)
				}
			}
			f.expectCalls(h, 1, "replay")
		}},
	{"B13/configured_replay_status",
		"Config.ReplayStatus replaces the original status of a replay; the body stays the same",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{ReplayStatus: http.StatusConflict}), post("/orders", h))
			k := f.key()
			f.expect(f.post("/orders", created, key(k)), 201, "first")
			r := f.post("/orders", created, key(k))
			f.expectBody(r, 409, created, "replay")
			f.expectReplayed(r, true, "replay")
			f.expectCalls(h, 1, "replay")
		}},
	{"B14/error_status_not_stored",
		"a 500 is passed on unchanged and not stored: the retry runs the handler again",
		nil, func(f *fixture) {
			h := &Handler{Status: 500, Body: []byte("try again")}
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			f.expectBody(f.post("/orders", created, key(k)), 500, []byte("try again"), "first")
			r := f.post("/orders", created, key(k))
			f.expectBody(r, 500, []byte("try again"), "retry")
			f.expectReplayed(r, false, "retry")
			f.expectCalls(h, 2, "not stored")
		}},
	{"B14/configured_stored_statuses",
		"with Config.StoredStatuses {201, 404} a 404 is replayed and a 200 is not stored",
		nil, func(f *fixture) {
			gone := &Handler{Status: 404, Body: []byte("no such order")}
			ok := &Handler{Status: 200, Body: []byte("ok")}
			f.serve(f.engine(idem.Config{StoredStatuses: []int{201, 404}}), post("/gone", gone), post("/ok", ok))
			k1, k2 := f.key(), f.key()
			f.expect(f.post("/gone", created, key(k1)), 404, "404 first")
			r := f.post("/gone", created, key(k1))
			f.expectBody(r, 404, []byte("no such order"), "404 retry")
			f.expectReplayed(r, true, "404 retry")
			f.expect(f.post("/ok", created, key(k2)), 200, "200 first")
			r = f.post("/ok", created, key(k2))
			f.expect(r, 200, "200 retry")
			f.expectReplayed(r, false, "200 retry")
			f.expectCalls(gone, 1, "stored 404")
			f.expectCalls(ok, 2, "unstored 200")
		}},

	// B15
	{"B15/panic_releases_key",
		"a handler that panics releases the key: the retry runs the handler again instead of 409",
		nil, func(f *fixture) {
			h := &Handler{Panic: true}
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			f.post("/orders", created, key(k)) // the framework's recovery answers
			r := f.post("/orders", created, key(k))
			if r.err == nil && r.status == 409 {
				f.t.Fatalf("the retry got 409: the panic did not release the key")
			}
			f.expectCalls(h, 2, "panicking handler")
		}},
	{"B15/handler_error_releases_key",
		"a handler error that the framework renders releases the key: the retry runs the handler again",
		[]Capability{HandlerError}, func(f *fixture) {
			h := &Handler{Fail: true}
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			r := f.post("/orders", created, key(k))
			if r.err != nil || r.status < 400 {
				f.t.Fatalf("a failing handler got status %d, error %v; want the framework's error response", r.status, r.err)
			}
			r = f.post("/orders", created, key(k))
			if r.err == nil && r.status == 409 {
				f.t.Fatalf("the retry got 409: the error did not release the key")
			}
			f.expectCalls(h, 2, "failing handler")
		}},

	// B16, B17, B18
	{"B16/lease_renewed_for_long_handler",
		"a handler running 4 lease times keeps its key: a duplicate mid-way gets 409, the handler runs once",
		nil, func(f *fixture) {
			h := orderHandler()
			h.Delay = 4 * renewedLease
			f.serve(f.engine(idem.Config{LeaseTime: renewedLease}), post("/orders", h))
			k := f.key()
			first := f.start(h, "/orders", k)
			f.sleep(5 * renewedLease / 2)
			f.expectProblem(f.post("/orders", created, key(k)), 409, idem.ProblemInFlight, "duplicate past the first lease time")
			f.expectBody(f.receive(first, "the first request"), 201, created, "first")
			r := f.post("/orders", created, key(k))
			f.expectReplayed(r, true, "retry after completion")
			f.expectCalls(h, 1, "long handler")
		}},
	{"B16/late_completion_changes_nothing",
		"when a lease is lost (renewals fail) the key runs again; the late first completion does not overwrite the new record, and its client still gets its response",
		nil, func(f *fixture) {
			st := f.probe()
			st.failFirstRenew = true
			h := &Handler{EchoBody: true, Delay: 4 * renewedLease}
			f.serve(f.engine(idem.Config{Store: st, LeaseTime: renewedLease, Fingerprint: idem.NoFingerprint}), post("/orders", h))
			k := f.key()
			first := f.sendAsync(http.MethodPost, "/orders", []byte("first"), key(k))
			f.wait(h.Entered(), "the first request runs")
			f.sleep(2 * renewedLease)
			second := f.sendAsync(http.MethodPost, "/orders", []byte("second"), key(k))
			f.waitFor(func() bool { return h.Calls() == 2 || len(second) > 0 }, "the second request runs")
			f.expectBody(f.receive(first, "the first request"), 200, []byte("first"), "late first")
			f.expectBody(f.receive(second, "the second request"), 200, []byte("second"), "second")
			r := f.post("/orders", []byte("third"), key(k))
			f.expectBody(r, 200, []byte("second"), "retry after both")
			f.expectReplayed(r, true, "retry after both")
		}},
	{"B17/crashed_owner_lease_expires",
		"an owner that vanished leaves an in-flight record: 409 until the lease time passes, then the key runs again under a new token",
		nil, func(f *fixture) {
			st := f.probe()
			st.crashFirst = true
			h := orderHandler()
			f.serve(f.engine(idem.Config{Store: st, LeaseTime: shortLease}), post("/orders", h))
			k := f.key()
			f.expect(f.post("/orders", created, key(k)), 201, "first (its owner then vanishes)")
			f.expectProblem(f.post("/orders", created, key(k)), 409, idem.ProblemInFlight, "retry within the lease")
			f.sleep(pastShort)
			r := f.post("/orders", created, key(k))
			f.expect(r, 201, "retry after the lease")
			f.expectReplayed(r, false, "retry after the lease")
			f.expectReplayed(f.post("/orders", created, key(k)), true, "retry after the second run")
			f.expectCalls(h, 2, "crashed owner")
			if ls := st.leases(); len(ls) != 2 || ls[0] == ls[1] {
				f.t.Fatalf("leases granted: %v, want two with different tokens", ls)
			}
		}},
	{"B18/retention_expiry",
		"after Config.Retention a completed key is new again",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{Retention: shortRetention}), post("/orders", h))
			k := f.key()
			f.expect(f.post("/orders", created, key(k)), 201, "first")
			f.expectReplayed(f.post("/orders", created, key(k)), true, "retry within retention")
			f.sleep(pastShort)
			r := f.post("/orders", created, key(k))
			f.expect(r, 201, "retry after retention")
			f.expectReplayed(r, false, "retry after retention")
			f.expectCalls(h, 2, "retention")
		}},

	// B19, B20, B21
	{"B19/over_limit_response_not_replayable",
		"a response over Config.MaxResponseBody reaches the first client whole; a retry gets 410 and no second execution",
		nil, func(f *fixture) {
			body := bytes.Repeat([]byte("0123456789"), 100)
			h := &Handler{Status: 201, Body: body}
			f.serve(f.engine(idem.Config{MaxResponseBody: 64}), post("/export", h))
			notReplayable(f, h, body)
		}},
	{"B19/flushed_response_not_replayable",
		"a flushed response reaches the first client whole; a retry gets 410 and no second execution",
		[]Capability{Flush}, func(f *fixture) {
			body := bytes.Repeat([]byte("stream "), 40)
			h := &Handler{Status: 201, Body: body, Flush: true}
			f.serve(f.engine(idem.Config{}), post("/export", h))
			notReplayable(f, h, body)
		}},
	{"B19/hijack_releases_key",
		"a handler that hijacks the connection releases the key: the retry runs the handler again",
		[]Capability{Hijack}, func(f *fixture) {
			h := &Handler{Hijack: true}
			f.serve(f.engine(idem.Config{}), post("/ws", h))
			k := f.key()
			f.post("/ws", created, key(k)) // the hijacked connection answers
			// The client can read the hijacked response before the handler
			// has returned and the key is released: retry on 409 for a
			// while.
			deadline := time.Now().Add(2 * time.Second)
			r := f.post("/ws", created, key(k))
			for r.err == nil && r.status == 409 && time.Now().Before(deadline) {
				f.sleep(10 * time.Millisecond)
				r = f.post("/ws", created, key(k))
			}
			if r.err == nil && (r.status == 409 || r.status == 410) {
				f.t.Fatalf("the retry got %d: the hijack did not release the key", r.status)
			}
			f.expectCalls(h, 2, "hijacking handler")
		}},
	{"B20/only_allowlisted_headers_replayed",
		"Set-Cookie, Date and headers off the allowlist reach the first client but are not replayed",
		nil, func(f *fixture) {
			const date = "Mon, 01 Jan 2001 00:00:00 GMT"
			h := &Handler{Status: 201, Body: created, Header: []idem.HeaderField{
				jsonCT, {Name: "Location", Value: "/orders/ord_1"}, {Name: "Set-Cookie", Value: "session=s3cr3t"},
				{Name: "X-Trace", Value: "t-1"}, {Name: "Date", Value: date},
			}}
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			r := f.post("/orders", created, key(k))
			f.expect(r, 201, "first")
			if r.header.Get("Set-Cookie") == "" || r.header.Get("X-Trace") == "" {
				f.t.Fatalf("the first response lacks the handler's headers: %v", r.header)
			}
			r = f.post("/orders", created, key(k))
			f.expectBody(r, 201, created, "replay")
			f.expectReplayed(r, true, "replay")
			if r.header.Get("Location") != "/orders/ord_1" || r.header.Get("Content-Type") != "application/json" {
				f.t.Fatalf("the replay lacks allowlisted headers: %v", r.header)
			}
			for _, name := range []string{"Set-Cookie", "X-Trace"} {
				if v := r.header.Values(name); len(v) != 0 {
					f.t.Fatalf("the replay carries %s: %q", name, v)
				}
			}
			if r.header.Get("Date") == date {
				f.t.Fatalf("the replay carries the handler's Date header")
			}
		}},
	{"B20/configured_replay_headers",
		"Config.ReplayHeaders replaces the allowlist",
		nil, func(f *fixture) {
			h := &Handler{Status: 201, Body: created, Header: []idem.HeaderField{
				{Name: "Location", Value: "/orders/ord_1"}, {Name: "X-Trace", Value: "t-1"},
			}}
			f.serve(f.engine(idem.Config{ReplayHeaders: []string{"X-Trace"}}), post("/orders", h))
			k := f.key()
			f.expect(f.post("/orders", created, key(k)), 201, "first")
			r := f.post("/orders", created, key(k))
			f.expectReplayed(r, true, "replay")
			if r.header.Get("X-Trace") != "t-1" || r.header.Get("Location") != "" {
				f.t.Fatalf("replayed headers %v, want X-Trace and no Location", r.header)
			}
		}},
	{"B21/request_body_over_limit",
		"a keyed request whose body exceeds Config.MaxRequestBody gets 413 and the handler does not run",
		nil, func(f *fixture) {
			h := &Handler{EchoBody: true}
			f.serve(f.engine(idem.Config{MaxRequestBody: 100}), post("/upload", h))
			f.expectProblem(f.post("/upload", bytes.Repeat([]byte("a"), 101), key(f.key())), 413, idem.ProblemRequestTooLarge, "101 bytes")
			f.expectCalls(h, 0, "body over the limit")
			body := bytes.Repeat([]byte("b"), 100)
			f.expectBody(f.post("/upload", body, key(f.key())), 200, body, "100 bytes")
		}},
	{"B21/chunked_body_limit",
		"a keyed request body sent without a Content-Length (chunked) is accepted up to Config.MaxRequestBody and answered 413 past it",
		nil, func(f *fixture) {
			h := &Handler{EchoBody: true}
			f.serve(f.engine(idem.Config{MaxRequestBody: 100}), post("/upload", h))
			body := bytes.Repeat([]byte("c"), 100)
			f.expectBody(f.post("/upload", nil, key(f.key()), chunked(body)), 200, body, "100 bytes chunked")
			f.expectProblem(f.post("/upload", nil, key(f.key()), chunked(append(body, 'c'))), 413, idem.ProblemRequestTooLarge, "101 bytes chunked")
			f.expectCalls(h, 1, "chunked bodies")
		}},
	{"B21/handler_reads_exact_bytes",
		"the handler reads exactly the bytes the client sent, binary included, although the engine read them first",
		nil, func(f *fixture) {
			h := &Handler{EchoBody: true}
			f.serve(f.engine(idem.Config{}), post("/upload", h))
			body := binaryBody()
			k := f.key()
			f.expectBody(f.post("/upload", body, key(k)), 200, body, "first")
			if b := h.Bodies(); len(b) != 1 || !bytes.Equal(b[0], body) {
				f.t.Fatalf("the handler read other bytes than the client sent")
			}
			r := f.post("/upload", body, key(k))
			f.expectBody(r, 200, body, "replay")
			f.expectReplayed(r, true, "replay")
		}},

	// B22, B23
	{"B22/store_unavailable_fails_closed",
		"when the store fails the request gets 503 with Retry-After and the handler does not run",
		nil, func(f *fixture) {
			st := f.probe()
			st.failAcquire = true
			h := orderHandler()
			f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
			r := f.post("/orders", created, key(f.key()))
			f.expectProblem(r, 503, idem.ProblemStoreUnavailable, "store down")
			f.expectRetryAfter(r, "store down")
			f.expectCalls(h, 0, "store down")
		}},
	{"B22/fail_open_runs_untracked",
		"with Config.FailOpen a failing store lets the handler run untracked",
		nil, func(f *fixture) {
			st := f.probe()
			st.failAcquire = true
			h := orderHandler()
			f.serve(f.engine(idem.Config{Store: st, FailOpen: true}), post("/orders", h))
			k := f.key()
			f.expectBody(f.post("/orders", created, key(k)), 201, created, "first")
			r := f.post("/orders", created, key(k))
			f.expect(r, 201, "retry")
			f.expectReplayed(r, false, "retry")
			f.expectCalls(h, 2, "fail open")
		}},
	{"B23/completion_failure_still_responds",
		"when the store fails to record the response the client still gets it, and a retry gets 409, never a second execution",
		nil, func(f *fixture) {
			st := f.probe()
			st.failComplete = true
			h := orderHandler()
			f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
			k := f.key()
			f.expectBody(f.post("/orders", created, key(k)), 201, created, "first")
			r := f.post("/orders", created, key(k))
			f.expectProblem(r, 409, idem.ProblemInFlight, "retry")
			f.expectRetryAfter(r, "retry")
			f.expectCalls(h, 1, "completion failure")
		}},

	// B25
	{"B24/client_disconnect_still_records",
		"a client that hangs up while the handler runs does not cancel the recording: the retry is a replay, not a second execution",
		nil, func(f *fixture) {
			g := f.gate()
			h := orderHandler()
			h.Gate = g.ch
			f.serve(f.engine(idem.Config{}), post("/orders", h))
			k := f.key()
			ctx, hangUp := context.WithCancel(f.ctx)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.base+"/orders", bytes.NewReader(created))
			if err != nil {
				f.t.Fatal(err)
			}
			req.Header.Set("Idempotency-Key", k)
			done := make(chan error, 1)
			go func() {
				resp, err := f.client.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			f.wait(h.Entered(), "the handler runs")
			hangUp()
			if err := <-done; err == nil {
				f.t.Fatal("the request was not cancelled")
			}
			g.open()
			var r reply
			f.waitFor(func() bool {
				r = f.post("/orders", created, key(k))
				return r.err != nil || r.status != http.StatusConflict
			}, "the first request's record is completed")
			f.expectBody(r, 201, created, "retry after the client hung up")
			f.expectReplayed(r, true, "retry after the client hung up")
			f.expectCalls(h, 1, "client disconnect")
		}},
	{"B25/problems_are_problem_json",
		"every response the engine writes itself is application/problem+json with type, title, status and detail",
		nil, func(f *fixture) {
			slow, g := f.heldHandler()
			f.serve(f.engine(idem.Config{MaxRequestBody: 1000}), post("/orders", orderHandler()), post("/slow", slow))
			f.expectProblem(f.post("/orders", created), 400, idem.ProblemKeyMissing, "missing key")
			f.expectProblem(f.post("/orders", created, key("")), 400, idem.ProblemKeyInvalid, "invalid key")
			f.expectProblem(f.post("/orders", make([]byte, 1001), key(f.key())), 413, idem.ProblemRequestTooLarge, "body too large")
			k := f.key()
			f.expect(f.post("/orders", created, key(k)), 201, "first")
			f.expectProblem(f.post("/orders", []byte("{}"), key(k)), 422, idem.ProblemKeyReused, "key reused")
			k = f.key()
			first := f.start(slow, "/slow", k)
			f.expectProblem(f.post("/slow", created, key(k)), 409, idem.ProblemInFlight, "in flight")
			g.open()
			f.expect(f.receive(first, "the slow request"), 201, "slow")
		}},
	{"B25/custom_problem_renderer",
		"Config.RenderProblem replaces the engine's rendering",
		nil, func(f *fixture) {
			render := func(p *idem.Problem) *idem.Response {
				return &idem.Response{Status: p.Status, Header: []idem.HeaderField{{Name: "Content-Type", Value: "text/plain"}},
					Body: []byte("error " + p.Rule)}
			}
			f.serve(f.engine(idem.Config{RenderProblem: render}), post("/orders", orderHandler()))
			r := f.post("/orders", created)
			f.expectBody(r, 400, []byte("error B6"), "missing key")
			if ct := r.header.Get("Content-Type"); ct != "text/plain" {
				f.t.Fatalf("Content-Type %q, want the renderer's text/plain", ct)
			}
		}},

	// B26
	{"B26/manual_sees_completed_record",
		"on a Manual route a retry runs the handler with the recorded response as a Finding; its own response is passed on, not stored",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{}), manualRoute(h))
			k := f.key()
			f.expectBody(f.post("/orders", created, key(k)), 201, created, "first")
			for i := 0; i < 2; i++ {
				r := f.post("/orders", created, key(k))
				f.expectBody(r, 201, created, "retry")
				f.expectReplayed(r, false, "retry on a Manual route")
			}
			fs := f.findings(h, 3)
			if fs[0] != nil {
				f.t.Fatalf("the first request ran with a Finding: %+v", fs[0])
			}
			for _, fd := range fs[1:] {
				if fd == nil || fd.Kind != idem.FoundCompleted || fd.Response == nil ||
					fd.Response.Status != 201 || !bytes.Equal(fd.Response.Body, created) {
					f.t.Fatalf("a retry ran with Finding %+v, want the completed record's response", fd)
				}
			}
		}},
	{"B26/manual_sees_in_flight",
		"on a Manual route a duplicate of a running request runs the handler with an in-flight Finding",
		nil, func(f *fixture) {
			h, g := f.heldHandler()
			f.serve(f.engine(idem.Config{}), manualRoute(h))
			k := f.key()
			first := f.start(h, "/orders", k)
			dup := f.sendAsync(http.MethodPost, "/orders", created, key(k))
			f.waitFor(func() bool { return h.Calls() == 2 || len(dup) > 0 }, "the duplicate runs the handler")
			g.open()
			f.expect(f.receive(first, "the first request"), 201, "first")
			f.expect(f.receive(dup, "the duplicate"), 201, "duplicate")
			if fd := f.findings(h, 2)[1]; fd == nil || fd.Kind != idem.FoundInFlight {
				f.t.Fatalf("the duplicate ran with Finding %+v, want in-flight", fd)
			}
		}},
	{"B26/manual_sees_mismatch",
		"on a Manual route a reused key with another body runs the handler with a mismatch Finding instead of 422",
		nil, func(f *fixture) {
			h := orderHandler()
			f.serve(f.engine(idem.Config{}), manualRoute(h))
			k := f.key()
			f.expect(f.post("/orders", created, key(k)), 201, "first")
			f.expect(f.post("/orders", []byte("{}"), key(k)), 201, "other body")
			if fd := f.findings(h, 2)[1]; fd == nil || fd.Kind != idem.FoundMismatch {
				f.t.Fatalf("the reused key ran with Finding %+v, want mismatch", fd)
			}
		}},

	// B27
	{"B27/route_store",
		"a route with its own store keeps its records there and never in the engine's store",
		nil, func(f *fixture) {
			engineStore, routeStore := f.probe(), f.probe()
			h := orderHandler()
			f.serve(f.engine(idem.Config{Store: engineStore}), post("/orders", h).with(idem.Route{Store: routeStore}))
			k := f.key()
			f.expect(f.post("/orders", created, key(k)), 201, "first")
			f.expectReplayed(f.post("/orders", created, key(k)), true, "retry")
			if n := engineStore.calls.Load(); n != 0 {
				f.t.Fatalf("the engine's store was called %d times for a route with its own store", n)
			}
			if len(routeStore.leases()) != 1 {
				f.t.Fatalf("the route's store granted %d leases, want 1", len(routeStore.leases()))
			}
		}},
	{"B27/route_retention",
		"a route with its own retention time forgets its keys after it, while other routes keep theirs",
		nil, func(f *fixture) {
			short, long := orderHandler(), orderHandler()
			f.serve(f.engine(idem.Config{}), post("/short", short).with(idem.Route{Retention: shortRetention}), post("/long", long))
			ks, kl := f.key(), f.key()
			f.expect(f.post("/short", created, key(ks)), 201, "short first")
			f.expect(f.post("/long", created, key(kl)), 201, "long first")
			f.sleep(pastShort)
			r := f.post("/short", created, key(ks))
			f.expect(r, 201, "short retry")
			f.expectReplayed(r, false, "short retry after its retention")
			f.expectReplayed(f.post("/long", created, key(kl)), true, "long retry")
			f.expectCalls(short, 2, "short retention")
			f.expectCalls(long, 1, "default retention")
		}},
	{"B28/decisions_are_reported_without_secrets",
		"every decision reaches the observer and the logger, and neither ever sees the raw key or a body",
		nil, func(f *fixture) {
			var mu sync.Mutex
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
			observer := &EventRecorder{}
			f.serve(f.engine(idem.Config{Observer: observer, Logger: logger}), post("/orders", orderHandler()))
			k := "secret-key-" + f.key()
			// A secret of letters that no timestamp or key id holds.
			body := []byte(`{"card":"zqxjwvkpzqxjwvkp"}`)
			seen := func(o idem.Outcome) bool { return len(observer.With(o)) > 0 }
			f.expect(f.post("/orders", body, key(k)), 201, "first")
			f.waitFor(func() bool { return seen(idem.Stored) }, "the stored event is reported")
			f.expect(f.post("/orders", body, key(k)), 201, "replay")
			f.expect(f.post("/orders", []byte(`{"card":"other"}`), key(k)), 422, "mismatch")
			f.expect(f.post("/orders", body), 400, "missing key")
			f.expect(f.post("/orders", body, key("a,b")), 400, "invalid key")
			for _, o := range []idem.Outcome{idem.Executed, idem.Stored, idem.Replayed, idem.Mismatch, idem.Missing, idem.Invalid} {
				if !seen(o) {
					f.t.Fatalf("no %s event was reported", o)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, ev := range observer.Events() {
				if ev.KeyID != "" && (len(ev.KeyID) > 16 || strings.Contains(k, ev.KeyID)) {
					f.t.Fatalf("event %+v carries more than a short storage-key prefix", ev)
				}
			}
			out := logs.String()
			if strings.Contains(out, k) || strings.Contains(out, "zqxjw") {
				f.t.Fatalf("the log shows the raw key or the body:\n%s", out)
			}
			if !strings.Contains(out, "outcome=replayed") {
				f.t.Fatalf("the log lacks the replay:\n%s", out)
			}
		}},
}

// lockedWriter serializes writes to w under mu.
type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// heldHandler returns an order handler held until its gate opens.
func (f *fixture) heldHandler() (*Handler, *gate) {
	g := f.gate()
	h := orderHandler()
	h.Gate = g.ch
	return h, g
}

// start sends a keyed POST to path on its own goroutine and waits until
// h runs it.
func (f *fixture) start(h *Handler, path, k string) <-chan reply {
	f.t.Helper()
	ch := f.sendAsync(http.MethodPost, path, created, key(k))
	f.wait(h.Entered(), "the first request runs")
	return ch
}

// manualRoute is POST /orders with the Manual policy.
func manualRoute(h *Handler) *Route {
	return post("/orders", h).with(idem.Route{Policy: idem.Manual})
}

// invalidKey serves a Required route, sends opt's key and expects 400
// key-invalid without an execution. It returns the route's handler.
func invalidKey(f *fixture, opt reqOpt) *Handler {
	f.t.Helper()
	h := orderHandler()
	f.serve(f.engine(idem.Config{}), post("/orders", h))
	f.expectProblem(f.post("/orders", created, opt), 400, idem.ProblemKeyInvalid, "invalid key")
	f.expectCalls(h, 0, "invalid key")
	return h
}

// keyReused serves POST and PUT /orders and POST /refunds, runs POST
// /orders with a key, then sends the key with method, path+query and body:
// 422, no second execution, and the original still replays (B10).
func keyReused(f *fixture, method, path, query string, body []byte) {
	f.t.Helper()
	orders, refunds := orderHandler(), orderHandler()
	f.serve(f.engine(idem.Config{}), post("/orders", orders), route(http.MethodPut, "/orders", orders), post("/refunds", refunds))
	k := f.key()
	f.expect(f.post("/orders", created, key(k)), 201, "first")
	f.expectProblem(f.send(method, path+query, body, key(k)), 422, idem.ProblemKeyReused, "reused key")
	f.expectCalls(orders, 1, "reused key")
	f.expectCalls(refunds, 0, "reused key")
	r := f.post("/orders", created, key(k))
	f.expectBody(r, 201, created, "original retry")
	f.expectReplayed(r, true, "original retry")
}

// notReplayable sends a keyed request to /export twice: the first gets body
// whole, the retry 410 without a second execution (B19).
func notReplayable(f *fixture, h *Handler, body []byte) {
	f.t.Helper()
	k := f.key()
	f.expectBody(f.post("/export", created, key(k)), 201, body, "first")
	f.expectProblem(f.post("/export", created, key(k)), 410, idem.ProblemNotReplayable, "retry")
	f.expectCalls(h, 1, "not replayable")
}

// findings returns h's findings, failing unless there are n.
func (f *fixture) findings(h *Handler, n int) []*idem.Finding {
	f.t.Helper()
	fs := h.Findings()
	if len(fs) != n {
		f.t.Fatalf("the handler ran %d times, want %d", len(fs), n)
	}
	return fs
}

// binaryBody holds every byte value, CR LF and NUL included.
func binaryBody() []byte {
	b := make([]byte, 0, 1024)
	for i := 0; i < 4; i++ {
		for c := 0; c < 256; c++ {
			b = append(b, byte(c))
		}
	}
	return b
}
