package idempg

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	idem "github.com/idemkit/idem/core"
)

// TestB33CorruptRecordsAreStoreErrors writes completed rows in the store's
// own encoding, as a bug, a manual edit or a newer release could leave
// them, and checks that the engine answers a retry with a 503 problem
// (never a panic, never a second run), and that a field outside the
// replay allowlist is never replayed (B33).
func TestB33CorruptRecordsAreStoreErrors(t *testing.T) {
	s := newTestStore(t, Options{})
	schema, name, _ := splitTableName(s.Table())
	put := func(t *testing.T, key string, status int, header []idem.HeaderField) {
		t.Helper()
		_, err := s.pool.Exec(context.Background(), fmt.Sprintf(
			`INSERT INTO %s (key, state, token, fingerprint, status, header, body, expires_at)
			 VALUES ($1, 2, $2, NULL, $3, $4, 'ok', now() + interval '1 hour')`, quote(schema, name)),
			[]byte(idem.DefaultEncodeKey("", key)), make([]byte, 16), status, encodeHeader(header))
		if err != nil {
			t.Fatal(err)
		}
	}
	var events []idem.Outcome
	eng, err := idem.New(idem.Config{Store: s, Fingerprint: idem.NoFingerprint, FailOpen: true,
		Observer: idem.ObserverFunc(func(_ context.Context, ev idem.Event) {
			if ev.Outcome != idem.Unscoped {
				events = append(events, ev.Outcome)
			}
		})})
	if err != nil {
		t.Fatal(err)
	}
	retry := func(key string) idem.Decision {
		return eng.Begin(&idem.Request{Method: "POST", Path: "/orders", Header: http.Header{"Idempotency-Key": {key}}, Body: strings.NewReader("{}")})
	}
	for _, status := range []int{1000, 65535, -5, 0, 99} {
		t.Run(fmt.Sprint("status_", status), func(t *testing.T) {
			events = nil
			key := fmt.Sprint("status-", status)
			put(t, key, status, nil)
			d := retry(key)
			if d.Action != idem.Respond || d.Response.Status != 503 || d.Problem == nil || d.Problem.Type != idem.ProblemStoreUnavailable {
				t.Fatalf("record with status %d: %v %+v; want a 503 store-unavailable problem", status, d.Action, d.Response)
			}
			if len(events) != 1 || events[0] != idem.StoreError {
				t.Fatalf("outcomes %v, want [store-error]", events)
			}
		})
	}
	t.Run("malformed_header_field", func(t *testing.T) {
		put(t, "crlf", 201, []idem.HeaderField{{Name: "Location", Value: "/a\r\nSet-Cookie: s=1"}})
		if d := retry("crlf"); d.Action != idem.Respond || d.Response.Status != 503 {
			t.Fatalf("record with CR LF in a value: %v %+v; want 503", d.Action, d.Response)
		}
	})
	t.Run("field_outside_the_allowlist", func(t *testing.T) {
		put(t, "cookie", 201, []idem.HeaderField{{Name: "Set-Cookie", Value: "session=stolen"}, {Name: "Content-Type", Value: "text/plain"}})
		d := retry("cookie")
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
