package idemredis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	idem "github.com/idemkit/idem/core"
	"github.com/redis/go-redis/v9"
)

// DefaultKeyPrefix is put before every storage key when Options.KeyPrefix
// is empty.
const DefaultKeyPrefix = "idem:"

// Options configures a Store. The zero value means the defaults.
type Options struct {
	// KeyPrefix is put before every storage key, so that idem's keys can
	// be told apart from an application's own keys in a shared Redis, and
	// several applications or environments can share one server.
	// Default: "idem:".
	KeyPrefix string

	// AllowEviction builds the Store on a server whose maxmemory-policy
	// may evict idem's keys (allkeys-* or volatile-*: idem's keys have a
	// time to live, so volatile-* policies evict them too). Under memory
	// pressure such a server may drop a completed record before its
	// retention ends, and a retry of its request then runs a second time
	// (B30). With AllowEviction, New logs a warning instead of failing.
	//
	// Default: false, New fails with ErrEvictingPolicy.
	AllowEviction bool

	// Logger receives the warnings of New: an evicting policy allowed
	// with AllowEviction, or a server that does not let New read its
	// policy (managed services often refuse CONFIG).
	//
	// Default: slog.Default().
	Logger *slog.Logger
}

// ErrEvictingPolicy is returned, wrapped, by New when the server's
// maxmemory-policy may evict idem's keys (B30). Run Redis for idem with
// maxmemory-policy noeviction (a dedicated instance, or one whose other
// users accept it), or set Options.AllowEviction.
var ErrEvictingPolicy = errors.New("idemredis: the server's maxmemory-policy may evict idempotency records")

// Store is an idem.Store backed by Redis. It is safe for concurrent use
// and is meant to be shared by every server of an API. It does not own the
// client: close the client when the Store is no longer used.
type Store struct {
	client redis.UniversalClient
	prefix string
}

// New returns a Store that keeps its records through client, which may be
// a *redis.Client, a *redis.ClusterClient, a Sentinel failover client or
// any other redis.UniversalClient. It panics when client is nil.
//
// New asks the server (each master of a cluster) for its
// maxmemory-policy, in one round trip bounded by ctx. A policy that may
// evict idem's keys fails New with ErrEvictingPolicy, unless
// Options.AllowEviction is set (B30): an evicted record means a second
// execution, which is what idem exists to prevent, and a failure at start
// is found by whoever deploys, while a log line may not be. A server that
// refuses CONFIG GET (as managed services often do) is logged at WARN and
// accepted; New fails when the server cannot be reached.
func New(ctx context.Context, client redis.UniversalClient, opts Options) (*Store, error) {
	if client == nil {
		panic("idemredis: New with a nil client")
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultKeyPrefix
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := checkPolicy(ctx, client, &opts); err != nil {
		return nil, err
	}
	return &Store{client: client, prefix: opts.KeyPrefix}, nil
}

// evicts reports whether a maxmemory-policy may evict keys with a time
// to live, as every key of idem has.
func evicts(policy string) bool {
	return strings.HasPrefix(policy, "allkeys-") || strings.HasPrefix(policy, "volatile-")
}

// checkPolicy reads the maxmemory-policy of every master behind client.
func checkPolicy(ctx context.Context, client redis.UniversalClient, opts *Options) error {
	check := func(ctx context.Context, c redis.Cmdable, addr string) error {
		res, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
		if err != nil {
			var rerr redis.Error
			if errors.As(err, &rerr) {
				// The server answered, but not to CONFIG (renamed,
				// disabled or not permitted): it cannot be checked.
				opts.Logger.LogAttrs(ctx, slog.LevelWarn, "idemredis: cannot read the server's maxmemory-policy; make sure it is noeviction, or completed records may be evicted and their requests run twice",
					slog.String("server", addr), slog.String("error", err.Error()))
				return nil
			}
			return fmt.Errorf("idemredis: reading maxmemory-policy of %s: %w", addr, err)
		}
		policy := res["maxmemory-policy"]
		if !evicts(policy) {
			return nil
		}
		if opts.AllowEviction {
			opts.Logger.LogAttrs(ctx, slog.LevelWarn, "idemredis: the server may evict idempotency records under memory pressure, and their requests would then run twice (Options.AllowEviction is set)",
				slog.String("server", addr), slog.String("maxmemory-policy", policy))
			return nil
		}
		return fmt.Errorf("%w: %s has maxmemory-policy %s; set it to noeviction (or use a Redis of idem's own), or set Options.AllowEviction", ErrEvictingPolicy, addr, policy)
	}
	if cluster, ok := client.(*redis.ClusterClient); ok {
		return cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return check(ctx, c, c.Options().Addr)
		})
	}
	addr := "the server"
	if c, ok := client.(*redis.Client); ok {
		addr = c.Options().Addr
	}
	return check(ctx, client, addr)
}

var _ idem.Store = (*Store)(nil)

