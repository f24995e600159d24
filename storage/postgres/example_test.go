package idempg_test

import (
	"context"
	"log"
	"net/http"
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

// ExampleStore_Transactional runs a route's handler in the request's
// transaction: its order and the idempotency record commit together, so a
// crash at any point leaves both or neither (rule B35).
func ExampleStore_Transactional() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := idempg.New(pool, idempg.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	// Every route of this engine runs in a transaction; to give only some
	// routes one, keep store as the engine's store and pass
	// store.Transactional() as those routes' own store.
	engine, err := idem.New(idem.Config{Store: store.Transactional()})
	if err != nil {
		log.Fatal(err)
	}
	defer engine.Close()

	createOrder := func(w http.ResponseWriter, r *http.Request) {
		tx := idempg.Tx(r.Context())
		if _, err := tx.Exec(r.Context(), "INSERT INTO orders (sku, qty) VALUES ($1, $2)", "MUG", 1); err != nil {
			// Not a stored status: the transaction rolls back and the
			// key is released, so the client may retry.
			http.Error(w, "the order was not created", http.StatusServiceUnavailable)
			return
		}
		// A stored status: the order commits with the record, and the
		// client gets this response only once the commit succeeded.
		w.WriteHeader(http.StatusCreated)
	}
	// Serve it through an idem adapter built from engine, for instance
	// idemhttp.Required(engine)(http.HandlerFunc(createOrder)).
	_ = createOrder
}
