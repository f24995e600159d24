package idem

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// How long Retry-After tells a client to wait.
const (
	inFlightRetryAfter = time.Second
	storeRetryAfter    = 5 * time.Second
)

// Engine decides, for each request, whether to run its handler, replay a
// recorded response or answer with a problem. It is safe for concurrent
// use; adapters share one Engine across all routes.
type Engine struct {
	cfg      Config
	store    Store
	ownStore *MemoryStore
	tokens   *tokenSource
	observer Observer
	// storeObserver is observer when it also times store calls.
	storeObserver StoreObserver
	logger        *slog.Logger
	stored        func(int) bool
	storedSet     [600]bool
	// rendered holds the default rendering of every problem whose content
	// is fixed by the configuration, by type; nil with a custom renderer.
	rendered map[string]*Response
	// renewals schedules the first renewal of every lease (B16).
	renewals [renewalShards]renewals
	// defaultKey and defaultFP report that Config.EncodeKey and
	// Config.Fingerprint are the defaults, which the engine computes into
	// the Lease's own arrays instead of allocating.
	defaultKey, defaultFP bool
	// bodies recycles the buffers request bodies are read into.
	bodies sync.Pool
	// unscoped holds the names of the routes reported for a tracked
	// request with an empty scope (B32); replaced, never modified, under
	// unscopedMu.
	unscoped   atomic.Pointer[map[string]bool]
	unscopedMu sync.Mutex
	// leases recycles the Lease that Begin prepares for a keyed request
	// and does not hand out (a replay, a conflict), when nothing can hold
	// on to its storage key or fingerprint (see recycle).
	leases sync.Pool
}

// renderFixedProblems renders once the problems that read the same on every
// request (all but an invalid key, which says what is wrong with it).
func renderFixedProblems(cfg *Config) map[string]*Response {
	fixed := []*Problem{
		problemKeyMissing(cfg.HeaderName), problemKeyReused(),
		problemInFlight(cfg.InFlightStatus, inFlightRetryAfter), problemNotReplayable(),
		problemTooLarge(cfg.MaxRequestBody), problemBodyUnreadable(),
		problemStoreUnavailable(storeRetryAfter), problemRequestCanceled(storeRetryAfter),
		problemStoreFull(storeRetryAfter), problemScopeQuota(storeRetryAfter),
		problemNotCommitted(storeRetryAfter),
	}
	rendered := make(map[string]*Response, len(fixed))
	for _, p := range fixed {
		rendered[p.Type] = RenderProblem(p)
	}
	return rendered
}

// New returns an Engine for cfg. The zero Config means every documented
// default; a contradictory Config is reported as an error.
func New(cfg Config) (*Engine, error) {
	defaultRender := cfg.RenderProblem == nil
	defaultKey, defaultFP := cfg.EncodeKey == nil, cfg.Fingerprint == nil
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, store: cfg.Store, tokens: newTokenSource(), observer: cfg.Observer, logger: cfg.Logger,
		defaultKey: defaultKey, defaultFP: defaultFP}
	e.storeObserver, _ = cfg.Observer.(StoreObserver)
	for i := range e.renewals {
		e.renewals[i].after, e.renewals[i].clock = cfg.LeaseTime/2, cfg.Clock
	}
	if defaultRender {
		e.rendered = renderFixedProblems(&e.cfg)
	}
	if e.store == nil {
		e.ownStore = NewMemoryStore(MemoryOptions{Clock: cfg.Clock})
		e.store = e.ownStore
	}
	switch {
	case cfg.ShouldStore != nil:
		e.stored = cfg.ShouldStore
	case cfg.StoredStatuses != nil:
		for _, s := range cfg.StoredStatuses {
			if s < len(e.storedSet) {
				e.storedSet[s] = true
			}
		}
		e.stored = func(s int) bool { return s >= 0 && s < len(e.storedSet) && e.storedSet[s] }
	default:
		e.stored = func(s int) bool { return s >= 200 && s <= 299 }
	}
	return e, nil
}

// Close stops the memory store the engine created when Config.Store was
// nil. It does not close a store the caller passed in.
func (e *Engine) Close() error {
	if e.ownStore != nil {
		return e.ownStore.Close()
	}
	return nil
}

// Config returns the engine's configuration with every default filled in.
func (e *Engine) Config() Config { return e.cfg }

// Store returns the store used by routes that do not set their own.
func (e *Engine) Store() Store { return e.store }

// RenderProblem renders p with the configured renderer.
func (e *Engine) RenderProblem(p *Problem) *Response { return e.cfg.RenderProblem(p) }

// Action tells an adapter what to do with a request.
type Action uint8

const (
	// Pass: run the handler untracked (B1, B3, B6 optional, B22 fail-open,
	// B26 manual with a finding).
	Pass Action = iota + 1
	// Respond: write Decision.Response; the handler does not run.
	Respond
	// Run: run the handler once under Decision.Lease and report how it
	// ended with Lease.Complete or Lease.Release.
	Run
)

