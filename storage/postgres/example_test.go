package idempg_test

import (
	"context"
	"log"
	"os"

	idem "github.com/idemkit/idem/core"
	idempg "github.com/idemkit/idem/storage/postgres"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Example creates the store's table and uses the store for an engine that
// every replica of a service shares through the database.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	store, err := idempg.New(pool, idempg.Options{Table: "idem_records"})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close() // stops the sweeper of expired rows

	// Or apply idempg.Schema with your own migrations.
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	engine, err := idem.New(idem.Config{Store: store})
	if err != nil {
		log.Fatal(err)
	}
	defer engine.Close()

	// Serve the routes through an idem adapter built from engine, for
	// instance idemhttp.Middleware(engine) from adapters/nethttp.
	_ = engine
}

// ExampleStore_DeleteExpired turns the sweeper off and deletes expired rows
// from a scheduled job instead, such as a nightly cron task.
func ExampleStore_DeleteExpired() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	store, err := idempg.New(pool, idempg.Options{SweepInterval: -1})
	if err != nil {
		log.Fatal(err)
	}
	n, err := store.DeleteExpired(ctx)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("deleted %d expired idempotency records", n)
}
