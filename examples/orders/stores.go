package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	idem "github.com/idemkit/idem/core"
	idempg "github.com/idemkit/idem/storage/postgres"
	idemredis "github.com/idemkit/idem/storage/redis"
)

// stores maps each -store name to the function that opens that store. The
// returned close function runs after the server has shut down and the
// engine has closed; it closes what the open function opened.
var stores = map[string]func(ctx context.Context, o options, logger *slog.Logger) (idem.Store, func() error, error){
	"memory":   openMemory,
	"redis":    openRedis,
	"postgres": openPostgres,
}

// Where the shared stores are when neither a flag nor the environment
// says otherwise: the local services of a development machine.
const (
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
	defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// envOr returns the environment variable name, or def when it is unset or
// empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// openMemory opens the in-memory store: records live as long as the
// process and are not shared between replicas.
func openMemory(context.Context, options, *slog.Logger) (idem.Store, func() error, error) {
	s := idem.NewMemoryStore(idem.MemoryOptions{})
	return s, s.Close, nil
}

// openRedis opens the Redis store at o.redisURL, with its keys behind
// o.keyPrefix. Every process serving the API with the same URL and prefix
// shares its records.
func openRedis(ctx context.Context, o options, logger *slog.Logger) (idem.Store, func() error, error) {
	opts, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return nil, nil, err
	}
	// Let the engine's StoreTimeout bound each call.
	opts.ContextTimeoutEnabled = true
	client := redis.NewClient(opts)
	// Fail at start, not at the first request, when Redis is unreachable.
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("ping %s: %w", opts.Addr, err)
	}
	store, err := idemredis.New(ctx, client, idemredis.Options{KeyPrefix: o.keyPrefix, Logger: logger})
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return store, client.Close, nil
}

// openPostgres opens the PostgreSQL store at o.postgresURL in the table
// o.table, creating the table when it does not exist. Every process
// serving the API with the same database and table shares its records.
func openPostgres(ctx context.Context, o options, logger *slog.Logger) (idem.Store, func() error, error) {
	pool, err := pgxpool.New(ctx, o.postgresURL)
	if err != nil {
		return nil, nil, err
	}
	store, err := idempg.New(pool, idempg.Options{Table: o.table, Logger: logger})
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	closeAll := func() error {
		err := store.Close()
		pool.Close()
		return err
	}
	if err := store.Migrate(ctx); err != nil {
		return nil, nil, errors.Join(err, closeAll())
	}
	return store, closeAll, nil
}
