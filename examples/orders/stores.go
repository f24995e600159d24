package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
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
	"memory":      openMemory,
	"redis":       openRedis,
	"postgres":    openPostgres,
	"postgres-tx": openPostgresTx,
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

// freshName returns name followed by a random suffix, for -fresh.
func freshName(name, sep string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return name + sep + hex.EncodeToString(b)
}

// openRedis opens the Redis store at o.redisURL, with its keys behind
// o.keyPrefix. Every process serving the API with the same URL and prefix
// shares its records. With o.fresh the prefix gets a random part, and the
// run's keys are deleted when the store closes.
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
	prefix, closeAll := o.keyPrefix, client.Close
	if o.fresh {
		prefix = freshName(strings.TrimSuffix(o.keyPrefix, ":"), ":") + ":"
		logger.Info("orders: -fresh: this run's records are under their own key prefix, deleted at shutdown", "key_prefix", prefix)
		closeAll = func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var keys []string
			iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				keys = append(keys, iter.Val())
			}
			err := iter.Err()
			if err == nil && len(keys) > 0 {
				err = client.Unlink(ctx, keys...).Err()
			}
			return errors.Join(err, client.Close())
		}
	}
	store, err := idemredis.New(ctx, client, idemredis.Options{KeyPrefix: prefix, Logger: logger})
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return store, closeAll, nil
}

// openPostgres opens the PostgreSQL store at o.postgresURL in the table
// o.table, creating the table when it does not exist. Every process
// serving the API with the same database and table shares its records.
// With o.fresh the table gets a random suffix and is dropped when the
// store closes.
func openPostgres(ctx context.Context, o options, logger *slog.Logger) (idem.Store, func() error, error) {
	store, closeAll, err := openPostgresStore(ctx, o, logger)
	if err != nil {
		return nil, nil, err
	}
	return store, closeAll, nil
}

// openPostgresTx opens the PostgreSQL store as openPostgres does, in its
// transactional mode: each order is created in the request's transaction,
// which commits with the request's idempotency record (rule B35), so a
// crash never leaves an order without its record or a record without its
// order.
func openPostgresTx(ctx context.Context, o options, logger *slog.Logger) (idem.Store, func() error, error) {
	store, closeAll, err := openPostgresStore(ctx, o, logger)
	if err != nil {
		return nil, nil, err
	}
	return store.Transactional(), closeAll, nil
}

// openPostgresStore opens and migrates the PostgreSQL store.
func openPostgresStore(ctx context.Context, o options, logger *slog.Logger) (*idempg.Store, func() error, error) {
	pool, err := pgxpool.New(ctx, o.postgresURL)
	if err != nil {
		return nil, nil, err
	}
	table := o.table
	if o.fresh {
		table = freshName(table, "_")
		logger.Info("orders: -fresh: this run's records are in a table of their own, dropped at shutdown", "table", table)
	}
	store, err := idempg.New(pool, idempg.Options{Table: table, Logger: logger})
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	closeAll := func() error {
		err := store.Close()
		if o.fresh {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, dropErr := pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier(strings.Split(table, ".")).Sanitize())
			err = errors.Join(err, dropErr)
		}
		pool.Close()
		return err
	}
	if err := store.Migrate(ctx); err != nil {
		return nil, nil, errors.Join(err, closeAll())
	}
	return store, closeAll, nil
}

// defaultOrdersTable is the orders' table with -orders postgres.
const defaultOrdersTable = "orders"

// openOrders opens the orders' table at o.postgresURL, creating it when it
// does not exist, for -orders postgres.
func openOrders(ctx context.Context, o options) (orderBook, func(), error) {
	pool, err := pgxpool.New(ctx, o.postgresURL)
	if err != nil {
		return nil, nil, err
	}
	book, err := openPostgresOrders(ctx, pool, o.ordersTable)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return book, pool.Close, nil
}
