package conformance

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"mime"
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
	// machine before the lease runs out under a handler that still runs;
	// the default StoreTimeout is a quarter of it (B34), what one renewal
	// may take against a Redis or PostgreSQL store. At 300 ms (75 ms per
	// store call) both cases failed under a load average of 13.
	renewedLease = 600 * time.Millisecond
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
	{"B1/safe_methods_pass_through", "GET, HEAD and OPTIONS run every time, with or without a key, and never touch the store", nil, testSafeMethodsPassThrough},
	{"B1/safe_methods_configurable", "a method added to Config.SafeMethods passes straight through; POST still needs a key", nil, testSafeMethodsConfigurable},
	{"B2/route_required_over_exempt_default", "on an engine whose default is Exempt, a route set to Required answers 400 without a key and replays with one", nil, testRouteRequiredOverExemptDefault},
	{"B2/route_exempt_over_required_default", "on an engine whose default is Required, a route set to Exempt runs every request, keyed or not, and touches no store, while a route without settings requires a key", nil, testRouteExemptOverRequiredDefault},
	{"B2/route_optional_over_required_default", "on an engine whose default is Required, an Optional route runs keyless requests untracked and replays keyed ones", nil, testRouteOptionalOverRequiredDefault},
	{"B2/route_layer_over_router_layer", "under a router-wide Exempt layer, a route layer set to Required answers 400 without a key and replays with one, while the other routes stay exempt", nil, testRouteLayerOverRouterLayer},
	{"B2/route_exempt_under_router_layer", "under a router-wide Required layer with its own store, a route layer set to Exempt runs every request and touches no store, while the other routes require a key", nil, testRouteExemptUnderRouterLayer},
	{"B2/route_layer_inherits_router_layer", "a route layer that sets only a policy takes the store and retention of the router-wide layer", nil, testRouteLayerInheritsRouterLayer},
	{"B3/exempt_ignores_key_and_store", "an Exempt route runs every time, ignores even a malformed key and never touches the store", nil, testExemptIgnoresKeyAndStore},
	{"B4/header_name_case_insensitive", "the key header matches whatever case the client writes its name in", nil, testHeaderNameCaseInsensitive},
	{"B4/custom_header_name", "Config.HeaderName replaces Idempotency-Key", nil, testCustomHeaderName},
	{"B5/quoted_and_bare_forms_are_one_key", `"abc" (RFC 8941 string) and abc (bare) name the same key`, nil, testQuotedAndBareFormsAreOneKey},
	{"B5/two_header_fields", "a key header sent twice is invalid: 400, the handler does not run", nil, testTwoHeaderFields},
	{"B5/comma_separated_list", "a comma-separated list of keys is invalid: 400, the handler does not run", nil, testCommaSeparatedList},
	{"B5/empty_value", "an empty key header is invalid: 400, the handler does not run", nil, testEmptyValue},
	{"B5/control_character", "a key holding a control character (a tab) is invalid: 400, the handler does not run", nil, testControlCharacter},
	{"B5/over_long_key", "a key of 256 characters is invalid (the default limit is 255, which is accepted)", nil, testOverLongKey},
	{"B5/custom_validator", "Config.ValidateKey rejects keys with 400 and its reason; keys it accepts work", nil, testCustomValidator},
	{"B6/missing_key_required", "a Required route answers a request without a key with 400 and does not run the handler", nil, testMissingKeyRequired},
	{"B6/missing_key_optional_runs_untracked", "an Optional route runs a request without a key every time, as if Exempt", nil, testMissingKeyOptionalRunsUntracked},
	{"B6/missing_key_manual", "a Manual route answers a request without a key with 400", nil, testMissingKeyManual},
	{"B7/invalid_key_on_optional_route", "an Optional route does not ignore a malformed key: 400, the handler does not run, nothing is stored", nil, testInvalidKeyOnOptionalRoute},
	{"B8/scopes_are_isolated", "one key sent with two Authorization values names two records: neither replays, blocks or mismatches the other", nil, testScopesAreIsolated},
	{"B9/fingerprint_off", "with idem.NoFingerprint a reused key replays even when the body differs", nil, testFingerprintOff},
	{"B10/key_reused_with_other_body", "the same key with another body: 422, the handler does not run, the original record still replays", nil, testKeyReusedWithOtherBody},
	{"B10/key_reused_with_other_query", "the same key with another query string: 422", nil, testKeyReusedWithOtherQuery},
	{"B10/key_reused_with_other_method", "the same key with another method on the same path: 422", nil, testKeyReusedWithOtherMethod},
	{"B10/key_reused_on_other_endpoint", "the same key sent to another endpoint: 422", nil, testKeyReusedOnOtherEndpoint},
	{"B11/concurrent_duplicates_run_once", "of 6 concurrent requests with one key exactly one runs; the others get 409 with Retry-After", nil, testConcurrentDuplicatesRunOnce},
	{"B11/record_kept_in_the_store", "the first request's response is recorded in the engine's store under the storage key of (scope, key)", nil, testRecordKeptInTheStore},
	{"B12/in_flight_duplicate_conflicts", "a duplicate of a request still running gets 409 with Retry-After; after the first finishes it gets the replay", nil, testInFlightDuplicateConflicts},
	{"B12/in_flight_wait_then_replay", "with Config.InFlightWait a duplicate waits for the first request and gets its replay", nil, testInFlightWaitThenReplay},
	{"B12/configured_in_flight_status", "when the wait runs out the duplicate gets Config.InFlightStatus (here 423) with Retry-After", nil, testConfiguredInFlightStatus},
	{"B13/replay_is_identical", "a retry gets the original status, the stored headers, a byte-identical body and Idempotent-Replayed: true", nil, testReplayIsIdentical},
	{"B13/configured_replay_status", "Config.ReplayStatus replaces the original status of a replay; the body stays the same", nil, testConfiguredReplayStatus},
	{"B13/json_responder_replayed", "a response written with the framework's own JSON responder (which may set Content-Type after the status) is replayed with the same status, Content-Type and body", nil, testJSONResponderReplayed},
	{"B14/error_status_not_stored", "a 500 is passed on unchanged and not stored: the store sees a Release and no Complete, and the retry runs the handler again", nil, testErrorStatusNotStored},
	{"B14/configured_stored_statuses", "with Config.StoredStatuses {201, 404} a 404 is completed and replayed, and a 200 is released, not stored", nil, testConfiguredStoredStatuses},
	{"B14/status_only_202_replayed", "a 202 with a Location and no body is stored and replayed as 202 with an empty body, not as 200", nil, testStatusOnly202Replayed},
	{"B14/no_content_204_replayed", "a 204 is stored and replayed as 204", nil, testNoContent204Replayed},
	{"B15/panic_releases_key", "a handler that panics releases the key (a Release, no Complete) and the panic reaches the framework's recovery; the retry runs the handler again instead of 409", nil, testPanicReleasesKey},
	{"B15/handler_error_releases_key", "a handler error that the framework renders releases the key (a Release, no Complete): the retry runs the handler again", []Capability{HandlerError}, testHandlerErrorReleasesKey},
	{"B15/goexit_releases_key", "a handler that ends its goroutine with runtime.Goexit releases the key like a panic: nothing is recorded and the retry runs the handler again", []Capability{Goexit}, testGoexitReleasesKey},
	{"B16/lease_renewed_for_long_handler", "a handler running 4 lease times keeps its key: a duplicate mid-way gets 409, the handler runs once", nil, testLeaseRenewedForLongHandler},
	{"B16/late_completion_changes_nothing", "when a lease is lost (renewals fail) the key runs again; the late first completion does not overwrite the new record, and its client still gets its response", nil, testLateCompletionChangesNothing},
	{"B17/crashed_owner_lease_expires", "an owner that vanished leaves an in-flight record: 409 until the lease time passes, then the key runs again under a new token", nil, testCrashedOwnerLeaseExpires},
	{"B18/retention_expiry", "after Config.Retention a completed key is new again", nil, testRetentionExpiry},
	{"B19/over_limit_response_not_replayable", "a response over Config.MaxResponseBody reaches the first client whole; a retry gets 410 and no second execution", nil, testOverLimitResponseNotReplayable},
	{"B19/flushed_response_not_replayable", "a flushed response reaches the first client whole; a retry gets 410 and no second execution", []Capability{Flush}, testFlushedResponseNotReplayable},
	{"B19/hijack_releases_key", "a handler that hijacks the connection releases the key (a Release, no Complete): the retry runs the handler again", []Capability{Hijack}, testHijackReleasesKey},
	{"B20/only_allowlisted_headers_replayed", "Set-Cookie, Date and headers off the allowlist reach the first client but are not replayed", nil, testOnlyAllowlistedHeadersReplayed},
	{"B20/configured_replay_headers", "Config.ReplayHeaders replaces the allowlist", nil, testConfiguredReplayHeaders},
	{"B20/headers_set_after_status", "header fields set after the status was chosen and before the body are replayed exactly as the first client got them", nil, testHeadersSetAfterStatus},
	{"B20/repeated_fields_in_order", "repeated Link and Vary fields are replayed as separate fields in their original order", nil, testRepeatedFieldsInOrder},
	{"B21/request_body_over_limit", "a keyed request whose body exceeds Config.MaxRequestBody gets 413 and the handler does not run", nil, testRequestBodyOverLimit},
	{"B21/chunked_body_limit", "a keyed request body sent without a Content-Length (chunked) is accepted up to Config.MaxRequestBody and answered 413 past it", nil, testChunkedBodyLimit},
	{"B21/handler_reads_exact_bytes", "the handler reads exactly the bytes the client sent, binary included, although the engine read them first", nil, testHandlerReadsExactBytes},
	{"B22/store_unavailable_fails_closed", "when the store fails the request gets 503 with Retry-After and the handler does not run", nil, testStoreUnavailableFailsClosed},
	{"B22/fail_open_runs_untracked", "with Config.FailOpen a failing store lets the handler run untracked, on the body the client sent: no Complete or Release follows the failed Acquire, and each run is reported", nil, testFailOpenRunsUntracked},
	{"B23/completion_failure_still_responds", "when the store fails to record the response the client still gets it, nothing releases the key, and a retry gets 409, never a second execution", nil, testCompletionFailureStillResponds},
	{"B24/client_disconnect_still_records", "a client that hangs up while the handler runs does not cancel the recording: the retry is a replay, not a second execution", nil, testClientDisconnectStillRecords},
	{"B25/problems_are_problem_json", "every response the engine writes itself is application/problem+json with type, title, status and detail", nil, testProblemsAreProblemJson},
	{"B25/custom_problem_renderer", "Config.RenderProblem replaces the engine's rendering", nil, testCustomProblemRenderer},
	{"B26/manual_sees_completed_record", "on a Manual route a retry runs the handler with the recorded response as a Finding; its own response is passed on, not stored (one Complete in all)", nil, testManualSeesCompletedRecord},
	{"B26/manual_sees_in_flight", "on a Manual route a duplicate of a running request runs the handler with an in-flight Finding", nil, testManualSeesInFlight},
	{"B26/manual_sees_mismatch", "on a Manual route a reused key with another body runs the handler, on the body the client sent, with a mismatch Finding instead of 422; its response is not stored", nil, testManualSeesMismatch},
	{"B27/route_store", "a route with its own store keeps its records there and never in the engine's store", nil, testRouteStore},
	{"B27/route_retention", "a route with its own retention time forgets its keys after it, while other routes keep theirs", nil, testRouteRetention},
	{"B27/router_layer_store", "a router-wide layer with its own store keeps the records of the routes under it there, never in the engine's store", nil, testRouterLayerStore},
	{"B27/one_layer_processes", "with a router-wide layer and a route layer on one route, exactly one layer processes a request: the route layer's store gets one lease per request and the router-wide store none", nil, testOneLayerProcesses},
	{"B27/stacked_route_layers", "of two idem layers stacked on one route, each with its own store, exactly one processes each request: one lease per request in one store, nothing in the other", nil, testStackedRouteLayers},
	{"B28/decisions_are_reported_without_secrets", "every decision reaches the observer and the logger, and neither ever sees the raw key or a body", nil, testDecisionsAreReportedWithoutSecrets},
	{"B30/full_store_refuses_new_keys", "a store too full for new keys answers them 503 store-full with Retry-After, never runs them (not even with FailOpen), and still replays the records it holds", nil, testFullStoreRefusesNewKeys},
	{"B33/corrupt_record_is_a_store_error", "a record the store returns with a status outside 100-599 is never written to the client: 503 store-unavailable, and the handler does not run", nil, testCorruptRecordIsAStoreError},
	{"B35/handler_gets_run_context", "with a TransactionalStore the handler runs with the context the store's BeginRun made (it carries the transaction), and the record commits with it", nil, testHandlerGetsRunContext},
	{"B35/response_held_until_commit", "with a TransactionalStore the client gets nothing of the response (not even its status line) until the store's Complete has returned", nil, testResponseHeldUntilCommit},
	{"B35/commit_failure_is_a_problem", "when a TransactionalStore's commit fails the client gets 503 not-committed with Retry-After, never the handler's success, and the retry runs again", nil, testCommitFailureIsAProblem},
	{"B35/flush_held_until_commit", "with a TransactionalStore a flushed response is held too: when the commit fails the client gets the 503 problem, not the flushed part", []Capability{Flush}, testFlushHeldUntilCommit},
}

