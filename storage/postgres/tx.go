package idempg

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	idem "github.com/idemkit/idem/core"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TxStore is a Store's transactional mode (Store.Transactional): an
// idem.TransactionalStore whose requests run their handler in a
// transaction that commits together with the completed record (rule B35).
// The handler gets the transaction from Tx(ctx); the adapter answers only
// once the commit succeeded. It keeps its records in the Store's table,
// and the Store's sweeper and Close serve it too. See the package
// documentation for how a request runs, its fencing, failures and the
// connections it holds. It is safe for concurrent use.
type TxStore struct {
	s   *Store
	txs requests
}

var _ idem.TransactionalStore = (*TxStore)(nil)

// Transactional returns the store's transactional mode, over the same
// table: use it as the store of the routes whose handlers write to this
// database in the request's transaction (idem.Route.Store, or the
// engine's idem.Config.Store for every route). It returns the same TxStore
// on every call.
func (s *Store) Transactional() *TxStore { return s.tx }

// ErrTxManaged is returned by Commit and Rollback of the transaction that
// Tx returns: the store ends that transaction itself, committing it with
// the completed record when the handler's response is stored and rolling
// it back otherwise. The transaction stays open and usable.
var ErrTxManaged = errors.New("idempg: the request's transaction is committed or rolled back by the store, with the idempotency record")

// ErrNotCommitted is wrapped by the error Complete returns in transactional
// mode when the request's transaction did not commit (the COMMIT failed,
// the handler left the transaction aborted or ended it itself, or the
// connection broke): none of the handler's writes took effect, or, when
// the connection broke during the COMMIT, the outcome is unknown and a
// retry finds out. The store has released the key when it could, so a
// retry runs the handler again against a database the failed attempt left
// unchanged.
var ErrNotCommitted = errors.New("idempg: the request's transaction did not commit")

// Tx returns the transaction of the request whose context is ctx, when the
// request runs under a lease of a TxStore, and nil otherwise. The handler runs its writes in
// it; they commit together with the completed idempotency record, after
// the handler has returned, or not at all.
//
// The transaction runs at PostgreSQL's default isolation, READ COMMITTED.
// Its Commit and Rollback return ErrTxManaged and do nothing, so a
// habitual defer tx.Rollback(ctx) is harmless; the handler's response
// decides instead: a stored status (2xx by default) commits, anything else
// (another status, a panic, an error the framework renders) rolls back. To
// undo part of its work the handler uses a nested transaction, tx.Begin,
// which is a savepoint. A statement that fails leaves the transaction
// aborted, and the request's commit then fails; run statements that may
// fail inside tx.Begin. Like any pgx.Tx, it is not safe for concurrent use.
// Conn gives access to the connection: do not end the transaction through
// it (a transaction that is no longer open when the handler returns is not
// committed, and the request fails).
func Tx(ctx context.Context) pgx.Tx {
	if rt, ok := ctx.Value(txKey{}).(*requestTx); ok {
		return handlerTx{rt.tx}
	}
	return nil
}

// txKey is the context key of a request's transaction.
type txKey struct{}

// handlerTx is the transaction as the handler sees it: Commit and
// Rollback are the store's.
type handlerTx struct{ pgx.Tx }

// Commit does nothing and returns ErrTxManaged.
func (handlerTx) Commit(context.Context) error { return ErrTxManaged }

// Rollback does nothing and returns ErrTxManaged.
func (handlerTx) Rollback(context.Context) error { return ErrTxManaged }

// requestTx is the transaction of one lease, on a connection the request
// holds from BeginRun until Complete or Release.
type requestTx struct {
	key  string
	conn *pgxpool.Conn
	tx   pgx.Tx
}

// requests holds the open transactions of a TxStore's leases by token.
type requests struct {
	mu sync.Mutex
	m  map[idem.Token]*requestTx
}

func (r *requests) put(token idem.Token, rt *requestTx) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[idem.Token]*requestTx)
	}
	r.m[token] = rt
}

