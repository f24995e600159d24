package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
	"github.com/jackc/pgx/v5"
)

// executedLog is a slog handler that reports every "executed" decision of
// the engine: the moment a request won its key's lease.
type executedLog struct{ executed chan struct{} }

func (h executedLog) Enabled(context.Context, slog.Level) bool { return true }
func (h executedLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h executedLog) WithGroup(string) slog.Handler            { return h }
func (h executedLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "outcome" && a.Value.String() == "executed" {
			select {
			case h.executed <- struct{}{}:
			default:
			}
		}
		return true
	})
	return nil
}

// start serves the API with the given adapter on a random loopback port
// until the test ends, and returns its base URL and the executed signal.
func start(t *testing.T, adapter string, latency time.Duration) (string, <-chan struct{}) {
	t.Helper()
	return startWith(t, options{adapter: adapter, store: "memory", latency: latency})
}

// startWith serves the API with options o, as start does.
func startWith(t *testing.T, o options) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := executedLog{executed: make(chan struct{}, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, ln, o, slog.New(log))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), log.executed
}

type answer struct {
	status int
	header http.Header
	body   string
}

// send sends a request, with an Idempotency-Key unless key is empty.
func send(method, url, key, body string) (answer, error) {
	return sendWith(http.DefaultClient, method, url, key, body)
}

// sendWith sends a request with client, as send does.
func sendWith(client *http.Client, method, url, key, body string) (answer, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}, err
}

func post(t *testing.T, url, key, body string) answer {
	t.Helper()
	a, err := send(http.MethodPost, url, key, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func get(t *testing.T, url string) answer {
	t.Helper()
	a, err := send(http.MethodGet, url, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (a answer) want(t *testing.T, what string, status int, replayed bool) {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, a.status, status, a.body)
	}
	if got := a.header.Get("Idempotent-Replayed") == "true"; got != replayed {
		t.Fatalf("%s: Idempotent-Replayed %q, want replayed=%v", what, a.header.Get("Idempotent-Replayed"), replayed)
	}
}

func orders(t *testing.T, base string) []Order {
	t.Helper()
	a := get(t, base+"/orders")
	a.want(t, "GET /orders", http.StatusOK, false)
	var list []Order
	if err := json.Unmarshal([]byte(a.body), &list); err != nil {
		t.Fatalf("GET /orders: %v in %s", err, a.body)
	}
	return list
}

func decode[T any](t *testing.T, a answer) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(a.body), &v); err != nil {
		t.Fatalf("decode %s: %v", a.body, err)
	}
	return v
}

func TestOrdersAPI(t *testing.T) {
	for _, adapter := range slices.Sorted(maps.Keys(adapters)) {
		t.Run(adapter, func(t *testing.T) {
			t.Parallel()
			t.Run("orders", func(t *testing.T) { testOrders(t, adapter) })
			t.Run("in flight", func(t *testing.T) { testInFlight(t, adapter) })
			t.Run("payments and webhooks", func(t *testing.T) { testPaymentsAndWebhooks(t, adapter) })
		})
	}
}

// TestTransactionalOrders runs the orders test with -store postgres-tx:
// every adapter hands the handler the request's transaction, so the order
// and its record commit together, and replays the same order.
func TestTransactionalOrders(t *testing.T) {
	url := os.Getenv("IDEM_POSTGRES_URL")
	if url == "" {
		t.Skipf("set IDEM_POSTGRES_URL to run it (for instance %s)", defaultPostgresURL)
	}
	for _, adapter := range slices.Sorted(maps.Keys(adapters)) {
		t.Run(adapter, func(t *testing.T) {
			t.Parallel()
			table, orders := randomName("idem_test_"), randomName("idem_test_orders_")
			t.Cleanup(func() {
				dropPostgresTable(t, url, table, -1)
				dropPostgresTable(t, url, orders, -1)
			})
			testOrdersOn(t, options{adapter: adapter, store: "postgres-tx", postgresURL: smallPool(url), table: table, ordersTable: orders})
			// Each order was written by the transaction that completed its
			// record: the rows carry the same transaction id.
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var all, together int
			err = conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+orders+"), (SELECT count(*) FROM "+orders+" o JOIN "+table+" r ON o.xmin = r.xmin AND r.state = 2)").Scan(&all, &together)
			if err != nil {
				t.Fatal(err)
			}
			if all == 0 || together != all {
				t.Fatalf("%d of %d orders committed in the transaction of a completed record", together, all)
			}
		})
	}
}

func testOrders(t *testing.T, adapter string) {
	testOrdersOn(t, options{adapter: adapter, store: "memory"})
}

