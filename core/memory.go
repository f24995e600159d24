package idem

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"
	"unsafe"
)

// Defaults of MemoryOptions.
const (
	DefaultMemoryMaxEntries    = 100_000
	DefaultMemoryMaxBytes      = 256 << 20
	DefaultMemoryShards        = 64
	DefaultMemorySweepInterval = time.Minute
)

// ErrStoreFull is returned, possibly wrapped, by a bounded store's Acquire
// when a new record would exceed the store's limits: the store refuses new
// keys rather than forget a record that may still be retried (B30). The
// engine answers 503 with Retry-After, also in fail-open mode.
var ErrStoreFull = errors.New("idem: store full: new keys are refused until records expire")

// ErrScopeFull is returned, possibly wrapped, by a bounded store's Acquire
// when the store is under pressure and the key's scope holds more than its
// share of it, so that a scope flooding the store is refused before the
// others (B30). The engine answers 429 with Retry-After.
var ErrScopeFull = errors.New("idem: store under pressure: this scope holds more than its share")

// MemoryOptions configures a MemoryStore. Zero fields mean the defaults.
type MemoryOptions struct {
	// MaxEntries bounds the number of records; past it new keys are
	// refused with ErrStoreFull until records expire (B30). Size it for
	// the keyed requests of one retention time (Config.Retention), with
	// room to spare: each shard holds MaxEntries/Shards. Default: 100,000.
	MaxEntries int
	// MaxBytes bounds the bytes of keys, fingerprints, headers and bodies
	// held, plus a fixed overhead per record; a new key must leave an
	// eighth of it free for the responses of requests in flight. The
	// slabs that hold them may hold as much again in records since
	// removed (a slab less than half live is compacted), so size the
	// process's memory for about twice MaxBytes. Default: 256 MiB.
	MaxBytes int64
	// Shards is the number of independently locked parts. Default: 64.
	Shards int
	// SweepInterval is how often a background janitor removes expired
	// records; expired records are also ignored and replaced on access.
	// Default: one minute. Negative: no janitor.
	SweepInterval time.Duration
	// Clock tells the time. Default: the system clock.
	Clock Clock
}

// entryOverhead approximates what a record costs beyond its bytes: its
// slot, its index entry and its share of the slabs' unused room.
const entryOverhead = 160

// MemoryStore is the in-memory Store, the engine's embedded default. It is
// sharded for concurrent use and expires records by time. It stays within
// its entry and byte limits by refusing new keys, never by evicting a live
// record (B30): when a shard is full, Acquire fails with ErrStoreFull. When
// the store is at least half full (by entries or bytes), a new key from a
// scope that holds more than the average scope does fails with
// ErrScopeFull, so a scope that floods the store is refused first and the
// others keep their room. The store counts what each scope holds only
// while it is at least three eighths full. Records do not survive the
// process, and are not shared between processes: use a shared store for
// more than one replica.
//
// The scope of a key is known when the engine calls the store: the engine
// passes a hash of it (never the scope itself) along with the request's
// context. Calls from elsewhere count as one scope.
//
// Each record is kept in a fixed-size slot without pointers (with its key
// and fingerprint, when they fit) and its header fields and body in a
// slab shared with other records (see slab.go), so a store holding many
// records costs the garbage collector one pointer per slab. A record
// Acquire returns shares the slab's bytes, which are never written into
// again.
type MemoryStore struct {
	shards []memShard
	seed   maphash.Seed
	clock  Clock
	// mono is set when clock is the system clock: now then counts from
	// started, which is start in Unix nanoseconds.
	mono       bool
	started    time.Time
	start      int64
	maxEntries int
	maxBytes   int64
	// use counts records and bytes, per scope while the store is pressed
	// (B30).
	use *scopeUse

	closeOnce sync.Once
	stop      chan struct{}
	stopped   chan struct{}
}

