package idem

// The memory store keeps the variable-length part of its records (its
// blobs) in slabs: byte slices it fills from the front and never writes
// into again below what it handed out. A store of many records then costs
// the garbage collector one pointer per slab, not one per record, and
// storing a response costs no allocation of its own. A record read from
// the store may share a slab's bytes (see Store): a slab the store drops
// stays in memory while such a record refers to it, and is never reused.
//
// Records of one retention leave a slab in the order they came, so a slab
// empties as a whole and is dropped. A slab left less than half full of
// live records, by records that outlive the others, is compacted: its live
// blobs are copied to the current slab and it is dropped. The bytes the
// slabs hold are therefore at most about twice the live blobs', plus the
// current slab of each shard.

// Slab sizes: a shard's slabs grow with what it holds, from minSlab to
// maxSlab; a blob larger than half a slab gets a slab of its own.
const (
	minSlab = 4 << 10
	maxSlab = 32 << 10 // the largest allocation the runtime serves from its per-CPU caches
)

// blobRef is where a slot's blob is: n bytes at off in slab, or no blob
// when n is 0.
type blobRef struct{ slab, off, n int32 }

// memSlab is one slab of a shard.
type memSlab struct {
	// buf holds the blobs handed out, up to len(buf); nil once dropped.
	buf []byte
	// live and liveBytes count the blobs in buf that slots still hold.
	live      int32
	liveBytes int64
	// members lists the slots whose blobs were placed in buf, some more
	// than once, some since moved elsewhere: compact checks each.
	members []int32
}

// blob returns the blob of slot i, a view of the slab that holds it.
func (s *memShard) blob(i int32) []byte {
	r := s.slots[i].blob
	if r.n == 0 {
		return nil
	}
	end := r.off + r.n
	return s.slabs[r.slab].buf[r.off:end:end]
}

// alloc returns room for a blob of n > 0 bytes for slot i, and where it
// is; the caller fills it before it lets go of the shard's lock.
func (s *memShard) alloc(i int32, n int) (blobRef, []byte) {
	size := s.slabSize()
	if n > size/2 {
		// A slab of its own, dropped with its blob.
		id := s.newSlab(n)
		return s.place(id, i, n)
	}
	if s.curSlab == noSlot || cap(s.slabs[s.curSlab].buf)-len(s.slabs[s.curSlab].buf) < n {
		old := s.curSlab
		s.curSlab = s.newSlab(size)
		ref, b := s.place(s.curSlab, i, n)
		if old != noSlot {
			s.retire(old)
		}
		return ref, b
	}
	return s.place(s.curSlab, i, n)
}

// slabSize is the size of the shard's next slab: a sixteenth of the bytes
// it holds, within minSlab and maxSlab.
func (s *memShard) slabSize() int {
	size := minSlab
	for size < maxSlab && int64(size)*16 < s.bytes {
		size *= 2
	}
	return size
}

// newSlab returns the id of a new, empty slab of capacity size.
func (s *memShard) newSlab(size int) int32 {
	sl := memSlab{buf: make([]byte, 0, size)}
	if k := len(s.freeSlabs); k > 0 {
		id := s.freeSlabs[k-1]
		s.freeSlabs = s.freeSlabs[:k-1]
		s.slabs[id] = sl
		return id
	}
	s.slabs = append(s.slabs, sl)
	return int32(len(s.slabs) - 1)
}

// place hands out n bytes of slab id for slot i.
func (s *memShard) place(id, i int32, n int) (blobRef, []byte) {
	sl := &s.slabs[id]
	off := len(sl.buf)
	sl.buf = sl.buf[:off+n]
	sl.live++
	sl.liveBytes += int64(n)
	sl.members = append(sl.members, i)
	return blobRef{slab: id, off: int32(off), n: int32(n)}, sl.buf[off : off+n : off+n]
}

// release lets go of the blob at r: the slab is dropped once it holds no
// live blob, or compacted when less than half of it is live, unless it is
// the current slab, which is checked when it is retired.
func (s *memShard) release(r blobRef) {
	if r.n == 0 {
		return
	}
	sl := &s.slabs[r.slab]
	sl.live--
	sl.liveBytes -= int64(r.n)
	if r.slab != s.curSlab {
		s.retire(r.slab)
	}
}

// retire drops slab id when it holds no live blob, and compacts it when
// less than half of it is live (but not from within a compaction: a slab
// retired then is checked again when one of its blobs goes).
func (s *memShard) retire(id int32) {
	sl := &s.slabs[id]
	switch {
	case sl.live == 0:
		s.dropSlab(id)
	case 2*sl.liveBytes < int64(len(sl.buf)) && !s.compacting:
		s.compact(id)
	}
}

// compact copies the live blobs of slab id to the current slab and drops
// it. Records read before keep the old bytes, which nothing writes into.
func (s *memShard) compact(id int32) {
	s.compacting = true
	members := s.slabs[id].members
	for _, j := range members {
		r := s.slots[j].blob
		if s.slots[j].state == 0 || r.n == 0 || r.slab != id {
			continue // freed, or moved since
		}
		old := s.blob(j)
		ref, b := s.alloc(j, int(r.n))
		copy(b, old)
		s.slots[j].blob = ref
	}
	s.compacting = false
	s.dropSlab(id)
}

// compactAfterRemovals ends a run of removals that began by setting
// compacting, so that no blob about to be removed too was copied first: it
// compacts the slabs the removals left less than half live.
func (s *memShard) compactAfterRemovals() {
	s.compacting = false
	for id := range s.slabs {
		if sl := &s.slabs[id]; sl.buf != nil && int32(id) != s.curSlab && 2*sl.liveBytes < int64(len(sl.buf)) {
			s.compact(int32(id))
		}
	}
}

// dropSlab forgets slab id and frees its id.
func (s *memShard) dropSlab(id int32) {
	s.slabs[id] = memSlab{}
	s.freeSlabs = append(s.freeSlabs, id)
}
