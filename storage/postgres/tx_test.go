package idempg

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idem/conformance/storetest"
	idem "github.com/idemkit/idem/core"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The transactional mode's tests drive the store as the engine does: a
// request wins Acquire, opens its transaction with BeginRun, writes a
// business row through Tx(ctx) as a handler would, and ends with Complete
// or Release. Each test has its own records table and business table.

// TestTxConformance runs the Store contract's suite against a TxStore.
// The suite opens no request transaction, so it checks the mode's acquire
// (which locks an expired row before taking it over) and that everything
// else behaves as in the plain mode.
func TestTxConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) idem.Store { return newTestStore(tb, Options{}).Transactional() })
}

// txFixture is a transactional store with a business table "orders" of its
// own (one row per order, named by ref).
type txFixture struct {
	t      *testing.T
	s      *TxStore
	pool   *pgxpool.Pool
	orders string // quoted table name
}

func newTxFixture(t *testing.T, p *pgxpool.Pool) *txFixture {
	t.Helper()
	if p == nil {
		p = testPool(t)
	}
	f := newOrdersFixture(t, p)
	tx := f.s.Transactional()
	// A test that failed while a request's transaction was open must not
	// leave it holding locks on the tables the cleanups drop.
	t.Cleanup(func() {
		tx.txs.mu.Lock()
		defer tx.txs.mu.Unlock()
		for token, rt := range tx.txs.m {
			_ = rt.tx.Rollback(context.Background())
			rt.conn.Release()
			delete(tx.txs.m, token)
		}
	})
	return &txFixture{t: t, s: tx, pool: p, orders: f.orders}
}

// ordersFixture is a store and a business table.
type ordersFixture struct {
	s      *Store
	orders string
}

// newTxFixtureB is the benchmarks' fixture, over a pool of
// benchPoolConns connections.
func newTxFixtureB(b *testing.B) *ordersFixture {
	cfg, err := pgxpool.ParseConfig(testPool(b).Config().ConnString())
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = benchPoolConns
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close) // after the fixture's cleanups, which use p
	return newOrdersFixture(b, p)
}

func newOrdersFixture(t testing.TB, p *pgxpool.Pool) *ordersFixture {
	t.Helper()
	s := newTestStoreOn(t, p, Options{})
	orders := "idem_test_orders_" + randomSuffix(t)
	// ref is unique only at commit (deferred), so a test can make a
	// COMMIT fail.
	if _, err := p.Exec(context.Background(), "CREATE TABLE "+quote("", orders)+
		" (ref text NOT NULL, CONSTRAINT "+quote("", orders+"_ref")+" UNIQUE (ref) DEFERRABLE INITIALLY DEFERRED)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropTable(t, p, orders) })
	return &ordersFixture{s: s, orders: quote("", orders)}
}

// begin wins key for tok and opens the request's transaction.
func (f *txFixture) begin(key string, tok idem.Token, lease time.Duration) context.Context {
	f.t.Helper()
	ctx := context.Background()
	rec, err := f.s.Acquire(ctx, key, tok, []byte("fp"), lease)
	if err != nil || rec != nil {
		f.t.Fatalf("Acquire(%q) = %+v, %v; want a win", key, rec, err)
	}
	rctx, err := f.s.BeginRun(ctx, key, tok)
	if err != nil {
		f.t.Fatalf("BeginRun: %v", err)
	}
	if Tx(rctx) == nil {
		f.t.Fatal("Tx(ctx) is nil in the request's context")
	}
	return rctx
}

// write inserts an order in the request's transaction, as a handler does.
func (f *txFixture) write(ctx context.Context, ref string) {
	f.t.Helper()
	if _, err := Tx(ctx).Exec(ctx, "INSERT INTO "+f.orders+" (ref) VALUES ($1)", ref); err != nil {
		f.t.Fatalf("insert %s: %v", ref, err)
	}
}

// count counts the committed orders named ref.
func (f *txFixture) count(ref string) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+f.orders+" WHERE ref = $1", ref).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// peek returns key's record as a duplicate's Acquire sees it, or nil when
// the duplicate won (its lease is then released).
func (f *txFixture) peek(key string) *idem.Record {
	f.t.Helper()
	probe := token(0xab)
	rec, err := f.s.Acquire(context.Background(), key, probe, []byte("fp"), time.Minute)
	if err != nil {
		f.t.Fatalf("duplicate Acquire: %v", err)
	}
	if rec == nil {
		if err := f.s.Release(context.Background(), key, probe); err != nil {
			f.t.Fatal(err)
		}
	}
	return rec
}