// String returns "pass", "respond" or "run".
func (a Action) String() string {
	switch a {
	case Pass:
		return "pass"
	case Respond:
		return "respond"
	case Run:
		return "run"
	}
	return "invalid"
}

// Decision is the engine's answer to Begin.
type Decision struct {
	Action Action
	// Response is the response to write when Action is Respond: a replay or
	// a rendered problem.
	Response *Response
	// Problem is set when Response renders a problem, for adapters that let
	// the application render problems its own way (B25).
	Problem *Problem
	// Replayed reports that Response replays a recorded response.
	Replayed bool
	// Lease is set when Action is Run.
	Lease *Lease
	// Finding is set on a Manual route when the handler runs in place of an
	// answer of the engine (B26); see WithFinding.
	Finding *Finding
	// BodyRead reports that the engine consumed Request.Body; the handler
	// must then read Body instead, which holds exactly the bytes read (B21).
	BodyRead bool
	Body     []byte

	tookPart bool
}

// TookPart reports whether the request took part in idempotency: false only
// for a Pass of a request the engine ignored (a safe method, an Exempt
// route, an Optional route without a key). When idem layers are stacked,
// an adapter lets an inner layer decide a request the outer one ignored.
func (d Decision) TookPart() bool { return d.Action != Pass || d.tookPart }

