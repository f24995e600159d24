package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// namespaceLog keeps the namespace a -fresh run logs.
type namespaceLog struct {
	mu *sync.Mutex
	ns *string
}

func (h namespaceLog) Enabled(context.Context, slog.Level) bool { return true }
func (h namespaceLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h namespaceLog) WithGroup(string) slog.Handler            { return h }
func (h namespaceLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "key_prefix" || a.Key == "table" {
			h.mu.Lock()
			*h.ns = a.Value.String()
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

// serveOnce starts the server with o, sends the README's first order,
// shuts the server down, and returns the answer and the namespace a -fresh
// run logged.
func serveOnce(t *testing.T, o options) (answer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ns string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, ln, o, slog.New(namespaceLog{&mu, &ns})) }()
	a, err := send(http.MethodPost, "http://"+ln.Addr().String()+"/orders", "order-1001", `{"sku":"MUG","qty":2}`)
	cancel()
	if runErr := <-done; runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return a, ns
}

// TestRunTwice runs the README's first order in two runs of the server
// on one shared store. On the same namespace the second run replays the
// first run's record (what the README warns about); with -fresh each run
// starts from no records, answers 201 afresh, and leaves nothing behind.
func TestRunTwice(t *testing.T) {
	for _, c := range []struct {
		store, env string
		// left counts what a namespace holds (-1: the table is gone).
		left func(t *testing.T, url, ns string) int
		drop func(t *testing.T, url, ns string)
	}{
		{"redis", "IDEM_REDIS_URL", redisKeys, func(t *testing.T, url, ns string) { redisDelete(t, url, ns) }},
		{"postgres", "IDEM_POSTGRES_URL", postgresRows, postgresDrop},
	} {
		t.Run(c.store, func(t *testing.T) {
			url := os.Getenv(c.env)
			if url == "" {
				t.Skipf("set %s to run the %s part", c.env, c.store)
			}
			o := options{adapter: "nethttp", store: c.store, redisURL: url, postgresURL: url,
				keyPrefix: randomName("idem-test-") + ":", table: randomName("idem_test_")}
			ns := map[string]string{"redis": o.keyPrefix, "postgres": o.table}[c.store]
			t.Cleanup(func() { c.drop(t, url, ns) })

			first, _ := serveOnce(t, o)
			second, _ := serveOnce(t, o)
			if first.status != 201 || first.header.Get("Idempotent-Replayed") != "" ||
				second.status != 201 || second.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("two runs on one namespace: %d %q then %d %q; want 201 and then its replay",
					first.status, first.header.Get("Idempotent-Replayed"), second.status, second.header.Get("Idempotent-Replayed"))
			}

			o.fresh = true
			for run := range 2 {
				a, fresh := serveOnce(t, o)
				if a.status != 201 || a.header.Get("Idempotent-Replayed") != "" || strings.TrimSpace(a.body) != `{"id":"ord_1","sku":"MUG","qty":2}` {
					t.Errorf("-fresh run %d: %d %q %s; want 201, not replayed, ord_1", run+1, a.status, a.header.Get("Idempotent-Replayed"), a.body)
				}
				if fresh == "" || fresh == ns {
					t.Fatalf("-fresh run %d logged the namespace %q", run+1, fresh)
				}
				if n := c.left(t, url, fresh); n > 0 {
					t.Errorf("-fresh run %d left %d records in %s", run+1, n, fresh)
					c.drop(t, url, fresh)
				}
			}
		})
	}
}

func redisClient(t *testing.T, url string) *redis.Client {
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return redis.NewClient(opts)
}

func redisKeys(t *testing.T, url, prefix string) int {
	client := redisClient(t, url)
	defer client.Close()
	keys, err := client.Keys(context.Background(), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

func redisDelete(t *testing.T, url, prefix string) {
	client := redisClient(t, url)
	defer client.Close()
	ctx := context.Background()
	keys, err := client.Keys(ctx, prefix+"*").Result()
	if err == nil && len(keys) > 0 {
		err = client.Del(ctx, keys...).Err()
	}
	if err != nil {
		t.Errorf("delete %s*: %v", prefix, err)
	}
}

func postgresRows(t *testing.T, url, table string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		return -1
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		n = 1 // the table itself is left
	}
	return n
}

func postgresDrop(t *testing.T, url, table string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("connect to drop %s: %v", table, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize()); err != nil {
		t.Errorf("drop %s: %v", table, err)
	}
}