// take removes and returns the transaction of token's lease of key, or
// nil when there is none.
func (r *requests) take(key string, token idem.Token) *requestTx {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.m[token]
	if rt == nil || rt.key != key {
		return nil
	}
	delete(r.m, token)
	return rt
}

// open reports how many request transactions are open.
func (r *requests) open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// beginRunTimeout bounds how long BeginRun waits for a connection of the
// pool and for the database, as the engine's default StoreTimeout bounds
// its other store calls: BeginRun gets the request's own context, which the
// handler's context derives from.
const beginRunTimeout = 5 * time.Second

// Acquire implements idem.Store as Store.Acquire does, except that a row
// whose lease has expired while a request's transaction still holds it is
// not taken over: Acquire returns it, in flight (a duplicate gets 409), as
// it returns a live one. It locks an expired row FOR UPDATE NOWAIT before
// taking it over, so a row another statement holds at that moment (a
// takeover or a sweep in progress) reads as in flight too.
func (t *TxStore) Acquire(ctx context.Context, key string, token idem.Token, fingerprint []byte, lease time.Duration) (*idem.Record, error) {
	s := t.s
	if err := ctx.Err(); err != nil {
		return nil, wrapErr(ctx, "acquire", err)
	}
	// The row a locked acquire found may be gone by the time it is read
	// (the request holding it released it): then acquire again.
	for range 3 {
		rec, err := s.scanRecord(s.pool.QueryRow(ctx, s.sql.acquireNoWait, []byte(key), token[:], fingerprint, micros(lease)))
		if !isPgError(err, "55P03") { // lock_not_available
			if err != nil {
				return nil, wrapErr(ctx, "acquire", err)
			}
			return rec, nil
		}
		rec, err = s.scanRecord(s.pool.QueryRow(ctx, s.sql.lookup, []byte(key)))
		switch {
		case err == nil:
			return rec, nil
		case !errors.Is(err, pgx.ErrNoRows):
			return nil, wrapErr(ctx, "acquire", err)
		}
	}
	return nil, errors.New("idempg: acquire: the row of the key kept changing under three attempts")
}

// BeginRun implements idem.TransactionalStore. After Acquire won key for
// token and before the handler runs, it takes a connection from the pool
// for as long as the lease lasts, begins the request's transaction and
// locks the in-flight row FOR KEY SHARE in it, in one round trip, and
// returns ctx carrying the transaction for Tx. From then on no other
// request can take the key over, even after the lease time, until Complete
// or Release ends the transaction (or the connection dies with the
// process, and PostgreSQL rolls it back).
//
// It returns idem.ErrLeaseLost, having opened nothing, when token no
// longer holds the key.
func (t *TxStore) BeginRun(ctx context.Context, key string, token idem.Token) (context.Context, error) {
	ioCtx, cancel := context.WithTimeout(ctx, beginRunTimeout)
	defer cancel()
	conn, err := t.s.pool.Acquire(ioCtx)
	if err != nil {
		return nil, wrapErr(ioCtx, "begin run", err)
	}
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	b.Queue(t.s.sql.lock, []byte(key), token[:])
	br := conn.SendBatch(ioCtx, b)
	tx := br.Tx()
	_, err = br.Exec()
	var locked pgconn.CommandTag
	if err == nil {
		locked, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && locked.RowsAffected() == 0 {
		err = idem.ErrLeaseLost
	}
	if err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		conn.Release()
		if errors.Is(err, idem.ErrLeaseLost) {
			return nil, err
		}
		return nil, wrapErr(ioCtx, "begin run", err)
	}
	rt := &requestTx{key: key, conn: conn, tx: tx}
	t.txs.put(token, rt)
	return context.WithValue(ctx, txKey{}, rt), nil
}

