package reliability

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
	idempg "github.com/idemkit/idem/storage/postgres"
	idemredis "github.com/idemkit/idem/storage/redis"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// The environment variables that name the shared stores; without them the
// tests that need a store skip.
const (
	redisEnv    = "IDEM_REDIS_URL"
	postgresEnv = "IDEM_POSTGRES_URL"
)

// storeKind opens a fresh, empty store of one kind for a test: its own
// memory store, Redis key prefix or PostgreSQL table, removed when the test
// ends.
type storeKind struct {
	name string
	open func(t testing.TB) idem.Store
}

var storeKinds = []storeKind{
	{"memory", func(t testing.TB) idem.Store { return newMemory(t, idem.MemoryOptions{}) }},
	{"redis", func(t testing.TB) idem.Store { return newRedis(t).store }},
	{"postgres", func(t testing.TB) idem.Store { return newPostgres(t).store }},
}

// randomHex returns n random bytes in hexadecimal.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newMemory(t testing.TB, opts idem.MemoryOptions) *idem.MemoryStore {
	m := idem.NewMemoryStore(opts)
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// envURL returns the URL in the environment variable name, or skips the
// test, saying how to run it.
func envURL(t testing.TB, name, example, what string) string {
	t.Helper()
	url := os.Getenv(name)
	if url == "" {
		t.Skipf("%s is not set; set it to a URL such as %s to run the %s parts", name, example, what)
	}
	return url
}

func redisURL(t testing.TB) string {
	return envURL(t, redisEnv, "redis://127.0.0.1:6379/0", "Redis")
}

// newRedisClient returns a client for url, closed when the test ends, with
// the engine's StoreTimeout honoured (ContextTimeoutEnabled).
func newRedisClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("redis URL %q: %v", url, err)
	}
	opts.ContextTimeoutEnabled = true
	opts.PoolSize = 64
	opts.DialTimeout = time.Second
	// A command that meets a connection the server closed (after a
	// restart) is retried on another one, as go-redis does by default,
	// which the engine makes safe (a retried Acquire that took effect
	// keeps its lease); the retries and dials are quick, so that a request
	// during an outage is answered 503 at once rather than after backoffs.
	opts.MaxRetries = 3
	opts.MinRetryBackoff = time.Millisecond
	opts.MaxRetryBackoff = 5 * time.Millisecond
	opts.DialerRetries = 1
	opts.DialerRetryTimeout = time.Millisecond
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// redisFixture is a Redis store under a prefix of its own.
type redisFixture struct {
	store  *idemredis.Store
	client *redis.Client
	prefix string
}

// newRedis returns a store on IDEM_REDIS_URL under a fresh prefix whose
// keys are deleted when the test ends.
func newRedis(t testing.TB) redisFixture {
	t.Helper()
	c := newRedisClient(t, redisURL(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("%s: %v", redisEnv, err)
	}
	prefix := "idemrel:" + randomHex(6) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, k := range redisKeys(t, c, prefix) {
			c.Del(ctx, k)
		}
	})
	store, err := idemredis.New(t.Context(), c, idemredis.Options{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return redisFixture{store: store, client: c, prefix: prefix}
}

// redisKeys lists the keys under prefix with SCAN.
func redisKeys(t testing.TB, c *redis.Client, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var keys []string
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("SCAN %s*: %v", prefix, err)
	}
	return keys
}

func postgresURL(t testing.TB) string {
	return envURL(t, postgresEnv, "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL")
}

// sharedPool is the package's pool on IDEM_POSTGRES_URL, closed by TestMain.
var sharedPool struct {
	sync.Mutex
	pool *pgxpool.Pool
}

// newPool opens a pool on url with room for the concurrency tests.
func newPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("postgres URL: %v", err)
	}
	cfg.MaxConns = 16
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = p.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("connecting to %s: %v", postgresEnv, err)
	}
	return p
}

func testPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	url := postgresURL(t)
	sharedPool.Lock()
	defer sharedPool.Unlock()
	if sharedPool.pool == nil {
		sharedPool.pool = newPool(t, url)
	}
	return sharedPool.pool
}

// pgFixture is a PostgreSQL store in a table of its own.
type pgFixture struct {
	store *idempg.Store
	pool  *pgxpool.Pool
	table string
}

// newPostgres returns a store on IDEM_POSTGRES_URL in a fresh table that is
// dropped when the test ends.
func newPostgres(t testing.TB) pgFixture {
	t.Helper()
	return newPostgresOn(t, testPool(t), "rel_"+randomHex(6))
}

// newPostgresOn returns a store in table through pool, creating the table
// through the shared pool and dropping it when the test ends.
func newPostgresOn(t testing.TB, pool *pgxpool.Pool, table string) pgFixture {
	t.Helper()
	admin := testPool(t)
	s, err := idempg.New(pool, idempg.Options{Table: table, SweepInterval: -1})
	if err != nil {
		t.Fatalf("idempg.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mig, err := idempg.New(admin, idempg.Options{Table: table, SweepInterval: -1})
	if err == nil {
		err = mig.Migrate(ctx)
	}
	if err != nil {
		t.Fatalf("migrate %s: %v", table, err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
			t.Logf("drop %s: %v", table, err)
		}
	})
	return pgFixture{store: s, pool: pool, table: table}
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	conformance.AnnounceSkips("the Redis and PostgreSQL parts", conformance.RedisURL, conformance.PostgresURL)
	code := m.Run()
	if sharedPool.pool != nil {
		sharedPool.pool.Close()
	}
	os.Exit(code)
}
