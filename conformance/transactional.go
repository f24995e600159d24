package conformance

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	idem "github.com/idemkit/idem/core"
)

// txStore is a transactional store in miniature for the B35 cases: it
// wraps a probeStore, marks the context of each run it begins (the
// handler must get it), can hold Complete until a gate opens, and can fail
// the commit, releasing the key as a transactional store does when its
// COMMIT fails.
type txStore struct {
	*probeStore
	// completing is closed when Complete is first entered.
	completing chan struct{}
	// hold, when set, makes Complete wait until it is closed.
	hold chan struct{}
	// failCommit makes Complete fail after releasing the key.
	failCommit atomic.Bool

	once sync.Once
}

var _ idem.TransactionalStore = (*txStore)(nil)

// runKey marks the context of a run a txStore began; its value is the
// lease's token.
type runKey struct{}

func (f *fixture) txStore() *txStore {
	return &txStore{probeStore: f.probe(), completing: make(chan struct{})}
}

// BeginRun implements idem.TransactionalStore.
func (s *txStore) BeginRun(ctx context.Context, key string, token idem.Token) (context.Context, error) {
	return context.WithValue(ctx, runKey{}, token), nil
}

// Complete implements idem.Store: it commits only with the run's context.
func (s *txStore) Complete(ctx context.Context, key string, token idem.Token, rec *idem.Record, retention time.Duration) error {
	s.once.Do(func() { close(s.completing) })
	if s.hold != nil {
		<-s.hold
	}
	if tok, _ := ctx.Value(runKey{}).(idem.Token); tok != token {
		return errors.New("conformance: Complete without the context of the lease's run")
	}
	if s.failCommit.Load() {
		s.note(key, func(c *storeCalls) { c.complete++ })
		_ = s.Store.Release(ctx, key, token)
		return errors.New("conformance: simulated failed commit")
	}
	return s.probeStore.Complete(ctx, key, token, rec, retention)
}

// testHandlerGetsRunContext: B35/handler_gets_run_context.
func testHandlerGetsRunContext(f *fixture) {
	st := f.txStore()
	h := orderHandler()
	f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
	k := f.key()
	f.expectBody(f.post("/orders", created, key(k)), 201, created, "first")
	if runs := h.Runs(); len(runs) != 1 || !runs[0] {
		f.t.Fatalf("the handler ran with the run's context %v, want [true]: the adapter must hand the handler idem.Lease.Context", runs)
	}
	r := f.post("/orders", created, key(k))
	f.expectReplayed(r, true, "retry")
	f.expectCalls(h, 1, "a committed run")
}

// testResponseHeldUntilCommit: B35/response_held_until_commit.
func testResponseHeldUntilCommit(f *fixture) {
	st := f.txStore()
	st.hold = make(chan struct{})
	defer func() {
		select {
		case <-st.hold:
		default:
			close(st.hold)
		}
	}()
	// A body larger than any server's write buffer: an adapter that does
	// not hold the response has sent its header by the time Complete runs.
	h := orderHandler()
	h.Body = bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
	k := f.key()
	headers := make(chan int, 1)
	go func() {
		req, err := http.NewRequestWithContext(f.ctx, http.MethodPost, f.base+"/orders", bytes.NewReader(created))
		if err != nil {
			headers <- -1
			return
		}
		req.Header.Set("Idempotency-Key", k)
		resp, err := f.client.Do(req)
		if err != nil {
			headers <- -1
			return
		}
		headers <- resp.StatusCode
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	select {
	case <-st.completing:
	case s := <-headers:
		f.t.Fatalf("the client got a response (%d) before the store's Complete was called", s)
	case <-f.ctx.Done():
		f.t.Fatal("timed out waiting until the store commits")
	}
	select {
	case s := <-headers:
		f.t.Fatalf("the client got a response (%d) while the commit was still running", s)
	case <-time.After(200 * time.Millisecond):
	}
	close(st.hold)
	select {
	case s := <-headers:
		if s != 201 {
			f.t.Fatalf("after the commit the client got %d, want 201", s)
		}
	case <-f.ctx.Done():
		f.t.Fatal("timed out waiting for the response after the commit")
	}
}

// testCommitFailureIsAProblem: B35/commit_failure_is_a_problem.
func testCommitFailureIsAProblem(f *fixture) {
	st := f.txStore()
	st.failCommit.Store(true)
	h := orderHandler()
	f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
	k := f.key()
	r := f.post("/orders", created, key(k))
	f.expectProblem(r, 503, idem.ProblemNotCommitted, "a failed commit")
	f.expectRetryAfter(r, "a failed commit")
	st.failCommit.Store(false)
	r = f.post("/orders", created, key(k))
	f.expectBody(r, 201, created, "the retry after a failed commit")
	f.expectReplayed(r, false, "the retry after a failed commit")
	f.expectCalls(h, 2, "a failed commit releases the key")
}

// testFlushHeldUntilCommit: B35/flush_held_until_commit.
func testFlushHeldUntilCommit(f *fixture) {
	st := f.txStore()
	st.failCommit.Store(true)
	h := orderHandler()
	h.Flush = true
	f.serve(f.engine(idem.Config{Store: st}), post("/orders", h))
	r := f.post("/orders", created, key(f.key()))
	f.expectProblem(r, 503, idem.ProblemNotCommitted, "a flushed response whose commit failed")
}