func testOrdersOn(t *testing.T, opts options) {
	base, _ := startWith(t, opts)
	const body = `{"sku":"TSHIRT-M","qty":2}`

	first := post(t, base+"/orders", "order-1", body)
	first.want(t, "first POST", http.StatusCreated, false)
	o := decode[Order](t, first)
	if o.SKU != "TSHIRT-M" || o.Qty != 2 || o.ID == "" {
		t.Fatalf("created %+v from %s", o, body)
	}
	if loc := first.header.Get("Location"); loc != "/orders/"+o.ID {
		t.Fatalf("Location %q, want /orders/%s", loc, o.ID)
	}

	retry := post(t, base+"/orders", "order-1", body)
	retry.want(t, "retry", http.StatusCreated, true)
	if retry.body != first.body || retry.header.Get("Location") != first.header.Get("Location") {
		t.Fatalf("retry answered %q (Location %q), want the original %q (Location %q)",
			retry.body, retry.header.Get("Location"), first.body, first.header.Get("Location"))
	}
	if list := orders(t, base); len(list) != 1 || list[0] != o {
		t.Fatalf("GET /orders = %+v, want only %+v", list, o)
	}
	if one := get(t, base+"/orders/"+o.ID); one.status != http.StatusOK || decode[Order](t, one) != o {
		t.Fatalf("GET /orders/%s: %d %s", o.ID, one.status, one.body)
	}

	other := post(t, base+"/orders", "order-1", `{"sku":"TSHIRT-M","qty":3}`)
	other.want(t, "same key, other body", http.StatusUnprocessableEntity, false)
	if ct := other.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("422 Content-Type %q", ct)
	}

	missing := post(t, base+"/orders", "", body)
	missing.want(t, "no key", http.StatusBadRequest, false)

	bad := post(t, base+"/orders", "order-2", `{"sku":"MUG",`)
	bad.want(t, "malformed body", http.StatusBadRequest, false)
	fixed := post(t, base+"/orders", "order-2", `{"sku":"MUG","qty":1}`)
	fixed.want(t, "corrected retry", http.StatusCreated, false)
	if o2 := decode[Order](t, fixed); o2.SKU != "MUG" || o2.ID == o.ID {
		t.Fatalf("corrected retry created %+v", o2)
	}
	if list := orders(t, base); len(list) != 2 {
		t.Fatalf("GET /orders = %+v, want two orders", list)
	}
}

func testInFlight(t *testing.T, adapter string) {
	const latency = 2 * time.Second
	base, executed := start(t, adapter, latency)
	const body = `{"sku":"LAMP","qty":1}`

	type result struct {
		answer
		err error
	}
	firstDone := make(chan result, 1)
	go func() {
		a, err := send(http.MethodPost, base+"/orders", "slow-1", body)
		firstDone <- result{a, err}
	}()
	select {
	case <-executed:
	case <-time.After(10 * time.Second):
		t.Fatal("the first request never started")
	}

	dup := post(t, base+"/orders", "slow-1", body)
	dup.want(t, "duplicate while the first runs", http.StatusConflict, false)
	if dup.header.Get("Retry-After") == "" {
		t.Fatal("409 without Retry-After")
	}

	res := <-firstDone
	if res.err != nil {
		t.Fatal(res.err)
	}
	first := res.answer
	first.want(t, "first request", http.StatusCreated, false)
	after := post(t, base+"/orders", "slow-1", body)
	after.want(t, "retry after the first finished", http.StatusCreated, true)
	if after.body != first.body {
		t.Fatalf("replay %q, want %q", after.body, first.body)
	}
	if list := orders(t, base); len(list) != 1 {
		t.Fatalf("GET /orders = %+v, want one order", list)
	}
}

func testPaymentsAndWebhooks(t *testing.T, adapter string) {
	base, _ := start(t, adapter, 0)
	const pay = `{"amount":1250,"currency":"EUR"}`

	a := decode[Payment](t, post(t, base+"/payments", "", pay))
	b := decode[Payment](t, post(t, base+"/payments", "", pay))
	if a.ID == "" || a.ID == b.ID {
		t.Fatalf("two payments without a key: %q and %q, want two different payments", a.ID, b.ID)
	}

	first := post(t, base+"/payments", "pay-1", pay)
	first.want(t, "payment with a key", http.StatusCreated, false)
	retry := post(t, base+"/payments", "pay-1", pay)
	retry.want(t, "payment retried with the key", http.StatusCreated, true)
	if decode[Payment](t, retry) != decode[Payment](t, first) {
		t.Fatalf("retry %s, want %s", retry.body, first.body)
	}
	if c := decode[Payment](t, post(t, base+"/payments", "", pay)); c.ID == decode[Payment](t, first).ID {
		t.Fatalf("a payment without a key reused %s", c.ID)
	}

	type delivery struct{ Delivery int64 }
	w1 := post(t, base+"/webhooks", "hook-1", `{"event":"shipped"}`)
	w1.want(t, "webhook", http.StatusAccepted, false)
	w2 := post(t, base+"/webhooks", "hook-1", `{"event":"shipped"}`)
	w2.want(t, "webhook again, same key", http.StatusAccepted, false)
	w3 := post(t, base+"/webhooks", "", `{"event":"other"}`)
	w3.want(t, "webhook without a key", http.StatusAccepted, false)
	if n1, n2, n3 := decode[delivery](t, w1).Delivery, decode[delivery](t, w2).Delivery, decode[delivery](t, w3).Delivery; n1 != 1 || n2 != 2 || n3 != 3 {
		t.Fatalf("webhook deliveries %d, %d, %d; want 1, 2, 3 (it runs every time)", n1, n2, n3)
	}
}

