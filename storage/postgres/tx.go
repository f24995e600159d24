package idempg

import (
	"context"
	"errors"
	"fmt"
	"sync"

	idem "github.com/idemkit/idem/core"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

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
// request runs under a lease of a Store in transactional mode (see
// Options.Transactional), and nil otherwise. The handler runs its writes in
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
// holds from BeginRequest until Complete or Release.
type requestTx struct {
	key  string
	conn *pgxpool.Conn
	tx   pgx.Tx
}

// requests holds the open transactions of a Store's leases by token.
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

// BeginRequest opens the transaction of the lease that token holds on key,
// after Acquire won it and before the handler runs, and returns ctx
// carrying it for Tx. It takes a connection from the pool for as long as
// the lease lasts and locks the in-flight row FOR KEY SHARE in the
// transaction, in one round trip: from then on no other request can take
// the key over, even after the lease time, until Complete or Release ends
// the transaction (or the connection dies with the process, and PostgreSQL
// rolls it back). Outside transactional mode it returns ctx unchanged.
//
// It returns idem.ErrLeaseLost, having opened nothing, when token no
// longer holds the key.
func (s *Store) BeginRequest(ctx context.Context, key string, token idem.Token) (context.Context, error) {
	if !s.transactional {
		return ctx, nil
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, wrapErr(ctx, "begin request", err)
	}
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	b.Queue(s.sql.lock, []byte(key), token[:])
	br := conn.SendBatch(ctx, b)
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
		return nil, wrapErr(ctx, "begin request", err)
	}
	rt := &requestTx{key: key, conn: conn, tx: tx}
	s.txs.put(token, rt)
	return context.WithValue(ctx, txKey{}, rt), nil
}

// completeTx writes the completed record in the request's transaction and
// commits it. When anything fails the transaction is rolled back and the
// key released, and the error wraps ErrNotCommitted.
func (s *Store) completeTx(ctx context.Context, rt *requestTx, token idem.Token, args []any) error {
	defer rt.conn.Release()
	if st := rt.conn.Conn().PgConn().TxStatus(); st != 'T' {
		// 'E': a statement of the handler failed; 'I': the handler ended
		// the transaction through Conn.
		return s.notCommitted(ctx, rt, token, fmt.Errorf("the transaction is not open and healthy when the handler returns (status %q)", st))
	}
	// The record and the COMMIT go in one round trip.
	b := &pgx.Batch{}
	b.Queue(s.sql.completeLocked, args...)
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
		// row deleted behind the store's back gets here.
		err = idem.ErrLeaseLost
	case err == nil && tag.String() != "COMMIT":
		err = errors.New("the transaction was rolled back at COMMIT")
	case err == nil:
		return nil
	}
	return s.notCommitted(ctx, rt, token, err)
}

// notCommitted rolls the request's transaction back, releases the key
// (fenced by the token and the in-flight state: when a COMMIT whose reply
// was lost did commit, the record is completed and stays) and returns err
// wrapped with ErrNotCommitted.
func (s *Store) notCommitted(ctx context.Context, rt *requestTx, token idem.Token, err error) error {
	_ = rt.tx.Rollback(context.WithoutCancel(ctx))
	if _, rerr := s.pool.Exec(ctx, s.sql.releaseOwn, []byte(rt.key), token[:]); rerr != nil {
		err = fmt.Errorf("%w (and releasing the key failed, so it stays in flight until its lease ends: %w)", err, rerr)
	}
	return fmt.Errorf("idempg: complete: %w: %w", ErrNotCommitted, err)
}

// releaseTx rolls the request's transaction back and deletes the in-flight
// row on the same connection.
func (s *Store) releaseTx(ctx context.Context, rt *requestTx, token idem.Token) error {
	defer rt.conn.Release()
	_ = rt.tx.Rollback(context.WithoutCancel(ctx))
	var tag pgconn.CommandTag
	var err error
	if rt.conn.Conn().IsClosed() {
		tag, err = s.pool.Exec(ctx, s.sql.releaseOwn, []byte(rt.key), token[:])
	} else {
		tag, err = rt.conn.Exec(ctx, s.sql.releaseOwn, []byte(rt.key), token[:])
	}
	if err != nil {
		return wrapErr(ctx, "release", err)
	}
	if tag.RowsAffected() == 0 {
		return idem.ErrLeaseLost
	}
	return nil
}

// acquireLocked reads the row of key when the transactional acquire found
// it locked: its lease has expired but a request's transaction still holds
// it (or another request is taking it over). found is false when the row
// is gone by now.
func (s *Store) acquireLocked(ctx context.Context, key string) (rec *idem.Record, found bool, err error) {
	rec, err = s.scanRecord(s.pool.QueryRow(ctx, s.sql.lookup, []byte(key)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	return rec, err == nil, err
}

// isLockNotAvailable reports PostgreSQL's lock_not_available error, which
// FOR UPDATE NOWAIT raises on a locked row.
func isLockNotAvailable(err error) bool { return isPgError(err, "55P03") }

// isPgError reports whether err is a PostgreSQL error with SQLSTATE code.
func isPgError(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
