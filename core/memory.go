package idem

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"
)

// Defaults of MemoryOptions.
const (
	DefaultMemoryMaxEntries    = 100_000
	DefaultMemoryMaxBytes      = 256 << 20
	DefaultMemoryShards        = 64
	DefaultMemorySweepInterval = time.Minute
)

// ErrStoreFull is returned by MemoryStore.Acquire when a new record would
// exceed the store's limits and only in-flight records could make room.
var ErrStoreFull = errors.New("idem: memory store full of in-flight records")

// MemoryOptions configures a MemoryStore. Zero fields mean the defaults.
type MemoryOptions struct {
	// MaxEntries bounds the number of records. Default: 100,000.
	MaxEntries int
	// MaxBytes bounds the bytes of keys, fingerprints, headers and bodies
	// held, plus a fixed overhead per record. Default: 256 MiB.
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

// entryOverhead approximates what a record costs beyond its bytes: the
// entry, the record, the map slot.
const entryOverhead = 160

// MemoryStore is the in-memory Store, the engine's embedded default. It is
// sharded for concurrent use, expires records by time, and stays within its
// entry and byte limits by evicting the oldest completed records; it never
// evicts an in-flight record. Records do not survive the process, and are
// not shared between processes: use a shared store for more than one
// replica.
type MemoryStore struct {
	shards     []memShard
	seed       maphash.Seed
	clock      Clock
	maxEntries int
	maxBytes   int64

	closeOnce sync.Once
	stop      chan struct{}
	stopped   chan struct{}
}

type memShard struct {
	mu      sync.Mutex
	entries map[string]*memEntry
	bytes   int64
	// Completed entries, oldest first: the eviction order.
	head, tail *memEntry
	_          [40]byte // keep shards on separate cache lines
}

type memEntry struct {
	key        string
	rec        Record // owned by the store; never handed out
	size       int64
	prev, next *memEntry
	listed     bool
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
		stop:       make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	for i := range m.shards {
		m.shards[i].entries = make(map[string]*memEntry)
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
		now := m.clock.Now()
		for _, e := range s.entries {
			if !now.Before(e.rec.ExpiresAt) {
				s.remove(e)
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
		records += len(s.entries)
		bytes += s.bytes
		s.mu.Unlock()
	}
	return records, bytes
}

func (m *MemoryStore) shard(key string) *memShard {
	return &m.shards[maphash.String(m.seed, key)%uint64(len(m.shards))]
}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("idem: memory store: %w", err)
	}
	return nil
}

// Acquire implements Store.
func (m *MemoryStore) Acquire(ctx context.Context, key string, token Token, fingerprint []byte, lease time.Duration) (*Record, error) {
	rec, found, err := m.acquire(ctx, key, token, cloneBytes(fingerprint), lease)
	if !found {
		return nil, err
	}
	return rec.Clone(), nil
}

// acquire leases key, keeping fingerprint as it is, or returns the live
// record and true. The record shares its Fingerprint, Header and Body with
// the store, which never writes into them once stored (Complete replaces
// them whole): the engine, which only reads them, uses it as it is, and
// the replay path is spared a copy of the response.
func (m *MemoryStore) acquire(ctx context.Context, key string, token Token, fingerprint []byte, lease time.Duration) (Record, bool, error) {
	if err := ctxErr(ctx); err != nil {
		return Record{}, false, err
	}
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := m.clock.Now()
	if e, ok := s.entries[key]; ok {
		if now.Before(e.rec.ExpiresAt) {
			return e.rec, true, nil
		}
		s.remove(e)
	}
	e := &memEntry{key: key, rec: Record{
		State: InFlight, Token: token, Fingerprint: fingerprint, ExpiresAt: now.Add(lease),
	}}
	e.size = entrySize(key, &e.rec)
	if !s.makeRoom(m, 1, e.size, now) {
		return Record{}, false, ErrStoreFull
	}
	s.entries[key] = e
	s.bytes += e.size
	return Record{}, false, nil
}

// held returns the live in-flight entry that token holds, or ErrLeaseLost.
func (s *memShard) held(key string, token Token, now time.Time) (*memEntry, error) {
	e, ok := s.entries[key]
	if !ok || e.rec.State != InFlight || e.rec.Token != token || !now.Before(e.rec.ExpiresAt) {
		return nil, ErrLeaseLost
	}
	return e, nil
}

// Complete implements Store.
func (m *MemoryStore) Complete(ctx context.Context, key string, token Token, rec *Record, retention time.Duration) error {
	var header []HeaderField
	if !rec.NotReplayable && len(rec.Header) > 0 {
		header = append([]HeaderField(nil), rec.Header...)
	}
	return m.complete(ctx, key, token, rec, header, false, retention)
}

// completeOwned is Complete for the engine, which hands rec.Header over
// (it built the slice and never writes into it again), and rec.Body too
// when bodyOwned says so.
func (m *MemoryStore) completeOwned(ctx context.Context, key string, token Token, rec *Record, bodyOwned bool, retention time.Duration) error {
	return m.complete(ctx, key, token, rec, rec.Header, bodyOwned, retention)
}

// complete keeps header as it is, and rec.Body when bodyOwned and it does
// not hold much unused capacity (which would cost memory the byte limit
// does not count).
func (m *MemoryStore) complete(ctx context.Context, key string, token Token, rec *Record, header []HeaderField, bodyOwned bool, retention time.Duration) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	body := rec.Body
	if !bodyOwned || cap(body)-len(body) > len(body)/8 {
		body = cloneBytes(body)
	}
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := m.clock.Now()
	e, err := s.held(key, token, now)
	if err != nil {
		return err
	}
	done := Record{
		State: Completed, Token: token, Fingerprint: e.rec.Fingerprint, ExpiresAt: now.Add(retention),
		Status: rec.Status, NotReplayable: rec.NotReplayable,
	}
	if !rec.NotReplayable {
		done.Body, done.Header = body, header
	}
	size := entrySize(key, &done)
	s.bytes -= e.size
	if !s.makeRoom(m, 0, size, now) {
		// Even alone the response does not fit: keep the outcome, drop the
		// response, so a retry gets 410 and never a second execution.
		done.Body, done.Header, done.NotReplayable = nil, nil, true
		size = entrySize(key, &done)
	}
	e.rec, e.size = done, size
	s.bytes += size
	s.pushBack(e)
	return nil
}

