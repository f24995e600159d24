// Package fasthttpbench drives the benchmarks of idem's Fiber adapters
// (Fiber v2 and v3) in process, through fasthttp's request handler, and
// races each adapter against its Fiber major's own idempotency middleware
// (BenchmarkPeer). The adapters supply only the Fiber app; the requests,
// the keys and the checks are the same for both majors.
package fasthttpbench

import (
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// Client returns a conformance.BenchClient that serves requests with h on
// one fasthttp.RequestCtx, as fasthttp's server does on a connection,
// without a network (Fiber's app.Test would add a loopback round trip).
func Client(h fasthttp.RequestHandler) conformance.BenchClient {
	var req fasthttp.Request
	req.Header.SetMethod(http.MethodPost)
	req.SetRequestURI(conformance.BenchPath)
	req.Header.SetContentType("application/json")
	req.SetBody(conformance.BenchRequestBody)
	c := &client{h: h}
	c.fctx.Init(&req, nil, nil)
	return c
}

type client struct {
	h    fasthttp.RequestHandler
	fctx fasthttp.RequestCtx
}

func (c *client) Post(key string) (int, bool) {
	c.fctx.Request.Header.Set(idem.DefaultHeaderName, key)
	c.fctx.Response.Reset()
	c.fctx.ResetUserValues() // as fasthttp's server does between requests
	c.h(&c.fctx)
	return c.fctx.Response.StatusCode(), string(c.fctx.Response.Header.Peek(idem.ReplayedHeader)) == "true"
}

// Engine returns a new engine with cfg, closed when b ends. Without a
// Store in cfg it gets a memory store with room for a record per request
// of the run (conformance.BenchMemoryStore): a first request keeps one, and
// a full store refuses new keys rather than evict records (B30).
func Engine(b *testing.B, cfg idem.Config) *idem.Engine {
	if cfg.Store == nil {
		s := conformance.BenchMemoryStore(b.N)
		b.Cleanup(func() { _ = s.Close() })
		cfg.Store = s
	}
	e, err := idem.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	return e
}

// Peer is one idempotency middleware in the race of RunPeer.
type Peer struct {
	// Name is the benchmark's mw= name.
	Name string
	// App returns the benchmark application behind the middleware, whose
	// handler counts its executions in calls, as a constructor of
	// clients (see conformance.BenchApp).
	App func(b *testing.B, calls *atomic.Int64) func() conformance.BenchClient
	// Replayed: the middleware marks replays with Idempotent-Replayed.
	Replayed bool
}

// RunPeer races peers on the same requests, serially and in parallel: a
// first request with a new key, and a replay of one key. It checks that
// the handler ran once per new key, and once in all for the replays.
// Compare with benchstat -col /mw.
func RunPeer(b *testing.B, peers []Peer) {
	for _, mode := range []string{"serial", "parallel"} {
		parallel := mode == "parallel"
		for _, path := range []string{"first", "replay"} {
			for _, p := range peers {
				b.Run("mode="+mode+"/path="+path+"/mw="+p.Name, func(b *testing.B) {
					var calls atomic.Int64
					newClient := p.App(b, &calls)
					if path == "first" {
						keys := conformance.NewKeySet(b.N)
						conformance.WarmHeap(b.N * conformance.FirstRequestHeap)
						conformance.MeasureRequests(b, newClient, keys, http.StatusCreated, false, parallel)
						if got := calls.Load(); got != int64(b.N) {
							b.Fatalf("the handler ran %d times for %d new keys", got, b.N)
						}
						return
					}
					keys := conformance.RepeatKey(b.N)
					if status, _ := newClient().Post(keys.Key(0)); status != http.StatusCreated {
						b.Fatalf("the first request answered %d, want 201", status)
					}
					conformance.MeasureRequests(b, newClient, keys, http.StatusCreated, p.Replayed, parallel)
					if got := calls.Load(); got != 1 {
						b.Fatalf("the handler ran %d times for one key", got)
					}
				})
			}
		}
	}
}
