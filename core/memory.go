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
	// eighth of it free for the responses of requests in flight.
	// Default: 256 MiB.
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
// slot, its index entry, the blob's header and allocation rounding.
const entryOverhead = 160

// MemoryStore is the in-memory Store, the engine's embedded default. It is
// sharded for concurrent use and expires records by time. It stays within
// its entry and byte limits by refusing new keys, never by evicting a live
// record (B30): when a shard is full, Acquire fails with ErrStoreFull. When
// the store is at least half full (by entries or bytes), a new key from a
// scope that holds more than the average scope does fails with
// ErrScopeFull, so a scope that floods the store is refused first and the
// others keep their room. Records do not survive the process, and are not
// shared between processes: use a shared store for more than one replica.
//
// The scope of a key is known when the engine calls the store: the engine
// passes a hash of it (never the scope itself) along with the request's
// context. Calls from elsewhere count as one scope.
//
// Each record is kept as one byte slice (key, fingerprint, header fields,
// body) and a fixed-size slot without pointers, so a store holding many
// records costs the garbage collector one pointer per record.
type MemoryStore struct {
	shards     []memShard
	seed       maphash.Seed
	clock      Clock
	maxEntries int
	maxBytes   int64
	// use counts records and bytes per scope (B30).
	use *scopeUse

	closeOnce sync.Once
	stop      chan struct{}
	stopped   chan struct{}
}

// noSlot ends the lists of slot indices: eviction, free slots, hash chains.
const noSlot int32 = -1

type memShard struct {
	memShardState
	_ [(64 - unsafe.Sizeof(memShardState{})%64) % 64]byte // keep shards on separate cache lines
}

type memShardState struct {
	mu sync.Mutex
	// index maps the hash of a key to its first slot; keys whose hashes
	// collide are chained through memSlot.chain. Neither keys nor values
	// are pointers, so the collector does not scan it.
	index map[uint64]int32
	// slots and blobs are parallel: slot i's bytes are blobs[i]. A blob is
	// never written into once stored, so records read from it may share
	// it.
	slots []memSlot
	blobs [][]byte
	free  int32 // first free slot, linked through next
	count int
	bytes int64
	// use is the store's per-scope count.
	use *scopeUse
	// expiryFloor is at most the earliest expiry of any record in the
	// shard: before it, no record can have expired, so a shard full of
	// in-flight records answers ErrStoreFull without scanning its slots
	// on every Acquire. A scan that finds nothing expired raises it;
	// storing a record with an earlier expiry lowers it; a renewal, which
	// only postpones an expiry, leaves it a valid bound.
	expiryFloor int64
}