// Begin decides what to do with r. It reads the key, and the body when the
// request takes part, and looks up or leases the key in the store.
func (e *Engine) Begin(r *Request) (dec Decision) {
	ctx := r.context()
	ev := Event{Route: r.Route.Name, Method: r.Method}
	if e.isSafe(r.Method) {
		return e.pass(ctx, ev, Decision{})
	}
	route := e.resolve(r.Route)
	policy := route.Policy
	if policy == Exempt {
		return e.pass(ctx, ev, Decision{})
	}

	var values []string
	if r.Header != nil {
		values = r.Header.Values(e.cfg.HeaderName)
	}
	if len(values) == 0 {
		if policy == Optional {
			return e.pass(ctx, ev, Decision{})
		}
		ev.Outcome = Missing
		return e.problem(ctx, ev, problemKeyMissing(e.cfg.HeaderName))
	}
	key, err := e.parseKey(values)
	if err != nil {
		ev.Outcome = Invalid
		return e.problem(ctx, ev, problemKeyInvalid(e.cfg.HeaderName, err.Error()))
	}

	d := Decision{BodyRead: r.Body != nil && r.BodyBytes == nil}
	body := r.BodyBytes
	switch {
	case body != nil:
		if int64(len(body)) > e.cfg.MaxRequestBody {
			ev.Outcome = TooLarge
			return e.problem(ctx, ev, problemTooLarge(e.cfg.MaxRequestBody))
		}
	case r.Body != nil:
		// The body is read into a recycled buffer; it goes back to the
		// pool when Begin answers itself (a replay, a problem), since
		// then only the engine has read it.
		buf, _ := e.bodies.Get().(*[]byte)
		var into, read []byte
		if buf != nil {
			into = *buf
		}
		defer func() { e.putBody(buf, read, dec.Action == Respond) }()
		read, err := readBody(r.Body, r.ContentLength, e.cfg.MaxRequestBody, into)
		switch {
		case errors.Is(err, errTooLarge):
			ev.Outcome = TooLarge
			return e.problem(ctx, ev, problemTooLarge(e.cfg.MaxRequestBody))
		case err != nil && ctx.Err() != nil:
			return e.clientGone(ctx, ev, err)
		case err != nil:
			ev.Outcome = Invalid
			ev.Err = err
			return e.problem(ctx, ev, problemBodyUnreadable())
		}
		d.Body = read
		body = read
	}

	// The lease is prepared before the store is asked: the default
	// storage key and fingerprint are written into its arrays, so a first
	// request allocates nothing else for them.
	l := e.prepareLease()
	scope := e.cfg.Scope(r)
	if scope == "" {
		e.reportUnscoped(ctx, ev)
	}
	storageKey, fp := e.keyAndFingerprint(l, r, scope, key, body)
	ev.KeyID, ev.Op = keyID(storageKey), OpAcquire
	// The store sees a hash of the scope, never the scope (B30).
	l.sctx = scopeCtx{Context: ctx, hash: maphash.String(scopeSeed, scope)}
	store := route.Store
	token := e.tokens.token()
	defer e.recycle(l, store)

	// A request whose context is done never reaches the store: the client
	// is gone (or a server deadline passed) and nobody waits for the
	// answer (B29).
	if err := ctx.Err(); err != nil {
		return e.clientGone(ctx, ev, err)
	}
	var deadline time.Time
	for {
		// The lease ends no earlier than a lease time after the Acquire
		// call starts: renewals are bounded by that end (B34).
		began := e.cfg.Clock.Now()
		start := e.storeStart()
		rec, found, err := e.acquire(&l.sctx, store, storageKey, token, fp)
		e.storeDone(ctx, OpAcquire, store, &ev, start, err)
		if err != nil && ctx.Err() != nil {
			// The store call failed because the request's own context is
			// done, not because the store is down: never a store error,
			// never an untracked run (B29). The call may have taken
			// effect before it was cut off; a fenced release frees the
			// key if it did, and changes nothing if it did not.
			e.releaseUncertain(ctx, store, storageKey, token, &ev)
			return e.clientGone(ctx, ev, err)
		}
		if err != nil && (errors.Is(err, ErrStoreFull) || errors.Is(err, ErrScopeFull)) {
			// A bounded store refuses new keys rather than forget
			// records (B30). Not an outage: never an untracked run.
			ev.Outcome, ev.Err = StoreFull, err
			if errors.Is(err, ErrScopeFull) {
				return e.problem(ctx, ev, problemScopeQuota(storeRetryAfter))
			}
			return e.problem(ctx, ev, problemStoreFull(storeRetryAfter))
		}
		// A record held by this request's own token means an earlier
		// attempt of this same Acquire took effect, as when a client
		// retries a call whose reply was lost: the lease is ours.
		won := err == nil && (!found || rec.State == InFlight && rec.Token == token)
		if won {
			// A transactional store opens the handler's transaction now;
			// when that fails it gave the lease up again.
			l.runCtx, err = e.beginRun(ctx, store, storageKey, token, &ev)
			if err != nil && ctx.Err() != nil {
				return e.clientGone(ctx, ev, err) // B29
			}
		}
		if err != nil {
			ev.Err = err
			if e.cfg.FailOpen {
				ev.Outcome = Untracked
				e.report(ctx, ev)
				d.Action = Pass
				d.tookPart = true
				return d
			}
			ev.Outcome = StoreError
			return e.problem(ctx, ev, problemStoreUnavailable(storeRetryAfter))
		}
		if won {
			d.Action = Run
			d.Lease = e.startLease(l, ctx, store, storageKey, token, fp, route.Retention, ev, began)
			ev.Outcome = Executed
			e.report(ctx, ev)
			return d
		}
		// Whatever the store returned is checked before it is used: a
		// corrupt record is a store error, never a panic or a header the
		// client must not get, and never an untracked run (B33).
		if err := e.checkRecord(&rec); err != nil {
			ev.Outcome, ev.Err = StoreError, err
			return e.problem(ctx, ev, problemStoreUnavailable(storeRetryAfter))
		}
		if fp != nil && rec.Fingerprint != nil && !e.sameRequest(fp, rec.Fingerprint, r, body) {
			return e.found(ctx, ev, policy, d, &Finding{Kind: FoundMismatch, Problem: problemKeyReused()}, Mismatch)
		}
		if rec.State == Completed {
			if rec.NotReplayable {
				return e.found(ctx, ev, policy, d, &Finding{Kind: FoundCompleted, NotReplayable: true, Problem: problemNotReplayable()}, NotReplayableRecord)
			}
			if policy == Manual {
				// The handler gets a copy of its own: rec may share the
				// store's bytes.
				resp := &Response{Status: rec.Status, Header: append([]HeaderField(nil), rec.Header...), Body: cloneBytes(rec.Body)}
				return e.found(ctx, ev, policy, d, &Finding{Kind: FoundCompleted, Response: resp}, Replayed)
			}
			return e.replay(ctx, ev, &Response{Status: rec.Status, Header: rec.Header, Body: rec.Body})
		}
		// In flight.
		if policy == Manual {
			return e.found(ctx, ev, policy, d, &Finding{Kind: FoundInFlight, Problem: problemInFlight(e.cfg.InFlightStatus, inFlightRetryAfter)}, InFlightConflict)
		}
		if e.cfg.InFlightWait <= 0 {
			break
		}
		now := e.cfg.Clock.Now()
		if deadline.IsZero() {
			deadline = now.Add(e.cfg.InFlightWait)
		}
		wait := min(deadline.Sub(now), pollInterval(e.cfg.InFlightWait))
		if wait <= 0 {
			break
		}
		if !sleep(ctx, wait) {
			return e.clientGone(ctx, ev, ctx.Err())
		}
	}
	ev.Outcome = InFlightConflict
	return e.problem(ctx, ev, problemInFlight(e.cfg.InFlightStatus, inFlightRetryAfter))
}

// sameRequest reports whether fp, the request's fingerprint, matches
// stored, the fingerprint of the record under its storage key (B9, B10).
// With the default fingerprint, a stored fingerprint of sha256.Size bytes
// was written by a version whose default was SHA256Fingerprint: it is
// compared with the request's SHA256Fingerprint, so that a retry of a
// request recorded before an upgrade, within its retention, is replayed
// and not refused as a reused key. Only a mismatch pays for that hash.
func (e *Engine) sameRequest(fp, stored []byte, r *Request, body []byte) bool {
	if bytes.Equal(fp, stored) {
		return true
	}
	if !e.defaultFP || len(stored) != sha256.Size {
		return false
	}
	var legacy [sha256.Size]byte
	sha256Fingerprint(&legacy, r, body)
	return bytes.Equal(legacy[:], stored)
}