var stored = &idem.Record{Status: 201, Header: []idem.HeaderField{{Name: "Content-Type", Value: "application/json"}}, Body: []byte(`{"id":1}`)}

func TestTxCommitsWritesWithRecord(t *testing.T) {
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			f := newTxFixture(t, testPoolMode(t, mode))
			ctx := f.begin("k", token(1), time.Minute)
			f.write(ctx, "order-1")
			// Until the commit, neither the order nor the record is seen.
			if n := f.count("order-1"); n != 0 {
				t.Fatalf("%d orders visible before the commit", n)
			}
			if rec := f.peek("k"); rec == nil || rec.State != idem.InFlight || rec.Token != token(1) {
				t.Fatalf("duplicate before the commit got %+v, want the in-flight record", rec)
			}
			if err := f.s.Complete(ctx, "k", token(1), stored, time.Hour); err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if n := f.count("order-1"); n != 1 {
				t.Fatalf("%d orders after the commit, want 1", n)
			}
			rec := f.peek("k")
			if rec == nil || rec.State != idem.Completed || rec.Status != 201 || string(rec.Body) != `{"id":1}` {
				t.Fatalf("duplicate after the commit got %+v, want the completed record", rec)
			}
			if n := f.s.txs.open(); n != 0 {
				t.Fatalf("%d request transactions still open", n)
			}
		})
	}
}

func TestTxReleaseRollsBackWrites(t *testing.T) {
	f := newTxFixture(t, nil)
	ctx := f.begin("k", token(1), time.Minute)
	f.write(ctx, "order-1")
	// A status that is not stored, a panic or a rendered error: the engine
	// releases the lease.
	if err := f.s.Release(ctx, "k", token(1)); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if n := f.count("order-1"); n != 0 {
		t.Fatalf("%d orders after the release, want 0", n)
	}
	if rec := f.peek("k"); rec != nil {
		t.Fatalf("the key is still held after the release: %+v", rec)
	}
	if err := f.s.Complete(context.Background(), "k", token(1), stored, time.Hour); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("Complete after Release = %v, want ErrLeaseLost", err)
	}
}

// TestTxFencesPastLeaseExpiry: while a request's transaction is open, no
// other request takes the key over, even after the lease time: duplicates
// get the in-flight record, the sweeper leaves the row alone, and the
// request still commits.
func TestTxFencesPastLeaseExpiry(t *testing.T) {
	const lease = 200 * time.Millisecond
	f := newTxFixture(t, nil)
	ctx := f.begin("k", token(1), lease)
	f.write(ctx, "order-1")
	time.Sleep(lease + 100*time.Millisecond)

	var wg sync.WaitGroup
	recs := make([]*idem.Record, 20)
	errs := make([]error, len(recs))
	for i := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i], errs[i] = f.s.Acquire(context.Background(), "k", token(byte(10+i)), []byte("fp"), time.Minute)
		}()
	}
	wg.Wait()
	for i, rec := range recs {
		if errs[i] != nil {
			t.Fatalf("duplicate %d: %v", i, errs[i])
		}
		if rec == nil || rec.State != idem.InFlight || rec.Token != token(1) {
			t.Fatalf("duplicate %d past the lease got %+v, want the owner's in-flight record", i, rec)
		}
	}
	if n, err := f.s.s.DeleteExpired(context.Background()); err != nil || n != 0 {
		t.Fatalf("DeleteExpired = %d, %v; want the locked row kept", n, err)
	}
	if err := f.s.Complete(ctx, "k", token(1), stored, time.Hour); err != nil {
		t.Fatalf("Complete past the lease time, with the key fenced: %v", err)
	}
	if n := f.count("order-1"); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}
	if rec := f.peek("k"); rec == nil || rec.State != idem.Completed {
		t.Fatalf("after the commit a duplicate got %+v, want the completed record", rec)
	}
}

