package idemredis_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
	idemredis "github.com/idemkit/idem/storage/redis"
	"github.com/redis/go-redis/v9"
)

// privateRedis starts a redis-server of the test's own on a Unix socket
// (no port to collide with) with the extra arguments, and returns a client
// of it. It skips the test when redis-server is not on the PATH, unless
// IDEM_REDIS_URL is set, as in CI, where it fails.
func privateRedis(t *testing.T, args ...string) *redis.Client {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if redisURLSet() {
			t.Fatal("redis-server is not on the PATH; the maxmemory-policy tests start servers of their own")
		}
		t.Skip("redis-server is not on the PATH")
	}
	sock := filepath.Join(t.TempDir(), "redis.sock")
	cmd := exec.Command(bin, append([]string{"--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	client := redis.NewClient(&redis.Options{Network: "unix", Addr: sock})
	t.Cleanup(func() { _ = client.Close() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("redis-server %v exited:\n%s", args, out.String())
		default:
		}
		if client.Ping(context.Background()).Err() == nil {
			return client
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server %v does not answer:\n%s", args, out.String())
		}
	}
}

// TestB30EvictingPolicyIsReported: a server that may evict idem's keys
// under memory pressure (allkeys-* or volatile-*: idem's keys have a time
// to live) fails New unless AllowEviction is set, which logs a warning
// instead; a server that refuses CONFIG is accepted with a warning (B30).
func TestB30EvictingPolicyIsReported(t *testing.T) {
	for _, policy := range []string{"allkeys-lru", "volatile-lru", "volatile-ttl", "allkeys-random"} {
		t.Run(policy, func(t *testing.T) {
			client := privateRedis(t, "--maxmemory-policy", policy)
			_, err := idemredis.New(t.Context(), client, idemredis.Options{})
			if !errors.Is(err, idemredis.ErrEvictingPolicy) || !strings.Contains(err.Error(), policy) {
				t.Fatalf("New on a server with maxmemory-policy %s: %v, want ErrEvictingPolicy naming it", policy, err)
			}
			var logs bytes.Buffer
			s, err := idemredis.New(t.Context(), client, idemredis.Options{AllowEviction: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil || s == nil {
				t.Fatalf("New with AllowEviction: %v", err)
			}
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), policy) {
				t.Fatalf("AllowEviction logged no warning naming %s:\n%s", policy, logs.String())
			}
		})
	}
	t.Run("noeviction", func(t *testing.T) {
		client := privateRedis(t, "--maxmemory-policy", "noeviction")
		var logs bytes.Buffer
		if _, err := idemredis.New(t.Context(), client, idemredis.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
			t.Fatalf("New on a noeviction server: %v", err)
		}
		if logs.Len() != 0 {
			t.Fatalf("New on a noeviction server logged:\n%s", logs.String())
		}
	})
	t.Run("config_refused", func(t *testing.T) {
		client := privateRedis(t, "--rename-command", "CONFIG", "")
		var logs bytes.Buffer
		if _, err := idemredis.New(t.Context(), client, idemredis.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
			t.Fatalf("New on a server that refuses CONFIG: %v", err)
		}
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "cannot read") {
			t.Fatalf("no warning that the policy could not be read:\n%s", logs.String())
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		client := redis.NewClient(&redis.Options{Network: "unix", Addr: filepath.Join(t.TempDir(), "none.sock"), MaxRetries: -1})
		t.Cleanup(func() { _ = client.Close() })
		if _, err := idemredis.New(t.Context(), client, idemredis.Options{}); err == nil {
			t.Fatal("New succeeded without a server")
		}
	})
}

func redisURLSet() bool { return os.Getenv("IDEM_REDIS_URL") != "" }

// TestB30FullServerIsStoreFull: a noeviction server at its maxmemory
// refuses new records, which Acquire reports as idem.ErrStoreFull, so that
// the engine answers 503 store-full and never runs the request untracked,
// even in fail-open mode (B30).
func TestB30FullServerIsStoreFull(t *testing.T) {
	client := privateRedis(t, "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
	ctx := t.Context()
	// Large values first, then small ones, until even a small write is
	// refused: the server is then past its maxmemory.
	for _, size := range []int{64 << 10, 100} {
		filler := strings.Repeat("x", size)
		for i := 0; ; i++ {
			if err := client.Set(ctx, "filler-"+strconv.Itoa(size)+"-"+strconv.Itoa(i), filler, 0).Err(); err != nil {
				if !strings.HasPrefix(err.Error(), "OOM ") {
					t.Fatalf("filling the server: %v", err)
				}
				break
			}
			if i > 100_000 {
				t.Fatal("the server never filled up")
			}
		}
	}
	store := mustNew(t, client, idemredis.Options{})
	_, err := store.Acquire(ctx, "k", idem.Token{1}, nil, time.Minute)
	if !errors.Is(err, idem.ErrStoreFull) {
		t.Fatalf("Acquire on a full server: %v, want idem.ErrStoreFull", err)
	}
	engine, err := idem.New(idem.Config{Store: store, FailOpen: true})
	if err != nil {
		t.Fatal(err)
	}
	d := engine.Begin(&idem.Request{Method: "POST", Path: "/orders", Header: http.Header{"Idempotency-Key": {"k"}}})
	if d.Action != idem.Respond || d.Problem == nil || d.Problem.Type != idem.ProblemStoreFull {
		t.Fatalf("full server, fail-open: %v %+v; want a 503 store-full problem", d.Action, d.Problem)
	}
}
