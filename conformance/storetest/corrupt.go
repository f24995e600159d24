package storetest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	idem "github.com/idemkit/idem/core"
)

// WriteRecord writes a completed record for storageKey straight into a
// store's backend, in the store's own encoding, bypassing the Store
// methods: status and header as given, a nil fingerprint, the body "ok",
// expiring in an hour. It is how RunCorruptRecords leaves the records a
// bug, a manual edit or another writer could leave.
type WriteRecord func(t *testing.T, storageKey string, status int, header []idem.HeaderField)

// RunCorruptRecords checks that an engine over store never lets a corrupt
// record reach a client (B33): for records that write wrote with a status
// outside 100..599 (each of statuses) or with a header value holding CR
// LF, a retry is answered with a 503 store-unavailable problem and
// reported as a store error, even in fail-open mode, never a panic and
// never a run; a record with a Set-Cookie field is replayed without it.
// statuses lists the out-of-range statuses the store's encoding can hold.
func RunCorruptRecords(t *testing.T, store idem.Store, write WriteRecord, statuses ...int) {
	t.Helper()
	var mu sync.Mutex
	var events []idem.Outcome
	eng, err := idem.New(idem.Config{Store: store, Fingerprint: idem.NoFingerprint, FailOpen: true,
		Observer: idem.ObserverFunc(func(_ context.Context, ev idem.Event) {
			mu.Lock()
			defer mu.Unlock()
			if ev.Outcome != idem.Unscoped {
				events = append(events, ev.Outcome)
			}
		})})
	if err != nil {
		t.Fatal(err)
	}
	retry := func(t *testing.T, key string) idem.Decision {
		t.Helper()
		mu.Lock()
		events = nil
		mu.Unlock()
		var d idem.Decision
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("Begin panicked on a corrupt record: %v", p)
				}
			}()
			d = eng.Begin(&idem.Request{Method: "POST", Path: "/orders", Header: http.Header{"Idempotency-Key": {key}}, Body: strings.NewReader("{}")})
		}()
		return d
	}
	storeError := func(t *testing.T, what string, d idem.Decision) {
		t.Helper()
		if d.Action != idem.Respond || d.Response.Status != 503 || d.Problem == nil || d.Problem.Type != idem.ProblemStoreUnavailable {
			t.Fatalf("%s: %v %+v; want a 503 store-unavailable problem", what, d.Action, d.Response)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(events) != 1 || events[0] != idem.StoreError {
			t.Fatalf("%s: outcomes %v, want [store-error]", what, events)
		}
	}
	for _, status := range statuses {
		t.Run(fmt.Sprint("B33/status_", status), func(t *testing.T) {
			key := fmt.Sprint("status-", status)
			write(t, idem.DefaultEncodeKey("", key), status, nil)
			storeError(t, fmt.Sprint("record with status ", status), retry(t, key))
		})
	}
	t.Run("B33/malformed_header_field", func(t *testing.T) {
		write(t, idem.DefaultEncodeKey("", "crlf"), 201, []idem.HeaderField{{Name: "Location", Value: "/a\r\nSet-Cookie: s=1"}})
		storeError(t, "record with CR LF in a header value", retry(t, "crlf"))
	})
	t.Run("B33/field_outside_the_allowlist", func(t *testing.T) {
		write(t, idem.DefaultEncodeKey("", "cookie"), 201, []idem.HeaderField{{Name: "Set-Cookie", Value: "session=stolen"}, {Name: "Content-Type", Value: "text/plain"}})
		d := retry(t, "cookie")
		if d.Action != idem.Respond || !d.Replayed || d.Response.Status != 201 {
			t.Fatalf("replay: %v %+v", d.Action, d.Response)
		}
		for _, f := range d.Response.Header {
			if strings.EqualFold(f.Name, "Set-Cookie") {
				t.Fatalf("a stored Set-Cookie was replayed: %v", d.Response.Header)
			}
		}
	})
}
