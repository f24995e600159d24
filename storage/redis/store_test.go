package idemredis_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idem/conformance"
	"github.com/idemkit/idem/conformance/storetest"
	idem "github.com/idemkit/idem/core"
	idemredis "github.com/idemkit/idem/storage/redis"
	"github.com/redis/go-redis/v9"
)

// runPrefix keeps this test run's keys apart from any other run sharing
// the server.
var runPrefix = "idemredis-test:" + randomHex(6) + ":"

var storeSeq atomic.Uint64

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func TestMain(m *testing.M) {
	conformance.AnnounceSkips("the Redis store tests", conformance.RedisURL)
	os.Exit(m.Run())
}

// redisURL returns IDEM_REDIS_URL, or skips the test when it is unset.
func redisURL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv("IDEM_REDIS_URL")
	if url == "" {
		tb.Skip("IDEM_REDIS_URL is not set; set it to a Redis server to run the Redis store tests, e.g. IDEM_REDIS_URL=redis://127.0.0.1:6379/0")
	}
	return url
}

// newClient connects to the Redis at IDEM_REDIS_URL, or skips the test
// when it is unset. The client is closed when the test ends.
func newClient(tb testing.TB) *redis.Client {
	tb.Helper()
	url := redisURL(tb)
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("IDEM_REDIS_URL: %v", err)
	}
	client := redis.NewClient(opts)
	tb.Cleanup(func() { _ = client.Close() })
	if err := client.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("Redis at IDEM_REDIS_URL (%s) does not answer: %v", url, err)
	}
	return client
}

// newPrefix returns a key prefix of its own for one store, and deletes
// every key under it when the test ends.
func newPrefix(tb testing.TB, client *redis.Client) string {
	prefix := fmt.Sprintf("%s%d:", runPrefix, storeSeq.Add(1))
	tb.Cleanup(func() { deleteKeys(tb, client, prefix) })
	return prefix
}

func deleteKeys(tb testing.TB, client *redis.Client, prefix string) {
	ctx := context.Background()
	iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	flush := func() {
		if len(batch) > 0 {
			if err := client.Unlink(ctx, batch...).Err(); err != nil {
				tb.Errorf("cleaning up %s*: %v", prefix, err)
			}
			batch = batch[:0]
		}
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			flush()
		}
	}
	flush()
	if err := iter.Err(); err != nil {
		tb.Errorf("cleaning up %s*: %v", prefix, err)
	}
}

func newStore(tb testing.TB) *idemredis.Store {
	client := newClient(tb)
	return mustNew(tb, client, idemredis.Options{KeyPrefix: newPrefix(tb, client)})
}

// suiteStore is the constructor the store suite and its benchmarks share.
var suiteStore storetest.NewStore = func(tb testing.TB) idem.Store { return newStore(tb) }

func TestConformance(t *testing.T) {
	redisURL(t)
	storetest.Run(t, suiteStore)
}

func BenchmarkStore(b *testing.B) {
	redisURL(b)
	storetest.RunBenchmarks(b, suiteStore)
}

// TestKeys checks what reaches Redis: the storage key behind the prefix,
// "idem:" by default, with the server's expiry set.
func TestKeys(t *testing.T) {
	client := newClient(t)
	ctx := t.Context()
	key := "storage-key-" + randomHex(8)
	t.Cleanup(func() { client.Del(context.Background(), idemredis.DefaultKeyPrefix+key) })
	s := mustNew(t, client, idemredis.Options{})
	if rec, err := s.Acquire(ctx, key, idem.Token{1}, []byte("fp"), time.Minute); err != nil || rec != nil {
		t.Fatalf("Acquire = (%v, %v), want the lease", rec, err)
	}
	ttl, err := client.PTTL(ctx, "idem:"+key).Result()
	if err != nil || ttl <= 50*time.Second || ttl > time.Minute {
		t.Errorf("PTTL of idem:%s = (%v, %v), want the one-minute lease", key, ttl, err)
	}
	if n, err := client.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Errorf("the key exists without its prefix: (%d, %v)", n, err)
	}
}

// TestUnknownVersion stores a record as a future release might and checks
// that Acquire names the problem and the writes leave it alone.
func TestUnknownVersion(t *testing.T) {
	client := newClient(t)
	prefix := newPrefix(t, client)
	s := mustNew(t, client, idemredis.Options{KeyPrefix: prefix})
	ctx := t.Context()
	future := "\x02\x01\x00" + strings.Repeat("\x07", 16) + "\x00\x00\x00\x00"
	if err := client.Set(ctx, prefix+"k", future, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Acquire(ctx, "k", idem.Token{7}, nil, time.Minute)
	if !errors.Is(err, idemredis.ErrUnknownVersion) || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("Acquire on a version-2 record = %v, want ErrUnknownVersion naming version 2", err)
	}
	var tok idem.Token
	copy(tok[:], strings.Repeat("\x07", 16))
	if err := s.Complete(ctx, "k", tok, &idem.Record{Status: 200}, time.Minute); !errors.Is(err, idem.ErrLeaseLost) {
		t.Errorf("Complete on a version-2 record = %v, want ErrLeaseLost", err)
	}
	if got, _ := client.Get(ctx, prefix+"k").Result(); got != future {
		t.Errorf("the version-2 record changed to %q", got)
	}
}

