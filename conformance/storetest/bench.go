package storetest

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// RunBenchmarks measures the store operations on the engine's paths: the
// lease of a new key, a whole first request (lease and completion), the
// lookup of a completed record (the replay path) and a duplicate of an
// in-flight request. Each runs serially and under b.RunParallel. newStore
// is called once per benchmark run and registers its cleanup with
// b.Cleanup.
//
// AcquireNew leases its keys for a millisecond, so that a store that bounds
// its size is not filled with live leases; AcquireComplete leases for ten
// seconds and keeps completed records for a millisecond, for the same
// reason: a bounded store refuses new keys when full (B30).
func RunBenchmarks(b *testing.B, newStore NewStore) {
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			bm.run(b, newBench(b, newStore(b)), false)
		})
		b.Run(bm.name+"/Parallel", func(b *testing.B) {
			bm.run(b, newBench(b, newStore(b)), true)
		})
	}
}

const (
	benchLease = time.Millisecond
	// benchHold is the lease of AcquireComplete, long enough that it
	// holds until Complete on a loaded machine; benchKeep is how long its
	// completed records are kept: a millisecond, so that a bounded store,
	// which refuses new keys when full rather than evict records (B30),
	// is not filled with live ones.
	benchHold = 10 * time.Second
	benchKeep = time.Millisecond
)

var benchmarks = []struct {
	name string
	run  func(b *testing.B, x *bench, parallel bool)
}{
	{"AcquireNew", benchAcquireNew},
	{"AcquireComplete", benchAcquireComplete},
	{"Replay", benchReplay},
	{"InFlightDuplicate", benchInFlightDuplicate},
}

// bench holds one benchmark's store and hands out unique keys and tokens.
// Both are made without allocating, so that allocs/op counts the store's
// allocations alone: the keys of a run are made before its timer starts
// (conformance.KeySet, one pointer-free buffer), and a token is a random
// prefix and a counter.
type bench struct {
	s      idem.Store
	ctx    context.Context
	keys   conformance.KeySet
	next   atomic.Uint64
	tokens atomic.Uint64
	prefix [8]byte
	fp     []byte
	resp   *idem.Record
}

func newBench(b *testing.B, s idem.Store) *bench {
	body := make([]byte, 1024)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	x := &bench{
		s: s, ctx: b.Context(),
		fp: randomBytes(idem.FingerprintSize),
		resp: &idem.Record{State: idem.Completed, Status: 201, Body: body, Header: []idem.HeaderField{
			{Name: "Content-Type", Value: "application/json"}, {Name: "Location", Value: "/orders/42"},
		}},
	}
	copy(x.prefix[:], randomBytes(len(x.prefix)))
	return x
}

// makeKeys makes n new keys for newKey to hand out, before the timer
// starts.
func (x *bench) makeKeys(b *testing.B, n int) {
	x.keys, x.next = conformance.NewKeySet(n), atomic.Uint64{}
	b.ResetTimer()
}

// newKey returns the next of the keys makeKeys made.
func (x *bench) newKey() string {
	return x.keys.Key(int(x.next.Add(1) - 1))
}

// newToken returns a token no other call returns.
func (x *bench) newToken() idem.Token {
	var t idem.Token
	copy(t[:8], x.prefix[:])
	binary.BigEndian.PutUint64(t[8:], x.tokens.Add(1))
	return t
}

// each runs op b.N times, serially or in parallel.
func each(b *testing.B, parallel bool, op func() error) {
	b.ReportAllocs()
	defer conformance.ReportCPU(b)()
	b.ResetTimer()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		return
	}
	for range b.N {
		if err := op(); err != nil {
			b.Fatal(err)
		}
	}
}

func (x *bench) acquireNew(lease time.Duration) (string, idem.Token, error) {
	key, tok := x.newKey(), x.newToken()
	rec, err := x.s.Acquire(x.ctx, key, tok, x.fp, lease)
	if err == nil && rec != nil {
		err = fmt.Errorf("storetest: Acquire on the new key %q returned a %s record", key, rec.State)
	}
	return key, tok, err
}

func benchAcquireNew(b *testing.B, x *bench, parallel bool) {
	x.makeKeys(b, b.N)
	each(b, parallel, func() error {
		_, _, err := x.acquireNew(benchLease)
		return err
	})
}

func benchAcquireComplete(b *testing.B, x *bench, parallel bool) {
	x.makeKeys(b, b.N)
	each(b, parallel, func() error {
		key, tok, err := x.acquireNew(benchHold)
		if err != nil {
			return err
		}
		return x.s.Complete(x.ctx, key, tok, x.resp, benchKeep)
	})
}

// lookupOnly returns an op that acquires key and expects a record in state.
func (x *bench) lookupOnly(key string, state idem.State) func() error {
	return func() error {
		rec, err := x.s.Acquire(x.ctx, key, x.newToken(), x.fp, time.Minute)
		if err == nil && (rec == nil || rec.State != state) {
			err = fmt.Errorf("Acquire(%q) = %v, want a %s record", key, rec, state)
		}
		return err
	}
}

func benchReplay(b *testing.B, x *bench, parallel bool) {
	x.makeKeys(b, 1)
	key, tok := x.newKey(), x.newToken()
	if rec, err := x.s.Acquire(x.ctx, key, tok, x.fp, time.Minute); err != nil || rec != nil {
		b.Fatalf("Acquire = (%v, %v), want the lease", rec, err)
	}
	if err := x.s.Complete(x.ctx, key, tok, x.resp, time.Hour); err != nil {
		b.Fatal(err)
	}
	each(b, parallel, x.lookupOnly(key, idem.Completed))
}

func benchInFlightDuplicate(b *testing.B, x *bench, parallel bool) {
	x.makeKeys(b, 1)
	key, tok := x.newKey(), x.newToken()
	if rec, err := x.s.Acquire(x.ctx, key, tok, x.fp, time.Hour); err != nil || rec != nil {
		b.Fatalf("Acquire = (%v, %v), want the lease", rec, err)
	}
	each(b, parallel, x.lookupOnly(key, idem.InFlight))
}
