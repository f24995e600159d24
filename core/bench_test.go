package idem_test

import (
	"bytes"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

var (
	benchBody     = bytes.Repeat([]byte("a"), 1024)
	benchResponse = bytes.Repeat([]byte("b"), 1024)
	benchHeader   = http.Header{"Content-Type": {"application/json"}}
)

func benchRequest(key string) *idem.Request {
	return &idem.Request{Method: "POST", Path: "/orders",
		Header: http.Header{"Idempotency-Key": {key}}, Body: bytes.NewReader(benchBody)}
}

// BenchmarkEngine measures the engine alone with the memory store: a first
// request (Begin and Complete), a replay, and a duplicate of an in-flight
// request.
func BenchmarkEngine(b *testing.B) {
	eng, err := idem.New(idem.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = eng.Close() })
	var seq atomic.Int64
	keys := func() string { return "key-" + strconv.FormatInt(seq.Add(1), 10) }

	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			// The records of first requests are kept for a millisecond:
			// the store refuses new keys once full rather than evict
			// records (B30), and expired ones make room.
			r := benchRequest(keys())
			r.Route.Retention = time.Millisecond
			d := eng.Begin(r)
			_ = d.Lease.Complete(idem.Recorded{Status: 201, Header: benchHeader, Body: benchResponse})
		}
	})
	d := eng.Begin(benchRequest("replayed"))
	_ = d.Lease.Complete(idem.Recorded{Status: 201, Header: benchHeader, Body: benchResponse})
	b.Run("replay", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d := eng.Begin(benchRequest("replayed")); !d.Replayed {
				b.Fatal("not replayed")
			}
		}
	})
	eng.Begin(benchRequest("in-flight"))
	b.Run("in-flight", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d := eng.Begin(benchRequest("in-flight")); d.Response.Status != 409 {
				b.Fatal("not 409")
			}
		}
	})
}

// BenchmarkHashes measures the two hashes every keyed request costs with
// the default configuration, whatever else it does: the fingerprint of a
// 1 KiB body (B9, XXH3-128) and the storage key (B8, SHA-256). They bound
// how close a replay can come to the bare handler (see BENCHMARKS.md).
// fingerprint-sha256-1KiB is the SHA-256 fingerprint that was the default
// before, for comparison.
func BenchmarkHashes(b *testing.B) {
	r := &idem.Request{Method: "POST", Path: "/orders"}
	b.Run("fingerprint-1KiB", func(b *testing.B) {
		b.SetBytes(int64(len(benchBody)))
		for b.Loop() {
			_ = idem.DefaultFingerprint(r, benchBody)
		}
	})
	b.Run("fingerprint-sha256-1KiB", func(b *testing.B) {
		b.SetBytes(int64(len(benchBody)))
		for b.Loop() {
			_ = idem.SHA256Fingerprint(r, benchBody)
		}
	})
	b.Run("storage-key", func(b *testing.B) {
		for b.Loop() {
			_ = idem.DefaultEncodeKey("Bearer token-of-the-client", "4f1c2a77-0000-4000-8000-000000000001")
		}
	})
}