// testSafeMethodsPassThrough: B1/safe_methods_pass_through.
func testSafeMethodsPassThrough(f *fixture) {
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
}

// testSafeMethodsConfigurable: B1/safe_methods_configurable.
func testSafeMethodsConfigurable(f *fixture) {
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
}

// testRouteRequiredOverExemptDefault: B2/route_required_over_exempt_default.
func testRouteRequiredOverExemptDefault(f *fixture) {
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
}

// testRouteExemptOverRequiredDefault: B2/route_exempt_over_required_default.
func testRouteExemptOverRequiredDefault(f *fixture) {
	st := f.probe()
	h, other := orderHandler(), orderHandler()
	f.serve(f.engine(idem.Config{Store: st}), post("/hooks", h).with(idem.Route{Policy: idem.Exempt}), post("/orders", other))
	k := f.key()
	f.expect(f.post("/hooks", created), 201, "no key")
	f.expect(f.post("/hooks", created, key(k)), 201, "with a key")
	r := f.post("/hooks", created, key(k))
	f.expect(r, 201, "same key again")
	f.expectReplayed(r, false, "same key again")
	f.expectCalls(h, 3, "Exempt route")
	if n := st.calls.Load(); n != 0 {
		f.t.Fatalf("the store was called %d times on an Exempt route", n)
	}
	f.expectProblem(f.post("/orders", created), 400, idem.ProblemKeyMissing, "a route without settings, no key")
	f.expectCalls(other, 0, "a route without settings, no key")
}