// TestTxRenewWhileLocked: the engine's renewals go through while the
// request's transaction holds the row, and extend the lease.
func TestTxRenewWhileLocked(t *testing.T) {
	f := newTxFixture(t, nil)
	ctx := f.begin("k", token(1), time.Second)
	f.write(ctx, "order-1")
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := f.s.Renew(rctx, "k", token(1), time.Hour); err != nil {
		t.Fatalf("Renew while the transaction holds the row: %v", err)
	}
	if rec := f.peek("k"); rec == nil || time.Until(rec.ExpiresAt) < 30*time.Minute {
		t.Fatalf("after Renew the record is %+v, want its lease an hour long", rec)
	}
	if err := f.s.Complete(ctx, "k", token(1), stored, time.Hour); err != nil {
		t.Fatalf("Complete after a renewal: %v", err)
	}
	if n := f.count("order-1"); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}
}

// TestTxNotCommitted: a COMMIT that fails (here a deferred unique
// constraint), a statement of the handler that failed and left the
// transaction aborted, a handler that ended the transaction through Conn:
// Complete returns ErrNotCommitted, never success, nothing the handler
// wrote is kept, and the key is released.
func TestTxNotCommitted(t *testing.T) {
	for _, c := range []struct {
		name string
		end  func(f *txFixture, ctx context.Context) error
	}{
		{"COMMIT failed", func(f *txFixture, ctx context.Context) error {
			f.write(ctx, "order-1") // violates the constraint at COMMIT
			return nil
		}},
		{"statement failed", func(_ *txFixture, ctx context.Context) error {
			if _, err := Tx(ctx).Exec(ctx, "SELECT 1/0"); err == nil {
				return errors.New("division by zero succeeded")
			}
			return nil
		}},
		{"ended through Conn", func(_ *txFixture, ctx context.Context) error {
			_, err := Tx(ctx).Conn().Exec(ctx, "ROLLBACK")
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newTxFixture(t, nil)
			ctx := f.begin("k", token(1), time.Minute)
			f.write(ctx, "order-1")
			if err := c.end(f, ctx); err != nil {
				t.Fatal(err)
			}
			if err := f.s.Complete(ctx, "k", token(1), stored, time.Hour); !errors.Is(err, ErrNotCommitted) {
				t.Fatalf("Complete = %v, want ErrNotCommitted", err)
			}
			if n := f.count("order-1"); n != 0 {
				t.Fatalf("%d orders, want 0", n)
			}
			if rec := f.peek("k"); rec != nil {
				t.Fatalf("the key is still held: %+v, want it released", rec)
			}
		})
	}
}

// TestTxCommitAndRollbackAreTheStores: the handler's Commit and Rollback
// do nothing (a deferred Rollback is harmless); a nested transaction is a
// savepoint that undoes part of the work.
func TestTxCommitAndRollbackAreTheStores(t *testing.T) {
	f := newTxFixture(t, nil)
	ctx := f.begin("k", token(1), time.Minute)
	tx := Tx(ctx)
	f.write(ctx, "kept")
	if err := tx.Commit(ctx); !errors.Is(err, ErrTxManaged) {
		t.Fatalf("Commit = %v, want ErrTxManaged", err)
	}
	if n := f.count("kept"); n != 0 {
		t.Fatalf("the handler's Commit committed %d orders", n)
	}
	nested, err := tx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nested.Exec(ctx, "INSERT INTO "+f.orders+" (ref) VALUES ('undone')"); err != nil {
		t.Fatal(err)
	}
	if err := nested.Rollback(ctx); err != nil {
		t.Fatalf("nested Rollback: %v", err)
	}
	if err := tx.Rollback(ctx); !errors.Is(err, ErrTxManaged) {
		t.Fatalf("Rollback = %v, want ErrTxManaged", err)
	}
	if err := f.s.Complete(ctx, "k", token(1), stored, time.Hour); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if kept, undone := f.count("kept"), f.count("undone"); kept != 1 || undone != 0 {
		t.Fatalf("orders kept %d, undone %d; want 1 and 0", kept, undone)
	}
}