// The scripts. KEYS[1] is the only key each one touches; see encoding.go
// for the layout of a record.
var (
	// ARGV: encoded in-flight record, lease in ms. Returns 1 when the
	// caller took the lease, or {record, pttl} for a live record.
	acquireScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  return {v, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

	// ARGV: token, encoded response, retention in ms. The completed record
	// is the in-flight head (token, fingerprint) with state 2, then the
	// response.
	completeScript = fencedScript(`
local a, b, c, d = string.byte(v, 20, 23)
local n = ((a * 256 + b) * 256 + c) * 256 + d
redis.call('SET', KEYS[1], '\1\2' .. string.sub(v, 3, 23 + n) .. ARGV[2], 'PX', ARGV[3])`)

	// ARGV: token.
	releaseScript = fencedScript(`redis.call('DEL', KEYS[1])`)

	// ARGV: token, lease in ms.
	renewScript = fencedScript(`redis.call('PEXPIRE', KEYS[1], ARGV[2])`)
)

// fencedScript returns a script that runs write only when ARGV[1] is the
// token of the key's in-flight record, returning 1, and otherwise returns 0
// and changes nothing. The record is in v. A record is held by a token when
// it is a version-1 in-flight record ("\1\1" at its start) whose bytes 4
// to 19 are the token.
func fencedScript(write string) *redis.Script {
	return redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v or #v < 23 or string.sub(v, 1, 2) ~= '\1\1' or string.sub(v, 4, 19) ~= ARGV[1] then
  return 0
end
` + write + `
return 1`)
}

// millis converts d to whole milliseconds for PX, rounding up, at least 1.
func millis(d time.Duration) int64 {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return max(int64(ms), 1)
}

// run runs script on key with args, after checking that ctx is not done.
func (s *Store) run(ctx context.Context, op string, script *redis.Script, key string, args ...any) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("idemredis: %s: %w", op, err)
	}
	v, err := script.Run(ctx, s.client, []string{s.prefix + key}, args...).Result()
	if err != nil {
		if strings.HasPrefix(err.Error(), "OOM ") {
			// A noeviction server at its maxmemory refuses writes: the
			// store is full, not down (B30).
			return nil, fmt.Errorf("idemredis: %s: %w: %w", op, idem.ErrStoreFull, err)
		}
		return nil, fmt.Errorf("idemredis: %s: %w", op, err)
	}
	return v, nil
}

// Acquire implements idem.Store: one script leases key for token when it
// holds no record, or returns its live record. The record's ExpiresAt is
// computed from the key's remaining time to live on the server.
func (s *Store) Acquire(ctx context.Context, key string, token idem.Token, fingerprint []byte, lease time.Duration) (*idem.Record, error) {
	v, err := s.run(ctx, "acquire", acquireScript, key, encodeInFlight(token, fingerprint), millis(lease))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	reply, ok := v.([]any)
	if !ok {
		if n, ok := v.(int64); ok && n == 1 {
			return nil, nil
		}
		return nil, fmt.Errorf("idemredis: acquire: unexpected reply %T", v)
	}
	if len(reply) != 2 {
		return nil, fmt.Errorf("idemredis: acquire: unexpected reply of %d values", len(reply))
	}
	raw, ok1 := reply[0].(string)
	pttl, ok2 := reply[1].(int64)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("idemredis: acquire: unexpected reply (%T, %T)", reply[0], reply[1])
	}
	rec, err := decode(raw)
	if err != nil {
		return nil, err
	}
	if pttl >= 0 {
		rec.ExpiresAt = now.Add(time.Duration(pttl) * time.Millisecond)
	}
	return rec, nil
}

// fenced interprets the reply of a script that checks the token.
func fenced(v any) error {
	if n, ok := v.(int64); ok && n == 1 {
		return nil
	}
	return idem.ErrLeaseLost
}

// Complete implements idem.Store: one script replaces the in-flight record
// that token holds with the completed record, expiring after retention. The
// completed record keeps the fingerprint given to Acquire. A record
// completed as not replayable keeps its status only.
func (s *Store) Complete(ctx context.Context, key string, token idem.Token, rec *idem.Record, retention time.Duration) error {
	if rec == nil {
		return errors.New("idemredis: complete: nil record")
	}
	v, err := s.run(ctx, "complete", completeScript, key, token[:], encodeResponse(rec), millis(retention))
	if err != nil {
		return err
	}
	return fenced(v)
}

// Release implements idem.Store: one script deletes the in-flight record
// that token holds.
func (s *Store) Release(ctx context.Context, key string, token idem.Token) error {
	v, err := s.run(ctx, "release", releaseScript, key, token[:])
	if err != nil {
		return err
	}
	return fenced(v)
}

// Renew implements idem.Store: one script sets the time to live of the
// in-flight record that token holds to lease.
func (s *Store) Renew(ctx context.Context, key string, token idem.Token, lease time.Duration) error {
	v, err := s.run(ctx, "renew", renewScript, key, token[:], millis(lease))
	if err != nil {
		return err
	}
	return fenced(v)
}