// testRouteOptionalOverRequiredDefault: B2/route_optional_over_required_default.
func testRouteOptionalOverRequiredDefault(f *fixture) {
	h := orderHandler()
	f.serve(f.engine(idem.Config{}), post("/pay", h).with(idem.Route{Policy: idem.Optional}))
	f.expect(f.post("/pay", created), 201, "no key")
	k := f.key()
	f.expect(f.post("/pay", created, key(k)), 201, "with a key")
	r := f.post("/pay", created, key(k))
	f.expect(r, 201, "retry")
	f.expectReplayed(r, true, "retry")
	f.expectCalls(h, 2, "Optional route")
}

// testExemptIgnoresKeyAndStore: B3/exempt_ignores_key_and_store.
func testExemptIgnoresKeyAndStore(f *fixture) {
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
}

// testHeaderNameCaseInsensitive: B4/header_name_case_insensitive.
func testHeaderNameCaseInsensitive(f *fixture) {
	h := orderHandler()
	f.serve(f.engine(idem.Config{}), post("/orders", h))
	k := f.key()
	f.expect(f.post("/orders", created, header("idempotency-key", k)), 201, "lower-case header name")
	r := f.post("/orders", created, header("IDEMPOTENCY-KEY", k))
	f.expect(r, 201, "upper-case header name")
	f.expectReplayed(r, true, "upper-case header name")
	f.expectCalls(h, 1, "one key in two spellings")
}

// testCustomHeaderName: B4/custom_header_name.
func testCustomHeaderName(f *fixture) {
	h := orderHandler()
	f.serve(f.engine(idem.Config{HeaderName: "Request-Key"}), post("/orders", h))
	k := f.key()
	f.expect(f.post("/orders", created, header("Request-Key", k)), 201, "first")
	r := f.post("/orders", created, header("request-key", k))
	f.expect(r, 201, "retry")
	f.expectReplayed(r, true, "retry")
	f.expectProblem(f.post("/orders", created, key(f.key())), 400, idem.ProblemKeyMissing, "key only in Idempotency-Key")
	f.expectCalls(h, 1, "custom header")
}

// testQuotedAndBareFormsAreOneKey: B5/quoted_and_bare_forms_are_one_key.
func testQuotedAndBareFormsAreOneKey(f *fixture) {
	h := orderHandler()
	f.serve(f.engine(idem.Config{}), post("/orders", h))
	k := f.key()
	f.expect(f.post("/orders", created, key(`"`+k+`"`)), 201, "quoted key")
	r := f.post("/orders", created, key(k))
	f.expect(r, 201, "bare key")
	f.expectReplayed(r, true, "bare form of the quoted key")
	f.expectCalls(h, 1, "one key in two forms")
}

// testTwoHeaderFields: B5/two_header_fields.
func testTwoHeaderFields(f *fixture) {
	invalidKey(f, header("Idempotency-Key", f.key(), f.key()))
}

// testCommaSeparatedList: B5/comma_separated_list.
func testCommaSeparatedList(f *fixture) {
	invalidKey(f, key(f.key()+","+f.key()))
}

// testEmptyValue: B5/empty_value.
func testEmptyValue(f *fixture) {
	invalidKey(f, key(""))
}

// testControlCharacter: B5/control_character.
func testControlCharacter(f *fixture) {
	invalidKey(f, key("a\tb"))
}

// testOverLongKey: B5/over_long_key.
func testOverLongKey(f *fixture) {
	h := invalidKey(f, key(strings.Repeat("x", 256)))
	f.expect(f.post("/orders", created, key(f.prefix+strings.Repeat("y", 255-len(f.prefix)))), 201, "255 characters")
	f.expectCalls(h, 1, "a key of 255 characters")
}

// testCustomValidator: B5/custom_validator.
func testCustomValidator(f *fixture) {
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
}

// testMissingKeyRequired: B6/missing_key_required.
func testMissingKeyRequired(f *fixture) {
	h := orderHandler()
	f.serve(f.engine(idem.Config{}), post("/orders", h))
	f.expectProblem(f.post("/orders", created), 400, idem.ProblemKeyMissing, "no key")
	f.expectCalls(h, 0, "no key")
}

// testMissingKeyOptionalRunsUntracked: B6/missing_key_optional_runs_untracked.
func testMissingKeyOptionalRunsUntracked(f *fixture) {
	h := orderHandler()
	f.serve(f.engine(idem.Config{DefaultPolicy: idem.Optional}), post("/orders", h))
	f.expect(f.post("/orders", created), 201, "first without a key")
	r := f.post("/orders", created)
	f.expect(r, 201, "second without a key")
	f.expectReplayed(r, false, "second without a key")
	f.expectCalls(h, 2, "no key on an Optional route")
}

// testMissingKeyManual: B6/missing_key_manual.
func testMissingKeyManual(f *fixture) {
	h := orderHandler()
	f.serve(f.engine(idem.Config{}), manualRoute(h))
	f.expectProblem(f.post("/orders", created), 400, idem.ProblemKeyMissing, "no key on a Manual route")
	f.expectCalls(h, 0, "no key on a Manual route")
}

