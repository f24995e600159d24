package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// DefaultTimeout bounds each case unless WithTimeout says otherwise.
const DefaultTimeout = 20 * time.Second

// Option configures Run.
type Option func(*runConfig)

type runConfig struct {
	newStore func(t testing.TB) idem.Store
	timeout  time.Duration
}

// WithStore makes every case keep its records in a store made by newStore
// instead of a fresh idem.MemoryStore, so a store can be checked together
// with an adapter. newStore is called at least once per case, and more
// often in cases that need a second store (B27); each call should return
// an empty store or one whose keys cannot collide with earlier calls' (the
// cases draw random keys, so a shared database is fine). Close what it
// opens with t.Cleanup. The function a store passes to storetest.Run and
// storetest.RunBenchmarks (a storetest.NewStore) serves here as it is.
func WithStore(newStore func(t testing.TB) idem.Store) Option {
	return func(c *runConfig) { c.newStore = newStore }
}

// WithTimeout bounds each case; DefaultTimeout when not set.
func WithTimeout(d time.Duration) Option {
	return func(c *runConfig) { c.timeout = d }
}

// Run runs every case of the suite against h, each as a subtest named after
// the rule it checks, such as "B10/key_reused_with_other_body". Each case
// builds its own engine and App, serves it with h.Serve and speaks HTTP to
// it. A case that needs a capability h lacks is skipped with h's reason.
func Run(t *testing.T, h Harness, opts ...Option) {
	cfg := runConfig{timeout: DefaultTimeout, newStore: newMemoryStore}
	for _, o := range opts {
		o(&cfg)
	}
	lacks := h.Lacks()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, need := range c.needs {
				if why, ok := lacks[need]; ok {
					t.Skipf("the harness lacks %s: %s", need, why)
				}
			}
			defer func() {
				if t.Failed() {
					t.Logf("%s: %s", c.name, c.explain)
				}
			}()
			f := newFixture(t, h, cfg)
			defer f.finish()
			c.run(f)
		})
	}
}

func newMemoryStore(t testing.TB) idem.Store {
	m := idem.NewMemoryStore(idem.MemoryOptions{})
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// testCase is one named case: the rule and what it checks, the
// capabilities it needs, and its body.
type testCase struct {
	name    string
	explain string
	needs   []Capability
	run     func(f *fixture)
}

// fixture is one case's world: its harness, a client, random keys and the
// gates to open when the case ends.
type fixture struct {
	t      *testing.T
	h      Harness
	cfg    runConfig
	ctx    context.Context
	client *http.Client
	base   string
	prefix string
	seq    atomic.Int64

	mu    sync.Mutex
	gates []*gate
}

func newFixture(t *testing.T, h Harness, cfg runConfig) *fixture {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	t.Cleanup(cancel)
	var b [8]byte
	_, _ = rand.Read(b[:])
	// Keep-alives off: net/http's client transparently resends a request
	// carrying an Idempotency-Key when a reused connection fails, which
	// would run handlers more often than the case asks.
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &fixture{t: t, h: h, cfg: cfg, ctx: ctx, prefix: hex.EncodeToString(b[:]),
		client: &http.Client{Transport: tr, Timeout: cfg.timeout}}
}

// finish opens every gate, so no handler is left blocked when the server
// stops.
func (f *fixture) finish() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, g := range f.gates {
		g.open()
	}
}

// store returns a fresh store for the case.
func (f *fixture) store() idem.Store { return f.cfg.newStore(f.t) }

// probe returns a fresh store wrapped in a probeStore.
func (f *fixture) probe() *probeStore { return &probeStore{Store: f.store()} }

// engine returns an engine for cfg, on a fresh store unless cfg sets one.
func (f *fixture) engine(cfg idem.Config) *idem.Engine {
	f.t.Helper()
	if cfg.Store == nil {
		cfg.Store = f.store()
	}
	return NewEngine(f.t, cfg)
}