// maxFingerprint bounds the fingerprint a record may carry (B33); Begin
// hashes a longer one from Config.Fingerprint down to its SHA-256.
const maxFingerprint = 1024

// errCorrupt is wrapped by the error checkRecord reports.
var errCorrupt = errors.New("idem: corrupt record from the store")

// checkRecord checks a record a store returned (B33): a known state, a
// fingerprint of sane length and, for a replayable completed record, a
// status in 100..599 and well-formed header fields. Fields outside the
// current ReplayHeaders are dropped from rec, so that narrowing the
// allowlist takes effect for records stored before.
func (e *Engine) checkRecord(rec *Record) error {
	if rec.State != InFlight && rec.State != Completed {
		return fmt.Errorf("%w: state %d", errCorrupt, rec.State)
	}
	if len(rec.Fingerprint) > maxFingerprint {
		return fmt.Errorf("%w: a fingerprint of %d bytes", errCorrupt, len(rec.Fingerprint))
	}
	if rec.State != Completed || rec.NotReplayable {
		return nil
	}
	if rec.Status < 100 || rec.Status > 599 {
		return fmt.Errorf("%w: status %d", errCorrupt, rec.Status)
	}
	var kept []HeaderField // the fields kept, once one is dropped
	for i, f := range rec.Header {
		if !isToken(f.Name) || !isFieldValue(f.Value) {
			return fmt.Errorf("%w: a malformed header field", errCorrupt)
		}
		switch allowed := e.replayable(f.Name); {
		case !allowed && kept == nil:
			kept = make([]HeaderField, i, len(rec.Header)+1)
			copy(kept, rec.Header[:i])
		case allowed && kept != nil:
			kept = append(kept, f)
		}
	}
	if kept != nil {
		rec.Header = kept
	}
	return nil
}

