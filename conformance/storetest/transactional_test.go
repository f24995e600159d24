package storetest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/idemkit/idem/conformance/storetest"
	idem "github.com/idemkit/idem/core"
)

type runKey struct{}

// txMemory is a transactional store in miniature over the memory store:
// BeginRun opens a "transaction" in the handler's context, and a lease
// with an open run must be completed or released within it.
type txMemory struct {
	idem.Store
	mu   sync.Mutex
	runs map[idem.Token]bool
}

func (s *txMemory) BeginRun(ctx context.Context, key string, token idem.Token) (context.Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runs[token] = true
	return context.WithValue(ctx, runKey{}, token), nil
}

var errOutsideRun = errors.New("txMemory: the lease's run is open, but the call is not in it")

func (s *txMemory) inRun(ctx context.Context, token idem.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runs[token] && ctx.Value(runKey{}) != token {
		return errOutsideRun
	}
	delete(s.runs, token)
	return nil
}

func (s *txMemory) Complete(ctx context.Context, key string, token idem.Token, rec *idem.Record, retention time.Duration) error {
	if err := s.inRun(ctx, token); err != nil {
		return err
	}
	return s.Store.Complete(ctx, key, token, rec, retention)
}

func (s *txMemory) Release(ctx context.Context, key string, token idem.Token) error {
	if err := s.inRun(ctx, token); err != nil {
		return err
	}
	return s.Store.Release(ctx, key, token)
}

// The suite runs on a transactional store, with the cases of its runs.
func TestTransactionalStore(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) idem.Store {
		return &txMemory{Store: newMemoryStore(tb, idem.MemoryOptions{}), runs: map[idem.Token]bool{}}
	})
}