// noSlot ends the list of free slots, and stands for no slot.
const noSlot int32 = -1

type memShard struct {
	memShardState
	_ [(64 - unsafe.Sizeof(memShardState{})%64) % 64]byte // keep shards on separate cache lines
}

type memShardState struct {
	mu sync.Mutex
	// index maps keys to their slots; it holds no pointers, so the
	// collector does not scan it.
	index memIndex
	// slots holds the records; the bytes of slot i not in its head are
	// its blob, in slabs (see slab.go).
	slots []memSlot
	free  int32 // first free slot, linked through next
	// slabs holds the blobs; curSlab is the one new blobs go to (noSlot
	// before the first); freeSlabs lists the ids of dropped slabs.
	slabs      []memSlab
	freeSlabs  []int32
	curSlab    int32
	compacting bool
	count      int
	bytes      int64
	// use is the store's count (B30).
	use *scopeUse
	// expiryFloor is at most the earliest expiry of any record in the
	// shard: before it, no record can have expired, so a shard full of
	// in-flight records answers ErrStoreFull without scanning its slots
	// on every Acquire. A scan that finds nothing expired raises it;
	// storing a record with an earlier expiry lowers it; a renewal, which
	// only postpones an expiry, leaves it a valid bound.
	expiryFloor int64
}

// Where a slot keeps its key and fingerprint when they fit (memSlot.head):
// the default storage key and a fingerprint of up to SHA-256's size.
const (
	headKey = storageKeyLen
	headFP  = 32
)

// memSlot describes one record. Its key and fingerprint are in head when
// they fit (inline), so that leasing a key allocates nothing; otherwise
// they start the blob. The rest of the blob is the header fields (each
// name and value preceded by its length as a uvarint), then the body.
type memSlot struct {
	hash      uint64
	expires   int64 // Unix nanoseconds
	size      int64 // counted against MaxBytes
	token     Token
	scope     uint64 // hash of the scope that made the record (B30)
	status    int32
	keyLen    int32
	fpLen     int32
	hdrLen    int32 // bytes of the encoded header fields
	hdrN      int32 // number of header fields
	next      int32 // next free slot
	state     State // 0: free
	fpNil     bool
	bodyNil   bool
	notReplay bool
	inline    bool
	blob      blobRef
	head      [headKey + headFP]byte
}

// fits reports whether a key and fingerprint of these lengths fit a
// slot's head.
func fits(keyLen, fpLen int) bool { return keyLen <= headKey && fpLen <= headFP }

// key returns the key of slot i, a view of the shard's memory.
func (s *memShard) key(i int32) []byte {
	if sl := &s.slots[i]; sl.inline {
		return sl.head[:sl.keyLen]
	}
	return s.blob(i)[:s.slots[i].keyLen]
}

// prefix is how many bytes of slot i's blob its key and fingerprint take.
func (sl *memSlot) prefix() int {
	if sl.inline {
		return 0
	}
	return int(sl.keyLen + sl.fpLen)
}

// NewMemoryStore returns a MemoryStore. Call Close to stop its janitor.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMemoryMaxEntries
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMemoryMaxBytes
	}
	if opts.Shards <= 0 {
		opts.Shards = DefaultMemoryShards
	}
	opts.Shards = min(opts.Shards, opts.MaxEntries)
	if opts.SweepInterval == 0 {
		opts.SweepInterval = DefaultMemorySweepInterval
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	m := &MemoryStore{
		shards:     make([]memShard, opts.Shards),
		seed:       maphash.MakeSeed(),
		clock:      opts.Clock,
		maxEntries: opts.MaxEntries / opts.Shards,
		maxBytes:   opts.MaxBytes / int64(opts.Shards),
		use:        newScopeUse(),
		stop:       make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	if _, ok := opts.Clock.(systemClock); ok {
		m.mono, m.started = true, time.Now()
		m.start = m.started.UnixNano()
	}
	m.use.maxEntries = int64(m.maxEntries) * int64(opts.Shards)
	m.use.maxBytes = m.maxBytes * int64(opts.Shards)
	for i := range m.shards {
		s := &m.shards[i]
		s.free, s.curSlab = noSlot, noSlot
		s.use = m.use
	}
	if opts.SweepInterval > 0 {
		go m.janitor(opts.SweepInterval)
	} else {
		close(m.stopped)
	}
	return m
}

// Close stops the janitor. The store stays usable; expired records are then
// only dropped on access.
func (m *MemoryStore) Close() error {
	m.closeOnce.Do(func() { close(m.stop) })
	<-m.stopped
	return nil
}

func (m *MemoryStore) janitor(every time.Duration) {
	defer close(m.stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.Sweep()
		}
	}
}

