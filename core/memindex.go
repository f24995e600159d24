package idem

// memIndex maps the keys of a memory store shard to their slots: an open
// addressing table with linear probing, at most half full, of 8-byte
// entries without pointers. An entry holds the high 32 bits of its key's
// hash, which also place it in the table, and its slot plus one (0: an
// empty entry). A lookup therefore reads one run of adjacent entries,
// usually within one cache line, and the slot of every entry whose hash
// bits match; keys whose hashes collide are simply probed past. Removal
// shifts the entries that follow back, so the table needs no tombstones.
// (The shard picks its shard by the hash's low bits, so the high ones
// spread a shard's keys over its table.)
type memIndex struct {
	entries []uint64
	used    int
}

const minIndex = 16

// tag returns the hash bits an entry of h holds.
func tag(h uint64) uint64 { return h >> 32 }

// home returns where an entry of tag t belongs.
func (x *memIndex) home(t uint64) int { return int(t) & (len(x.entries) - 1) }

// lookup returns the slot of key, whose hash is h, or noSlot.
func (s *memShard) lookup(h uint64, key string) int32 {
	x := &s.index
	if x.used == 0 {
		return noSlot
	}
	t := tag(h)
	mask := len(x.entries) - 1
	for p := x.home(t); ; p = (p + 1) & mask {
		e := x.entries[p]
		if e == 0 {
			return noSlot
		}
		if e>>32 == t {
			if i := int32(uint32(e)) - 1; string(s.key(i)) == key {
				return i
			}
		}
	}
}

// add enters slot i, whose key hashes to h.
func (x *memIndex) add(h uint64, i int32) {
	if 2*(x.used+1) > len(x.entries) {
		x.grow()
	}
	x.put(tag(h)<<32 | uint64(uint32(i+1)))
	x.used++
}

// put places entry e at the first empty entry from its home.
func (x *memIndex) put(e uint64) {
	mask := len(x.entries) - 1
	p := x.home(e >> 32)
	for x.entries[p] != 0 {
		p = (p + 1) & mask
	}
	x.entries[p] = e
}

// grow doubles the table.
func (x *memIndex) grow() {
	old := x.entries
	x.entries = make([]uint64, max(minIndex, 2*len(old)))
	for _, e := range old {
		if e != 0 {
			x.put(e)
		}
	}
}

// remove takes out the entry of slot i, whose key hashes to h, and shifts
// back the entries after it that would not be found past the hole.
func (x *memIndex) remove(h uint64, i int32) {
	mask := len(x.entries) - 1
	want := tag(h)<<32 | uint64(uint32(i+1))
	p := x.home(tag(h))
	for x.entries[p] != want {
		if x.entries[p] == 0 {
			panic("idem: memory store index lost a slot")
		}
		p = (p + 1) & mask
	}
	x.used--
	for hole, q := p, (p+1)&mask; ; q = (q + 1) & mask {
		e := x.entries[q]
		if e == 0 {
			x.entries[hole] = 0
			return
		}
		// e may fill the hole unless its home lies cyclically in
		// (hole, q]: then a lookup from its home would not pass the hole.
		if home := x.home(e >> 32); (q-home)&mask >= (q-hole)&mask {
			x.entries[hole] = e
			hole = q
		}
	}
}
