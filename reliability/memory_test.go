package reliability

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// TestBoundedMemory: the memory store, flooded through an adapter with
// far more distinct keys and bytes than its limits allow, never holds more
// records or bytes than configured (sampled with Stats while the flood
// runs), keeps the process heap near its byte limit (runtime.MemStats), and
// refuses new keys once full (503 store-full) instead of evicting anything
// (B30): requests held in flight through the flood still own their keys
// afterwards, and every key that ran during the flood is still replayed.
func TestBoundedMemory(t *testing.T) {
	const (
		maxEntries = 512
		maxBytes   = 1 << 20
		flood      = 3000
		replySize  = 4 << 10 // 3000 × 4 KiB: twelve times the byte limit
		held       = 8
	)
	store := newMemory(t, idem.MemoryOptions{MaxEntries: maxEntries, MaxBytes: maxBytes, Shards: 4, SweepInterval: -1})
	engine := newEngine(t, idem.Config{Store: store, MaxResponseBody: 2 * replySize})
	ex := newExecutions()
	gate := make(chan struct{})
	var entered sync.WaitGroup
	entered.Add(held)
	sized := sizedHandler(ex)
	handler := func(ctx context.Context, h http.Header, body []byte) reply {
		if h.Get("X-Hold") != "" {
			entered.Done()
			<-gate
		}
		return sized(ctx, h, body)
	}
	base := serveNetHTTP(t, engine, idem.Route{}, handler)
	client := newClient(t, 16)

	heldAnswers := make(chan answer, held)
	for i := range held {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			key := fmt.Sprintf("held-%d", i)
			a, err := post(ctx, client, base, key, []byte(key), "X-Hold", "1")
			if err != nil {
				t.Errorf("held request: %v", err)
			}
			heldAnswers <- a
		}()
	}
	entered.Wait()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	var maxRecords atomic.Int64
	var maxStored atomic.Int64
	sample := func() {
		r, b := store.Stats()
		maxRecords.Store(max(maxRecords.Load(), int64(r)))
		maxStored.Store(max(maxStored.Load(), b))
	}
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(2 * time.Millisecond):
				sample()
			}
		}
	}()
	var next atomic.Int64
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				n := next.Add(1)
				if n > flood {
					return
				}
				key := "flood-" + strconv.FormatInt(n, 10)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				a, err := post(ctx, client, base, key, []byte(key), "X-Reply-Size", strconv.Itoa(replySize))
				cancel()
				if err == nil && a.Status == http.StatusServiceUnavailable && a.problemType() == idem.ProblemStoreFull {
					refused.Add(1)
					continue
				}
				if err != nil || a.Status != http.StatusCreated {
					t.Errorf("flood %s: %v %v", key, a, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stopSampling)
	<-sampled
	sample()

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	records, stored := store.Stats()
	t.Logf("flood of %d keys × %d B: %d refused as store-full; at most %d records and %d bytes counted (limits %d, %d); now %d records, %d bytes; heap grew %d KiB",
		flood, replySize, refused.Load(), maxRecords.Load(), maxStored.Load(), maxEntries, maxBytes, records, stored, growth>>10)
	if refused.Load() == 0 {
		t.Errorf("no key of the flood was refused: the limits did not bind")
	}
	if maxRecords.Load() > maxEntries || maxStored.Load() > maxBytes {
		t.Errorf("the store went over its limits: %d records, %d bytes", maxRecords.Load(), maxStored.Load())
	}
	// Unbounded, the flood's bodies alone would keep 12 MiB alive; the
	// store's records may take some more than they count, but no more
	// than a few times its byte limit.
	if growth > 4*maxBytes {
		t.Errorf("the heap grew by %d KiB during the flood, more than four times the store's %d KiB", growth>>10, maxBytes>>10)
	}

	// Nothing was evicted: the held requests still own their keys, and
	// their retries meet them in flight.
	for i := range held {
		key := fmt.Sprintf("held-%d", i)
		if a := mustPost(t, client, base, key, []byte(key)); a.Status != http.StatusConflict {
			t.Errorf("%s after the flood: %v, want 409 (still in flight)", key, a)
		}
	}
	close(gate)
	for range held {
		if a := <-heldAnswers; a.Status != http.StatusCreated {
			t.Errorf("held request: %v", a)
		}
	}
	for i := range held {
		key := fmt.Sprintf("held-%d", i)
		if a := mustPost(t, client, base, key, []byte(key)); !a.replayed() || ex.of(key) != 1 {
			t.Errorf("%s completed: retry %v with %d executions, want a replay of one", key, a, ex.of(key))
		}
	}
	// Every key of the flood ran at most once, and each one that ran is
	// still replayed: a full store refuses, it does not forget (B30).
	var replays, gone int
	for n := 1; n <= flood; n += 7 {
		key := "flood-" + strconv.Itoa(n)
		a := mustPost(t, client, base, key, []byte(key), "X-Reply-Size", strconv.Itoa(replySize))
		switch ran := ex.of(key); {
		case ran > 1:
			t.Fatalf("%s ran %d times", key, ran)
		case ran == 1 && a.replayed():
			replays++
		case ran == 1 && a.problemType() == idem.ProblemNotReplayable:
			// Its response did not fit: kept as not replayable (B19).
			gone++
		case ran == 1:
			t.Fatalf("%s ran during the flood but its retry was neither replayed nor refused as not replayable: %v", key, a)
		}
	}
	t.Logf("retries of keys that ran during the flood: %d replayed, %d not replayable", replays, gone)
	if gone > replays/10 {
		t.Errorf("%d of the %d keys that ran lost their response: the store keeps too little room for completions", gone, gone+replays)
	}
}