// Sweep removes every expired record now.
func (m *MemoryStore) Sweep() {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		now := m.now()
		s.compacting = true
		for j := range s.slots {
			if sl := &s.slots[j]; sl.state != 0 && now >= sl.expires {
				s.remove(int32(j))
			}
		}
		s.compactAfterRemovals()
		s.mu.Unlock()
	}
}

// Stats reports how many records the store holds and the bytes it counts
// against MaxBytes.
func (m *MemoryStore) Stats() (records int, bytes int64) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		records += s.count
		bytes += s.bytes
		s.mu.Unlock()
	}
	return records, bytes
}

// locate hashes key and returns the hash and the shard that holds key.
func (m *MemoryStore) locate(key string) (uint64, *memShard) {
	h := maphash.String(m.seed, key)
	return h, &m.shards[h%uint64(len(m.shards))]
}

// now returns the time in Unix nanoseconds. With the system clock it
// reads only the monotonic clock, at half the cost of time.Now, from the
// store's start: records then expire by elapsed time, whatever happens to
// the wall clock meanwhile.
func (m *MemoryStore) now() int64 {
	if m.mono {
		return m.start + int64(time.Since(m.started))
	}
	return m.clock.Now().UnixNano()
}

// after returns now plus d in Unix nanoseconds, saturating instead of
// overflowing.
func after(now int64, d time.Duration) int64 {
	if d > 0 && now > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	return now + int64(d)
}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("idem: memory store: %w", err)
	}
	return nil
}

// Acquire implements Store. A live record is returned in one allocation,
// the Record with room for up to two header fields and one more, and for
// a fingerprint of the default size; its Body, a fingerprint kept in the
// blob and its header strings share the store's bytes, which the store
// never writes into again (see Store).
func (m *MemoryStore) Acquire(ctx context.Context, key string, token Token, fingerprint []byte, lease time.Duration) (*Record, error) {
	var rec *Record
	found, err := m.lease(ctx, key, token, fingerprint, lease, func(s *memShard, i int32) { rec = s.record(i) })
	if !found {
		return nil, err
	}
	return rec, nil
}

// Local marks the MemoryStore as a LocalStore.
func (m *MemoryStore) Local() {}

