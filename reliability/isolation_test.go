package reliability

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// dumpedStore is a store whose every stored byte the test can read back:
// dump returns each Redis key name and value, or each PostgreSQL row's
// columns; nil for the memory store, which keeps nothing outside the
// process.
type dumpedStore struct {
	name string
	open func(t *testing.T) (idem.Store, func(t *testing.T) [][]byte)
}

var dumpedStores = []dumpedStore{
	{"memory", func(t *testing.T) (idem.Store, func(*testing.T) [][]byte) {
		return newMemory(t, idem.MemoryOptions{}), func(*testing.T) [][]byte { return nil }
	}},
	{"redis", func(t *testing.T) (idem.Store, func(*testing.T) [][]byte) {
		f := newRedis(t)
		return f.store, func(t *testing.T) [][]byte {
			var out [][]byte
			for _, k := range redisKeys(t, f.client, f.prefix) {
				v, err := f.client.Get(context.Background(), k).Bytes()
				if err != nil {
					t.Errorf("GET %s: %v", k, err)
				}
				out = append(out, []byte(k), v)
			}
			return out
		}
	}},
	{"postgres", func(t *testing.T) (idem.Store, func(*testing.T) [][]byte) {
		f := newPostgres(t)
		return f.store, func(t *testing.T) [][]byte {
			rows, err := f.pool.Query(context.Background(),
				"SELECT key, token, fingerprint, header, body FROM "+f.table)
			if err != nil {
				t.Fatalf("select: %v", err)
			}
			defer rows.Close()
			var out [][]byte
			for rows.Next() {
				var key, token, fp, header, body []byte
				if err := rows.Scan(&key, &token, &fp, &header, &body); err != nil {
					t.Fatalf("scan: %v", err)
				}
				out = append(out, key, token, fp, header, body)
			}
			return out
		}
	}},
}

// TestIsolation (B8, B20, B28): for every adapter and store, a key used by
// one scope never replays to, blocks, or conflicts with another scope;
// Set-Cookie and other headers off the allowlist are never replayed; and
// neither the raw key, nor the scope's credentials, nor a request body
// reaches the store's key names and values or the log output.
func TestIsolation(t *testing.T) {
	for _, ds := range dumpedStores {
		for _, ad := range adapters {
			t.Run(ad.name+"/"+ds.name, func(t *testing.T) {
				t.Parallel()
				store, dump := ds.open(t)
				isolation(t, ad, store, dump)
			})
		}
	}
}

func isolation(t *testing.T, ad adapter, store idem.Store, dump func(*testing.T) [][]byte) {
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	engine := newEngine(t, idem.Config{Store: store, Logger: logger})
	ex := newExecutions()
	gate, entered := make(chan struct{}), make(chan struct{})
	inner := orderHandler(ex, 0)
	handler := func(ctx context.Context, h http.Header, body []byte) reply {
		if bytes.HasPrefix(body, []byte("hold-")) {
			close(entered)
			<-gate
		}
		return inner(ctx, h, body)
	}
	base := ad.serve(t, engine, idem.Route{}, handler)
	client := newClient(t, 4)

	mark := randomHex(6)
	key := "RAWKEY-" + mark
	tenantA, tenantB := "Bearer TENANT-A-"+mark, "Bearer TENANT-B-"+mark
	held := []byte("hold-REQBODY-" + mark)
	forbidden := []string{key, "TENANT-A-" + mark, "TENANT-B-" + mark, "REQBODY-" + mark}

	// Tenant A's request holds the key; tenant B's request with the same
	// key and body runs at once: no 409, no replay of A's.
	first := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		a, err := post(ctx, client, base, key, held, "Authorization", tenantA)
		if err != nil {
			t.Errorf("tenant A: %v", err)
		}
		first <- a
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("tenant A's handler did not start")
	}
	// Tenant A's own retry with another body is a mismatch (B10).
	if a := mustPost(t, client, base, key, []byte("REQBODY-"+mark), "Authorization", tenantA); a.Status != http.StatusUnprocessableEntity {
		t.Errorf("tenant A, same key, other body: %v, want 422", a)
	}
	b := mustPost(t, client, base, key, []byte("REQBODY-"+mark), "Authorization", tenantB)
	close(gate)
	ownA := <-first
	if b.Status != http.StatusCreated || b.replayed() {
		t.Fatalf("tenant B with tenant A's key in flight: %v, want its own first execution at once", b)
	}
	if ownA.Status != http.StatusCreated || ownA.replayed() || bytes.Equal(ownA.Body, b.Body) {
		t.Fatalf("tenant A got %v, want its own response", ownA)
	}
	for tenant, want := range map[string]answer{tenantA: ownA, tenantB: b} {
		body := held
		if tenant == tenantB {
			body = []byte("REQBODY-" + mark)
		}
		r := mustPost(t, client, base, key, body, "Authorization", tenant)
		if !r.replayed() || !bytes.Equal(r.Body, want.Body) {
			t.Errorf("retry of %s: %v, want a replay of %v", tenant, r, want)
		}
		if r.Header.Get("Location") != want.Header.Get("Location") {
			t.Errorf("retry of %s: Location %q, want %q", tenant, r.Header.Get("Location"), want.Header.Get("Location"))
		}
		if c := r.Header.Values("Set-Cookie"); len(c) != 0 || r.Header.Get("X-Internal") != "" {
			t.Errorf("retry of %s replays headers off the allowlist: Set-Cookie %q, X-Internal %q", tenant, c, r.Header.Get("X-Internal"))
		}
	}
	// A third scope with the same key and another body is a new request,
	// not a mismatch.
	if c := mustPost(t, client, base, key, []byte("other"), "Authorization", "Bearer C"); c.Status != http.StatusCreated || c.replayed() {
		t.Errorf("tenant C: %v, want its own first execution", c)
	}
	if n := ex.total.Load(); n != 3 {
		t.Errorf("the handler ran %d times, want 3 (one per scope)", n)
	}

	for i, v := range dump(t) {
		for _, f := range forbidden {
			if bytes.Contains(v, []byte(f)) {
				t.Errorf("the store holds %q (item %d: %q)", f, i, v)
			}
		}
	}
	out := logs.String()
	if out == "" {
		t.Fatal("nothing was logged")
	}
	for _, f := range append(forbidden, string(ownA.Body), string(b.Body)) {
		if bytes.Contains([]byte(out), []byte(f)) {
			t.Errorf("the log holds %q:\n%s", f, out)
		}
	}
}
