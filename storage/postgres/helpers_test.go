package idempg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/idemkit/idem/conformance"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The tests need a PostgreSQL database named by IDEM_POSTGRES_URL, such as
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable. Each test uses
// its own tables and drops them when it ends.
const urlEnv = "IDEM_POSTGRES_URL"

// testPools holds the package's shared pools, one per query mode.
var testPools struct {
	sync.Mutex
	byMode map[pgx.QueryExecMode]*pgxpool.Pool
}

func TestMain(m *testing.M) {
	conformance.AnnounceSkips("the PostgreSQL store tests", conformance.PostgresURL)
	code := m.Run()
	for _, p := range testPools.byMode {
		p.Close()
	}
	os.Exit(code)
}

// testPool returns the package's shared pool, skipping the test when no
// database is configured.
func testPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return testPoolMode(t, pgx.QueryExecModeCacheStatement)
}

// testPoolMode returns a shared pool whose queries run in mode, pgx's
// default being QueryExecModeCacheStatement; QueryExecModeSimpleProtocol is
// what a pool behind PgBouncer in transaction mode uses.
func testPoolMode(t testing.TB, mode pgx.QueryExecMode) *pgxpool.Pool {
	t.Helper()
	url := os.Getenv(urlEnv)
	if url == "" {
		t.Skipf("%s is not set; set it to a PostgreSQL URL such as postgres://postgres@127.0.0.1:5432/test?sslmode=disable to run the PostgreSQL store tests", urlEnv)
	}
	testPools.Lock()
	defer testPools.Unlock()
	if p := testPools.byMode[mode]; p != nil {
		return p
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("%s: %v", urlEnv, err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = mode
	// Enough connections for the concurrency tests to contend in the
	// database rather than queue for a connection.
	cfg.MaxConns = 32
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = p.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("connecting to %s: %v", urlEnv, err)
	}
	if testPools.byMode == nil {
		testPools.byMode = make(map[pgx.QueryExecMode]*pgxpool.Pool)
	}
	testPools.byMode[mode] = p
	return p
}

// testPoolOrNil returns the shared pool, or nil when no database is
// configured, for tests that check more with a database.
func testPoolOrNil(t testing.TB) *pgxpool.Pool {
	if os.Getenv(urlEnv) == "" {
		return nil
	}
	return testPool(t)
}

func randomSuffix(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// newTestStore returns a migrated store over its own table, dropped when
// the test ends. A zero opts.SweepInterval means no sweeper.
func newTestStore(t testing.TB, opts Options) *Store {
	t.Helper()
	return newTestStoreOn(t, testPool(t), opts)
}

// newTestStoreOn is newTestStore over the pool p.
func newTestStoreOn(t testing.TB, p *pgxpool.Pool, opts Options) *Store {
	t.Helper()
	if opts.Table == "" {
		opts.Table = "idem_test_" + randomSuffix(t)
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = -1
	}
	s, err := New(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		dropTable(t, p, opts.Table)
	})
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// newTestSchema creates a schema, dropped with its tables when the test
// ends, and returns its name.
func newTestSchema(t testing.TB) string {
	t.Helper()
	p := testPool(t)
	schema := "idem_test_" + randomSuffix(t)
	if _, err := p.Exec(context.Background(), "CREATE SCHEMA "+quote("", schema)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := p.Exec(context.Background(), "DROP SCHEMA "+quote("", schema)+" CASCADE"); err != nil {
			t.Error(err)
		}
	})
	return schema
}

func dropTable(t testing.TB, p *pgxpool.Pool, table string) {
	schema, name, err := splitTableName(table)
	if err != nil {
		t.Error(err)
		return
	}
	if _, err := p.Exec(context.Background(), "DROP TABLE IF EXISTS "+quote(schema, name)); err != nil {
		t.Errorf("dropping %s: %v", table, err)
	}
}

// countRows counts the rows of the store's table.
func countRows(t testing.TB, s *Store) int64 {
	t.Helper()
	schema, name, _ := splitTableName(s.Table())
	var n int64
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+quote(schema, name)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// insertRows inserts n in-flight rows whose expiry is at now() + offset.
func insertRows(t testing.TB, s *Store, prefix string, n int, offset time.Duration) {
	t.Helper()
	schema, name, _ := splitTableName(s.Table())
	_, err := s.pool.Exec(context.Background(), fmt.Sprintf(
		`INSERT INTO %s (key, state, token, expires_at)
		 SELECT convert_to($1 || i, 'UTF8'), 1, '\x00000000000000000000000000000000'::bytea,
		        now() + $2::bigint * interval '1 microsecond'
		 FROM generate_series(1, $3) AS i`, quote(schema, name)),
		prefix, micros(offset), n)
	if err != nil {
		t.Fatal(err)
	}
}
