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
		s.insert(h, s.first(h), []byte(key), &memSlot{state: InFlight, expires: math.MaxInt64,
			keyLen: int32(len(key)), size: 1, bodyNil: true})
	}
	check := func(present, absent []string) {
		t.Helper()
		for _, k := range present {
			i := s.find(h, k)
			if i == noSlot || string(s.key(i)) != k {
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

// A shard full of in-flight records refuses new keys without scanning for
// an expired record until one can have expired: the scan leaves a floor
// under the earliest expiry, and storing a record that expires earlier
// lowers it, so a record is dropped as soon as it expires.
func TestMemoryExpiryFloor(t *testing.T) {
	clock := &stepClock{now: time.Unix(1_000_000, 0)}
	m := NewMemoryStore(MemoryOptions{Shards: 1, MaxEntries: 2, SweepInterval: -1, Clock: clock})
	defer m.Close()
	ctx := context.Background()
	acquire := func(key string, lease time.Duration) error {
		t.Helper()
		rec, err := m.Acquire(ctx, key, Token{byte(len(key)), key[len(key)-1]}, nil, lease)
		if rec != nil {
			t.Fatalf("%s: found %+v", key, rec)
		}
		return err
	}
	if acquire("k1", 10*time.Minute) != nil || acquire("k2", 10*time.Minute) != nil {
		t.Fatal("the first two keys do not fit")
	}
	if err := acquire("k3", time.Minute); err != ErrStoreFull {
		t.Fatalf("k3 in a full shard: %v, want ErrStoreFull", err)
	}
	s := &m.shards[0]
	if want := clock.now.Add(10 * time.Minute).UnixNano(); s.expiryFloor != want {
		t.Fatalf("floor after the scan %d, want the earliest expiry %d", s.expiryFloor, want)
	}
	// k2 goes; k4 takes its place with a shorter lease.
	if err := m.Release(ctx, "k2", Token{2, '2'}); err != nil {
		t.Fatal(err)
	}
	if acquire("k4", time.Minute) != nil {
		t.Fatal("k4 does not fit after k2 was released")
	}
	clock.now = clock.now.Add(2 * time.Minute)
	if err := acquire("k5", time.Minute); err != nil {
		t.Fatalf("k5 after k4's lease ran out: %v, want k4 dropped and k5 stored", err)
	}
	if err := acquire("k6", time.Minute); err != ErrStoreFull {
		t.Fatalf("k6: %v, want ErrStoreFull (k1 and k5 are live)", err)
	}
}

// stepClock is a Clock that tells the time it is set to.
type stepClock struct{ now time.Time }

func (c *stepClock) Now() time.Time { return c.now }
