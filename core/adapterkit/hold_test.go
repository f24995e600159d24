package adapterkit_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
)

type txKey struct{}

// txStore is a fake transactional store: BeginRun puts a transaction in
// the handler's context; Complete "commits" it, or fails to.
type txStore struct {
	idem.Store
	log        *eventLog
	failCommit bool
}

func (s *txStore) BeginRun(ctx context.Context, key string, token idem.Token) (context.Context, error) {
	return context.WithValue(ctx, txKey{}, "tx"), nil
}

func (s *txStore) Complete(ctx context.Context, key string, token idem.Token, rec *idem.Record, retention time.Duration) error {
	if s.failCommit {
		s.log.add("rollback")
		_ = s.Store.Release(ctx, key, token)
		return errors.New("commit failed")
	}
	s.log.add("commit")
	return s.Store.Complete(ctx, key, token, rec, retention)
}

type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(ev string) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
}

func (l *eventLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.events, " ")
}

// loggedWriter logs when anything reaches the client.
type loggedWriter struct {
	*httptest.ResponseRecorder
	log *eventLog
}

func (w loggedWriter) WriteHeader(code int) {
	w.log.add("header")
	w.ResponseRecorder.WriteHeader(code)
}
func (w loggedWriter) Write(p []byte) (int, error) {
	w.log.add("write")
	return w.ResponseRecorder.Write(p)
}
func (w loggedWriter) Flush() { w.log.add("flush"); w.ResponseRecorder.Flush() }

func newTxStore(t *testing.T, log *eventLog) *txStore {
	m := idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1})
	t.Cleanup(func() { _ = m.Close() })
	return &txStore{Store: m, log: log}
}

// With a transactional store the handler runs with the transaction in its
// context, and nothing reaches the client before the commit: a flush is
// held too, and the held response is written whole after it (B35). A
// failed commit answers 503 not-committed instead, without the handler's
// header fields.
func TestHeldResponse(t *testing.T) {
	log := &eventLog{}
	store := newTxStore(t, log)
	e := newEngine(t, idem.Config{Store: store})
	var tx any
	h := mw(t, e, adapterkit.Settings[call]{})(func(w http.ResponseWriter, r *http.Request) error {
		tx = r.Context().Value(txKey{})
		w.Header().Set("Set-Cookie", "session=1")
		w.Header().Set("Location", "/orders/1")
		w.WriteHeader(201)
		_, _ = io.WriteString(w, "part one, ")
		_ = http.NewResponseController(w).Flush()
		_, _ = io.WriteString(w, "part two")
		log.add("handler done")
		return nil
	})
	send := func(key string) *http.Response {
		w := loggedWriter{httptest.NewRecorder(), log}
		w.Header().Set("X-Outer", "kept")
		r := httptest.NewRequest("POST", "/orders", nil)
		r.Header.Set(idem.DefaultHeaderName, key)
		_ = h(w, r)
		return w.Result()
	}

	got := send("k1")
	body, _ := io.ReadAll(got.Body)
	if tx != "tx" {
		t.Errorf("the handler's context carries %v, want the transaction", tx)
	}
	if log.String() != "handler done commit header write" {
		t.Errorf("events %q: want nothing sent before the commit, then the whole response", log)
	}
	if got.StatusCode != 201 || string(body) != "part one, part two" || got.Header.Get("Location") != "/orders/1" || got.Header.Get("X-Outer") != "kept" {
		t.Errorf("held response: %d %q %v", got.StatusCode, body, got.Header)
	}
	if got := send("k1"); got.StatusCode != 201 || got.Header.Get(idem.ReplayedHeader) != "true" {
		t.Errorf("retry: %d replayed %q, want the committed response replayed (a held flush streams nothing)", got.StatusCode, got.Header.Get(idem.ReplayedHeader))
	}

	store.failCommit = true
	log.events = nil
	got = send("k2")
	body, _ = io.ReadAll(got.Body)
	if got.StatusCode != 503 || !strings.Contains(string(body), idem.ProblemNotCommitted) || got.Header.Get("Set-Cookie") != "" || got.Header.Get("Location") != "" {
		t.Errorf("failed commit: %d %q %v; want the not-committed problem without the handler's fields", got.StatusCode, body, got.Header)
	}
	if log.String() != "handler done rollback header write" {
		t.Errorf("events %q: want nothing sent before the rollback", log)
	}
}

