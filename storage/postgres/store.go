package idempg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	idem "github.com/idemkit/idem/core"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of Options.
const (
	// DefaultTable is the table a Store uses when Options.Table is empty.
	DefaultTable = "idem_records"
	// DefaultSweepInterval is how often the background sweeper deletes
	// expired rows when Options.SweepInterval is zero.
	DefaultSweepInterval = time.Minute
)

// Options configures a Store. The zero value means the defaults.
type Options struct {
	// Table names the table, optionally qualified by a schema, such as
	// "idem_records" or "billing.idem_records". Each part must be a
	// lower-case SQL identifier (letters a–z, digits and underscores, not
	// starting with a digit); the schema at most 63 characters and the
	// table at most 48, so that the name of its index fits PostgreSQL's
	// 63-byte limit. The store quotes the name in every statement.
	// Default: DefaultTable.
	Table string
	// SweepInterval is how often a background sweeper deletes expired rows
	// (see Store.DeleteExpired); expired rows are also ignored and
	// replaced on access. Default: DefaultSweepInterval. Negative: no
	// sweeper, for deployments that call DeleteExpired from a scheduled
	// job instead.
	SweepInterval time.Duration
	// Logger, when set, receives a warning for each sweep that fails.
	Logger *slog.Logger
}

// Store is an idem.Store over a PostgreSQL connection pool. It is safe for
// concurrent use by any number of goroutines and processes sharing the
// database. Create it with New, create its table with Migrate (or your own
// migration of Schema), and call Close to stop its sweeper.
type Store struct {
	pool  *pgxpool.Pool
	table string // as configured, unquoted
	sql   statements

	closeOnce   sync.Once
	stopSweeper context.CancelFunc
	sweeperDone chan struct{}
	logger      *slog.Logger

	// tx is the store's transactional mode.
	tx *TxStore
}

var _ idem.Store = (*Store)(nil)

// ErrInvalidTable is returned by New when Options.Table is not a name the
// store accepts.
var ErrInvalidTable = errors.New("idempg: invalid table name")

// New returns a Store that keeps its records in pool's database. It does
// not create the table (see Migrate) and does not take ownership of pool:
// Close leaves the pool open. It starts the background sweeper unless
// Options.SweepInterval is negative.
func New(pool *pgxpool.Pool, opts Options) (*Store, error) {
	if pool == nil {
		return nil, errors.New("idempg: nil pool")
	}
	if opts.Table == "" {
		opts.Table = DefaultTable
	}
	schema, table, err := splitTableName(opts.Table)
	if err != nil {
		return nil, err
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	s := &Store{
		pool:        pool,
		table:       opts.Table,
		sql:         newStatements(schema, table),
		sweeperDone: make(chan struct{}),
		logger:      opts.Logger,
	}
	s.tx = &TxStore{s: s}
	if opts.SweepInterval > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopSweeper = cancel
		go s.sweep(ctx, opts.SweepInterval)
	} else {
		s.stopSweeper = func() {}
		close(s.sweeperDone)
	}
	return s, nil
}

// Table returns the table name the store uses, as configured.
func (s *Store) Table() string { return s.table }

// Close stops the background sweeper, cancelling a sweep in progress, and
// waits for it to return. It does not close the pool, and the store stays
// usable. Close is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(s.stopSweeper)
	<-s.sweeperDone
	return nil
}

// Acquire implements idem.Store with one statement: it inserts an in-flight
// row for key, takes over the row when its expiry has passed, or returns
// the live row unchanged.
func (s *Store) Acquire(ctx context.Context, key string, token idem.Token, fingerprint []byte, lease time.Duration) (*idem.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, wrapErr(ctx, "acquire", err)
	}
	rec, err := s.scanRecord(s.pool.QueryRow(ctx, s.sql.acquire, []byte(key), token[:], fingerprint, micros(lease)))
	if err != nil {
		return nil, wrapErr(ctx, "acquire", err)
	}
	return rec, nil
}

// scanRecord reads the row an acquire returns: (nil, nil) when the caller
// won, else the record.
func (s *Store) scanRecord(row pgx.Row) (*idem.Record, error) {
	var (
		won         bool
		state       int16
		tok, header []byte
		rec         idem.Record
	)
	err := row.Scan(&won, &state, &tok, &rec.Fingerprint, &rec.Status, &header, &rec.Body, &rec.NotReplayable, &rec.ExpiresAt)
	if err != nil {
		return nil, err
	}
	if won {
		return nil, nil
	}
	rec.State = idem.State(state)
	if rec.State != idem.InFlight && rec.State != idem.Completed {
		return nil, fmt.Errorf("row has unknown state %d", state)
	}
	if len(tok) != len(rec.Token) {
		return nil, fmt.Errorf("row has a %d-byte token, want %d", len(tok), len(rec.Token))
	}
	copy(rec.Token[:], tok)
	if rec.Header, err = decodeHeader(header); err != nil {
		return nil, err
	}
	return &rec, nil
}

// Complete implements idem.Store. It returns idem.ErrLeaseLost when token
// does not hold a live in-flight row for key.
func (s *Store) Complete(ctx context.Context, key string, token idem.Token, rec *idem.Record, retention time.Duration) error {
	if rec == nil {
		return errors.New("idempg: complete: nil record")
	}
	return s.fenced(ctx, "complete", s.sql.complete, completeArgs(key, token, rec, retention)...)
}

// completeArgs are the arguments of a statement that completes key.
func completeArgs(key string, token idem.Token, rec *idem.Record, retention time.Duration) []any {
	var header, body []byte
	if !rec.NotReplayable {
		header = encodeHeader(rec.Header)
		body = rec.Body
	}
	return []any{[]byte(key), token[:], rec.Status, header, body, rec.NotReplayable, micros(retention)}
}

// Release implements idem.Store. It returns idem.ErrLeaseLost when token
// does not hold a live in-flight row for key.
func (s *Store) Release(ctx context.Context, key string, token idem.Token) error {
	return s.fenced(ctx, "release", s.sql.release, []byte(key), token[:])
}

// Renew implements idem.Store. It returns idem.ErrLeaseLost when token does
// not hold a live in-flight row for key.
func (s *Store) Renew(ctx context.Context, key string, token idem.Token, lease time.Duration) error {
	return s.fenced(ctx, "renew", s.sql.renew, []byte(key), token[:], micros(lease))
}

// fenced runs a statement whose WHERE clause matches only the live
// in-flight row held by the token, and reports ErrLeaseLost when it matched
// nothing.
func (s *Store) fenced(ctx context.Context, op, sql string, args ...any) error {
	if err := ctx.Err(); err != nil {
		return wrapErr(ctx, op, err)
	}
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return wrapErr(ctx, op, err)
	}
	if tag.RowsAffected() == 0 {
		return idem.ErrLeaseLost
	}
	return nil
}

// wrapErr names the operation and makes sure the error wraps ctx.Err() when
// the context is done.
func wrapErr(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("idempg: %s: %w: %w", op, cerr, err)
	}
	return fmt.Errorf("idempg: %s: %w", op, err)
}

// micros converts d to whole microseconds, PostgreSQL's timestamp
// resolution, rounding up so that a positive duration never becomes zero.
func micros(d time.Duration) int64 {
	us := int64(d / time.Microsecond)
	if d%time.Microsecond > 0 {
		us++
	}
	return us
}

// quote returns the quoted, schema-qualified name of a table.
func quote(schema, table string) string {
	if schema == "" {
		return pgx.Identifier{table}.Sanitize()
	}
	return pgx.Identifier{schema, table}.Sanitize()
}