// testInvalidKeyOnOptionalRoute: B7/invalid_key_on_optional_route.
func testInvalidKeyOnOptionalRoute(f *fixture) {
	st := f.probe()
	h := orderHandler()
	f.serve(f.engine(idem.Config{Store: st, DefaultPolicy: idem.Optional}), post("/orders", h))
	f.expectProblem(f.post("/orders", created, key("a b")), 400, idem.ProblemKeyInvalid, "malformed key")
	f.expectCalls(h, 0, "malformed key")
	if n := st.calls.Load(); n != 0 {
		f.t.Fatalf("the store was called %d times for a malformed key", n)
	}
}

// testScopesAreIsolated: B8/scopes_are_isolated.
func testScopesAreIsolated(f *fixture) {
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
}

// testFingerprintOff: B9/fingerprint_off.
func testFingerprintOff(f *fixture) {
	h := &Handler{EchoBody: true}
	f.serve(f.engine(idem.Config{Fingerprint: idem.NoFingerprint}), post("/orders", h))
	k := f.key()
	f.expectBody(f.post("/orders", []byte("one"), key(k)), 200, []byte("one"), "first")
	r := f.post("/orders", []byte("two"), key(k))
	f.expectBody(r, 200, []byte("one"), "other body, fingerprint off")
	f.expectReplayed(r, true, "other body, fingerprint off")
}

// testKeyReusedWithOtherBody: B10/key_reused_with_other_body.
func testKeyReusedWithOtherBody(f *fixture) {
	keyReused(f, http.MethodPost, "/orders", "", []byte(`{"amount":2}`))
}

// testKeyReusedWithOtherQuery: B10/key_reused_with_other_query.
func testKeyReusedWithOtherQuery(f *fixture) {
	keyReused(f, http.MethodPost, "/orders", "?currency=usd", created)
}

// testKeyReusedWithOtherMethod: B10/key_reused_with_other_method.
func testKeyReusedWithOtherMethod(f *fixture) {
	keyReused(f, http.MethodPut, "/orders", "", created)
}

// testKeyReusedOnOtherEndpoint: B10/key_reused_on_other_endpoint.
func testKeyReusedOnOtherEndpoint(f *fixture) {
	keyReused(f, http.MethodPost, "/refunds", "", created)
}

// testConcurrentDuplicatesRunOnce: B11/concurrent_duplicates_run_once.
func testConcurrentDuplicatesRunOnce(f *fixture) {
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
}

// testRecordKeptInTheStore: B11/record_kept_in_the_store.
func testRecordKeptInTheStore(f *fixture) {
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
}

// testInFlightDuplicateConflicts: B12/in_flight_duplicate_conflicts.
func testInFlightDuplicateConflicts(f *fixture) {
	h, g := f.heldHandler()
	f.serve(f.engine(idem.Config{}), post("/orders", h))
	k := f.key()
	first := f.start(h, "/orders", k)
	r := f.duplicate("/orders", k)
	f.expectProblem(r, 409, idem.ProblemInFlight, "duplicate while in flight")
	f.expectRetryAfter(r, "duplicate while in flight")
	g.open()
	f.expect(f.receive(first, "the first request"), 201, "first")
	r = f.post("/orders", created, key(k))
	f.expectBody(r, 201, created, "retry after completion")
	f.expectReplayed(r, true, "retry after completion")
	f.expectCalls(h, 1, "in-flight duplicate")
}

// testInFlightWaitThenReplay: B12/in_flight_wait_then_replay.
func testInFlightWaitThenReplay(f *fixture) {
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
}

// testConfiguredInFlightStatus: B12/configured_in_flight_status.
func testConfiguredInFlightStatus(f *fixture) {
	h, g := f.heldHandler()
	f.serve(f.engine(idem.Config{InFlightWait: 100 * time.Millisecond, InFlightStatus: http.StatusLocked}), post("/orders", h))
	k := f.key()
	first := f.start(h, "/orders", k)
	r := f.duplicate("/orders", k)
	f.expectProblem(r, http.StatusLocked, idem.ProblemInFlight, "duplicate after the wait")
	f.expectRetryAfter(r, "duplicate after the wait")
	g.open()
	f.expect(f.receive(first, "the first request"), 201, "first")
	f.expectCalls(h, 1, "duplicate after the wait")
}

// testReplayIsIdentical: B13/replay_is_identical.
func testReplayIsIdentical(f *fixture) {
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
}

// testConfiguredReplayStatus: B13/configured_replay_status.
func testConfiguredReplayStatus(f *fixture) {
	h := orderHandler()
	f.serve(f.engine(idem.Config{ReplayStatus: http.StatusConflict}), post("/orders", h))
	k := f.key()
	f.expect(f.post("/orders", created, key(k)), 201, "first")
	r := f.post("/orders", created, key(k))
	f.expectBody(r, 409, created, "replay")
	f.expectReplayed(r, true, "replay")
	f.expectCalls(h, 1, "replay")
}

// testErrorStatusNotStored: B14/error_status_not_stored.
func testErrorStatusNotStored(f *fixture) {
	st := f.probe()
	h := &Handler{Status: 500, Body: []byte("try again")}
	f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
	k := f.key()
	f.expectBody(f.post("/orders", created, key(k)), 500, []byte("try again"), "first")
	f.expectStoreCalls(st, k, storeCalls{acquire: 1, release: 1}, "after a 500")
	r := f.post("/orders", created, key(k))
	f.expectBody(r, 500, []byte("try again"), "retry")
	f.expectReplayed(r, false, "retry")
	f.expectCalls(h, 2, "not stored")
	f.expectStoreCalls(st, k, storeCalls{acquire: 2, release: 2}, "after two 500s")
}

// testConfiguredStoredStatuses: B14/configured_stored_statuses.
func testConfiguredStoredStatuses(f *fixture) {
	st := f.probe()
	gone := &Handler{Status: 404, Body: []byte("no such order")}
	ok := &Handler{Status: 200, Body: []byte("ok")}
	f.serve(f.engine(idem.Config{Store: st, StoredStatuses: []int{201, 404}}), post("/gone", gone), post("/ok", ok))
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
	f.expectStoreCalls(st, k1, storeCalls{acquire: 2, complete: 1}, "stored 404")
	f.expectStoreCalls(st, k2, storeCalls{acquire: 2, release: 2}, "unstored 200")
}

// testPanicReleasesKey: B15/panic_releases_key.
func testPanicReleasesKey(f *fixture) {
	st := f.probe()
	h := &Handler{Panic: true}
	f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
	k := f.key()
	f.expectAborted(f.post("/orders", created, key(k)), "a panicking handler")
	f.expectStoreCalls(st, k, storeCalls{acquire: 1, release: 1}, "after the panic")
	r := f.post("/orders", created, key(k))
	if r.err == nil && r.status == 409 {
		f.t.Fatalf("the retry got 409: the panic did not release the key")
	}
	f.expectAborted(r, "the retry of a panicking handler")
	f.expectCalls(h, 2, "panicking handler")
	f.expectStoreCalls(st, k, storeCalls{acquire: 2, release: 2}, "after two panics")
}

