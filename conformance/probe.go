package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	idem "github.com/idemkit/idem/core"
)

// errStoreDown is what a probeStore returns for the faults it simulates.
var errStoreDown = errors.New("conformance: simulated store failure")

// probeStore wraps the case's store: it counts calls, in all and per
// storage key, remembers the tokens of the leases it granted and simulates
// faults. Set the fault fields before the store is used.
type probeStore struct {
	idem.Store

	// failAcquire makes every Acquire fail (B22).
	failAcquire bool
	// failComplete makes every Complete fail (B23).
	failComplete bool
	// failFirstRenew makes every Renew of the first lease fail (B16).
	failFirstRenew bool
	// crashFirst makes the first lease's owner vanish: its Renew, Complete
	// and Release fail and change nothing, as if its process had died
	// (B17).
	crashFirst bool
	// full makes the store refuse every new key with idem.ErrStoreFull,
	// as a bounded store under pressure does, while it still returns the
	// records it holds (B30). Safe to set while the store is in use.
	full atomic.Bool
	// corruptStatus, when not 0, replaces the status of every completed
	// record Acquire returns, as a store holding corrupt records would
	// (B33). Safe to set while the store is in use.
	corruptStatus atomic.Int32

	calls atomic.Int64
	mu    sync.Mutex
	first *idem.Token
	lease []idem.Token
	byKey map[string]*storeCalls
}

// storeCalls counts the calls a store got for one key, failed ones
// included.
type storeCalls struct {
	acquire, complete, release int
}

// count returns the calls made so far for the client key k sent without
// a scope (no Authorization header).
func (s *probeStore) count(k string) storeCalls {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.byKey[idem.DefaultEncodeKey("", k)]; c != nil {
		return *c
	}
	return storeCalls{}
}

// note counts one call for key.
func (s *probeStore) note(key string, add func(*storeCalls)) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKey == nil {
		s.byKey = map[string]*storeCalls{}
	}
	c := s.byKey[key]
	if c == nil {
		c = &storeCalls{}
		s.byKey[key] = c
	}
	add(c)
}

func (s *probeStore) isFirst(token idem.Token) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first != nil && *s.first == token
}

// leases returns the tokens of the leases granted so far.
func (s *probeStore) leases() []idem.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]idem.Token(nil), s.lease...)
}

// Acquire implements idem.Store.
func (s *probeStore) Acquire(ctx context.Context, key string, token idem.Token, fp []byte, lease time.Duration) (*idem.Record, error) {
	s.note(key, func(c *storeCalls) { c.acquire++ })
	if s.failAcquire {
		return nil, errStoreDown
	}
	rec, err := s.Store.Acquire(ctx, key, token, fp, lease)
	if rec == nil && err == nil && s.full.Load() {
		// Refused: the lease the wrapped store granted is given back.
		if err := s.Store.Release(ctx, key, token); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("conformance: simulated full store: %w", idem.ErrStoreFull)
	}
	if bad := s.corruptStatus.Load(); bad != 0 && rec != nil && rec.State == idem.Completed {
		rec.Status = int(bad)
	}
	if rec == nil && err == nil {
		s.mu.Lock()
		if s.first == nil {
			s.first = &token
		}
		s.lease = append(s.lease, token)
		s.mu.Unlock()
	}
	return rec, err
}

// Complete implements idem.Store.
func (s *probeStore) Complete(ctx context.Context, key string, token idem.Token, rec *idem.Record, retention time.Duration) error {
	s.note(key, func(c *storeCalls) { c.complete++ })
	if s.failComplete || s.crashFirst && s.isFirst(token) {
		return errStoreDown
	}
	return s.Store.Complete(ctx, key, token, rec, retention)
}

// Release implements idem.Store.
func (s *probeStore) Release(ctx context.Context, key string, token idem.Token) error {
	s.note(key, func(c *storeCalls) { c.release++ })
	if s.crashFirst && s.isFirst(token) {
		return errStoreDown
	}
	return s.Store.Release(ctx, key, token)
}

// Renew implements idem.Store.
func (s *probeStore) Renew(ctx context.Context, key string, token idem.Token, lease time.Duration) error {
	s.calls.Add(1)
	if (s.failFirstRenew || s.crashFirst) && s.isFirst(token) {
		return errStoreDown
	}
	return s.Store.Renew(ctx, key, token, lease)
}
