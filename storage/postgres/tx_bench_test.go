package idempg

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// BenchmarkFirstRequest measures what the store costs a first request in
// each mode, in one run so that benchstat can set them side by side
// (benchstat -col /store): the lease, the handler's own write (write=insert:
// one INSERT of an order row; write=none: none) and the completion with a
// 1 KiB response. The plain store's handler writes on a connection of its
// own, committing on its own (autocommit, as a handler without idem's
// transaction does); the transactional store's handler writes in the
// request's transaction, which commits with the record.
//
// run=serial runs one request at a time; run=parallel runs 16 goroutines
// per CPU over a pool of benchPoolConns connections, where a transactional
// request holds one connection while it runs and a plain one only for each
// statement; run=parallel-work adds 20 ms of other work to the handler
// (after its write), which the transactional request spends holding its
// connection.
func BenchmarkFirstRequest(b *testing.B) {
	for _, run := range []string{"serial", "parallel", "parallel-work"} {
		for _, write := range []string{"none", "insert"} {
			if run == "parallel-work" && write == "none" {
				continue
			}
			for _, mode := range []string{"plain", "transactional"} {
				b.Run(fmt.Sprintf("store=%s/write=%s/run=%s", mode, write, run), func(b *testing.B) {
					var work time.Duration
					if run == "parallel-work" {
						work = 20 * time.Millisecond
					}
					benchFirstRequest(b, mode == "transactional", write == "insert", run != "serial", work)
				})
			}
		}
	}
}

const benchPoolConns = 8

func benchFirstRequest(b *testing.B, transactional, insert, parallel bool, work time.Duration) {
	f := newTxFixtureB(b)
	var store idem.Store = f.s
	if transactional {
		store = f.s.Transactional()
	}
	tx, _ := store.(idem.TransactionalStore)
	body := make([]byte, 1024)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	resp := &idem.Record{Status: 201, Body: body, Header: []idem.HeaderField{
		{Name: "Content-Type", Value: "application/json"}, {Name: "Location", Value: "/orders/42"},
	}}
	fp := []byte("fingerprint-of-32-bytes-00000000")
	insertSQL := "INSERT INTO " + f.orders + " (ref) VALUES ($1)"
	var next atomic.Uint64
	space := randomSuffix(b)
	one := func(ctx context.Context) error {
		n := next.Add(1)
		key := fmt.Sprintf("bench:%s:%d", space, n)
		tok := idem.Token{byte(n >> 56), byte(n >> 48), byte(n >> 40), byte(n >> 32), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
		if rec, err := store.Acquire(ctx, key, tok, fp, 10*time.Second); err != nil || rec != nil {
			return fmt.Errorf("acquire: %v, %v", rec, err)
		}
		rctx := ctx
		if tx != nil {
			var err error
			if rctx, err = tx.BeginRun(ctx, key, tok); err != nil {
				return err
			}
		}
		var err error
		if insert {
			if tx := Tx(rctx); tx != nil {
				_, err = tx.Exec(rctx, insertSQL, key)
			} else {
				_, err = f.s.pool.Exec(rctx, insertSQL, key)
			}
			if err != nil {
				return err
			}
		}
		if work > 0 {
			time.Sleep(work)
		}
		return store.Complete(ctx, key, tok, resp, 10*time.Second)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		for b.Loop() {
			if err := one(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := one(context.Background()); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