// testHandlerErrorReleasesKey: B15/handler_error_releases_key.
func testHandlerErrorReleasesKey(f *fixture) {
	st := f.probe()
	h := &Handler{Fail: true}
	f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
	k := f.key()
	r := f.post("/orders", created, key(k))
	if r.err != nil || r.status < 400 {
		f.t.Fatalf("a failing handler got status %d, error %v; want the framework's error response", r.status, r.err)
	}
	f.expectStoreCalls(st, k, storeCalls{acquire: 1, release: 1}, "after the error")
	r = f.post("/orders", created, key(k))
	if r.err == nil && r.status == 409 {
		f.t.Fatalf("the retry got 409: the error did not release the key")
	}
	f.expectCalls(h, 2, "failing handler")
	f.expectStoreCalls(st, k, storeCalls{acquire: 2, release: 2}, "after two errors")
}

// testGoexitReleasesKey: B15/goexit_releases_key.
func testGoexitReleasesKey(f *fixture) {
	st := f.probe()
	h := &Handler{Goexit: true}
	f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
	k := f.key()
	f.expectAborted(f.post("/orders", created, key(k)), "a handler that called runtime.Goexit")
	f.expectStoreCalls(st, k, storeCalls{acquire: 1, release: 1}, "after runtime.Goexit")
	r := f.post("/orders", created, key(k))
	if r.err == nil && r.status < 300 {
		f.t.Fatalf("the retry got %d: the runtime.Goexit was recorded as a response", r.status)
	}
	f.expectCalls(h, 2, "handler ending in runtime.Goexit")
	f.expectStoreCalls(st, k, storeCalls{acquire: 2, release: 2}, "after two runtime.Goexit calls")
}

// testLeaseRenewedForLongHandler: B16/lease_renewed_for_long_handler.
func testLeaseRenewedForLongHandler(f *fixture) {
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
}

// testLateCompletionChangesNothing: B16/late_completion_changes_nothing.
func testLateCompletionChangesNothing(f *fixture) {
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
}

// testCrashedOwnerLeaseExpires: B17/crashed_owner_lease_expires.
func testCrashedOwnerLeaseExpires(f *fixture) {
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
}

// testRetentionExpiry: B18/retention_expiry.
func testRetentionExpiry(f *fixture) {
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
}

// testOverLimitResponseNotReplayable: B19/over_limit_response_not_replayable.
func testOverLimitResponseNotReplayable(f *fixture) {
	body := bytes.Repeat([]byte("0123456789"), 100)
	h := &Handler{Status: 201, Body: body}
	f.serve(f.engine(idem.Config{MaxResponseBody: 64}), post("/export", h))
	notReplayable(f, h, body)
}

// testFlushedResponseNotReplayable: B19/flushed_response_not_replayable.
func testFlushedResponseNotReplayable(f *fixture) {
	body := bytes.Repeat([]byte("stream "), 40)
	h := &Handler{Status: 201, Body: body, Flush: true}
	f.serve(f.engine(idem.Config{}), post("/export", h))
	notReplayable(f, h, body)
}

// testHijackReleasesKey: B19/hijack_releases_key.
func testHijackReleasesKey(f *fixture) {
	st := f.probe()
	h := &Handler{Hijack: true}
	f.serve(f.engine(idem.Config{Store: st}), post("/ws", h))
	k := f.key()
	f.post("/ws", created, key(k)) // the hijacked connection answers
	// The client can read the hijacked response before the handler
	// has returned and the key is released: wait for the release.
	f.expectStoreCalls(st, k, storeCalls{acquire: 1, release: 1}, "after the hijack")
	r := f.post("/ws", created, key(k))
	if r.err == nil && (r.status == 409 || r.status == 410 || r.header.Get(idem.ReplayedHeader) != "") {
		f.t.Fatalf("the retry got %d: the hijack did not release the key", r.status)
	}
	f.expectCalls(h, 2, "hijacking handler")
	f.expectStoreCalls(st, k, storeCalls{acquire: 2, release: 2}, "after two hijacks")
}

// testOnlyAllowlistedHeadersReplayed: B20/only_allowlisted_headers_replayed.
func testOnlyAllowlistedHeadersReplayed(f *fixture) {
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
}

// testConfiguredReplayHeaders: B20/configured_replay_headers.
func testConfiguredReplayHeaders(f *fixture) {
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
}

// testRequestBodyOverLimit: B21/request_body_over_limit.
func testRequestBodyOverLimit(f *fixture) {
	h := &Handler{EchoBody: true}
	f.serve(f.engine(idem.Config{MaxRequestBody: 100}), post("/upload", h))
	f.expectProblem(f.post("/upload", bytes.Repeat([]byte("a"), 101), key(f.key())), 413, idem.ProblemRequestTooLarge, "101 bytes")
	f.expectCalls(h, 0, "body over the limit")
	body := bytes.Repeat([]byte("b"), 100)
	f.expectBody(f.post("/upload", body, key(f.key())), 200, body, "100 bytes")
}

// testChunkedBodyLimit: B21/chunked_body_limit.
func testChunkedBodyLimit(f *fixture) {
	h := &Handler{EchoBody: true}
	f.serve(f.engine(idem.Config{MaxRequestBody: 100}), post("/upload", h))
	body := bytes.Repeat([]byte("c"), 100)
	f.expectBody(f.post("/upload", nil, key(f.key()), chunked(body)), 200, body, "100 bytes chunked")
	f.expectProblem(f.post("/upload", nil, key(f.key()), chunked(append(body, 'c'))), 413, idem.ProblemRequestTooLarge, "101 bytes chunked")
	f.expectCalls(h, 1, "chunked bodies")
}

// testHandlerReadsExactBytes: B21/handler_reads_exact_bytes.
func testHandlerReadsExactBytes(f *fixture) {
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
}

// testStoreUnavailableFailsClosed: B22/store_unavailable_fails_closed.
func testStoreUnavailableFailsClosed(f *fixture) {
	st := f.probe()
	st.failAcquire = true
	h := orderHandler()
	f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
	r := f.post("/orders", created, key(f.key()))
	f.expectProblem(r, 503, idem.ProblemStoreUnavailable, "store down")
	f.expectRetryAfter(r, "store down")
	f.expectCalls(h, 0, "store down")
}