// replayable reports whether the field called name is on the current
// replay allowlist (B20, B33).
func (e *Engine) replayable(name string) bool {
	for _, h := range e.cfg.ReplayHeaders {
		if h == name {
			return true
		}
	}
	for _, h := range e.cfg.ReplayHeaders {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// isFieldValue reports whether v may be sent as an RFC 9110 field value:
// no control character but horizontal tab.
func isFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func pollInterval(wait time.Duration) time.Duration {
	return min(max(wait/20, time.Millisecond), 50*time.Millisecond)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (e *Engine) isSafe(method string) bool {
	for _, m := range e.cfg.SafeMethods {
		if m == method {
			return true
		}
	}
	return false
}

func (e *Engine) parseKey(values []string) (string, error) {
	if len(values) > 1 {
		return "", errors.New("the header is sent more than once")
	}
	key, err := ParseKey(values[0], e.cfg.MaxKeyLength)
	if err != nil {
		return "", err
	}
	if e.cfg.ValidateKey != nil {
		if err := e.cfg.ValidateKey(key); err != nil {
			return "", err
		}
	}
	return key, nil
}

// acquire leases key, or returns its live record and true. The engine
// only reads the record: a store may share its bytes (see Store).
func (e *Engine) acquire(ctx context.Context, store Store, key string, token Token, fp []byte) (Record, bool, error) {
	ctx, cancel := e.storeContext(ctx, store)
	rec, err := store.Acquire(ctx, key, token, fp, e.cfg.LeaseTime)
	cancel()
	if rec == nil || err != nil {
		return Record{}, false, err
	}
	return *rec, true, nil
}

// beginRun opens the handler's unit of work when store is a
// TransactionalStore, and returns the handler's context (nil for other
// stores). When it fails it gives the lease up again (a fenced release,
// which changes nothing if the store already let the lease go): the
// handler does not run.
func (e *Engine) beginRun(ctx context.Context, store Store, key string, token Token, ev *Event) (context.Context, error) {
	tx, ok := store.(TransactionalStore)
	if !ok {
		return nil, nil
	}
	start := e.storeStart()
	runCtx, err := tx.BeginRun(ctx, key, token)
	e.storeDone(ctx, OpBeginRun, store, ev, start, err)
	if err == nil {
		return runCtx, nil
	}
	ev.Op = OpBeginRun
	e.releaseUncertain(ctx, store, key, token, ev)
	return nil, err
}

// storeContext bounds a store call of Begin by StoreTimeout. A LocalStore
// never waits, so it is spared the timer.
func (e *Engine) storeContext(ctx context.Context, store Store) (context.Context, context.CancelFunc) {
	if _, local := store.(LocalStore); local {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, e.cfg.StoreTimeout)
}

// maxUnscopedRoutes bounds how many routes the engine remembers having
// reported for an empty scope, should route names be unbounded.
const maxUnscopedRoutes = 1024

// reportUnscoped reports, once per route, that a tracked request of the
// route has an empty scope (B32): every client of the route then shares
// one key space.
func (e *Engine) reportUnscoped(ctx context.Context, ev Event) {
	if seen := e.unscoped.Load(); seen != nil && ((*seen)[ev.Route] || len(*seen) >= maxUnscopedRoutes) {
		return
	}
	e.unscopedMu.Lock()
	seen := e.unscoped.Load()
	if seen != nil && ((*seen)[ev.Route] || len(*seen) >= maxUnscopedRoutes) {
		e.unscopedMu.Unlock()
		return
	}
	next := make(map[string]bool, 1)
	if seen != nil {
		for k := range *seen {
			next[k] = true
		}
	}
	next[ev.Route] = true
	e.unscoped.Store(&next)
	e.unscopedMu.Unlock()
	ev.Outcome = Unscoped
	ev.Err = errUnscoped
	e.report(ctx, ev)
}

var errUnscoped = errors.New("idem: a tracked request has an empty scope, so all its clients share one key space: hand the engine the authenticated principal with idem.WithPrincipal, or set Config.Scope")

// clientGone answers a request whose context ended before it held a
// lease (B29). Nobody may read the answer; if someone does (a server-side
// deadline rather than a disconnect), it says that nothing ran and that a
// retry with the same key is safe.
func (e *Engine) clientGone(ctx context.Context, ev Event, err error) Decision {
	ev.Outcome = ClientGone
	ev.Err = err
	return e.problem(ctx, ev, problemRequestCanceled(storeRetryAfter))
}

// releaseUncertain gives up token's lease of key in case an Acquire that
// failed took effect anyway, with a context detached from the request's
// and bounded by StoreTimeout. A fenced release changes nothing when the
// Acquire did not take effect.
func (e *Engine) releaseUncertain(ctx context.Context, store Store, key string, token Token, ev *Event) {
	ctx, cancel := e.storeContext(context.WithoutCancel(ctx), store)
	defer cancel()
	start := e.storeStart()
	err := store.Release(ctx, key, token)
	e.storeDone(ctx, OpRelease, store, ev, start, err)
}

func (e *Engine) pass(ctx context.Context, ev Event, d Decision) Decision {
	ev.Outcome = Passed
	e.report(ctx, ev)
	d.Action = Pass
	return d
}

func (e *Engine) problem(ctx context.Context, ev Event, p *Problem) Decision {
	ev.Status = p.Status
	e.report(ctx, ev)
	resp, ok := e.rendered[p.Type]
	if !ok {
		resp = e.cfg.RenderProblem(p)
	}
	return Decision{Action: Respond, Response: resp, Problem: p}
}

func (e *Engine) replay(ctx context.Context, ev Event, resp *Response) Decision {
	// resp.Header is the engine's own (a store returns a record whose
	// Header slice is the caller's own; the memory store leaves room for
	// this field).
	resp.Header = append(resp.Header, HeaderField{ReplayedHeader, "true"})
	if e.cfg.ReplayStatus != 0 {
		resp.Status = e.cfg.ReplayStatus
	}
	ev.Outcome = Replayed
	ev.Status, ev.BodySize = resp.Status, len(resp.Body)
	e.report(ctx, ev)
	return Decision{Action: Respond, Response: resp, Replayed: true}
}

// found answers with f's problem or replay, or on a Manual route lets the
// handler run with f (B26).
func (e *Engine) found(ctx context.Context, ev Event, policy Policy, d Decision, f *Finding, outcome Outcome) Decision {
	if policy == Manual {
		ev.Outcome = ManualFound
		ev.Err = errors.New(f.Kind.String())
		e.report(ctx, ev)
		d.Action = Pass
		d.Finding = f
		d.tookPart = true
		return d
	}
	ev.Outcome = outcome
	return e.problem(ctx, ev, f.Problem)
}

var errTooLarge = errors.New("idem: request body too large")

// maxPooledBody bounds the request body buffers Begin keeps for reuse.
const maxPooledBody = 64 << 10

// putBody returns to the pool the box buf that Begin took from it (nil
// when the pool was empty), holding read, the body Begin read, when Begin
// answered itself and so handed the body to nobody; otherwise the box goes
// back empty.
func (e *Engine) putBody(buf *[]byte, read []byte, answered bool) {
	keep := answered && read != nil && cap(read) <= maxPooledBody
	switch {
	case buf == nil && !keep:
		return
	case buf == nil:
		buf = new([]byte)
	}
	if keep {
		clear(read) // no request body lingers in the pool
		*buf = read[:0]
	} else {
		*buf = nil
	}
	e.bodies.Put(buf)
}

// initialBody bounds the buffer readBody starts with, whatever size the
// client declares: memory follows the bytes received (B31).
const initialBody = 16 << 10

// readBody reads all of r, failing with errTooLarge past limit bytes. The
// buffer starts at the declared size plus one, at most initialBody, and
// doubles as bytes arrive, never past the declared size plus one (so a
// body of the declared size needs no copy after the last doubling) nor
// past limit plus one; buf is used when it is large enough. A reader that
// knows its length (bytes already in memory) sizes the buffer exactly.
func readBody(r io.Reader, declared, limit int64, buf []byte) ([]byte, error) {
	size := min(512, limit+1)
	switch l, ok := r.(interface{ Len() int }); {
	case ok:
		size = int64(l.Len()) + 1
		if size > limit+1 {
			return nil, errTooLarge
		}
	case declared > limit:
		return nil, errTooLarge
	case declared > 0:
		size = min(declared+1, initialBody)
	}
	if int64(cap(buf)) < size {
		buf = make([]byte, 0, size)
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = grow(buf, declared, limit)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// grow returns full buf with twice its capacity, or up to the declared
// size plus one when that is larger than the current capacity and
// smaller than twice it, and never more than limit plus one.
func grow(buf []byte, declared, limit int64) []byte {
	c := int64(cap(buf))
	next := max(2*c, 512)
	if declared > c && declared+1 < next {
		next = declared + 1
	}
	next = max(min(next, limit+1), c+1)
	return append(make([]byte, 0, next), buf...)
}

// Lease is the right to run a handler for one key (B11). Exactly one of
// Complete and Release must be called when the handler has finished; while
// the handler runs past half the lease time the lease is renewed (B16).
type Lease struct {
	e         *Engine
	store     Store
	key       string
	token     Token
	fp        []byte
	retention time.Duration
	// parent is the request's context. Store writes and reports use it
	// detached from its cancellation (B24), made only when needed.
	parent context.Context
	ev     Event

	mu   sync.Mutex
	done bool
	lost bool
	// end is the earliest the lease can end in the store, by
	// Config.Clock: a lease time after the start of the Acquire or Renew
	// call that last took effect. No renewal waits past it (B34).
	end time.Time
	// timer renews the lease after its first renewal; until then the
	// lease waits in queue.
	timer *time.Timer
	queue *renewals

	// Guarded by queue.mu.
	queued     bool
	due        time.Time
	prev, next *Lease

	// sctx is the context the store calls of Begin get: the request's
	// with the scope's hash (B30).
	sctx scopeCtx
	// runCtx is the handler's context a TransactionalStore made, nil
	// for other stores.
	runCtx context.Context

	// keyText and fpSum hold the default storage key and fingerprint (in
	// fpSum's first FingerprintSize bytes), or the SHA-256 of a custom
	// fingerprint longer than maxFingerprint.
	keyText [storageKeyLen]byte
	fpSum   [sha256.Size]byte
	// kept is the header KeepHeader returns, its fields in keptBuf when
	// they fit.
	kept    keptHeader
	keptBuf [4]HeaderField
	// stored is the record Complete hands the store.
	stored Record
}

// prepareLease returns a Lease for Begin to fill: new, or recycled from a
// request that did not need its own.
func (e *Engine) prepareLease() *Lease {
	if l, ok := e.leases.Get().(*Lease); ok {
		return l
	}
	return new(Lease)
}

// keyAndFingerprint derives the storage key of key and the fingerprint of
// r with body, the defaults into l's arrays.
func (e *Engine) keyAndFingerprint(l *Lease, r *Request, scope, key string, body []byte) (string, []byte) {
	var storageKey string
	if e.defaultKey {
		encodeKey(&l.keyText, scope, key)
		// l.keyText is never written again: the lease is recycled only
		// when nothing kept the string (see recycle).
		storageKey = unsafe.String(&l.keyText[0], len(l.keyText))
	} else {
		storageKey = e.cfg.EncodeKey(scope, key)
	}
	if e.defaultFP {
		fingerprint((*[FingerprintSize]byte)(l.fpSum[:FingerprintSize]), r, body)
		return storageKey, l.fpSum[:FingerprintSize]
	}
	fp := e.cfg.Fingerprint(r, body)
	if len(fp) > maxFingerprint {
		// Stores keep fingerprints of sane length (B33); equal long
		// fingerprints still hash alike.
		l.fpSum = sha256.Sum256(fp)
		fp = l.fpSum[:]
	}
	return storageKey, fp
}

// startLease makes l the lease of key held by token, taken by an Acquire
// call that began at began.
func (e *Engine) startLease(l *Lease, ctx context.Context, store Store, key string, token Token, fp []byte, retention time.Duration, ev Event, began time.Time) *Lease {
	l.e, l.store, l.key, l.token, l.fp, l.retention, l.end = e, store, key, token, fp, retention, began.Add(e.cfg.LeaseTime)
	l.parent, l.ev, l.queue = ctx, ev, &e.renewals[token[15]%renewalShards]
	l.queue.add(l, began)
	return l
}

// recycle keeps l, which Begin prepared, for another request when Begin
// did not hand it out and nothing else can still refer to its storage key
// or fingerprint: a LocalStore copies what it keeps (other stores might
// keep the key string), and only an observer or a logger could keep the
// key's prefix from an event.
func (e *Engine) recycle(l *Lease, store Store) {
	if l.e != nil || e.observer != nil || e.logger != nil {
		return
	}
	if _, ok := store.(LocalStore); !ok {
		return
	}
	l.keyText, l.fpSum, l.sctx = [storageKeyLen]byte{}, [sha256.Size]byte{}, scopeCtx{}
	e.leases.Put(l)
}

// Token returns the lease's fencing token.
func (l *Lease) Token() Token { return l.token }

// MaxBody is how many response body bytes the adapter records before it
// marks the recording Truncated (B19).
func (l *Lease) MaxBody() int { return l.e.cfg.MaxResponseBody }

func (l *Lease) renew() {
	l.mu.Lock()
	if l.done || l.lost {
		l.mu.Unlock()
		return
	}
	end := l.end
	l.mu.Unlock()
	cfg := &l.e.cfg
	began := cfg.Clock.Now()
	ctx, cancel := l.renewContext(began, end)
	start := l.e.storeStart()
	err := l.store.Renew(ctx, l.key, l.token, cfg.LeaseTime)
	l.e.storeDone(ctx, OpRenew, l.store, &l.ev, start, err)
	cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	next := cfg.LeaseTime / 2
	switch {
	case errors.Is(err, ErrLeaseLost):
		l.lost = true
		ev := l.ev
		ev.Outcome, ev.Err, ev.Op = LeaseLost, err, OpRenew
		l.report(ev)
		return
	case err != nil:
		ev := l.ev
		ev.Outcome, ev.Err, ev.Op = StoreError, err, OpRenew
		l.report(ev)
		// Try again soon: the lease still runs until l.end.
		next = cfg.LeaseTime / 16
	default:
		l.end = began.Add(cfg.LeaseTime)
	}
	if l.timer == nil {
		// renew takes l.mu first: it cannot run before l.timer is set.
		l.timer = time.AfterFunc(next, l.renew)
	} else {
		l.timer.Reset(next)
	}
}

// renewContext bounds a renewal that starts at start by StoreTimeout and
// by end, the earliest the lease can end: a renewal that has not taken
// effect by then is too late, and one hung call must not keep the next
// attempt from running while the lease still holds (B34). Past end the
// call gets StoreTimeout, to learn whether the lease was lost.
func (l *Lease) renewContext(start, end time.Time) (context.Context, context.CancelFunc) {
	if _, local := l.store.(LocalStore); local {
		return l.detached(), func() {}
	}
	timeout := l.e.cfg.StoreTimeout
	if left := end.Sub(start); left > 0 {
		timeout = min(timeout, left)
	}
	return context.WithTimeout(l.detached(), timeout)
}

// finish marks the lease done; it reports false when it already was.
func (l *Lease) finish() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return false
	}
	l.done = true
	if l.timer != nil {
		l.timer.Stop()
	}
	l.queue.remove(l)
	return true
}

var errLeaseFinished = errors.New("idem: lease already completed or released")

// Complete reports the handler's response. A status in the stored set
// completes the record (B14), as not replayable when the response was
// truncated or streamed (B19); any other status releases the lease. Store
// writes use a context the client's disconnect does not cancel (B24). A
// store failure is reported and returned, and the in-flight record is left
// to expire (B23); a stale lease changes nothing and returns ErrLeaseLost
// (B16).
func (l *Lease) Complete(rec Recorded) error {
	if !l.finish() {
		return errLeaseFinished
	}
	status := rec.Status
	if status == 0 {
		status = 200
	}
	if !l.e.stored(status) {
		return l.release(status, nil)
	}
	// A store copies what it keeps: the record and its header fields are
	// gathered in the lease itself, which is allocated anyway.
	l.stored = l.record(status, &rec, l.keptBuf[:0])
	ctx, cancel := l.storeContext(l.Context())
	start := l.e.storeStart()
	err := l.store.Complete(ctx, l.key, l.token, &l.stored, l.retention)
	l.storeDone(OpComplete, start, err)
	cancel()
	l.reportEnd(OpComplete, status, err, Stored, nil)
	return err
}

// record is what Complete stores for rec, its header fields appended to
// header.
func (l *Lease) record(status int, rec *Recorded, header []HeaderField) Record {
	stored := Record{State: Completed, Token: l.token, Fingerprint: l.fp, Status: status}
	if rec.Truncated || rec.Streamed {
		stored.NotReplayable = true
	} else {
		stored.Body = rec.Body
		stored.Header = l.e.appendHeader(header, rec.Header)
	}
	return stored
}

// KeepHeader returns a snapshot of the fields of h that the engine stores
// and replays (B20). An adapter that must take a snapshot of the response
// header when the status is sent hands this to Complete instead of a copy
// of every field. The snapshot belongs to the lease: a second call
// replaces it.
func (l *Lease) KeepHeader(h Header) Header {
	// Past len(keptBuf) fields append moves them to a slice of their own.
	l.kept.fields = l.e.appendHeader(l.keptBuf[:0], h)
	return &l.kept
}

// keptHeader holds header fields the engine already filtered, in the
// engine's order and with canonical names.
type keptHeader struct{ fields []HeaderField }

// Values returns the values of the fields called name.
func (k *keptHeader) Values(name string) []string {
	var out []string
	for _, f := range k.fields {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// Release gives the lease up so the key may be retried: the handler
// panicked, failed with an error the framework rendered, or hijacked the
// connection (B15, B19). cause is reported, never sent to the client.
func (l *Lease) Release(cause error) error {
	if !l.finish() {
		return errLeaseFinished
	}
	return l.release(0, cause)
}

func (l *Lease) release(status int, cause error) error {
	ctx, cancel := l.storeContext(l.Context())
	start := l.e.storeStart()
	err := l.store.Release(ctx, l.key, l.token)
	l.storeDone(OpRelease, start, err)
	cancel()
	l.reportEnd(OpRelease, status, err, Released, cause)
	return err
}

// storeDone reports a store call of the lease's with the detached request
// context (a LocalStore's calls get a context without its values).
func (l *Lease) storeDone(op StoreOp, start time.Time, err error) {
	if l.e.storeObserver != nil {
		l.e.storeDone(l.detached(), op, l.store, &l.ev, start, err)
	}
}

// reportEnd reports how the store write op that ended the lease went: err
// from the store, or else outcome with cause (Stored, or Released with
// why the lease was given up).
func (l *Lease) reportEnd(op StoreOp, status int, err error, outcome Outcome, cause error) {
	ev := l.ev
	ev.Status, ev.Op = status, op
	switch {
	case errors.Is(err, ErrLeaseLost):
		ev.Outcome, ev.Err = LeaseLost, err
	case err != nil:
		ev.Outcome, ev.Err = StoreError, err
	default:
		ev.Outcome, ev.Err = outcome, cause
	}
	l.report(ev)
}

// detached returns the request's context without its cancellation, for
// the reports that follow the handler (B24).
func (l *Lease) detached() context.Context { return context.WithoutCancel(l.parent) }

// storeContext returns the context of a store write that follows the
// handler: parent without its cancellation (B24), bounded by StoreTimeout.
// A LocalStore never waits and gets no timer, and no values unless it is
// transactional too.
func (l *Lease) storeContext(parent context.Context) (context.Context, context.CancelFunc) {
	_, local := l.store.(LocalStore)
	switch {
	case local && l.runCtx == nil:
		return context.Background(), func() {}
	case local: // and transactional: it gets the run's values
		return context.WithoutCancel(parent), func() {}
	}
	return context.WithTimeout(context.WithoutCancel(parent), l.e.cfg.StoreTimeout)
}

// Context returns the context the handler must run with: the request's
// context, or the one a TransactionalStore made for the run, which carries
// its transaction (B35). An adapter hands it to the handler.
func (l *Lease) Context() context.Context {
	if l.runCtx != nil {
		return l.runCtx
	}
	return l.parent
}

// HoldResponse reports that the client must get the handler's response
// only once Complete succeeded, because the record commits with the
// handler's own writes (a TransactionalStore, B35). The adapter then
// passes nothing on to the client while the handler runs, holds the whole
// response (beyond MaxBody too; a flush is held as well), calls Complete,
// and writes the held response when Complete returned nil, or the problem
// of CommitFailure when it failed.
func (l *Lease) HoldResponse() bool { return l.runCtx != nil }

// CommitFailure returns the problem, rendered, that an adapter answers
// with in place of a held response whose Complete failed (see
// HoldResponse): 503 with Retry-After, type ProblemNotCommitted.
func (l *Lease) CommitFailure() (*Problem, *Response) {
	p := problemNotCommitted(storeRetryAfter)
	if r, ok := l.e.rendered[p.Type]; ok {
		return p, r
	}
	return p, l.e.cfg.RenderProblem(p)
}

// report reports ev with the detached context, made only when someone
// listens.
func (l *Lease) report(ev Event) {
	if l.e.observer == nil && l.e.logger == nil {
		return
	}
	l.e.report(l.detached(), ev)
}

// appendHeader appends the allowlisted header fields of h (B20) to out, or
// returns h's own fields when KeepHeader already filtered them.
func (e *Engine) appendHeader(out []HeaderField, h Header) []HeaderField {
	if k, ok := h.(*keptHeader); ok {
		return k.fields // a store copies what it keeps
	}
	if h == nil {
		return out
	}
	if hh, ok := h.(http.Header); ok {
		// The names are canonical (Config.fill): look them up directly,
		// as Values would after canonicalising them again.
		for _, name := range e.cfg.ReplayHeaders {
			for _, v := range hh[name] {
				out = append(out, HeaderField{name, v})
			}
		}
		return out
	}
	for _, name := range e.cfg.ReplayHeaders {
		for _, v := range h.Values(name) {
			out = append(out, HeaderField{name, v})
		}
	}
	return out
}
