package idem

import (
	"math"
	"testing"
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
