package idem_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

type txKey struct{}

// txStore is a fake TransactionalStore over a memory store: BeginRun puts
// a "transaction" in the handler's context, and every later call records
// the transaction its context carries.
type txStore struct {
	idem.Store // the interface: the engine sees no LocalStore
	mu         sync.Mutex
	begun      int
	seen       map[string][]any // per method, the ctx's transaction
	cancelled  map[string]bool
	failBegin  bool
	failCommit bool
}

func newTxStore(t *testing.T) *txStore {
	m := idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1})
	t.Cleanup(func() { _ = m.Close() })
	return &txStore{Store: m, seen: map[string][]any{}, cancelled: map[string]bool{}}
}

func (s *txStore) note(method string, ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[method] = append(s.seen[method], ctx.Value(txKey{}))
	if ctx.Err() != nil {
		s.cancelled[method] = true
	}
}

func (s *txStore) BeginRun(ctx context.Context, key string, token idem.Token) (context.Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failBegin {
		return nil, errInjected
	}
	s.begun++
	return context.WithValue(ctx, txKey{}, "tx "+token.String()), nil
}

func (s *txStore) Complete(ctx context.Context, key string, token idem.Token, rec *idem.Record, retention time.Duration) error {
	s.note("Complete", ctx)
	if s.failCommit {
		// The commit failed: the transaction rolled back.
		_ = s.Store.Release(ctx, key, token)
		return errInjected
	}
	return s.Store.Complete(ctx, key, token, rec, retention)
}

func (s *txStore) Release(ctx context.Context, key string, token idem.Token) error {
	s.note("Release", ctx)
	return s.Store.Release(ctx, key, token)
}

func (s *txStore) Renew(ctx context.Context, key string, token idem.Token, lease time.Duration) error {
	s.note("Renew", ctx)
	return s.Store.Renew(ctx, key, token, lease)
}

func newTxEngine(t *testing.T, s idem.Store, cfg idem.Config) *idem.Engine {
	cfg.Store = s
	e, err := idem.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// With a TransactionalStore the handler runs with the context BeginRun
// made, the lease holds the response, and Complete gets the transaction,
// without the request's cancellation (B35, B24).
func TestTransactionalStoreRun(t *testing.T) {
	s := newTxStore(t)
	e := newTxEngine(t, s, idem.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	r := req("k", "{}")
	r.Context = ctx
	d := e.Begin(r)
	if d.Action != idem.Run {
		t.Fatalf("first request: %v, want run", d.Action)
	}
	tx := d.Lease.Context().Value(txKey{})
	if tx == nil || !d.Lease.HoldResponse() || s.begun != 1 {
		t.Fatalf("lease context carries %v, HoldResponse %v, BeginRun called %d times; want the transaction, true, 1", tx, d.Lease.HoldResponse(), s.begun)
	}
	cancel() // the client hangs up while the handler runs
	if err := d.Lease.Complete(idem.Recorded{Status: 201, Header: http.Header{}, Body: []byte("ok")}); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if got := s.seen["Complete"]; len(got) != 1 || got[0] != tx || s.cancelled["Complete"] {
		t.Fatalf("Complete saw transactions %v (cancelled %v), want [%v] and a live context", got, s.cancelled["Complete"], tx)
	}
	if d := e.Begin(req("k", "{}")); !d.Replayed || string(d.Response.Body) != "ok" {
		t.Fatalf("retry: %+v, want the committed response replayed", d)
	}

	// A non-stored status rolls back: Release gets the transaction.
	d = e.Begin(req("k2", "{}"))
	_ = d.Lease.Complete(idem.Recorded{Status: 500})
	if got := s.seen["Release"]; len(got) != 1 || got[0] != d.Lease.Context().Value(txKey{}) {
		t.Fatalf("Release saw transactions %v, want the run's", got)
	}
}

// A failed commit is an error of Complete, and CommitFailure is the 503
// the adapter answers with in place of the held response.
func TestTransactionalStoreCommitFailure(t *testing.T) {
	s := newTxStore(t)
	s.failCommit = true
	e := newTxEngine(t, s, idem.Config{})
	d := e.Begin(req("k", "{}"))
	if err := d.Lease.Complete(idem.Recorded{Status: 201, Body: []byte("ok")}); !errors.Is(err, errInjected) {
		t.Fatalf("Complete: %v, want the commit's failure", err)
	}
	p, resp := d.Lease.CommitFailure()
	if p.Type != idem.ProblemNotCommitted || p.Status != 503 || resp.Status != 503 || headerValue(resp.Header, "Retry-After") == "" {
		t.Fatalf("CommitFailure: %+v, %+v; want a 503 not-committed problem with Retry-After", p, resp)
	}
	s.failCommit = false
	if d := e.Begin(req("k", "{}")); d.Action != idem.Run {
		t.Fatalf("retry after the rollback: %v, want a new run", d.Action)
	}
}

// A BeginRun failure is a store failure before the handler: 503, and the
// key is free again (or, fail-open, an untracked run).
func TestTransactionalStoreBeginFailure(t *testing.T) {
	s := newTxStore(t)
	s.failBegin = true
	e := newTxEngine(t, s, idem.Config{})
	if d := e.Begin(req("k", "{}")); d.Action != idem.Respond || d.Problem == nil || d.Problem.Type != idem.ProblemStoreUnavailable {
		t.Fatalf("BeginRun failing: %+v, want 503 store-unavailable", d)
	}
	open := newTxEngine(t, s, idem.Config{FailOpen: true})
	if d := open.Begin(req("k", "{}")); d.Action != idem.Pass || d.Lease != nil {
		t.Fatalf("BeginRun failing, fail-open: %+v, want an untracked pass", d)
	}
	s.failBegin = false
	if d := e.Begin(req("k", "{}")); d.Action != idem.Run || d.Lease.Context().Value(txKey{}) == nil {
		t.Fatalf("BeginRun working again: %+v, want a run: the failed attempts released the key", d)
	}
}

// Renewals run beside the handler, which may be using the transaction:
// their context does not carry it.
func TestTransactionalStoreRenewWithoutTransaction(t *testing.T) {
	s := newTxStore(t)
	e := newTxEngine(t, s, idem.Config{LeaseTime: 100 * time.Millisecond, StoreTimeout: 10 * time.Millisecond})
	d := e.Begin(req("k", "{}"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.seen["Renew"])
		s.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = d.Lease.Complete(idem.Recorded{Status: 201})
	s.mu.Lock()
	defer s.mu.Unlock()
	if got := s.seen["Renew"]; len(got) == 0 || got[0] != nil {
		t.Fatalf("Renew saw transactions %v, want at least one renewal, without the transaction", got)
	}
}

// Without a TransactionalStore the handler runs with the request's own
// context and the response streams.
func TestPlainStoreRun(t *testing.T) {
	e := newTxEngine(t, idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1}), idem.Config{})
	ctx := context.WithValue(context.Background(), txKey{}, "request")
	r := req("k", "{}")
	r.Context = ctx
	d := e.Begin(r)
	if d.Lease.Context() != ctx || d.Lease.HoldResponse() {
		t.Fatalf("lease context %v, HoldResponse %v; want the request's context, false", d.Lease.Context(), d.Lease.HoldResponse())
	}
	_ = d.Lease.Complete(idem.Recorded{Status: 201})
}