// testFailOpenRunsUntracked: B22/fail_open_runs_untracked.
func testFailOpenRunsUntracked(f *fixture) {
	st := f.probe()
	st.failAcquire = true
	observer := &EventRecorder{}
	h := &Handler{Status: 201, EchoBody: true}
	f.serve(f.engine(idem.Config{Store: st, FailOpen: true, Observer: observer}), post("/orders", h))
	k := f.key()
	f.expectBody(f.post("/orders", created, key(k)), 201, created, "first (the handler echoes the body it read)")
	r := f.post("/orders", created, key(k))
	f.expectBody(r, 201, created, "retry")
	f.expectReplayed(r, false, "retry")
	f.expectCalls(h, 2, "fail open")
	f.expectStoreCalls(st, k, storeCalls{acquire: 2}, "fail open")
	if n := len(observer.With(idem.Untracked)); n != 2 {
		f.t.Fatalf("%d untracked runs were reported, want 2", n)
	}
}

// testCompletionFailureStillResponds: B23/completion_failure_still_responds.
func testCompletionFailureStillResponds(f *fixture) {
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
	f.expectStoreCalls(st, k, storeCalls{acquire: 2, complete: 1}, "a failed completion leaves the in-flight record")
}

// testClientDisconnectStillRecords: B24/client_disconnect_still_records.
func testClientDisconnectStillRecords(f *fixture) {
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
}

// testProblemsAreProblemJson: B25/problems_are_problem_json.
func testProblemsAreProblemJson(f *fixture) {
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
	f.expectProblem(f.duplicate("/slow", k), 409, idem.ProblemInFlight, "in flight")
	g.open()
	f.expect(f.receive(first, "the slow request"), 201, "slow")
}

// testCustomProblemRenderer: B25/custom_problem_renderer.
func testCustomProblemRenderer(f *fixture) {
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
}

// testManualSeesCompletedRecord: B26/manual_sees_completed_record.
func testManualSeesCompletedRecord(f *fixture) {
	st := f.probe()
	h := orderHandler()
	f.serve(f.engine(idem.Config{Store: st}), manualRoute(h))
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
	f.expectStoreCalls(st, k, storeCalls{acquire: 3, complete: 1}, "the retries' responses are not stored")
}

// testManualSeesInFlight: B26/manual_sees_in_flight.
func testManualSeesInFlight(f *fixture) {
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
}

// testManualSeesMismatch: B26/manual_sees_mismatch.
func testManualSeesMismatch(f *fixture) {
	st := f.probe()
	h := orderHandler()
	f.serve(f.engine(idem.Config{Store: st}), manualRoute(h))
	k := f.key()
	f.expect(f.post("/orders", created, key(k)), 201, "first")
	f.expect(f.post("/orders", []byte(`{"amount":2}`), key(k)), 201, "other body")
	if fd := f.findings(h, 2)[1]; fd == nil || fd.Kind != idem.FoundMismatch {
		f.t.Fatalf("the reused key ran with Finding %+v, want mismatch", fd)
	}
	if b := h.Bodies()[1]; string(b) != `{"amount":2}` {
		f.t.Fatalf("the handler read %q, want the body the client sent (the engine read it first)", b)
	}
	f.expectStoreCalls(st, k, storeCalls{acquire: 2, complete: 1}, "the mismatched request's response is not stored")
}

// testRouteStore: B27/route_store.
func testRouteStore(f *fixture) {
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
}

// testRouteRetention: B27/route_retention.
func testRouteRetention(f *fixture) {
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
}

// testDecisionsAreReportedWithoutSecrets: B28/decisions_are_reported_without_secrets.
func testDecisionsAreReportedWithoutSecrets(f *fixture) {
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
	f.waitWithin(time.Second, func() bool { return seen(idem.Stored) }, "the stored event is reported")
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
}

// testRouteLayerOverRouterLayer: B2/route_layer_over_router_layer.
func testRouteLayerOverRouterLayer(f *fixture) {
	plain, opted := orderHandler(), orderHandler()
	f.serveApp(App{Engine: f.engine(idem.Config{}), Settings: idem.Route{Policy: idem.Exempt},
		Routes: []*Route{post("/plain", plain), post("/opted", opted).with(idem.Route{Policy: idem.Required})}})
	k := f.key()
	f.expect(f.post("/plain", created), 201, "router-wide Exempt, no key")
	f.expect(f.post("/plain", created, key(k)), 201, "router-wide Exempt, with a key")
	f.expectReplayed(f.post("/plain", created, key(k)), false, "router-wide Exempt, same key again")
	f.expectCalls(plain, 3, "a route under the router-wide Exempt layer")
	f.expectProblem(f.post("/opted", created), 400, idem.ProblemKeyMissing, "route layer Required, no key")
	k = f.key()
	f.expect(f.post("/opted", created, key(k)), 201, "route layer Required, first request")
	r := f.post("/opted", created, key(k))
	f.expectBody(r, 201, created, "route layer Required, retry")
	f.expectReplayed(r, true, "route layer Required, retry")
	f.expectCalls(opted, 1, "route layer Required")
}

// testRouteExemptUnderRouterLayer: B2/route_exempt_under_router_layer.
func testRouteExemptUnderRouterLayer(f *fixture) {
	engineStore, routerStore := f.probe(), f.probe()
	hooks, orders := orderHandler(), orderHandler()
	f.serveApp(App{Engine: f.engine(idem.Config{Store: engineStore, DefaultPolicy: idem.Optional}),
		Settings: idem.Route{Policy: idem.Required, Store: routerStore},
		Routes:   []*Route{post("/hooks", hooks).with(idem.Route{Policy: idem.Exempt}), post("/orders", orders)}})
	k := f.key()
	f.expect(f.post("/hooks", created), 201, "route layer Exempt, no key")
	f.expect(f.post("/hooks", created, key(k)), 201, "route layer Exempt, with a key")
	r := f.post("/hooks", created, key(k))
	f.expect(r, 201, "route layer Exempt, same key again")
	f.expectReplayed(r, false, "route layer Exempt, same key again")
	f.expect(f.post("/hooks", created, key("a,b")), 201, "route layer Exempt, malformed key")
	f.expectCalls(hooks, 4, "route layer Exempt")
	if n := engineStore.calls.Load() + routerStore.calls.Load(); n != 0 {
		f.t.Fatalf("the stores were called %d times for an Exempt route", n)
	}
	f.expectProblem(f.post("/orders", created), 400, idem.ProblemKeyMissing, "router-wide Required, no key")
	f.expectCalls(orders, 0, "router-wide Required, no key")
}

