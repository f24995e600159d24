package idem_test

import (
	"bytes"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"

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
			d := eng.Begin(benchRequest(keys()))
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
