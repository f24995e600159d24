package idem_test

import (
	"bytes"
	"crypto/sha256"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// TestMemoryFootprint completes requests through an engine on a
// MemoryStore, each with a response of a 256-byte body and one
// Content-Type header, and checks that the heap the store then holds is
// less than twice the payload of its records. Payload is what a record
// must hold: the storage key (64 hexadecimal characters), the fingerprint
// (32 bytes), the stored header names and values, and the body.
// Everything else (map slots, the entry, the Record, slice and string
// headers, allocation rounding) is overhead.
//
// It completes 50,000 requests; IDEM_MEMORY_FOOTPRINT=1 makes it complete
// one million (about 0.55 GB of heap, some seconds), the figure
// BENCHMARKS.md reports.
func TestMemoryFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a store with records; skipped with -short")
	}
	n := 50_000
	if os.Getenv("IDEM_MEMORY_FOOTPRINT") == "1" {
		n = 1_000_000
	}
	reqBody := []byte(`{"order":1}`)
	respBody := bytes.Repeat([]byte("r"), 256)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	store := idem.NewMemoryStore(idem.MemoryOptions{MaxEntries: 2 * n, MaxBytes: 1 << 40, SweepInterval: -1})
	defer store.Close()
	eng, err := idem.New(idem.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	payload := 0
	for i := range n {
		key := "key-" + strconv.Itoa(i)
		d := eng.Begin(&idem.Request{Method: "POST", Path: "/orders",
			Header: http.Header{"Idempotency-Key": {key}}, BodyBytes: reqBody})
		if d.Action != idem.Run {
			t.Fatalf("Begin(%q) = %v, want run", key, d.Action)
		}
		// A header value of its own, as a parsed response has.
		value := strings.Clone("application/json")
		if err := d.Lease.Complete(idem.Recorded{Status: 201,
			Header: http.Header{"Content-Type": {value}}, Body: respBody}); err != nil {
			t.Fatal(err)
		}
		payload += 2*sha256.Size + idem.FingerprintSize + len("Content-Type") + len(value) + len(respBody)
	}

	runtime.GC()
	runtime.ReadMemStats(&after)
	if records, _ := store.Stats(); records != n {
		t.Fatalf("the store holds %d records, want %d", records, n)
	}
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	ratio := float64(heap) / float64(payload)
	t.Logf("%d records: payload %d B (%d B each), heap %d B (%d B each), %.2fx payload",
		n, payload, payload/n, heap, heap/int64(n), ratio)
	if ratio >= 2 {
		t.Errorf("the store takes %.2fx its payload, want less than 2x", ratio)
	}
	runtime.KeepAlive(store)
}

// BenchmarkMemoryStoreFull asks a store whose one shard is full of live
// in-flight records (10,000 leases of an hour) for new keys: each Acquire
// answers ErrStoreFull. It costs a lookup, not a scan of the shard for an
// expired record, until one can have expired.
func BenchmarkMemoryStoreFull(b *testing.B) {
	const n = 10_000
	m := idem.NewMemoryStore(idem.MemoryOptions{Shards: 1, MaxEntries: n, SweepInterval: -1})
	b.Cleanup(func() { _ = m.Close() })
	ctx := b.Context()
	for i := range n {
		if _, err := m.Acquire(ctx, "held-"+strconv.Itoa(i), idem.Token{1}, nil, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "new-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := m.Acquire(ctx, keys[i%len(keys)], idem.Token{2}, nil, time.Hour); err != idem.ErrStoreFull {
			b.Fatalf("Acquire in a full store: %v, want ErrStoreFull", err)
		}
		i++
	}
}