// testRouteLayerInheritsRouterLayer: B2/route_layer_inherits_router_layer.
func testRouteLayerInheritsRouterLayer(f *fixture) {
	engineStore, routerStore := f.probe(), f.probe()
	h := orderHandler()
	f.serveApp(App{Engine: f.engine(idem.Config{Store: engineStore}),
		Settings: idem.Route{Store: routerStore, Retention: shortRetention},
		Routes:   []*Route{post("/orders", h).with(idem.Route{Policy: idem.Optional})}})
	f.expect(f.post("/orders", created), 201, "route layer Optional, no key")
	k := f.key()
	f.expect(f.post("/orders", created, key(k)), 201, "with a key")
	f.expectReplayed(f.post("/orders", created, key(k)), true, "retry within the router-wide retention")
	f.expectStoreCalls(routerStore, k, storeCalls{acquire: 2, complete: 1}, "the router-wide layer's store")
	if n := engineStore.calls.Load(); n != 0 {
		f.t.Fatalf("the engine's store was called %d times: the route layer did not inherit the router-wide layer's store", n)
	}
	f.sleep(pastShort)
	r := f.post("/orders", created, key(k))
	f.expect(r, 201, "retry after the router-wide retention")
	f.expectReplayed(r, false, "retry after the router-wide retention")
	f.expectCalls(h, 3, "route layer over router-wide settings")
}

// testRouterLayerStore: B27/router_layer_store.
func testRouterLayerStore(f *fixture) {
	engineStore, routerStore := f.probe(), f.probe()
	h := orderHandler()
	f.serveApp(App{Engine: f.engine(idem.Config{Store: engineStore}), Settings: idem.Route{Store: routerStore},
		Routes: []*Route{post("/orders", h)}})
	k := f.key()
	f.expect(f.post("/orders", created, key(k)), 201, "first")
	f.expectReplayed(f.post("/orders", created, key(k)), true, "retry")
	f.expectCalls(h, 1, "router-wide store")
	f.expectStoreCalls(routerStore, k, storeCalls{acquire: 2, complete: 1}, "the router-wide layer's store")
	if n := engineStore.calls.Load(); n != 0 {
		f.t.Fatalf("the engine's store was called %d times for a router-wide layer with its own store", n)
	}
}

// testOneLayerProcesses: B27/one_layer_processes.
func testOneLayerProcesses(f *fixture) {
	routerStore, routeStore := f.probe(), f.probe()
	h := orderHandler()
	f.serveApp(App{Engine: f.engine(idem.Config{}), Settings: idem.Route{Store: routerStore},
		Routes: []*Route{post("/orders", h).with(idem.Route{Store: routeStore})}})
	k := f.key()
	f.expectBody(f.post("/orders", created, key(k)), 201, created, "first")
	r := f.post("/orders", created, key(k))
	f.expectBody(r, 201, created, "retry")
	f.expectReplayed(r, true, "retry")
	if v := r.header.Values(idem.ReplayedHeader); len(v) != 1 {
		f.t.Fatalf("the replay carries %s %d times: %q", idem.ReplayedHeader, len(v), v)
	}
	f.expectCalls(h, 1, "stacked layers")
	f.expectStoreCalls(routeStore, k, storeCalls{acquire: 2, complete: 1}, "the route layer's store")
	if n := routerStore.calls.Load(); n != 0 {
		f.t.Fatalf("the router-wide layer's store was called %d times: more than one layer processed the request", n)
	}
}

// testStackedRouteLayers: B27/stacked_route_layers.
func testStackedRouteLayers(f *fixture) {
	outer, inner := f.probe(), f.probe()
	h := orderHandler()
	rt := post("/orders", h).with(idem.Route{Store: inner})
	rt.Outer = idem.Route{Store: outer}
	f.serve(f.engine(idem.Config{}), rt)
	k := f.key()
	f.expectBody(f.post("/orders", created, key(k)), 201, created, "first")
	r := f.post("/orders", created, key(k))
	f.expectBody(r, 201, created, "retry")
	f.expectReplayed(r, true, "retry")
	f.expectCalls(h, 1, "two layers on one route")
	o, i := outer.count(k), inner.count(k)
	if o.acquire+i.acquire != 2 || o.complete+i.complete != 1 || (o != storeCalls{} && i != storeCalls{}) {
		f.t.Fatalf("the outer layer's store got %+v and the inner layer's %+v: want one layer to lease each request (2 Acquire, 1 Complete in one store, nothing in the other)", o, i)
	}
}

// testJSONResponderReplayed: B13/json_responder_replayed.
func testJSONResponderReplayed(f *fixture) {
	h := &Handler{Status: http.StatusCreated, JSON: true, Body: created}
	f.serve(f.engine(idem.Config{}), post("/orders", h))
	k := f.key()
	r := f.post("/orders", created, key(k))
	f.expect(r, 201, "first")
	if mt, _, err := mime.ParseMediaType(r.header.Get("Content-Type")); err != nil || mt != "application/json" {
		f.t.Fatalf("the framework's JSON responder answered with Content-Type %q, want application/json", r.header.Get("Content-Type"))
	}
	if !bytes.Equal(bytes.TrimSpace(r.body), created) {
		f.t.Fatalf("the framework's JSON responder answered %q, want %q", r.body, created)
	}
	rr := f.post("/orders", created, key(k))
	f.expectBody(rr, 201, r.body, "replay")
	f.expectReplayed(rr, true, "replay")
	if got, want := rr.header.Get("Content-Type"), r.header.Get("Content-Type"); got != want {
		f.t.Fatalf("the replay's Content-Type is %q, the first response's was %q", got, want)
	}
	f.expectCalls(h, 1, "JSON responder")
}

// testStatusOnly202Replayed: B14/status_only_202_replayed.
func testStatusOnly202Replayed(f *fixture) {
	st := f.probe()
	h := &Handler{Status: http.StatusAccepted, Header: []idem.HeaderField{{Name: "Location", Value: "/jobs/1"}}}
	f.serve(f.engine(idem.Config{Store: st}), post("/jobs", h))
	k := f.key()
	r := f.post("/jobs", created, key(k))
	f.expectBody(r, 202, nil, "first")
	r = f.post("/jobs", created, key(k))
	f.expectBody(r, 202, nil, "replay")
	f.expectReplayed(r, true, "replay")
	if loc := r.header.Get("Location"); loc != "/jobs/1" {
		f.t.Fatalf("the replay's Location is %q, want /jobs/1", loc)
	}
	f.expectCalls(h, 1, "status-only response")
	f.expectStoreCalls(st, k, storeCalls{acquire: 2, complete: 1}, "status-only response")
}

// testNoContent204Replayed: B14/no_content_204_replayed.
func testNoContent204Replayed(f *fixture) {
	h := &Handler{Status: http.StatusNoContent}
	f.serve(f.engine(idem.Config{}), route(http.MethodDelete, "/orders/ord_1", h))
	k := f.key()
	f.expectBody(f.send(http.MethodDelete, "/orders/ord_1", nil, key(k)), 204, nil, "first")
	r := f.send(http.MethodDelete, "/orders/ord_1", nil, key(k))
	f.expectBody(r, 204, nil, "replay")
	f.expectReplayed(r, true, "replay")
	f.expectCalls(h, 1, "204 response")
}