// bcall is a minimal Buffered framework: the handler leaves its response
// in memory, the kit reads it after the chain.
type bcall = *bresp

type bresp struct {
	req      *http.Request
	ctx      context.Context
	mark     *adapterkit.Mark[bcall]
	handler  func(b *bresp) error
	status   int
	header   http.Header
	body     []byte
	hijacked bool
}

type bfw struct{}

func (bfw) Request(b bcall, r *idem.Request) {
	*r = idem.Request{Method: b.req.Method, Path: b.req.URL.Path, Header: b.req.Header, Context: b.ctx}
}
func (bfw) RouteName(bcall) string               { return "" }
func (bfw) Mark(b bcall) *adapterkit.Mark[bcall] { return b.mark }
func (bfw) Hand(b bcall, h adapterkit.Handoff[bcall]) bcall {
	if h.Mark != nil {
		b.mark = h.Mark
	}
	if ctx, ok := h.HandlerContext(); ok {
		b.ctx = ctx
	}
	return b
}
func (bfw) Next(b bcall) error { return b.handler(b) }
func (bfw) Write(b bcall, resp *idem.Response) {
	for _, f := range resp.Header {
		b.header.Add(f.Name, f.Value)
	}
	b.status, b.body = resp.Status, resp.Body
}
func (bfw) Fail(b bcall, err error) error { b.status = 500; return nil }
func (bfw) Recorded(b bcall, max int) (idem.Recorded, bool) {
	return idem.Recorded{Status: b.status, Header: b.header, Body: b.body}, b.hijacked
}
func (bfw) Discard(b bcall) { b.status, b.header, b.body = 0, http.Header{}, nil }

// A Buffered framework's response is read after the chain; with a
// transactional store a failed commit replaces it with the problem.
func TestBufferedFramework(t *testing.T) {
	log := &eventLog{}
	store := newTxStore(t, log)
	e := newEngine(t, idem.Config{Store: store})
	l, err := adapterkit.NewLayer[bcall](e, bfw{}, adapterkit.Settings[bcall]{})
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	serve := func(key string, hijack bool) *bresp {
		r := httptest.NewRequest("POST", "/orders", nil)
		r.Header.Set(idem.DefaultHeaderName, key)
		b := &bresp{req: r, ctx: context.Background(), header: http.Header{}, handler: func(b *bresp) error {
			runs++
			if b.ctx.Value(txKey{}) != "tx" {
				t.Error("the handler's context lacks the transaction")
			}
			b.status, b.body, b.hijacked = 201, []byte("made"), hijack
			b.header.Set("Location", "/orders/1")
			return nil
		}}
		_ = l.Serve(b)
		return b
	}
	if b := serve("k1", false); b.status != 201 || string(b.body) != "made" {
		t.Fatalf("first: %d %q", b.status, b.body)
	}
	if b := serve("k1", false); b.status != 201 || b.header.Get(idem.ReplayedHeader) != "true" || runs != 1 {
		t.Fatalf("retry: %d replayed %q after %d runs", b.status, b.header.Get(idem.ReplayedHeader), runs)
	}
	serve("k2", true)
	serve("k2", true)
	if runs != 3 {
		t.Fatalf("%d runs, want 3: a hijack releases the key", runs)
	}
	store.failCommit = true
	if b := serve("k3", false); b.status != 503 || b.header.Get("Location") != "" || !strings.Contains(string(b.body), idem.ProblemNotCommitted) {
		t.Fatalf("failed commit: %d %v %q, want the not-committed problem in place of the response", b.status, b.header, b.body)
	}
}
