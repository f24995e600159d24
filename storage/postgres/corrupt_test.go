package idempg

import (
	"context"
	"fmt"
	"testing"

	"github.com/idemkit/idem/conformance/storetest"
	idem "github.com/idemkit/idem/core"
)

// TestCorruptRecords writes completed rows in the store's own encoding
// (status, header column) and runs storetest.RunCorruptRecords: a corrupt
// row is a 503, never a panic or a run, and a stored Set-Cookie is never
// replayed (B33).
func TestCorruptRecords(t *testing.T) {
	s := newTestStore(t, Options{})
	schema, name, _ := splitTableName(s.Table())
	storetest.RunCorruptRecords(t, s, func(t *testing.T, storageKey string, status int, header []idem.HeaderField) {
		_, err := s.pool.Exec(context.Background(), fmt.Sprintf(
			`INSERT INTO %s (key, state, token, fingerprint, status, header, body, expires_at)
			 VALUES ($1, 2, $2, NULL, $3, $4, 'ok', now() + interval '1 hour')`, quote(schema, name)),
			[]byte(storageKey), make([]byte, 16), status, encodeHeader(header))
		if err != nil {
			t.Fatal(err)
		}
	}, 1000, 65535, -5, 0, 99)
}