// run refuses unknown names and a store it cannot open, before it serves,
// and closes the listener it was given.
func TestRunRefusesBadSettings(t *testing.T) {
	for _, c := range []struct {
		name string
		o    options
		want string
	}{
		{"unknown adapter", options{adapter: "gorilla", store: "memory"}, `unknown -adapter "gorilla"`},
		{"unknown store", options{adapter: "nethttp", store: "etcd"}, `unknown -store "etcd"`},
		{"redis URL", options{adapter: "nethttp", store: "redis", redisURL: "http://127.0.0.1:6379"}, "open redis store"},
		{"postgres table", options{adapter: "nethttp", store: "postgres", postgresURL: defaultPostgresURL, table: "Orders-Idem"}, "open postgres store"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			err = run(context.Background(), ln, c.o, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("run: %v, want an error with %q", err, c.want)
			}
			if conn, err := net.Dial("tcp", ln.Addr().String()); err == nil {
				conn.Close()
				t.Fatalf("the listener on %s still accepts connections", ln.Addr())
			}
		})
	}
}

// TestClientsHaveTheirOwnKeys (B32): two clients sending the same key and
// body, told apart by X-Api-Key, each get an order of their own, and
// neither sees the other's response; a retry by the same client is
// replayed.
func TestClientsHaveTheirOwnKeys(t *testing.T) {
	for _, adapter := range slices.Sorted(maps.Keys(adapters)) {
		t.Run(adapter, func(t *testing.T) {
			t.Parallel()
			base, _ := start(t, adapter, 0)
			as := func(client string) answer {
				req, _ := http.NewRequest(http.MethodPost, base+"/orders", strings.NewReader(`{"sku":"MUG","qty":1}`))
				req.Header.Set("Idempotency-Key", "order-1")
				req.Header.Set("X-Api-Key", client)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return answer{resp.StatusCode, resp.Header, string(b)}
			}
			a := as("client-a")
			a.want(t, "client A", http.StatusCreated, false)
			b := as("client-b")
			b.want(t, "client B, same key and body", http.StatusCreated, false)
			if decode[Order](t, a).ID == decode[Order](t, b).ID {
				t.Fatalf("clients A and B share order %s", decode[Order](t, a).ID)
			}
			as("client-a").want(t, "client A's retry", http.StatusCreated, true)
			if n := len(orders(t, base)); n != 2 {
				t.Fatalf("%d orders, want 2", n)
			}
		})
	}
}

// TestBodyLimitIsAProblem (B21, B25): a body over the limit is answered
// with idem's 413 problem document by every adapter, fiber included,
// whose own BodyLimit refuses it before any handler runs.
func TestBodyLimitIsAProblem(t *testing.T) {
	for _, adapter := range slices.Sorted(maps.Keys(adapters)) {
		t.Run(adapter, func(t *testing.T) {
			base, _ := start(t, adapter, 0)
			a := declareBody(t, base, "/orders", "big", maxBody+1)
			if a.status != http.StatusRequestEntityTooLarge || a.header.Get("Content-Type") != idem.ProblemContentType ||
				!strings.Contains(a.body, idem.ProblemRequestTooLarge) {
				t.Fatalf("body over the limit: %d %q %.200s; want idem's 413 problem", a.status, a.header.Get("Content-Type"), a.body)
			}
		})
	}
}

// declareBody sends a POST whose header declares a body of size bytes and
// sends none of it, then reads the answer. Every adapter refuses a body
// declared over the limit before reading it. Sending the body as well would
// race: fasthttp closes the connection with the body unread, the kernel
// answers the client's further bytes with a reset, and the reset can
// discard the 413 before the client reads it.
func declareBody(t *testing.T, base, path, key string, size int) answer {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nIdempotency-Key: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, u.Host, key, size)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a body declared over the limit: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, string(b)}
}