// roundTrips counts the commands a client sends: each command, and each
// pipeline, is one round trip.
type roundTrips struct {
	mu   sync.Mutex
	cmds []string
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.add(cmd.Name())
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.add(fmt.Sprintf("pipeline of %d", len(cmds)))
		return next(ctx, cmds)
	}
}

func (r *roundTrips) add(name string) {
	r.mu.Lock()
	r.cmds = append(r.cmds, name)
	r.mu.Unlock()
}

// take returns the commands counted since the last call.
func (r *roundTrips) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmds := r.cmds
	r.cmds = nil
	return cmds
}

// TestRoundTrips drives the engine with the Redis store and counts what
// each request costs: a first request two round trips (acquire, complete),
// a replay one, a duplicate of an in-flight request one; and each store
// operation alone one.
func TestRoundTrips(t *testing.T) {
	client := newClient(t)
	s := mustNew(t, client, idemredis.Options{KeyPrefix: newPrefix(t, client)})
	engine, err := idem.New(idem.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	begin := func(key string) idem.Decision {
		return engine.Begin(&idem.Request{
			Method: http.MethodPost, Path: "/orders",
			Header:  http.Header{"Idempotency-Key": {key}},
			Body:    strings.NewReader(`{"item":"book"}`),
			Context: t.Context(),
		})
	}
	recorded := idem.Recorded{Status: http.StatusCreated, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"id":1}`)}

	// Warm up: the server learns the scripts (the first EVALSHA of each
	// falls back to EVAL once) and the client opens its connection.
	warm := begin("warm-up")
	if warm.Action != idem.Run {
		t.Fatalf("warm-up Begin = %v, want run", warm.Action)
	}
	if err := warm.Lease.Complete(recorded); err != nil {
		t.Fatal(err)
	}
	ctx, tok := t.Context(), idem.Token{9}
	if _, err := s.Acquire(ctx, "warm-up-2", tok, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Renew(ctx, "warm-up-2", tok, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "warm-up-2", tok); err != nil {
		t.Fatal(err)
	}
	counter := &roundTrips{}
	client.AddHook(counter)

	expect := func(what string, want int) {
		t.Helper()
		got := counter.take()
		if len(got) != want {
			t.Errorf("%s: %d round trips %v, want %d", what, len(got), got, want)
		}
		t.Logf("%s: %v", what, got)
	}

	first := begin("order-1")
	if first.Action != idem.Run {
		t.Fatalf("first Begin = %v, want run", first.Action)
	}
	if err := first.Lease.Complete(recorded); err != nil {
		t.Fatal(err)
	}
	expect("a first request (Begin, Lease.Complete)", 2)

	replay := begin("order-1")
	if !replay.Replayed || replay.Response.Status != http.StatusCreated || string(replay.Response.Body) != `{"id":1}` {
		t.Fatalf("second Begin = %+v, want a replay of the 201", replay)
	}
	expect("a replay", 1)

	running := begin("order-2")
	if running.Action != idem.Run {
		t.Fatalf("Begin = %v, want run", running.Action)
	}
	counter.take()
	dup := begin("order-2")
	if dup.Action != idem.Respond || dup.Response.Status != http.StatusConflict {
		t.Fatalf("duplicate Begin = %+v, want a 409", dup)
	}
	expect("a duplicate of an in-flight request", 1)
	if err := running.Lease.Release(errors.New("handler failed")); err != nil {
		t.Fatal(err)
	}
	expect("a release", 1)

	if _, err := s.Acquire(ctx, "k", tok, []byte("fp"), time.Minute); err != nil {
		t.Fatal(err)
	}
	expect("Store.Acquire", 1)
	if err := s.Renew(ctx, "k", tok, time.Minute); err != nil {
		t.Fatal(err)
	}
	expect("Store.Renew", 1)
	if err := s.Complete(ctx, "k", tok, &idem.Record{Status: 200}, time.Minute); err != nil {
		t.Fatal(err)
	}
	expect("Store.Complete", 1)
	if err := s.Release(ctx, "k", tok); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("Release after Complete = %v, want ErrLeaseLost", err)
	}
	expect("Store.Release", 1)
}

// mustNew builds a Store, failing the test when New fails.
func mustNew(tb testing.TB, client redis.UniversalClient, opts idemredis.Options) *idemredis.Store {
	tb.Helper()
	s, err := idemredis.New(context.Background(), client, opts)
	if err != nil {
		tb.Fatalf("idemredis.New: %v", err)
	}
	return s
}