// memSlot describes one record; its variable-length parts are in the blob,
// in this order: key, fingerprint, header fields (each name and value
// preceded by its length as a uvarint), body.
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
	chain     int32 // next slot whose key has the same hash
	state     State // 0: free
	fpNil     bool
	bodyNil   bool
	notReplay bool
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
	m.use.maxEntries = int64(m.maxEntries) * int64(opts.Shards)
	m.use.maxBytes = m.maxBytes * int64(opts.Shards)
	for i := range m.shards {
		s := &m.shards[i]
		s.index = make(map[uint64]int32)
		s.free = noSlot
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
		for j := range s.slots {
			if sl := &s.slots[j]; sl.state != 0 && now >= sl.expires {
				s.remove(int32(j))
			}
		}
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

func (m *MemoryStore) now() int64 { return m.clock.Now().UnixNano() }

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

// Acquire implements Store. A live record is returned in two
// allocations: the Record with room for a few header fields, and one
// slice that holds its fingerprint and body; its header strings, which
// cannot be written into, share the store's bytes.
func (m *MemoryStore) Acquire(ctx context.Context, key string, token Token, fingerprint []byte, lease time.Duration) (*Record, error) {
	var rec *Record
	found, err := m.lease(ctx, key, token, fingerprint, lease, func(s *memShard, i int32) { rec = s.ownedRecord(i) })
	if !found {
		return nil, err
	}
	return rec, nil
}

// AcquireView implements LocalStore: it leases key, copying key and
// fingerprint, or returns the live record and true. The record's
// Fingerprint and Body, and the strings of its Header, share the store's
// bytes, which the store never writes into: the engine, which only reads
// them, uses the record as it is, and the replay path is spared a copy of
// the response. Its Header slice is the caller's own, with room for one
// more field.
func (m *MemoryStore) AcquireView(ctx context.Context, key string, token Token, fingerprint []byte, lease time.Duration) (rec Record, found bool, err error) {
	found, err = m.lease(ctx, key, token, fingerprint, lease, func(s *memShard, i int32) { rec = s.record(i) })
	return rec, found, err
}

// lease leases key, copying key and fingerprint; or, when key has a live
// record, calls read with its slot under the shard's lock and returns
// true.
func (m *MemoryStore) lease(ctx context.Context, key string, token Token, fingerprint []byte, lease time.Duration, read func(s *memShard, i int32)) (found bool, err error) {
	if err := ctxErr(ctx); err != nil {
		return false, err
	}
	h, s := m.locate(key)
	scope := scopeOf(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := m.now()
	i, first := s.lookup(h, key)
	if i != noSlot {
		if now < s.slots[i].expires {
			read(s, i)
			return true, nil
		}
		s.remove(i)
		first = s.first(h)
	}
	size := recordSize(len(key), len(fingerprint), nil, 0)
	// A new key must leave an eighth of the bytes free, for the responses
	// of the requests already in flight to be recorded (a response that
	// does not fit is kept as not replayable: 410 on retry).
	if s.count+1 > m.maxEntries || s.bytes+size+m.maxBytes/8 > m.maxBytes {
		if !s.makeRoom(m, 1, size+m.maxBytes/8, now) {
			return false, ErrStoreFull
		}
		// Making room may have removed the record at the head of h's chain.
		first = s.first(h)
	}
	if !m.use.admits(scope) {
		return false, ErrScopeFull
	}
	blob := make([]byte, 0, len(key)+len(fingerprint))
	blob = append(append(blob, key...), fingerprint...)
	s.insert(h, first, blob, memSlot{
		state: InFlight, token: token, scope: scope, expires: after(now, lease), size: size,
		keyLen: int32(len(key)), fpLen: int32(len(fingerprint)), fpNil: fingerprint == nil, bodyNil: true,
	})
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
		old := s.blobs[i]
		keep := len(key) + int(sl.fpLen)
		blob := make([]byte, 0, keep+hdrLen+len(body))
		blob = append(blob, old[:keep]...)
		for _, f := range header {
			blob = appendString(appendString(blob, f.Name), f.Value)
		}
		blob = append(blob, body...)
		s.blobs[i] = blob
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

// record decodes slot i. Its Header slice is new, with room for one more
// field; everything else shares the blob.
func (s *memShard) record(i int32) Record {
	var r Record
	var hdr []HeaderField
	if n := s.slots[i].hdrN; n > 0 {
		hdr = make([]HeaderField, 0, n+1)
	}
	s.decode(i, &r, hdr)
	return r
}

// decode decodes slot i into r, its header fields into hdr's array when
// they fit. r's Fingerprint and Body, and its header strings, share the
// blob.
func (s *memShard) decode(i int32, r *Record, hdr []HeaderField) {
	sl, b := &s.slots[i], s.blobs[i]
	*r = Record{
		State: sl.state, Token: sl.token, ExpiresAt: time.Unix(0, sl.expires),
		Status: int(sl.status), NotReplayable: sl.notReplay,
	}
	off := int(sl.keyLen)
	end := off + int(sl.fpLen)
	if !sl.fpNil {
		r.Fingerprint = b[off:end:end]
	}
	off, end = end, end+int(sl.hdrLen)
	if n := int(sl.hdrN); n > 0 {
		if cap(hdr) < n {
			hdr = make([]HeaderField, 0, n)
		}
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
}

// ownedRecord is a record Acquire returns with its header fields, when
// there are few, so that both take one allocation.
type ownedRecord struct {
	rec Record
	hdr [4]HeaderField
}

// ownedRecord decodes slot i into a record of the caller's own: its
// fingerprint and body are copied into one new slice. Its header strings
// share the blob, which is never written into.
func (s *memShard) ownedRecord(i int32) *Record {
	sl := &s.slots[i]
	var view *Record
	if n := int(sl.hdrN); n > 0 && n <= len(ownedRecord{}.hdr) {
		o := new(ownedRecord)
		view = &o.rec
		s.decode(i, view, o.hdr[:0])
	} else {
		view = new(Record)
		s.decode(i, view, nil)
	}
	var n int
	if !sl.fpNil {
		n += len(view.Fingerprint)
	}
	if !sl.bodyNil {
		n += len(view.Body)
	}
	if !sl.fpNil || !sl.bodyNil {
		b := make([]byte, n)
		fp := copy(b, view.Fingerprint)
		copy(b[fp:], view.Body)
		if !sl.fpNil {
			view.Fingerprint = b[:fp:fp]
		}
		if !sl.bodyNil {
			view.Body = b[fp:]
		}
	}
	return view
}

// find returns the slot of key, or noSlot.
func (s *memShard) find(h uint64, key string) int32 {
	i, _ := s.lookup(h, key)
	return i
}

// lookup returns the slot of key, or noSlot, and the first slot of the
// chain of keys that hash to h (noSlot when there is none), so that an
// insert needs no second lookup in the index.
func (s *memShard) lookup(h uint64, key string) (slot, first int32) {
	first, ok := s.index[h]
	if !ok {
		return noSlot, noSlot
	}
	for i := first; i != noSlot; i = s.slots[i].chain {
		if string(s.blobs[i][:s.slots[i].keyLen]) == key {
			return i, first
		}
	}
	return noSlot, first
}

// first returns the first slot of the chain of keys that hash to h, or
// noSlot.
func (s *memShard) first(h uint64) int32 {
	if i, ok := s.index[h]; ok {
		return i
	}
	return noSlot
}

// held returns the slot of the live in-flight record that token holds, or
// ErrLeaseLost.
func (s *memShard) held(h uint64, key string, token Token, now int64) (int32, error) {
	i := s.find(h, key)
	if i == noSlot {
		return noSlot, ErrLeaseLost
	}
	if sl := &s.slots[i]; sl.state != InFlight || sl.token != token || now >= sl.expires {
		return noSlot, ErrLeaseLost
	}
	return i, nil
}

// insert stores a new record in a free slot and returns the slot; first
// is the first slot of the chain of keys that hash to h, or noSlot.
func (s *memShard) insert(h uint64, first int32, blob []byte, sl memSlot) int32 {
	i := s.free
	if i == noSlot {
		i = int32(len(s.slots))
		s.slots = append(s.slots, memSlot{})
		s.blobs = append(s.blobs, nil)
	} else {
		s.free = s.slots[i].next
	}
	sl.hash, sl.next, sl.chain = h, noSlot, first
	s.slots[i], s.blobs[i] = sl, blob
	s.index[h] = i
	s.count++
	s.bytes += sl.size
	s.use.add(sl.scope, 1, sl.size)
	s.lowerFloor(sl.expires)
	return i
}

// remove deletes the record in slot i and frees the slot.
func (s *memShard) remove(i int32) {
	sl := &s.slots[i]
	if first := s.index[sl.hash]; first == i {
		if sl.chain == noSlot {
			delete(s.index, sl.hash)
		} else {
			s.index[sl.hash] = sl.chain
		}
	} else {
		for j := first; j != noSlot; j = s.slots[j].chain {
			if s.slots[j].chain == i {
				s.slots[j].chain = sl.chain
				break
			}
		}
	}
	s.count--
	s.bytes -= sl.size
	s.use.add(sl.scope, -1, -sl.size)
	*sl = memSlot{next: s.free}
	s.blobs[i] = nil
	s.free = i
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
	s.expiryFloor = floor
	return removed
}

// lowerFloor keeps expiryFloor a bound below a record that expires at t.
func (s *memShard) lowerFloor(t int64) { s.expiryFloor = min(s.expiryFloor, t) }

// MemoryStore lends the engine views of its records (LocalStore).
var _ LocalStore = (*MemoryStore)(nil)