// NewEngine returns an engine for cfg, closed when t's cleanup functions
// run, and fails t when cfg is invalid. Adapter tests use it too.
func NewEngine(t testing.TB, cfg idem.Config) *idem.Engine {
	t.Helper()
	e, err := idem.New(cfg)
	if err != nil {
		t.Fatalf("idem.New: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// serve serves routes with e through the harness.
func (f *fixture) serve(e *idem.Engine, routes ...*Route) {
	f.t.Helper()
	f.base = f.h.Serve(f.t, App{Engine: e, Routes: routes})
}

// key returns a key no other case or run uses.
func (f *fixture) key() string {
	return fmt.Sprintf("k-%s-%d", f.prefix, f.seq.Add(1))
}

type gate struct {
	ch   chan struct{}
	once sync.Once
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// gate returns a gate for Handler.Gate, opened at the latest when the case
// ends.
func (f *fixture) gate() *gate {
	g := &gate{ch: make(chan struct{})}
	f.mu.Lock()
	f.gates = append(f.gates, g)
	f.mu.Unlock()
	return g
}

func route(method, path string, h *Handler) *Route {
	return &Route{Method: method, Path: path, Handler: h}
}

func post(path string, h *Handler) *Route { return route(http.MethodPost, path, h) }

func (r *Route) with(s idem.Route) *Route {
	r.Settings = s
	return r
}

// reply is what the client got.
type reply struct {
	status int
	header http.Header
	body   []byte
	err    error
}

// reqOpt changes a request before it is sent.
type reqOpt func(*http.Request)

// key sends k as the Idempotency-Key.
func key(k string) reqOpt { return header("Idempotency-Key", k) }

// header sets name to values as written, one field line per value.
func header(name string, values ...string) reqOpt {
	return func(r *http.Request) { r.Header[name] = values }
}

// chunked sends body with no Content-Length, in chunks.
func chunked(body []byte) reqOpt {
	return func(r *http.Request) {
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body)))
		r.ContentLength = -1
		r.GetBody = nil
	}
}

// send sends one request. It is safe to call from any goroutine: failures
// are returned in reply.err, not reported.
func (f *fixture) send(method, path string, body []byte, opts ...reqOpt) reply {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(f.ctx, method, f.base+path, rd)
	if err != nil {
		return reply{err: err}
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func (f *fixture) post(path string, body []byte, opts ...reqOpt) reply {
	return f.send(http.MethodPost, path, body, opts...)
}

// sendAsync sends a request on its own goroutine.
func (f *fixture) sendAsync(method, path string, body []byte, opts ...reqOpt) <-chan reply {
	ch := make(chan reply, 1)
	go func() { ch <- f.send(method, path, body, opts...) }()
	return ch
}

// receive waits for an asynchronous reply.
func (f *fixture) receive(ch <-chan reply, what string) reply {
	f.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-f.ctx.Done():
		f.t.Fatalf("timed out waiting for %s", what)
		return reply{}
	}
}

// wait waits until ch is closed.
func (f *fixture) wait(ch <-chan struct{}, what string) {
	f.t.Helper()
	select {
	case <-ch:
	case <-f.ctx.Done():
		f.t.Fatalf("timed out waiting until %s", what)
	}
}

// waitFor polls cond until it holds.
func (f *fixture) waitFor(cond func() bool, what string) {
	f.t.Helper()
	for !cond() {
		select {
		case <-time.After(5 * time.Millisecond):
		case <-f.ctx.Done():
			f.t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// sleep waits d, or fails the case when it times out first.
func (f *fixture) sleep(d time.Duration) {
	f.t.Helper()
	select {
	case <-time.After(d):
	case <-f.ctx.Done():
		f.t.Fatalf("timed out")
	}
}

// expect checks the status of r.
func (f *fixture) expect(r reply, status int, what string) {
	f.t.Helper()
	if r.err != nil {
		f.t.Fatalf("%s: request failed: %v", what, r.err)
	}
	if r.status != status {
		f.t.Fatalf("%s: status %d, want %d; body: %.300q", what, r.status, status, r.body)
	}
}

// expectBody checks the status and the exact body of r.
func (f *fixture) expectBody(r reply, status int, body []byte, what string) {
	f.t.Helper()
	f.expect(r, status, what)
	if !bytes.Equal(r.body, body) {
		f.t.Fatalf("%s: body %.200q (%d bytes), want %.200q (%d bytes)", what, r.body, len(r.body), body, len(body))
	}
}

// expectReplayed checks the Idempotent-Replayed header.
func (f *fixture) expectReplayed(r reply, want bool, what string) {
	f.t.Helper()
	got := r.header.Get(idem.ReplayedHeader)
	switch {
	case want && got != "true":
		f.t.Fatalf("%s: %s is %q, want \"true\" on a replay", what, idem.ReplayedHeader, got)
	case !want && got != "":
		f.t.Fatalf("%s: %s is %q on a response that is not a replay", what, idem.ReplayedHeader, got)
	}
}

// expectProblem checks that the engine answered r with problem typ (B25).
func (f *fixture) expectProblem(r reply, status int, typ string, what string) {
	f.t.Helper()
	f.expect(r, status, what)
	mt, _, err := mime.ParseMediaType(r.header.Get("Content-Type"))
	if err != nil || mt != idem.ProblemContentType {
		f.t.Fatalf("%s: Content-Type %q, want %s", what, r.header.Get("Content-Type"), idem.ProblemContentType)
	}
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		f.t.Fatalf("%s: problem body is not JSON: %v; body: %.300q", what, err, r.body)
	}
	if p.Type != typ || p.Status != status || p.Title == "" || p.Detail == "" {
		f.t.Fatalf("%s: problem %+v, want type %s, status %d, a title and a detail", what, p, typ, status)
	}
}

// expectRetryAfter checks that r carries a Retry-After header.
func (f *fixture) expectRetryAfter(r reply, what string) {
	f.t.Helper()
	if r.header.Get("Retry-After") == "" {
		f.t.Fatalf("%s: no Retry-After header", what)
	}
}

// expectCalls checks how often h ran.
func (f *fixture) expectCalls(h *Handler, n int64, what string) {
	f.t.Helper()
	if got := h.Calls(); got != n {
		f.t.Fatalf("%s: the handler ran %d times, want %d", what, got, n)
	}
}
