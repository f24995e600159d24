package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The crash tests back the guarantee matrix of the README (rule B35): for
// each store and each crash point, a server process of this command, built
// with -tags crashtest, kills itself with SIGKILL at the point while it
// serves a first request; the client's retry then goes to a second process
// sharing the store (a replica, or the service restarted), and the test
// counts the orders the key created in the orders table, which lives in
// PostgreSQL for every store so that it survives the crash.
//
// Each case is named by store and crash point, such as
// TestCrash/postgres-tx/after-write.

// crashLease is the servers' lease time: a key a crash left in flight
// blocks its retry this long. The first retry must reach the second server
// within it on a loaded machine.
const crashLease = 2500 * time.Millisecond

// crashWant is one cell of the matrix: what the retry gets and how many
// orders the key created in the end.
type crashWant struct {
	// waits: the retry gets 409 until the dead request's lease ends.
	waits bool
	// replays: the retry is answered with the dead request's recorded
	// response; otherwise it runs the handler.
	replays bool
	// orders the key created in the end: 2 is the second execution the
	// store cannot prevent.
	orders int
}

var (
	crashPoints = []string{beforeHandler, beforeWrite, afterWrite, afterComplete}
	// crashAdapters spreads the cases over the adapters, by crash point.
	crashAdapters = map[string]string{beforeHandler: "nethttp", beforeWrite: "chi", afterWrite: "echo", afterComplete: "fiber"}
	// crashMatrix is the README's guarantee matrix.
	crashMatrix = map[string]map[string]crashWant{
		// The memory store dies with the process: the other process never
		// saw the key, and runs it again once the first wrote its order.
		"memory": {
			beforeHandler: {orders: 1}, beforeWrite: {orders: 1},
			afterWrite: {orders: 2}, afterComplete: {orders: 2},
		},
		// A shared store keeps the in-flight record until the lease ends,
		// and the completed one; between the order's own commit and the
		// completion is the window that runs the handler twice.
		"redis": {
			beforeHandler: {waits: true, orders: 1}, beforeWrite: {waits: true, orders: 1},
			afterWrite: {waits: true, orders: 2}, afterComplete: {replays: true, orders: 1},
		},
		"postgres": {
			beforeHandler: {waits: true, orders: 1}, beforeWrite: {waits: true, orders: 1},
			afterWrite: {waits: true, orders: 2}, afterComplete: {replays: true, orders: 1},
		},
		// The order commits with the record: the crash after the write
		// rolls both back.
		"postgres-tx": {
			beforeHandler: {waits: true, orders: 1}, beforeWrite: {waits: true, orders: 1},
			afterWrite: {waits: true, orders: 1}, afterComplete: {replays: true, orders: 1},
		},
	}
)

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command and starts processes; skipped with -short")
	}
	pgURL := os.Getenv("IDEM_POSTGRES_URL")
	if pgURL == "" {
		t.Skipf("the crash tests keep their orders in PostgreSQL: set IDEM_POSTGRES_URL (for instance %s)", defaultPostgresURL)
	}
	build := sync.OnceValues(func() (string, error) { return buildCommand(t.TempDir(), "crashtest") })
	for _, store := range []string{"memory", "redis", "postgres", "postgres-tx"} {
		for _, point := range crashPoints {
			t.Run(store+"/"+point, func(t *testing.T) {
				t.Parallel()
				storeFlags := crashStoreFlags(t, store, pgURL)
				bin, err := build()
				if err != nil {
					t.Fatal(err)
				}
				crashAndRetry(t, bin, store, point, pgURL, storeFlags)
			})
		}
	}
}

// crashStoreFlags returns the store's flags for an isolated run (its own
// key prefix or table, removed at the end), skipping Redis without
// IDEM_REDIS_URL.
func crashStoreFlags(t *testing.T, store, pgURL string) []string {
	switch store {
	case "memory":
		return []string{"-store", "memory"}
	case "redis":
		url := os.Getenv("IDEM_REDIS_URL")
		if url == "" {
			t.Skipf("set IDEM_REDIS_URL to run the Redis column (for instance %s)", defaultRedisURL)
		}
		return setupRedis(t, url, -1)
	default: // postgres, postgres-tx
		return setupPostgres(t, pgURL, store, -1)
	}
}