// TestTxCrashLeavesNothing: the process holding a request's transaction
// dies (its connection is terminated): PostgreSQL rolls the transaction
// back, the in-flight row stays until its lease ends, and then a retry
// takes the key over against a database without the first attempt's
// writes. The dead request can never commit.
func TestTxCrashLeavesNothing(t *testing.T) {
	const lease = time.Second
	f := newTxFixture(t, nil)
	ctx := f.begin("k", token(1), lease)
	f.write(ctx, "order-1")
	pid := Tx(ctx).Conn().PgConn().PID()
	if _, err := f.pool.Exec(context.Background(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	if rec := f.peek("k"); rec == nil || rec.State != idem.InFlight {
		t.Fatalf("right after the crash a retry got %+v, want the in-flight record", rec)
	}
	deadline := time.Now().Add(5 * time.Second)
	var rctx context.Context
	for {
		rec, err := f.s.Acquire(context.Background(), "k", token(2), []byte("fp"), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if rec == nil {
			if rctx, err = f.s.BeginRun(context.Background(), "k", token(2)); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead request's key is still held: %+v", rec)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := f.count("order-1"); n != 0 {
		t.Fatalf("%d orders of the dead request, want 0", n)
	}
	if err := f.s.Complete(ctx, "k", token(1), stored, time.Hour); err == nil {
		t.Fatal("the dead request completed")
	}
	f.write(rctx, "order-1")
	if err := f.s.Complete(rctx, "k", token(2), stored, time.Hour); err != nil {
		t.Fatalf("the retry's Complete: %v", err)
	}
	if n := f.count("order-1"); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}
}

// TestTxHoldsOneConnection: a running request holds one connection of the
// pool from BeginRun until Complete or Release, and no more.
func TestTxHoldsOneConnection(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(testPool(t).Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 4
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close) // after the fixture's cleanups, which use p
	f := newTxFixture(t, p)
	var ctxs []context.Context
	for i := range 3 {
		key := string(rune('a' + i))
		ctxs = append(ctxs, f.begin(key, token(byte(i+1)), time.Minute))
		f.write(ctxs[i], key)
		if n := p.Stat().AcquiredConns(); n != int32(i+1) {
			t.Fatalf("%d requests running hold %d connections", i+1, n)
		}
	}
	for i, ctx := range ctxs {
		key := string(rune('a' + i))
		var err error
		if i == 0 {
			err = f.s.Release(ctx, key, token(byte(i+1)))
		} else {
			err = f.s.Complete(ctx, key, token(byte(i+1)), stored, time.Hour)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n := p.Stat().AcquiredConns(); n != int32(2-i) {
			t.Fatalf("after %d requests ended %d connections are held", i+1, n)
		}
	}
}

// TestTxBeginRunAfterTakeover: a request whose lease another request
// took over opens nothing and gets ErrLeaseLost.
func TestTxBeginRunAfterTakeover(t *testing.T) {
	f := newTxFixture(t, nil)
	ctx := context.Background()
	if rec, err := f.s.Acquire(ctx, "k", token(1), []byte("fp"), time.Millisecond); err != nil || rec != nil {
		t.Fatalf("Acquire = %+v, %v", rec, err)
	}
	time.Sleep(20 * time.Millisecond)
	if rec, err := f.s.Acquire(ctx, "k", token(2), []byte("fp"), time.Minute); err != nil || rec != nil {
		t.Fatalf("takeover = %+v, %v", rec, err)
	}
	if _, err := f.s.BeginRun(ctx, "k", token(1)); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("BeginRun by the expired owner = %v, want ErrLeaseLost", err)
	}
	if n := f.s.txs.open(); n != 0 {
		t.Fatalf("%d transactions open", n)
	}
}

// TestTxRecordGoneCommitsNothing: when the record no longer holds the
// request's token at Complete (changed behind the store's back), the
// handler's writes do not commit without it.
func TestTxRecordGoneCommitsNothing(t *testing.T) {
	f := newTxFixture(t, nil)
	ctx := f.begin("k", token(1), time.Minute)
	f.write(ctx, "order-1")
	schema, name, _ := splitTableName(f.s.s.Table())
	other := token(9)
	if _, err := f.pool.Exec(context.Background(), "UPDATE "+quote(schema, name)+" SET token = $1", other[:]); err != nil {
		t.Fatal(err)
	}
	err := f.s.Complete(ctx, "k", token(1), stored, time.Hour)
	if !errors.Is(err, idem.ErrLeaseLost) || !errors.Is(err, ErrNotCommitted) {
		t.Fatalf("Complete = %v, want ErrLeaseLost and ErrNotCommitted", err)
	}
	if n := f.count("order-1"); n != 0 {
		t.Fatalf("%d orders committed without their record", n)
	}
}

// TestTxEngine runs requests through the engine over a TxStore: the lease's
// context carries the transaction, the adapter must hold the response, a
// stored response commits the handler's write with the record and is
// replayed, a status that is not stored rolls the write back, and a
// failed commit gives the adapter the not-committed problem.
func TestTxEngine(t *testing.T) {
	f := newTxFixture(t, nil)
	engine, err := idem.New(idem.Config{Store: f.s})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	request := func(key string) *idem.Request {
		return &idem.Request{Method: "POST", Path: "/orders", Header: http.Header{"Idempotency-Key": {key}},
			Body: strings.NewReader(`{"amount":100}`), Context: context.Background()}
	}
	run := func(key string) (*idem.Lease, context.Context) {
		t.Helper()
		d := engine.Begin(request(key))
		if d.Action != idem.Run {
			t.Fatalf("%s: action %v; want run", key, d.Action)
		}
		ctx := d.Lease.Context()
		if Tx(ctx) == nil || !d.Lease.HoldResponse() {
			t.Fatalf("%s: the lease's context has no transaction (hold %v)", key, d.Lease.HoldResponse())
		}
		return d.Lease, ctx
	}

	lease, ctx := run("stored")
	f.write(ctx, "stored")
	if err := lease.Complete(idem.Recorded{Status: 201, Body: []byte(`{"id":7}`)}); err != nil {
		t.Fatal(err)
	}
	if d := engine.Begin(request("stored")); !d.Replayed || string(d.Response.Body) != `{"id":7}` {
		t.Fatalf("retry: %+v; want the replay", d)
	}

	lease, ctx = run("refused")
	f.write(ctx, "refused")
	if err := lease.Complete(idem.Recorded{Status: 422}); err != nil {
		t.Fatal(err)
	}

	lease, ctx = run("failed")
	f.write(ctx, "failed")
	f.write(ctx, "failed") // fails the deferred constraint at COMMIT
	err = lease.Complete(idem.Recorded{Status: 201})
	if !errors.Is(err, ErrNotCommitted) {
		t.Fatalf("Complete = %v; want ErrNotCommitted", err)
	}
	if p, resp := lease.CommitFailure(); p.Type != idem.ProblemNotCommitted || resp.Status != 503 {
		t.Fatalf("CommitFailure = %+v, %d; want the 503 not-committed problem", p, resp.Status)
	}
	for ref, want := range map[string]int{"stored": 1, "refused": 0, "failed": 0} {
		if n := f.count(ref); n != want {
			t.Errorf("%d %s orders; want %d", n, ref, want)
		}
	}
	// The refused and the failed keys were released: their retries run.
	for _, key := range []string{"refused", "failed"} {
		lease, _ := run(key)
		if err := lease.Release(nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.s.txs.open(); n != 0 {
		t.Fatalf("%d transactions open", n)
	}
}

// roundTrips counts the statements and batches a pool sends: each is one
// round trip to the database.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// TestTxRoundTrips: a first request costs the plain store two round trips
// (lease, completion) and the transactional one three (lease; begin and
// lock; record and commit), besides the handler's own statements.
func TestTxRoundTrips(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(testPool(t).Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	trips := &roundTrips{}
	cfg.ConnConfig.Tracer = trips
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	f := newOrdersFixture(t, p)
	ctx := context.Background()
	for _, c := range []struct {
		store idem.Store
		want  int64
	}{{f.s, 2}, {f.s.Transactional(), 3}} {
		key := fmt.Sprintf("%T", c.store)
		trips.n.Store(0)
		if rec, err := c.store.Acquire(ctx, key, token(1), []byte("fp"), time.Minute); err != nil || rec != nil {
			t.Fatalf("%s: Acquire = %+v, %v", key, rec, err)
		}
		if tx, ok := c.store.(idem.TransactionalStore); ok {
			if _, err := tx.BeginRun(ctx, key, token(1)); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.store.Complete(ctx, key, token(1), stored, time.Hour); err != nil {
			t.Fatal(err)
		}
		if n := trips.n.Load(); n != c.want {
			t.Errorf("%s: a first request took %d round trips, want %d", key, n, c.want)
		}
	}
}