// Release implements Store.
func (m *MemoryStore) Release(ctx context.Context, key string, token Token) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.held(key, token, m.clock.Now())
	if err != nil {
		return err
	}
	s.remove(e)
	return nil
}

// Renew implements Store.
func (m *MemoryStore) Renew(ctx context.Context, key string, token Token, lease time.Duration) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := m.clock.Now()
	e, err := s.held(key, token, now)
	if err != nil {
		return err
	}
	e.rec.ExpiresAt = now.Add(lease)
	return nil
}

func entrySize(key string, r *Record) int64 {
	n := int64(entryOverhead + len(key) + len(r.Fingerprint) + len(r.Body))
	for _, h := range r.Header {
		n += int64(len(h.Name) + len(h.Value) + 32)
	}
	return n
}

// makeRoom evicts the oldest completed entries, then expired in-flight ones,
// until added more entries and size more bytes fit. The entry being completed is not listed, so it
// is never evicted for itself.
func (s *memShard) makeRoom(m *MemoryStore, added int, size int64, now time.Time) bool {
	for len(s.entries)+added > m.maxEntries || s.bytes+size > m.maxBytes {
		if s.head == nil {
			// Only in-flight entries are left; an expired one may still go.
			if !s.dropExpired(now) {
				return false
			}
			continue
		}
		s.remove(s.head)
	}
	return true
}

func (s *memShard) dropExpired(now time.Time) bool {
	for _, e := range s.entries {
		if !now.Before(e.rec.ExpiresAt) {
			s.remove(e)
			return true
		}
	}
	return false
}

func (s *memShard) remove(e *memEntry) {
	if s.entries[e.key] == e {
		delete(s.entries, e.key)
		s.bytes -= e.size
	}
	s.unlink(e)
}

func (s *memShard) pushBack(e *memEntry) {
	s.unlink(e)
	e.prev, e.next, e.listed = s.tail, nil, true
	if s.tail != nil {
		s.tail.next = e
	} else {
		s.head = e
	}
	s.tail = e
}

func (s *memShard) unlink(e *memEntry) {
	if !e.listed {
		return
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next, e.listed = nil, nil, false
}
