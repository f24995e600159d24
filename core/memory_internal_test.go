package idem

import (
	"context"
	"math"
	"testing"
	"time"
)

// TestMemoryShardHashCollisions gives keys the same hash, which a 64-bit
// hash makes too rare to meet through the Store API: each key still finds
// its own record, and removing one, first, middle or last in the chain,
// leaves the others.
func TestMemoryShardHashCollisions(t *testing.T) {
	m := NewMemoryStore(MemoryOptions{Shards: 1, SweepInterval: -1})
	defer m.Close()
	s := &m.shards[0]
	const h = 7
	add := func(key string) {
		s.insert(h, []byte(key), memSlot{state: InFlight, expires: math.MaxInt64,
			keyLen: int32(len(key)), size: 1, bodyNil: true})
	}
	check := func(present, absent []string) {
		t.Helper()
		for _, k := range present {
			i := s.find(h, k)
			if i == noSlot || string(s.blobs[i]) != k {
				t.Fatalf("find(%q) = %d, want its slot", k, i)
			}
		}
		for _, k := range absent {
			if i := s.find(h, k); i != noSlot {
				t.Fatalf("find(%q) = %d, want none", k, i)
			}
		}
		if s.count != len(present) {
			t.Fatalf("count %d, want %d", s.count, len(present))
		}
	}
	for _, order := range [][]string{{"a", "b", "c"}, {"b", "a", "c"}, {"c", "b", "a"}} {
		for _, k := range []string{"a", "b", "c"} {
			add(k)
		}
		check([]string{"a", "b", "c"}, []string{"d"})
		if s.find(h+1, "a") != noSlot {
			t.Fatal("found a key under another hash")
		}
		for n, k := range order {
			s.remove(s.find(h, k))
			check(order[n+1:], order[:n+1])
		}
		if _, ok := s.index[h]; ok || s.bytes != 0 {
			t.Fatalf("after removing every key: index %v, bytes %d", s.index, s.bytes)
		}
	}
	if len(s.slots) != 3 {
		t.Errorf("%d slots for at most 3 records at a time, want freed slots reused", len(s.slots))
	}
}

// The slot hint Complete gets from Acquire is only a hint: a hint that
// points at another key's record, at a freed slot or past the slab finds
// the record through the index, and never completes a record the token
// does not hold.
func TestMemoryCompleteSlotHint(t *testing.T) {
	m := NewMemoryStore(MemoryOptions{Shards: 1, SweepInterval: -1})
	defer m.Close()
	ctx := context.Background()
	tokA, tokB := Token{1}, Token{2}
	_, _, slotA, err := m.acquire(ctx, "a", tokA, []byte("fa"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, _, slotB, err := m.acquire(ctx, "b", tokB, []byte("fb"), time.Minute)
	if err != nil || slotA == slotB {
		t.Fatalf("slots %d and %d, err %v", slotA, slotB, err)
	}
	rec := &Record{Status: 201, Body: []byte("A")}
	// b's token with a's slot: the hint does not match, the index finds b.
	if err := m.complete(ctx, "b", tokB, &Record{Status: 201, Body: []byte("B")}, time.Minute, slotA); err != nil {
		t.Fatalf("complete b with a's slot as hint: %v", err)
	}
	// a's key with b's token and a's own slot: refused.
	if err := m.complete(ctx, "a", tokB, rec, time.Minute, slotA); err != ErrLeaseLost {
		t.Fatalf("complete a with another token: %v, want ErrLeaseLost", err)
	}
	if got, err := m.Acquire(ctx, "a", Token{9}, []byte("fa"), time.Minute); err != nil || got == nil || got.State != InFlight {
		t.Fatalf("a = %+v, %v; want still in flight", got, err)
	}
	if err := m.complete(ctx, "a", tokA, rec, time.Minute, 1<<20); err != nil {
		t.Fatalf("complete a with a hint past the slab: %v", err)
	}
	for key, want := range map[string]string{"a": "A", "b": "B"} {
		got, err := m.Acquire(ctx, key, Token{9}, nil, time.Minute)
		if err != nil || got == nil || got.State != Completed || string(got.Body) != want {
			t.Fatalf("%s = %+v, %v; want completed with %q", key, got, err, want)
		}
	}
}