// lease leases key, copying key and fingerprint; or, when key has a live
// record, calls read with its slot under the shard's lock and returns
// true.
func (m *MemoryStore) lease(ctx context.Context, key string, token Token, fingerprint []byte, lease time.Duration, read func(s *memShard, i int32)) (found bool, err error) {
	if err := ctxErr(ctx); err != nil {
		return false, err
	}
	h, s := m.locate(key)
	scope := scopeOf(ctx)
	if m.use.shouldSwitch() {
		m.switchCounting()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := m.now()
	i := s.lookup(h, key)
	if i != noSlot {
		if now < s.slots[i].expires {
			read(s, i)
			return true, nil
		}
		s.remove(i)
	}
	size := recordSize(len(key), len(fingerprint), nil, 0)
	// A new key must leave an eighth of the bytes free, for the responses
	// of the requests already in flight to be recorded (a response that
	// does not fit is kept as not replayable: 410 on retry).
	if s.count+1 > m.maxEntries || s.bytes+size+m.maxBytes/8 > m.maxBytes {
		if !s.makeRoom(m, 1, size+m.maxBytes/8, now) {
			return false, ErrStoreFull
		}
	}
	if !m.use.admits(scope) {
		return false, ErrScopeFull
	}
	sl := memSlot{
		state: InFlight, token: token, scope: scope, expires: after(now, lease), size: size,
		keyLen: int32(len(key)), fpLen: int32(len(fingerprint)), fpNil: fingerprint == nil, bodyNil: true,
	}
	if fits(len(key), len(fingerprint)) {
		sl.inline = true
		copy(sl.head[:headKey], key)
		copy(sl.head[headKey:], fingerprint)
		s.insert(h, &sl)
		return false, nil
	}
	j := s.insert(h, &sl)
	ref, blob := s.alloc(j, len(key)+len(fingerprint))
	copy(blob[copy(blob, key):], fingerprint)
	s.slots[j].blob = ref
	return false, nil
}

// Complete implements Store. It copies what it keeps and retains nothing
// of rec.
func (m *MemoryStore) Complete(ctx context.Context, key string, token Token, rec *Record, retention time.Duration) error {
	var header []HeaderField
	var body []byte
	if !rec.NotReplayable {
		header, body = rec.Header, rec.Body
	}
	hdrLen := encodedHeaderLen(header)
	return m.holding(ctx, key, token, func(s *memShard, i int32, now int64) {
		sl := &s.slots[i]
		size := recordSize(len(key), int(sl.fpLen), header, len(body))
		s.bytes -= sl.size
		notReplay := rec.NotReplayable
		if !s.makeRoom(m, 0, size, now) {
			// No live record is evicted to make room (B30).
			// Even alone the response does not fit: keep the outcome,
			// drop the response, so a retry gets 410 and never a second
			// execution.
			header, body, hdrLen, notReplay = nil, nil, 0, true
			size = recordSize(len(key), int(sl.fpLen), nil, 0)
		}
		// makeRoom never removes slot i (it is in flight and not
		// expired), and removals move no slot.
		s.use.add(sl.scope, 0, size-sl.size)
		keep := sl.prefix()
		var ref blobRef
		if n := keep + hdrLen + len(body); n > 0 {
			var blob []byte
			ref, blob = s.alloc(i, n)
			// alloc may have moved slot i's blob (compaction): read it
			// through the slot.
			b := append(blob[:0], s.blob(i)[:keep]...)
			for _, f := range header {
				b = appendString(appendString(b, f.Name), f.Value)
			}
			_ = append(b, body...)
		}
		old := sl.blob
		sl.blob = ref
		s.release(old)
		sl.state, sl.expires, sl.size = Completed, after(now, retention), size
		s.lowerFloor(sl.expires)
		sl.status, sl.notReplay = int32(rec.Status), notReplay
		sl.hdrLen, sl.hdrN, sl.bodyNil = int32(hdrLen), int32(len(header)), body == nil
		s.bytes += size
	})
}

// Release implements Store.
func (m *MemoryStore) Release(ctx context.Context, key string, token Token) error {
	return m.holding(ctx, key, token, func(s *memShard, i int32, _ int64) { s.remove(i) })
}

// Renew implements Store.
func (m *MemoryStore) Renew(ctx context.Context, key string, token Token, lease time.Duration) error {
	return m.holding(ctx, key, token, func(s *memShard, i int32, now int64) {
		s.slots[i].expires = after(now, lease)
	})
}

// holding runs f, under the shard's lock, on the slot of the live
// in-flight record that token holds, or returns ErrLeaseLost.
func (m *MemoryStore) holding(ctx context.Context, key string, token Token, f func(s *memShard, i int32, now int64)) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	h, s := m.locate(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := m.now()
	i, err := s.held(h, key, token, now)
	if err != nil {
		return err
	}
	f(s, i, now)
	return nil
}

// recordSize is what a record counts against MaxBytes.
func recordSize(keyLen, fpLen int, header []HeaderField, bodyLen int) int64 {
	n := int64(entryOverhead + keyLen + fpLen + bodyLen)
	for _, f := range header {
		n += int64(len(f.Name) + len(f.Value) + 32)
	}
	return n
}

func encodedHeaderLen(header []HeaderField) int {
	n := 0
	for _, f := range header {
		n += uvarintLen(len(f.Name)) + len(f.Name) + uvarintLen(len(f.Value)) + len(f.Value)
	}
	return n
}

func uvarintLen(n int) int {
	k := 1
	for ; n >= 0x80; n >>= 7 {
		k++
	}
	return k
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// cutString reads a string appendString wrote at the start of b and
// returns it with the rest of b. The string shares b's bytes: b must be a
// blob, which is never written into.
func cutString(b []byte) (string, []byte) {
	n, k := binary.Uvarint(b)
	b = b[k:]
	if n == 0 {
		return "", b
	}
	return unsafe.String(&b[0], int(n)), b[n:]
}

// bareRecord is a Record Acquire returns, with room for a fingerprint of
// the default size kept in a slot's head; headedRecord adds room for a few
// header fields and one more. Each is one allocation.
type bareRecord struct {
	rec Record
	fp  [FingerprintSize]byte
}

type headedRecord struct {
	bareRecord
	hdr [3]HeaderField
}

// record decodes slot i into a new Record. Its Header slice is its own,
// with room for one more field; a fingerprint from the slot's head is
// copied, since slots are reused; its Body, a fingerprint from the blob
// and its header strings share the blob, which is never written into.
func (s *memShard) record(i int32) *Record {
	sl, b := &s.slots[i], s.blob(i)
	n := int(sl.hdrN)
	var o *bareRecord
	var hdr []HeaderField
	switch {
	case n > 0 && n < len(headedRecord{}.hdr):
		h := new(headedRecord)
		o, hdr = &h.bareRecord, h.hdr[:0]
	case n > 0:
		o, hdr = new(bareRecord), make([]HeaderField, 0, n+1)
	default:
		o = new(bareRecord)
	}
	r := &o.rec
	*r = Record{
		State: sl.state, Token: sl.token, ExpiresAt: time.Unix(0, sl.expires),
		Status: int(sl.status), NotReplayable: sl.notReplay,
	}
	off := int(sl.keyLen)
	end := off + int(sl.fpLen)
	switch {
	case sl.fpNil:
	case sl.inline && int(sl.fpLen) <= len(o.fp):
		r.Fingerprint = o.fp[:copy(o.fp[:], sl.head[headKey:headKey+sl.fpLen])]
	case sl.inline: // a longer fingerprint, such as SHA256Fingerprint's
		r.Fingerprint = append([]byte{}, sl.head[headKey:headKey+sl.fpLen]...)
	default:
		r.Fingerprint = b[off:end:end]
	}
	off = sl.prefix()
	end = off + int(sl.hdrLen)
	if n > 0 {
		r.Header = hdr[:n]
		rest := b[off:end]
		for j := range r.Header {
			r.Header[j].Name, rest = cutString(rest)
			r.Header[j].Value, rest = cutString(rest)
		}
	}
	if !sl.bodyNil {
		r.Body = b[end:len(b):len(b)]
	}
	return r
}

// held returns the slot of the live in-flight record that token holds, or
// ErrLeaseLost.
func (s *memShard) held(h uint64, key string, token Token, now int64) (int32, error) {
	i := s.lookup(h, key)
	if i == noSlot {
		return noSlot, ErrLeaseLost
	}
	if sl := &s.slots[i]; sl.state != InFlight || sl.token != token || now >= sl.expires {
		return noSlot, ErrLeaseLost
	}
	return i, nil
}

// insert stores a new record, whose key hashes to h, in a free slot and
// returns the slot.
func (s *memShard) insert(h uint64, sl *memSlot) int32 {
	i := s.free
	if i == noSlot {
		i = int32(len(s.slots))
		s.slots = append(s.slots, memSlot{})
	} else {
		s.free = s.slots[i].next
	}
	sl.hash, sl.next = h, noSlot
	s.slots[i] = *sl
	s.index.add(h, i)
	s.count++
	s.bytes += sl.size
	s.use.add(sl.scope, 1, sl.size)
	s.lowerFloor(sl.expires)
	return i
}

// remove deletes the record in slot i and frees the slot.
func (s *memShard) remove(i int32) {
	sl := &s.slots[i]
	s.index.remove(sl.hash, i)
	s.count--
	s.bytes -= sl.size
	s.use.add(sl.scope, -1, -sl.size)
	blob := sl.blob
	*sl = memSlot{next: s.free}
	s.free = i
	s.release(blob)
}

// makeRoom removes expired records until added more records and size
// more bytes fit; it never removes a live record (B30), so the record
// being completed, which is live, stays.
func (s *memShard) makeRoom(m *MemoryStore, added int, size int64, now int64) bool {
	for s.count+added > m.maxEntries || s.bytes+size > m.maxBytes {
		if !s.dropExpired(now) {
			return false
		}
	}
	return true
}

// dropExpired removes every expired record of the shard and reports
// whether it removed any. One scan frees every slot whose record expired,
// so that a shard that fills up with records as fast as they expire pays
// for a scan once per shardful of new keys, not once per key; a scan that
// finds nothing raises expiryFloor, so that a shard full of live records
// answers at once until one of them can have expired.
func (s *memShard) dropExpired(now int64) bool {
	if now < s.expiryFloor {
		return false
	}
	floor := int64(math.MaxInt64)
	removed := false
	s.compacting = true
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.state == 0 {
			continue
		}
		if now >= sl.expires {
			s.remove(int32(i))
			removed = true
			continue
		}
		floor = min(floor, sl.expires)
	}
	s.compactAfterRemovals()
	s.expiryFloor = floor
	return removed
}

// lowerFloor keeps expiryFloor a bound below a record that expires at t.
func (s *memShard) lowerFloor(t int64) { s.expiryFloor = min(s.expiryFloor, t) }

// switchCounting starts counting scopes when the store became pressed,
// or stops when it no longer is (see scopeUse.counting). It takes every
// shard's lock, in order, so the caller holds none. Before it starts, it
// removes the expired records: a store is pressed by its live records,
// not by expired ones it has yet to drop, which do not survive the
// janitor's next sweep. When that frees the store, scopes stay uncounted.
func (m *MemoryStore) switchCounting() {
	for i := range m.shards {
		m.shards[i].mu.Lock()
	}
	u := m.use
	switch {
	case u.counting.Load() && u.slack():
		u.counting.Store(false)
		for i := range u.stripes {
			st := &u.stripes[i]
			st.mu.Lock()
			clear(st.counts)
			st.mu.Unlock()
		}
		u.scopes.Store(0)
	case !u.counting.Load() && u.shouldSwitch():
		now := m.now()
		for i := range m.shards {
			m.shards[i].dropExpired(now)
		}
		if !u.shouldSwitch() {
			break
		}
		for i := range m.shards {
			s := &m.shards[i]
			for j := range s.slots {
				if sl := &s.slots[j]; sl.state != 0 {
					u.count(sl.scope, 1, sl.size)
				}
			}
		}
		u.counting.Store(true)
	}
	for i := range m.shards {
		m.shards[i].mu.Unlock()
	}
}

// MemoryStore never waits on I/O (LocalStore).
var _ LocalStore = (*MemoryStore)(nil)
