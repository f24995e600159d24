package storetest_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/idemkit/idem/conformance/storetest"
	idem "github.com/idemkit/idem/core"
)

func newMemoryStore(tb testing.TB, opts idem.MemoryOptions) *idem.MemoryStore {
	s := idem.NewMemoryStore(opts)
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// suiteStore is the constructor the store suite and its benchmarks share.
var suiteStore storetest.NewStore = func(tb testing.TB) idem.Store { return newMemoryStore(tb, idem.MemoryOptions{}) }

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, suiteStore)
}

func BenchmarkStore(b *testing.B) {
	storetest.RunBenchmarks(b, suiteStore)
}

func token(i int) idem.Token {
	var t idem.Token
	copy(t[:], fmt.Sprintf("%016d", i))
	return t
}

// TestMemoryStoreLimits floods the store with distinct keys from several
// goroutines while a set of keys stays in flight: the store never holds
// more than MaxEntries records or MaxBytes bytes, it refuses new keys with
// ErrStoreFull once full, and it never evicts a live record: every
// completed record and every in-flight one survives the flood (B30).
func TestMemoryStoreLimits(t *testing.T) {
	for _, c := range []struct {
		name string
		opts idem.MemoryOptions
		body int
	}{
		{"entries", idem.MemoryOptions{MaxEntries: 512, Shards: 8}, 64},
		{"bytes", idem.MemoryOptions{MaxEntries: 1 << 20, MaxBytes: 256 << 10, Shards: 8}, 4 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newMemoryStore(t, c.opts)
			ctx := t.Context()
			maxEntries, maxBytes := c.opts.MaxEntries, c.opts.MaxBytes
			if maxBytes == 0 {
				maxBytes = idem.DefaultMemoryMaxBytes
			}
			within := func() error {
				n, size := s.Stats()
				if n > maxEntries || size > maxBytes {
					return fmt.Errorf("store holds %d records, %d bytes; limits %d records, %d bytes", n, size, maxEntries, maxBytes)
				}
				return nil
			}

			// Keys held in flight through the flood, a few per shard.
			const held = 16
			for i := range held {
				if rec, err := s.Acquire(ctx, fmt.Sprint("held-", i), token(i), []byte("fp"), time.Hour); err != nil || rec != nil {
					t.Fatalf("Acquire(held-%d) = (%v, %v), want the lease", i, rec, err)
				}
			}

			const workers, perWorker = 8, 1000
			body := make([]byte, c.body)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var completed []string
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perWorker {
						key, tok := fmt.Sprintf("flood-%d-%d", w, i), token(1000+w*perWorker+i)
						rec, err := s.Acquire(ctx, key, tok, []byte("fp"), time.Hour)
						if errors.Is(err, idem.ErrStoreFull) {
							continue
						}
						if err != nil || rec != nil {
							t.Errorf("Acquire(%s) = (%v, %v), want the lease", key, rec, err)
							return
						}
						rec = &idem.Record{State: idem.Completed, Status: 200, Body: body}
						if err := s.Complete(ctx, key, tok, rec, time.Hour); err != nil {
							t.Errorf("Complete(%s): %v", key, err)
							return
						}
						mu.Lock()
						completed = append(completed, key)
						mu.Unlock()
						if err := within(); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()

			n, size := s.Stats()
			t.Logf("after a flood of %d keys: %d completed, %d records, %d bytes held", workers*perWorker, len(completed), n, size)
			if len(completed) >= workers*perWorker {
				t.Errorf("all %d keys of the flood were taken: the limits did not bind", len(completed))
			}
			for _, key := range completed {
				rec, err := s.Acquire(ctx, key, token(-1), []byte("fp"), time.Hour)
				if err != nil || rec == nil || rec.State != idem.Completed {
					t.Fatalf("%s, completed during the flood: (%v, %v); want its record, never evicted", key, rec, err)
				}
			}
			for i := range held {
				rec, err := s.Acquire(ctx, fmt.Sprint("held-", i), token(-1), []byte("fp"), time.Hour)
				if err != nil || rec == nil || rec.State != idem.InFlight || rec.Token != token(i) {
					t.Errorf("held-%d after the flood: (%v, %v), want its in-flight record", i, rec, err)
				}
				if err := s.Complete(ctx, fmt.Sprint("held-", i), token(i), &idem.Record{State: idem.Completed, Status: 200}, time.Hour); err != nil {
					t.Errorf("Complete(held-%d) by its owner after the flood: %v", i, err)
				}
			}
			if _, err := s.Acquire(ctx, "after-the-flood", token(-2), []byte("fp"), time.Hour); !errors.Is(err, idem.ErrStoreFull) {
				t.Errorf("a new key in the full store: %v, want ErrStoreFull", err)
			}
			if err := within(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestMemoryStoreFullOfInFlight fills a store with in-flight records only:
// the next Acquire fails with ErrStoreFull rather than evict a lease, and
// every lease still holds.
func TestMemoryStoreFullOfInFlight(t *testing.T) {
	const max = 8
	s := newMemoryStore(t, idem.MemoryOptions{MaxEntries: max, Shards: 1})
	ctx := t.Context()
	for i := range max {
		if rec, err := s.Acquire(ctx, fmt.Sprint("k", i), token(i), nil, time.Hour); err != nil || rec != nil {
			t.Fatalf("Acquire(k%d) = (%v, %v), want the lease", i, rec, err)
		}
	}
	if _, err := s.Acquire(ctx, "one-more", token(max), nil, time.Hour); !errors.Is(err, idem.ErrStoreFull) {
		t.Fatalf("Acquire beyond MaxEntries of in-flight records = %v, want ErrStoreFull", err)
	}
	for i := range max {
		if err := s.Renew(ctx, fmt.Sprint("k", i), token(i), time.Hour); err != nil {
			t.Errorf("Renew(k%d) by its owner: %v, want the lease kept", i, err)
		}
	}
	if n, _ := s.Stats(); n != max {
		t.Errorf("Stats records = %d, want %d", n, max)
	}
}
