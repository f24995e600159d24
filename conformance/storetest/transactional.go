package storetest

import (
	"context"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// runTransactional runs the cases of idem.TransactionalStore's run, the
// path the engine takes with such a store (B35). A store that does not
// implement it skips the group.
func runTransactional(t *testing.T, newStore NewStore) {
	transactional := func(s idem.Store) (idem.Store, bool) {
		_, ok := s.(idem.TransactionalStore)
		return s, ok
	}
	runGroup(t, "TransactionalStore", newStore, transactional, transactionalCases)
}

var transactionalCases = []testCase{
	{"B35/RunCommits", "after BeginRun, Complete with a context derived from the run's commits the record: the key then replays the response", testRunCommits},
	{"B35/RunRollsBack", "after BeginRun, Release with a context derived from the run's rolls back and frees the key", testRunRollsBack},
	{"B35/RunContextKeepsTheRequest", "the context BeginRun returns carries the request context's values, for the handler", testRunContext},
	{"B16/RenewBesideRun", "while a run is open, Renew with the request's own context (as the engine's renewals, beside the handler) extends the lease, and the run still commits", testRenewBesideRun},
}

type requestKey struct{}

// beginRun leases key for tok and opens its run; it returns the run's
// context as the engine hands it to Complete and Release: without the
// request's cancellation.
func (f *fixture) beginRun(key string, tok idem.Token, fp []byte) context.Context {
	f.t.Helper()
	f.acquireWins(key, tok, fp, longLease)
	runCtx, err := f.s.(idem.TransactionalStore).BeginRun(f.ctx, key, tok)
	if err != nil {
		f.t.Fatalf("BeginRun(%q) by the lease's owner: %v", key, err)
	}
	return context.WithoutCancel(runCtx)
}

func testRunCommits(f *fixture) {
	key, tok, fp := f.key("k"), newToken(), []byte("fp")
	runCtx := f.beginRun(key, tok, fp)
	sent := response("committed")
	if err := f.s.Complete(runCtx, key, tok, sent, longRetention); err != nil {
		f.t.Fatalf("Complete in the run: %v", err)
	}
	f.checkCompleted(f.lookup(key), sent, fp, longRetention, time.Now())
}

func testRunRollsBack(f *fixture) {
	key, tok, fp := f.key("k"), newToken(), []byte("fp")
	runCtx := f.beginRun(key, tok, fp)
	if err := f.s.Release(runCtx, key, tok); err != nil {
		f.t.Fatalf("Release in the run: %v", err)
	}
	f.acquireWins(key, newToken(), fp, longLease)
}

func testRunContext(f *fixture) {
	key, tok := f.key("k"), newToken()
	f.acquireWins(key, tok, nil, longLease)
	ctx := context.WithValue(f.ctx, requestKey{}, "request")
	runCtx, err := f.s.(idem.TransactionalStore).BeginRun(ctx, key, tok)
	if err != nil {
		f.t.Fatalf("BeginRun: %v", err)
	}
	if got := runCtx.Value(requestKey{}); got != "request" {
		f.t.Errorf("the run's context carries %v for the request's key, want the request's value", got)
	}
	if err := f.s.Release(context.WithoutCancel(runCtx), key, tok); err != nil {
		f.t.Fatalf("Release in the run: %v", err)
	}
}

func testRenewBesideRun(f *fixture) {
	key, tok, fp := f.key("k"), newToken(), []byte("fp")
	runCtx := f.beginRun(key, tok, fp)
	if err := f.s.Renew(f.ctx, key, tok, longLease); err != nil {
		f.t.Fatalf("Renew beside the run: %v", err)
	}
	f.checkInFlight(f.lookup(key), tok, fp, longLease, time.Now())
	sent := response("committed after a renewal")
	if err := f.s.Complete(runCtx, key, tok, sent, longRetention); err != nil {
		f.t.Fatalf("Complete in the run after a renewal: %v", err)
	}
	f.checkCompleted(f.lookup(key), sent, fp, longRetention, time.Now())
}