// testHeadersSetAfterStatus: B20/headers_set_after_status.
func testHeadersSetAfterStatus(f *fixture) {
	h := &Handler{Status: http.StatusCreated, Body: created,
		Header: []idem.HeaderField{{Name: "Cache-Control", Value: "no-store"}},
		Late: []idem.HeaderField{jsonCT, {Name: "Location", Value: "/orders/ord_1"},
			{Name: "Link", Value: "</orders>; rel=collection"}}}
	f.serve(f.engine(idem.Config{}), post("/orders", h))
	k := f.key()
	r := f.post("/orders", created, key(k))
	f.expectBody(r, 201, created, "first")
	rr := f.post("/orders", created, key(k))
	f.expectBody(rr, 201, created, "replay")
	f.expectReplayed(rr, true, "replay")
	f.expectSameFields(r, rr, "Cache-Control", "Content-Type", "Location", "Link")
	if rr.header.Get("Cache-Control") != "no-store" {
		f.t.Fatalf("the replay lacks the Cache-Control set before the status: %v", rr.header)
	}
	f.expectCalls(h, 1, "headers set after the status")
}

// testRepeatedFieldsInOrder: B20/repeated_fields_in_order.
func testRepeatedFieldsInOrder(f *fixture) {
	links := []string{"</a>; rel=first", "</b>; rel=next", "</c>; rel=last"}
	varies := []string{"Accept", "Accept-Encoding", "Authorization"}
	h := &Handler{Status: http.StatusCreated, Body: created, Header: []idem.HeaderField{
		{Name: "Link", Value: links[0]}, {Name: "Vary", Value: varies[0]}, jsonCT,
		{Name: "Link", Value: links[1]}, {Name: "Vary", Value: varies[1]},
		{Name: "Link", Value: links[2]}, {Name: "Vary", Value: varies[2]},
	}}
	f.serve(f.engine(idem.Config{}), post("/orders", h))
	k := f.key()
	r := f.post("/orders", created, key(k))
	f.expectBody(r, 201, created, "first")
	rr := f.post("/orders", created, key(k))
	f.expectBody(rr, 201, created, "replay")
	f.expectReplayed(rr, true, "replay")
	for name, want := range map[string][]string{"Link": links, "Vary": varies} {
		if got := strings.Join(rr.header.Values(name), "\n"); got != strings.Join(want, "\n") {
			f.t.Fatalf("the replay's %s fields are %q, want %q in that order", name, rr.header.Values(name), want)
		}
	}
	f.expectSameFields(r, rr, "Link", "Vary")
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

// serveApp serves app through the harness.
func (f *fixture) serveApp(app App) {
	f.t.Helper()
	f.base = f.h.Serve(f.t, app)
}

// expectSameFields checks that the replay rr carries exactly the fields
// of each name the first response r carried, in the same order.
func (f *fixture) expectSameFields(r, rr reply, names ...string) {
	f.t.Helper()
	for _, name := range names {
		if got, want := rr.header.Values(name), r.header.Values(name); strings.Join(got, "\n") != strings.Join(want, "\n") {
			f.t.Fatalf("the replay's %s fields are %q, the first response's were %q", name, got, want)
		}
	}
}

// expectAborted checks the answer to a handler that panicked or ended its
// goroutine: the framework's own recovery answered with a 5xx, or the
// server closed the connection. Anything else means the adapter swallowed
// the failure.
func (f *fixture) expectAborted(r reply, what string) {
	f.t.Helper()
	if r.err == nil && r.status < 500 {
		f.t.Fatalf("%s was answered %d: the framework's recovery did not see the failure (want a 5xx or a closed connection)", what, r.status)
	}
}

// expectStoreCalls checks the calls st got for the client key k, waiting a
// little for calls made after the response was sent.
func (f *fixture) expectStoreCalls(st *probeStore, k string, want storeCalls, what string) {
	f.t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		got := st.count(k)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: the store got %d Acquire, %d Complete and %d Release calls for the key, want %d, %d and %d",
				what, got.acquire, got.complete, got.release, want.acquire, want.complete, want.release)
		}
		f.sleep(5 * time.Millisecond)
	}
}

// heldHandler returns an order handler held until its gate opens.
func (f *fixture) heldHandler() (*Handler, *gate) {
	g := f.gate()
	h := orderHandler()
	h.Gate = g.ch
	return h, g
}

// duplicate sends a keyed POST to path while the first request with the
// key is held, and fails the case unless it is answered within a few
// seconds (the in-flight wait of a case is shorter): a duplicate must not
// wait for the held request.
func (f *fixture) duplicate(path, k string) reply {
	f.t.Helper()
	ch := f.sendAsync(http.MethodPost, path, created, key(k))
	select {
	case r := <-ch:
		return r
	case <-time.After(3 * time.Second):
		f.t.Fatalf("a duplicate of a running request was not answered within 3s: it waits for the first request")
	case <-f.ctx.Done():
		f.t.Fatalf("timed out waiting for the duplicate")
	}
	return reply{}
}

// waitWithin polls cond until it holds, failing the case after d.
func (f *fixture) waitWithin(d time.Duration, cond func() bool, what string) {
	f.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("%s did not happen within %v", what, d)
		}
		f.sleep(5 * time.Millisecond)
	}
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

// testFullStoreRefusesNewKeys: B30/full_store_refuses_new_keys.
func testFullStoreRefusesNewKeys(f *fixture) {
	st := f.probe()
	h := orderHandler()
	f.serve(f.engine(idem.Config{Store: st, FailOpen: true}), post("/orders", h))
	done := f.key()
	f.expect(f.post("/orders", created, key(done)), 201, "first, before the store fills up")
	st.full.Store(true)
	fresh := f.key()
	r := f.post("/orders", created, key(fresh))
	f.expectProblem(r, 503, idem.ProblemStoreFull, "new key, store full")
	f.expectRetryAfter(r, "new key, store full")
	f.expectCalls(h, 1, "new key refused by a full store, fail-open or not")
	f.expectStoreCalls(st, fresh, storeCalls{acquire: 1}, "new key refused by a full store")
	f.expectReplayed(f.post("/orders", created, key(done)), true, "retry of a completed key, store full")
	f.expectCalls(h, 1, "retry of a completed key, store full")
}

// testCorruptRecordIsAStoreError: B33/corrupt_record_is_a_store_error.
func testCorruptRecordIsAStoreError(f *fixture) {
	st := f.probe()
	h := orderHandler()
	f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
	k := f.key()
	f.expect(f.post("/orders", created, key(k)), 201, "first")
	st.corruptStatus.Store(1000)
	r := f.post("/orders", created, key(k))
	f.expectProblem(r, 503, idem.ProblemStoreUnavailable, "retry of a record with status 1000")
	f.expectCalls(h, 1, "retry of a corrupt record")
	st.corruptStatus.Store(0)
	f.expectReplayed(f.post("/orders", created, key(k)), true, "retry once the record reads well again")
}