// Complete implements idem.Store. For a lease whose transaction BeginRun
// opened, it writes the completed record in that transaction and commits
// it, in one round trip; when the transaction does not commit it rolls it
// back, releases the key and returns an error wrapping ErrNotCommitted
// (and idem.ErrLeaseLost when the record no longer held the token). For a
// lease without a transaction it is Store.Complete.
func (t *TxStore) Complete(ctx context.Context, key string, token idem.Token, rec *idem.Record, retention time.Duration) error {
	rt := t.txs.take(key, token)
	if rt == nil {
		return t.s.Complete(ctx, key, token, rec, retention)
	}
	defer rt.conn.Release()
	if rec == nil {
		return t.notCommitted(ctx, rt, token, errors.New("nil record"))
	}
	if st := rt.conn.Conn().PgConn().TxStatus(); st != 'T' {
		// 'E': a statement of the handler failed; 'I': the handler ended
		// the transaction through Conn.
		return t.notCommitted(ctx, rt, token, fmt.Errorf("the transaction is not open and healthy when the handler returns (status %q)", st))
	}
	b := &pgx.Batch{}
	b.Queue(t.s.sql.completeLocked, completeArgs(key, token, rec, retention)...)
	b.Queue("COMMIT")
	br := rt.tx.SendBatch(ctx, b)
	_, err := br.Exec()
	var tag pgconn.CommandTag
	if err == nil {
		tag, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	switch {
	case isPgError(err, "22012"):
		// Nothing can take the key over while the row is locked; only a
		// row changed behind the store's back gets here.
		err = idem.ErrLeaseLost
	case err == nil && tag.String() != "COMMIT":
		err = errors.New("the transaction was rolled back at COMMIT")
	case err == nil:
		return nil
	}
	return t.notCommitted(ctx, rt, token, err)
}

// notCommitted rolls the request's transaction back, releases the key
// (fenced by the token and the in-flight state: when a COMMIT whose reply
// was lost did commit, the record is completed and stays) and returns err
// wrapped with ErrNotCommitted.
func (t *TxStore) notCommitted(ctx context.Context, rt *requestTx, token idem.Token, err error) error {
	_ = rt.tx.Rollback(context.WithoutCancel(ctx))
	if _, rerr := t.s.pool.Exec(ctx, t.s.sql.releaseOwn, []byte(rt.key), token[:]); rerr != nil {
		err = fmt.Errorf("%w (and releasing the key failed, so it stays in flight until its lease ends: %w)", err, rerr)
	}
	return fmt.Errorf("idempg: complete: %w: %w", ErrNotCommitted, err)
}

// Release implements idem.Store. For a lease whose transaction BeginRun
// opened, it rolls the transaction back, then deletes the in-flight row on
// the same connection. For a lease without a transaction it is
// Store.Release.
func (t *TxStore) Release(ctx context.Context, key string, token idem.Token) error {
	rt := t.txs.take(key, token)
	if rt == nil {
		return t.s.Release(ctx, key, token)
	}
	defer rt.conn.Release()
	_ = rt.tx.Rollback(context.WithoutCancel(ctx))
	var tag pgconn.CommandTag
	var err error
	if rt.conn.Conn().IsClosed() {
		tag, err = t.s.pool.Exec(ctx, t.s.sql.releaseOwn, []byte(rt.key), token[:])
	} else {
		tag, err = rt.conn.Exec(ctx, t.s.sql.releaseOwn, []byte(rt.key), token[:])
	}
	if err != nil {
		return wrapErr(ctx, "release", err)
	}
	if tag.RowsAffected() == 0 {
		return idem.ErrLeaseLost
	}
	return nil
}

// Renew implements idem.Store; it is Store.Renew. A renewal updates the row
// on a connection of its own, which the request's FOR KEY SHARE lock
// allows.
func (t *TxStore) Renew(ctx context.Context, key string, token idem.Token, lease time.Duration) error {
	return t.s.Renew(ctx, key, token, lease)
}

// isPgError reports whether err is a PostgreSQL error with SQLSTATE code.
func isPgError(err error, code string) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