func crashAndRetry(t *testing.T, bin, store, point, pgURL string, storeFlags []string) {
	want := crashMatrix[store][point]
	ordersTable := randomName("idem_test_orders_")
	t.Cleanup(func() { dropPostgresTable(t, pgURL, ordersTable, -1) })
	flags := append([]string{"-adapter", crashAdapters[point], "-lease", crashLease.String(),
		"-orders", "postgres", "-orders-table", ordersTable}, storeFlags...)
	flags = append(flags, "-postgres-url", smallPool(pgURL)) // the last -postgres-url wins

	// The survivor is up before the crash, so that the retry reaches it
	// at once, well inside the dead request's lease.
	survivor := startProcess(t, bin, flags...)
	doomed := startDoomed(t, bin, point, flags)

	key := randomName("crash-")
	sku := randomName("sku-") // names the key's orders in the table
	body := fmt.Sprintf(`{"sku":%q,"qty":1}`, sku)
	client := &http.Client{Timeout: 10 * time.Second}
	if a, err := sendWith(client, http.MethodPost, doomed.base+"/orders", key, body); err == nil {
		t.Fatalf("the doomed server answered %d %s: it did not crash at %s", a.status, a.body, point)
	}
	doomed.waitKilled(t)

	// Retry at once, then until the answer is not 409; it must come once
	// the dead lease ends at the latest. What the crash left is counted
	// while the retry waits (for the cells that do not wait, the retry
	// has run by then).
	deadline := time.Now().Add(crashLease + 5*time.Second)
	waited := false
	before := -1
	var got answer
	for {
		a, err := sendWith(client, http.MethodPost, survivor.base+"/orders", key, body)
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		if a.status != http.StatusConflict {
			got = a
			break
		}
		if !waited {
			waited = true
			before = countOrders(t, pgURL, ordersTable, sku)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the retry still gets 409 %v after the crash; the lease is %v", time.Since(deadline.Add(-crashLease-5*time.Second)), crashLease)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got.want(t, "the retry", http.StatusCreated, want.replays)
	if waited != want.waits {
		t.Errorf("the retry waited for the lease (409 first): %v, want %v", waited, want.waits)
	}
	after := countOrders(t, pgURL, ordersTable, sku)
	// Another retry replays, and creates nothing.
	again, err := sendWith(client, http.MethodPost, survivor.base+"/orders", key, body)
	if err != nil {
		t.Fatal(err)
	}
	again.want(t, "the second retry", http.StatusCreated, true)
	if again.body != got.body {
		t.Errorf("the second retry replayed %s, want %s", again.body, got.body)
	}
	if n := countOrders(t, pgURL, ordersTable, sku); n != after {
		t.Errorf("the second retry changed the orders from %d to %d", after, n)
	}
	if after != want.orders {
		t.Errorf("%s, crash %s: %d orders for the key after the retry, want %d", store, point, after, want.orders)
	}
	if waited {
		t.Logf("%s, crash %s: %d orders while the retry waited for the lease, %d after it ran", store, point, before, after)
	} else {
		t.Logf("%s, crash %s: %d orders after the retry, which did not wait (replayed: %v)", store, point, after, want.replays)
	}
}

// doomed is a server process set to kill itself at a crash point.
type doomed struct {
	base   string
	cmd    *exec.Cmd
	exited chan error
	log    *process // its stderr, for failures
}

// startDoomed starts the test build with ORDERS_CRASH_AT=point and waits
// until it serves.
func startDoomed(t *testing.T, bin, point string, flags []string) *doomed {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, flags...)...)
	cmd.Env = append(os.Environ(), "ORDERS_CRASH_AT="+point)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &doomed{cmd: cmd, exited: make(chan error, 1), log: &process{name: "doomed " + point}}
	addr := make(chan string, 1)
	go func() {
		d.log.readLog(stderr, addr)
		d.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("the doomed server's log:\n%s", d.log.output())
		}
	})
	select {
	case a := <-addr:
		d.base = "http://" + a
	case err := <-d.exited:
		t.Fatalf("the doomed server exited before serving: %v\n%s", err, d.log.output())
	case <-time.After(30 * time.Second):
		t.Fatalf("the doomed server did not start serving within 30s\n%s", d.log.output())
	}
	return d
}

// waitKilled waits until the process has died of SIGKILL.
func (d *doomed) waitKilled(t *testing.T) {
	t.Helper()
	select {
	case err := <-d.exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("the doomed server exited with %v, want killed by SIGKILL", err)
		}
		if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("the doomed server exited with %v, want killed by SIGKILL\n%s", err, d.log.output())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the doomed server still runs 10s after the request\n%s", d.log.output())
	}
}

// countOrders counts the orders of sku in the orders table.
func countOrders(t *testing.T, url, table, sku string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()+" WHERE sku = $1", sku).Scan(&n); err != nil {
		t.Fatalf("count the orders: %v", err)
	}
	return n
}

// smallPool returns the PostgreSQL URL url with pgxpool's pool_max_conns
// set to 2: the tests start many servers at once, each with a pool for its
// records and one for its orders, and the database's max_connections is
// shared with every other test running. A request holds one connection at
// a time.
func smallPool(url string) string {
	if strings.Contains(url, "?") {
		return url + "&pool_max_conns=2"
	}
	return url + "?pool_max_conns=2"
}
