package idemredis_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/idemkit/idem/conformance/storetest"
	idem "github.com/idemkit/idem/core"
	idemredis "github.com/idemkit/idem/storage/redis"
)

// completedRecord encodes a completed record as idemredis stores it
// (version 1, see encoding.go): a nil fingerprint, the header fields and
// the body "ok".
func completedRecord(status uint16, header []idem.HeaderField) string {
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

// TestCorruptRecords writes completed records in the store's own encoding
// (the status is a uint16 there) and runs storetest.RunCorruptRecords: a
// corrupt record is a 503, never a panic or a run, and a stored Set-Cookie
// is never replayed (B33).
func TestCorruptRecords(t *testing.T) {
	client := newClient(t)
	prefix := newPrefix(t, client)
	s := mustNew(t, client, idemredis.Options{KeyPrefix: prefix})
	storetest.RunCorruptRecords(t, s, func(t *testing.T, storageKey string, status int, header []idem.HeaderField) {
		if err := client.Set(context.Background(), prefix+storageKey, completedRecord(uint16(status), header), time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}, 1000, 65535, 0, 99)
}
