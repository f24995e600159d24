package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	idempg "github.com/idemkit/idem/storage/postgres"
)

// orderBook is where the API keeps its orders: the process's memory
// (-orders memory) or a PostgreSQL table (-orders postgres).
type orderBook interface {
	create(ctx context.Context, sku string, qty int) (Order, error)
	list(ctx context.Context) ([]Order, error)
	// get returns the order id, or ok false when there is none.
	get(ctx context.Context, id string) (o Order, ok bool, err error)
}

// memoryOrders keeps the orders in the process's memory: they are gone
// when it stops.
type memoryOrders struct {
	mu     sync.Mutex
	orders []Order
}

func (m *memoryOrders) create(_ context.Context, sku string, qty int) (Order, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o := Order{ID: fmt.Sprintf("ord_%d", len(m.orders)+1), SKU: sku, Qty: qty}
	m.orders = append(m.orders, o)
	return o, nil
}

func (m *memoryOrders) list(context.Context) ([]Order, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.orders), nil
}

func (m *memoryOrders) get(_ context.Context, id string) (Order, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.orders {
		if o.ID == id {
			return o, true, nil
		}
	}
	return Order{}, false, nil
}

// ordersSchema creates the orders table; %s is its quoted name.
const ordersSchema = `CREATE TABLE IF NOT EXISTS %s (
    id         bigserial   PRIMARY KEY,
    sku        text        NOT NULL,
    qty        integer     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)`

// postgresOrders keeps the orders in a PostgreSQL table, shared by every
// process serving the API with the same database. An order created under
// a transactional idempotency store (-store postgres-tx) is written in the
// request's transaction, idempg.Tx(ctx), and commits with the request's
// idempotency record or not at all; otherwise it commits on its own, before
// the record is completed.
type postgresOrders struct {
	pool  *pgxpool.Pool
	table string // quoted
}

// openPostgresOrders creates the table unless it exists.
func openPostgresOrders(ctx context.Context, pool *pgxpool.Pool, table string) (*postgresOrders, error) {
	name := pgx.Identifier(strings.Split(table, "."))
	b := &postgresOrders{pool: pool, table: name.Sanitize()}
	if _, err := pool.Exec(ctx, fmt.Sprintf(ordersSchema, b.table)); err != nil {
		return nil, fmt.Errorf("create the orders table %s: %w", table, err)
	}
	return b, nil
}

func (p *postgresOrders) create(ctx context.Context, sku string, qty int) (Order, error) {
	insert := "INSERT INTO " + p.table + " (sku, qty) VALUES ($1, $2) RETURNING id"
	var id int64
	var err error
	if tx := idempg.Tx(ctx); tx != nil {
		err = tx.QueryRow(ctx, insert, sku, qty).Scan(&id)
	} else {
		err = p.pool.QueryRow(ctx, insert, sku, qty).Scan(&id)
	}
	if err != nil {
		return Order{}, err
	}
	return Order{ID: "ord_" + strconv.FormatInt(id, 10), SKU: sku, Qty: qty}, nil
}

func (p *postgresOrders) list(ctx context.Context) ([]Order, error) {
	rows, err := p.pool.Query(ctx, "SELECT id, sku, qty FROM "+p.table+" ORDER BY id")
	if err != nil {
		return nil, err
	}
	var out []Order
	for rows.Next() {
		var id int64
		var o Order
		if err := rows.Scan(&id, &o.SKU, &o.Qty); err != nil {
			rows.Close()
			return nil, err
		}
		o.ID = "ord_" + strconv.FormatInt(id, 10)
		out = append(out, o)
	}
	return out, rows.Err()
}

func (p *postgresOrders) get(ctx context.Context, id string) (Order, bool, error) {
	n, err := strconv.ParseInt(strings.TrimPrefix(id, "ord_"), 10, 64)
	if err != nil || !strings.HasPrefix(id, "ord_") {
		return Order{}, false, nil
	}
	o := Order{ID: id}
	err = p.pool.QueryRow(ctx, "SELECT sku, qty FROM "+p.table+" WHERE id = $1", n).Scan(&o.SKU, &o.Qty)
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, false, nil
	}
	return o, err == nil, err
}
