package idem

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
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
		sl := memSlot{state: InFlight, expires: math.MaxInt64, keyLen: int32(len(key)), size: 1, bodyNil: true, inline: true}
		copy(sl.head[:], key)
		s.insert(h, &sl)
	}
	check := func(present, absent []string) {
		t.Helper()
		for _, k := range present {
			i := s.lookup(h, k)
			if i == noSlot || string(s.key(i)) != k {
				t.Fatalf("find(%q) = %d, want its slot", k, i)
			}
		}
		for _, k := range absent {
			if i := s.lookup(h, k); i != noSlot {
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
		if s.lookup(h+1<<32, "a") != noSlot {
			t.Fatal("found a key under another hash")
		}
		for n, k := range order {
			s.remove(s.lookup(h, k))
			check(order[n+1:], order[:n+1])
		}
		if s.index.used != 0 || s.bytes != 0 {
			t.Fatalf("after removing every key: %d index entries, bytes %d", s.index.used, s.bytes)
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

// TestMemoryIndex adds and removes keys at random, their hashes drawn
// from few values so that entries collide, share homes, form long runs
// and wrap around the table's end, and checks every key after each step
// against a map: removal's backward shift must leave every key findable.
func TestMemoryIndex(t *testing.T) {
	m := NewMemoryStore(MemoryOptions{Shards: 1, SweepInterval: -1})
	defer m.Close()
	s := &m.shards[0]
	rng := rand.New(rand.NewPCG(1, 2))
	hashes := map[string]uint64{}
	present := map[string]int32{}
	for step := range 20000 {
		k := fmt.Sprint("k", rng.IntN(300))
		h, ok := hashes[k]
		if !ok {
			// Few distinct high halves: homes collide; some at the
			// table's end, so runs wrap.
			h = uint64(rng.IntN(12))<<32 | uint64(rng.Uint32())
			if rng.IntN(4) == 0 {
				h = uint64(0xffffffff-uint32(rng.IntN(3)))<<32 | uint64(rng.Uint32())
			}
			hashes[k] = h
		}
		if i, ok := present[k]; ok {
			s.remove(i)
			delete(present, k)
		} else {
			sl := memSlot{state: InFlight, expires: math.MaxInt64, keyLen: int32(len(k)), size: 1, bodyNil: true, inline: true}
			copy(sl.head[:], k)
			present[k] = s.insert(h, &sl)
		}
		if s.index.used != len(present) || 2*s.index.used > len(s.index.entries) {
			t.Fatalf("step %d: %d entries in a table of %d, want %d at most half full", step, s.index.used, len(s.index.entries), len(present))
		}
		for k, h := range hashes {
			want, ok := present[k]
			if !ok {
				want = noSlot
			}
			if got := s.lookup(h, k); got != want {
				t.Fatalf("step %d: lookup(%q) = %d, want %d", step, k, got, want)
			}
		}
	}
}

// TestMemorySlabs stores records of two retentions, interleaved, so that
// when the short ones expire every slab is left about a third full of the
// long ones: the slabs are compacted, the long records still replay byte
// for byte (also records with keys too long for a slot's head), records
// read before the compaction stay as they were, and the slabs hold at
// most twice the live blobs' bytes plus the current slab. A blob larger
// than half a slab has a slab of its own, dropped with it.
func TestMemorySlabs(t *testing.T) {
	clock := &stepClock{now: time.Unix(1_000_000, 0)}
	m := NewMemoryStore(MemoryOptions{Shards: 1, SweepInterval: -1, Clock: clock})
	defer m.Close()
	ctx := context.Background()
	s := &m.shards[0]
	body := func(n int) []byte {
		b := make([]byte, 300+n%200)
		for j := range b {
			b[j] = byte(n + j)
		}
		return b
	}
	key := func(n int) string {
		if n%7 == 0 { // too long for the head: key and fingerprint go to the slab
			return fmt.Sprintf("%0200d", n)
		}
		return fmt.Sprintf("%064d", n)
	}
	store := func(n int, retention time.Duration) {
		tok := Token{byte(n), byte(n >> 8), byte(n >> 16)}
		if rec, err := m.Acquire(ctx, key(n), tok, []byte{byte(n), 1, 2}, time.Minute); rec != nil || err != nil {
			t.Fatalf("Acquire %d: %v, %v", n, rec, err)
		}
		rec := &Record{Status: 201, Body: body(n), Header: []HeaderField{{"Location", fmt.Sprint("/orders/", n)}}}
		if err := m.Complete(ctx, key(n), tok, rec, retention); err != nil {
			t.Fatalf("Complete %d: %v", n, err)
		}
	}
	check := func(n int, rec *Record) {
		t.Helper()
		if rec == nil || rec.State != Completed || !bytes.Equal(rec.Body, body(n)) || !bytes.Equal(rec.Fingerprint, []byte{byte(n), 1, 2}) ||
			len(rec.Header) != 1 || rec.Header[0].Value != fmt.Sprint("/orders/", n) {
			t.Fatalf("record %d: %+v", n, rec)
		}
	}
	lookup := func(n int) *Record {
		t.Helper()
		rec, err := m.Acquire(ctx, key(n), Token{0xff}, nil, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	const n = 3000
	for i := range n {
		retention := time.Hour
		if i%3 != 0 {
			retention = time.Second
		}
		store(i, retention)
	}
	views := map[int]*Record{}
	for i := 0; i < n; i += 3 {
		views[i] = lookup(i)
	}
	before := len(s.slabs) - len(s.freeSlabs)
	clock.now = clock.now.Add(2 * time.Second)
	m.Sweep()
	held, live := int64(0), int64(0)
	for _, sl := range s.slabs {
		held += int64(len(sl.buf))
		live += sl.liveBytes
	}
	if after := len(s.slabs) - len(s.freeSlabs); after >= before {
		t.Errorf("%d slabs before two thirds of the records expired, %d after: want slabs dropped", before, after)
	}
	if held > 2*live+maxSlab {
		t.Errorf("the slabs hold %d bytes for %d live bytes, want at most twice as many plus one slab", held, live)
	}
	for i := 0; i < n; i++ {
		if i%3 == 0 {
			check(i, lookup(i))
			check(i, views[i])
		}
	}

	// A blob larger than half a slab.
	big := make([]byte, 3*maxSlab)
	tok := Token{9, 9, 9}
	if _, err := m.Acquire(ctx, "big", tok, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := m.Complete(ctx, "big", tok, &Record{Status: 200, Body: big}, time.Second); err != nil {
		t.Fatal(err)
	}
	r := s.slots[s.lookup(maphash.String(m.seed, "big"), "big")].blob
	if got := cap(s.slabs[r.slab].buf); got != len(big) || r.slab == s.curSlab {
		t.Fatalf("a blob of %d bytes is in a slab of %d (current: %v), want one of its own", len(big), got, r.slab == s.curSlab)
	}
	clock.now = clock.now.Add(2 * time.Second)
	m.Sweep()
	if s.slabs[r.slab].buf != nil {
		t.Fatal("the big blob's slab outlived its record")
	}
}
