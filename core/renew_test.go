package idem_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// renewCounter counts the Renew calls of each key.
type renewCounter struct {
	idem.Store
	mu     sync.Mutex
	renews map[string]int
}

func (s *renewCounter) Renew(ctx context.Context, key string, token idem.Token, lease time.Duration) error {
	s.mu.Lock()
	s.renews[key]++
	s.mu.Unlock()
	return s.Store.Renew(ctx, key, token, lease)
}

func (s *renewCounter) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(map[string]int, len(s.renews))
	for k, n := range s.renews {
		c[k] = n
	}
	return c
}

// TestRenewalOfManyLeases starts leases on every renewal queue of an
// engine, finishes half of them at once and lets the others outlive
// several lease times (B16): only the running ones are renewed, they keep
// their keys, and their renewals stop once they complete.
func TestRenewalOfManyLeases(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for several lease times; skipped with -short")
	}
	mem := idem.NewMemoryStore(idem.MemoryOptions{})
	t.Cleanup(func() { _ = mem.Close() })
	store := &renewCounter{Store: mem, renews: map[string]int{}}
	const lease = 400 * time.Millisecond
	eng, err := idem.New(idem.Config{Store: store, LeaseTime: lease})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })

	// Renew sees storage keys, not the clients' keys: count them.
	running := map[string]*idem.Lease{}
	for i := range 24 {
		key := "k" + strconv.Itoa(i)
		d := eng.Begin(req(key, "{}"))
		if d.Action != idem.Run {
			t.Fatalf("Begin(%s) = %v, want run", key, d.Action)
		}
		switch i % 3 {
		case 0:
			_ = d.Lease.Complete(idem.Recorded{Status: 201, Body: []byte("done")})
		case 1:
			d.Lease.Release(nil)
		default:
			running[key] = d.Lease
		}
		time.Sleep(5 * time.Millisecond) // spread the due times
	}

	time.Sleep(5 * lease / 2)
	renewed := store.counts()
	if len(renewed) != len(running) {
		t.Fatalf("%d keys renewed, want the %d still running: %v", len(renewed), len(running), renewed)
	}
	for key, n := range renewed {
		if n < 2 {
			t.Errorf("storage key %s: renewed %d times in 2.5 lease times, want at least 2", key, n)
		}
	}
	for key, l := range running {
		if d := eng.Begin(req(key, "{}")); d.Action != idem.Respond || d.Response.Status != 409 {
			t.Fatalf("duplicate of %s after 2.5 lease times: %v %+v, want 409", key, d.Action, d.Response)
		}
		if err := l.Complete(idem.Recorded{Status: 201, Body: []byte("late")}); err != nil {
			t.Fatalf("Complete(%s) after renewals: %v", key, err)
		}
	}

	before := store.counts()
	time.Sleep(lease)
	after := store.counts()
	for key, n := range after {
		if n != before[key] {
			t.Errorf("storage key %s: renewed %d more times after Complete", key, n-before[key])
		}
	}
	for key := range running {
		if d := eng.Begin(req(key, "{}")); !d.Replayed || string(d.Response.Body) != "late" {
			t.Fatalf("retry of %s: %+v, want the late response replayed", key, d.Response)
		}
	}
}
