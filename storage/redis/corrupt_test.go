package idemredis_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
	idemredis "github.com/idemkit/idem/storage/redis"
)

// completedRecord encodes a completed record as idemredis stores it
// (version 1, see encoding.go): a nil fingerprint, a header of fields and
// the body "ok".
func completedRecord(status uint16, header ...idem.HeaderField) string {
	b := []byte{1, 2, 1} // version, completed, nil fingerprint
	b = append(b, make([]byte, 16)...)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = append(b, 0) // response flags: a header and a body
	b = binary.BigEndian.AppendUint16(b, status)
	b = binary.AppendUvarint(b, uint64(len(header)))
	for _, f := range header {
		b = binary.AppendUvarint(b, uint64(len(f.Name)))
		b = append(b, f.Name...)
		b = binary.AppendUvarint(b, uint64(len(f.Value)))
		b = append(b, f.Value...)
	}
	b = binary.AppendUvarint(b, 2)
	return string(append(b, "ok"...))
}

// TestB33CorruptRecordsAreStoreErrors writes completed records in the
// store's own encoding, as a bug, a manual edit or another writer could
// leave them, and checks that the engine answers a retry with a 503
// problem (never a panic, never a second run), and that a field outside
// the replay allowlist is never replayed (B33).
func TestB33CorruptRecordsAreStoreErrors(t *testing.T) {
	client := newClient(t)
	prefix := newPrefix(t, client)
	s := mustNew(t, client, idemredis.Options{KeyPrefix: prefix})
	put := func(t *testing.T, key, record string) {
		t.Helper()
		if err := client.Set(context.Background(), prefix+idem.DefaultEncodeKey("", key), record, time.Hour).Err(); err != nil {
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
	for _, status := range []uint16{1000, 65535, 0, 99} {
		t.Run(fmt.Sprint("status_", status), func(t *testing.T) {
			events = nil
			key := fmt.Sprint("status-", status)
			put(t, key, completedRecord(status))
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
		put(t, "crlf", completedRecord(201, idem.HeaderField{Name: "Location", Value: "/a\r\nSet-Cookie: s=1"}))
		if d := retry("crlf"); d.Action != idem.Respond || d.Response.Status != 503 {
			t.Fatalf("record with CR LF in a value: %v %+v; want 503", d.Action, d.Response)
		}
	})
	t.Run("field_outside_the_allowlist", func(t *testing.T) {
		put(t, "cookie", completedRecord(201, idem.HeaderField{Name: "Set-Cookie", Value: "session=stolen"}, idem.HeaderField{Name: "Content-Type", Value: "text/plain"}))
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
