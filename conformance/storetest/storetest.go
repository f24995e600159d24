package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// CaseTimeout bounds each case. Every store call of a case uses a context
// that ends after CaseTimeout; a case that is still running a little after
// that (a store that ignores its context) stops the test binary with a
// message naming the case.
const CaseTimeout = 20 * time.Second

// Durations the cases use. Short leases and retentions are real durations:
// a store expires records by its own clock.
const (
	longLease     = time.Minute
	longRetention = time.Hour
	shortLease    = 100 * time.Millisecond
	shortKeep     = 150 * time.Millisecond
	// expirySlack is how far a returned ExpiresAt may lie beyond the
	// duration asked for, measured from the end of the call.
	expirySlack = time.Second
	// earlySlack is how much sooner than asked a store may let a record
	// expire (clock granularity of the store).
	earlySlack = 5 * time.Millisecond
	// pollDeadline bounds the wait for an expiry to take effect.
	pollDeadline = 5 * time.Second
	pollEvery    = 5 * time.Millisecond
)

// NewStore makes a fresh store for one test, benchmark or conformance
// case. It registers whatever cleanup the store needs with tb.Cleanup, and
// may call tb.Skip when the store's backend is not available. One NewStore
// serves Run, RunBenchmarks and the adapter suite's conformance.WithStore,
// which takes a function of the same type.
type NewStore func(tb testing.TB) idem.Store

// Run runs every conformance case against the stores newStore makes. It
// calls newStore once per case, in the case's own subtest. Each case is
// named after the rule of the behaviour contract it serves and then after
// what it checks ("B11/AcquireAbsent"); go test -run 'TestStore/B16/'
// selects the cases of one rule. A store that implements
// idem.TransactionalStore runs the cases of its runs (BeginRun, then
// Complete or Release), under TransactionalStore/.
func Run(t *testing.T, newStore NewStore) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, c, newStore(t))
			defer f.stop()
			c.run(f)
		})
	}
	runTransactional(t, newStore)
}

// A testCase checks one part of the Store contract.
type testCase struct {
	name string
	// explain says, in one line, what the contract requires. It is printed
	// when the case fails.
	explain string
	run     func(f *fixture)
}

var cases = []testCase{
	{"B11/AcquireAbsent", "Acquire on a key without a record leases it: it returns (nil, nil) and stores an in-flight record with the caller's token, fingerprint and lease", testAcquireAbsent},
	{"B12/AcquireInFlight", "Acquire on an in-flight key returns the record unchanged and does not take the lease from its owner", testAcquireInFlight},
	{"B13/AcquireCompleted", "Acquire on a completed key returns the recorded response (status, headers, body, fingerprint) with the retention expiry, and changes nothing", testAcquireCompleted},
	{"B11/OneWinner", "of many concurrent Acquire calls for one key exactly one returns (nil, nil); every other sees the winner's in-flight record", testOneWinner},
	{"B16/CompleteStaleToken", "Complete with a token that does not hold the lease returns ErrLeaseLost and changes nothing", testCompleteStale},
	{"B16/ReleaseStaleToken", "Release with a token that does not hold the lease returns ErrLeaseLost and changes nothing", testReleaseStale},
	{"B16/WritesOnAbsentKey", "Complete, Release and Renew on a key without a record return ErrLeaseLost and create nothing", testWritesOnAbsent},
	{"B16/WritesAfterComplete", "once a record is completed, a second Complete, a Release or a Renew by the same token returns ErrLeaseLost and leaves the record and its retention as they were", testWritesAfterComplete},
	{"B16/RenewExtends", "Renew by the owner moves the lease's end to lease from now, so the key stays held past the original lease", testRenewExtends},
	{"B16/RenewStaleToken", "Renew with a token that does not hold the lease returns ErrLeaseLost and does not extend the lease", testRenewStale},
	{"B17/LeaseExpiry", "when a lease expires the next Acquire takes the key with a new token; the old owner's Complete, Release and Renew then return ErrLeaseLost and change nothing (B17, B16)", testLeaseExpiry},
	{"B18/RecordExpiry", "a completed record expires after its retention, and the key is then new (B18)", testRecordExpiry},
	{"B14/ReleaseFrees", "Release by the owner deletes the in-flight record at once: the next Acquire takes the key, and the released token can no longer write (B14)", testReleaseFrees},
	{"B13/BinarySafe", "bodies and header values are arbitrary bytes and round-trip exactly; header fields keep their order, repeated names and count", testBinarySafe},
	{"B9/EmptyAndNil", "an empty or nil body and header round-trip as empty; a nil fingerprint (mismatch check off, B9) stays nil and an empty one stays non-nil", testEmptyAndNil},
	{"B19/LargeBody", "a 1 MiB body (the engine's default limit, B19) round-trips byte for byte", testLargeBody},
	{"B29/CancelledContext", "a call whose context is already done returns an error wrapping ctx.Err() and changes nothing", testCancelledContext},
	{"B13/ReturnedRecordStaysPut", "a record Acquire returns is the caller's to change but for its bytes, which the store never writes into again: changing its fields and appending to its Header slice changes nothing the store holds, and its body, fingerprint and header fields stay as they were while the key is completed anew, released, expired and reused", testRecordStaysPut},
	{"B13/ArgumentsAreCopied", "mutating the fingerprint passed to Acquire or the record passed to Complete afterwards does not change what the store holds", testArgumentsCopied},
	{"B11/KeyIsCopied", "Acquire copies the key it stores: changing the key's bytes after the call changes nothing", testKeyIsCopied},
	{"B11/ManyKeys", "many keys leased and completed concurrently each keep their own record", testManyKeys},
	{"B19/NotReplayable", "a record completed as not replayable (B19) comes back completed, not replayable, with its status and fingerprint", testNotReplayable},
	{"B8/DistinctKeys", "keys are compared byte for byte: keys that differ only in case, or where one is a prefix of the other, are distinct", testDistinctKeys},
	{"B16/ReacquireAfterRelease", "after a release a new owner's lease is fully its own: the new token holds the key and the old one cannot complete it", testReacquireAfterRelease},
}

// fixture is what a case works with: a fresh store, a context bounded by
// the case timeout, and helpers that fail the case with a clear message.
type fixture struct {
	t     *testing.T
	s     idem.Store
	ctx   context.Context
	space string // makes this case's keys unique
	stop  func()
}

func newFixture(t *testing.T, c testCase, s idem.Store) *fixture {
	ctx, cancel := context.WithTimeout(t.Context(), CaseTimeout)
	watchdog := time.AfterFunc(CaseTimeout+10*time.Second, func() {
		panic(fmt.Sprintf("storetest: case %s still running %v after its timeout; the store does not honour its context (%s)",
			c.name, CaseTimeout+10*time.Second, c.explain))
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("storetest: %s: the contract: %s", c.name, c.explain)
		}
	})
	return &fixture{
		t: t, s: s, ctx: ctx,
		space: "storetest:" + c.name + ":" + hex.EncodeToString(randomBytes(6)) + ":",
		stop:  func() { watchdog.Stop(); cancel() },
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// key returns a key unique to this case run.
func (f *fixture) key(name string) string { return f.space + name }

func newToken() idem.Token {
	var tok idem.Token
	_, _ = rand.Read(tok[:])
	return tok
}

// acquireWins leases key for tok and fails the case unless it won.
func (f *fixture) acquireWins(key string, tok idem.Token, fp []byte, lease time.Duration) {
	f.t.Helper()
	rec, err := f.s.Acquire(f.ctx, key, tok, fp, lease)
	if err != nil {
		f.t.Fatalf("Acquire(%q) on a free key: %v", key, err)
	}
	if rec != nil {
		f.t.Fatalf("Acquire(%q) on a free key returned a %s record, want (nil, nil): the caller should hold the lease", key, rec.State)
	}
}

// lookup returns the live record of key, using Acquire with a fresh token;
// it fails the case when the key turns out to be free.
func (f *fixture) lookup(key string) *idem.Record {
	f.t.Helper()
	rec, err := f.s.Acquire(f.ctx, key, newToken(), []byte("lookup"), longLease)
	if err != nil {
		f.t.Fatalf("Acquire(%q) to look the record up: %v", key, err)
	}
	if rec == nil {
		f.t.Fatalf("Acquire(%q) won the lease, want the key's live record: the record is gone", key)
	}
	return rec
}

func (f *fixture) complete(key string, tok idem.Token, rec *idem.Record, retention time.Duration) {
	f.t.Helper()
	if err := f.s.Complete(f.ctx, key, tok, rec, retention); err != nil {
		f.t.Fatalf("Complete(%q) by the owner: %v", key, err)
	}
}

// completeAndCheck completes key by its owner tok and checks that the
// record then holds sent, with the fingerprint fp given to Acquire.
func (f *fixture) completeAndCheck(key string, tok idem.Token, fp []byte, sent *idem.Record) {
	f.t.Helper()
	f.complete(key, tok, sent, longRetention)
	f.checkCompleted(f.lookup(key), sent, fp, longRetention, time.Now())
}

// wantLeaseLost fails the case unless err is ErrLeaseLost.
func (f *fixture) wantLeaseLost(op string, err error) {
	f.t.Helper()
	if !errors.Is(err, idem.ErrLeaseLost) {
		f.t.Errorf("%s = %v, want an error wrapping idem.ErrLeaseLost", op, err)
	}
}

// writesFail checks that Complete, Release and Renew by tok all return
// ErrLeaseLost; why says why tok holds no lease.
func (f *fixture) writesFail(key string, tok idem.Token, why string) {
	f.t.Helper()
	f.wantLeaseLost("Complete "+why, f.s.Complete(f.ctx, key, tok, response("late"), longRetention))
	f.wantLeaseLost("Release "+why, f.s.Release(f.ctx, key, tok))
	f.wantLeaseLost("Renew "+why, f.s.Renew(f.ctx, key, tok, shortLease))
}

// waitFree polls Acquire with tok until it wins key, and returns when.
func (f *fixture) waitFree(key string, tok idem.Token, fp []byte) time.Time {
	f.t.Helper()
	deadline := time.Now().Add(pollDeadline)
	for {
		rec, err := f.s.Acquire(f.ctx, key, tok, fp, longLease)
		if err != nil {
			f.t.Fatalf("Acquire(%q) while waiting for expiry: %v", key, err)
		}
		if rec == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("key %q still holds a %s record %v after it should have expired", key, rec.State, pollDeadline)
		}
		time.Sleep(pollEvery)
	}
}

// checkInFlight checks an in-flight record's fields.
func (f *fixture) checkInFlight(rec *idem.Record, tok idem.Token, fp []byte, lease time.Duration, callEnd time.Time) {
	f.t.Helper()
	if rec.State != idem.InFlight {
		f.t.Errorf("State = %s, want in-flight", rec.State)
	}
	if rec.Token != tok {
		f.t.Errorf("Token = %s, want the owner's %s", rec.Token, tok)
	}
	f.checkFingerprint(rec.Fingerprint, fp)
	if rec.Status != 0 || len(rec.Header) != 0 || len(rec.Body) != 0 || rec.NotReplayable {
		f.t.Errorf("in-flight record carries a response: status %d, %d header fields, %d body bytes, not-replayable %v",
			rec.Status, len(rec.Header), len(rec.Body), rec.NotReplayable)
	}
	f.checkExpiry(rec.ExpiresAt, lease, callEnd)
}

// checkCompleted checks that got holds the response of sent.
func (f *fixture) checkCompleted(got, sent *idem.Record, fp []byte, retention time.Duration, callEnd time.Time) {
	f.t.Helper()
	if got.State != idem.Completed {
		f.t.Errorf("State = %s, want completed", got.State)
	}
	f.checkFingerprint(got.Fingerprint, fp)
	f.checkResponse(got, sent)
	f.checkExpiry(got.ExpiresAt, retention, callEnd)
}

func (f *fixture) checkFingerprint(got, want []byte) {
	f.t.Helper()
	if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
		f.t.Errorf("Fingerprint = %s, want %s", showBytes(got), showBytes(want))
	}
}

// checkResponse compares the recorded response of got with sent's.
func (f *fixture) checkResponse(got, sent *idem.Record) {
	f.t.Helper()
	if got.Status != sent.Status {
		f.t.Errorf("Status = %d, want %d", got.Status, sent.Status)
	}
	if got.NotReplayable != sent.NotReplayable {
		f.t.Errorf("NotReplayable = %v, want %v", got.NotReplayable, sent.NotReplayable)
	}
	if sent.NotReplayable {
		return
	}
	if !bytes.Equal(got.Body, sent.Body) {
		f.t.Errorf("Body = %s, want %s", showBytes(got.Body), showBytes(sent.Body))
	}
	if len(got.Header) != len(sent.Header) {
		f.t.Errorf("%d header fields, want %d", len(got.Header), len(sent.Header))
		return
	}
	for i := range sent.Header {
		if got.Header[i] != sent.Header[i] {
			f.t.Errorf("header field %d = %q: %q, want %q: %q", i,
				got.Header[i].Name, got.Header[i].Value, sent.Header[i].Name, sent.Header[i].Value)
			return
		}
	}
}

// checkExpiry checks that at lies in the future and no later than d after
// the call that set it ended (plus slack).
func (f *fixture) checkExpiry(at time.Time, d time.Duration, callEnd time.Time) {
	f.t.Helper()
	now := time.Now()
	if !at.After(now) {
		f.t.Errorf("ExpiresAt = %v, want a time in the future (now %v)", at, now)
	}
	if latest := callEnd.Add(d + expirySlack); at.After(latest) {
		f.t.Errorf("ExpiresAt = %v, want no later than %v (%v after the call)", at, latest, d)
	}
}

func showBytes(b []byte) string {
	if b == nil {
		return "nil"
	}
	if len(b) > 24 {
		return fmt.Sprintf("%d bytes %x…", len(b), b[:24])
	}
	return fmt.Sprintf("%d bytes %x", len(b), b)
}

// response returns a typical recorded response.
func response(body string) *idem.Record {
	return &idem.Record{
		State:  idem.Completed,
		Status: 201,
		Header: []idem.HeaderField{{Name: "Content-Type", Value: "application/json"}, {Name: "Location", Value: "/orders/42"}},
		Body:   []byte(body),
	}
}

func testAcquireAbsent(f *fixture) {
	key, tok, fp := f.key("k"), newToken(), []byte("fp-absent")
	f.acquireWins(key, tok, fp, longLease)
	rec, err := f.s.Acquire(f.ctx, key, newToken(), []byte("other"), longLease)
	end := time.Now()
	if err != nil || rec == nil {
		f.t.Fatalf("second Acquire = (%v, %v), want the in-flight record", rec, err)
	}
	f.checkInFlight(rec, tok, fp, longLease, end)
}

func testAcquireInFlight(f *fixture) {
	key, owner, fp := f.key("k"), newToken(), []byte("fp-owner")
	f.acquireWins(key, owner, fp, longLease)
	for i := range 3 {
		rec, err := f.s.Acquire(f.ctx, key, newToken(), []byte(fmt.Sprint("fp-other-", i)), shortLease)
		end := time.Now()
		if err != nil || rec == nil {
			f.t.Fatalf("Acquire on the in-flight key = (%v, %v), want the in-flight record", rec, err)
		}
		f.checkInFlight(rec, owner, fp, longLease, end)
	}
	// The shorter lease asked for by the losers must not have replaced the
	// owner's lease.
	time.Sleep(shortLease + 50*time.Millisecond)
	rec := f.lookup(key)
	f.checkInFlight(rec, owner, fp, longLease, time.Now())
	f.complete(key, owner, response("ok"), longRetention)
}

func testAcquireCompleted(f *fixture) {
	key, tok, fp := f.key("k"), newToken(), []byte("fp-done")
	f.acquireWins(key, tok, fp, longLease)
	sent := response(`{"id":42}`)
	f.complete(key, tok, sent, longRetention)
	end := time.Now()
	for range 2 {
		got, err := f.s.Acquire(f.ctx, key, newToken(), []byte("other"), longLease)
		if err != nil || got == nil {
			f.t.Fatalf("Acquire on the completed key = (%v, %v), want the completed record", got, err)
		}
		f.checkCompleted(got, sent, fp, longRetention, end)
	}
}

func testOneWinner(f *fixture) {
	const racers = 128
	key := f.key("k")
	tokens := make([]idem.Token, racers)
	recs := make([]*idem.Record, racers)
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		tokens[i] = newToken()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			recs[i], errs[i] = f.s.Acquire(f.ctx, key, tokens[i], []byte(fmt.Sprint("fp-", i)), longLease)
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i := range racers {
		switch {
		case errs[i] != nil:
			f.t.Fatalf("racer %d: Acquire: %v", i, errs[i])
		case recs[i] == nil && winner >= 0:
			f.t.Fatalf("racers %d and %d both won the lease of one key", winner, i)
		case recs[i] == nil:
			winner = i
		}
	}
	if winner < 0 {
		f.t.Fatalf("none of %d racers won the lease", racers)
	}
	for i, rec := range recs {
		if rec != nil && (rec.State != idem.InFlight || rec.Token != tokens[winner]) {
			f.t.Fatalf("racer %d saw a %s record with token %s, want the winner's in-flight record (token %s)",
				i, rec.State, rec.Token, tokens[winner])
		}
	}
	f.complete(key, tokens[winner], response("won"), longRetention)
}

func testCompleteStale(f *fixture) {
	key, owner, fp := f.key("k"), newToken(), []byte("fp")
	f.acquireWins(key, owner, fp, longLease)
	f.wantLeaseLost("Complete with a stale token", f.s.Complete(f.ctx, key, newToken(), response("stale"), longRetention))
	f.checkInFlight(f.lookup(key), owner, fp, longLease, time.Now())
	f.completeAndCheck(key, owner, fp, response("owner"))
}

func testReleaseStale(f *fixture) {
	key, owner, fp := f.key("k"), newToken(), []byte("fp")
	f.acquireWins(key, owner, fp, longLease)
	f.wantLeaseLost("Release with a stale token", f.s.Release(f.ctx, key, newToken()))
	f.checkInFlight(f.lookup(key), owner, fp, longLease, time.Now())
	f.complete(key, owner, response("owner"), longRetention)
}

func testWritesOnAbsent(f *fixture) {
	key, tok := f.key("k"), newToken()
	f.writesFail(key, tok, "on an absent key")
	f.acquireWins(key, newToken(), []byte("fp"), longLease)
}

func testWritesAfterComplete(f *fixture) {
	key, tok, fp := f.key("k"), newToken(), []byte("fp")
	f.acquireWins(key, tok, fp, longLease)
	sent := response("first")
	f.complete(key, tok, sent, longRetention)
	end := time.Now()
	f.writesFail(key, tok, "by the token that completed the record")
	got := f.lookup(key)
	f.checkCompleted(got, sent, fp, longRetention, end)
	if min := end.Add(longRetention / 2); got.ExpiresAt.Before(min) {
		f.t.Errorf("ExpiresAt = %v after a Renew by the completing token, want the retention kept (after %v)", got.ExpiresAt, min)
	}
}

func testRenewExtends(f *fixture) {
	const lease = 300 * time.Millisecond
	key, tok, fp := f.key("k"), newToken(), []byte("fp")
	start := time.Now()
	f.acquireWins(key, tok, fp, lease)
	if err := f.s.Renew(f.ctx, key, tok, longLease); err != nil {
		f.t.Fatalf("Renew by the owner: %v", err)
	}
	end := time.Now()
	rec := f.lookup(key)
	f.checkInFlight(rec, tok, fp, longLease, end)
	if min := end.Add(longLease / 2); rec.ExpiresAt.Before(min) {
		f.t.Errorf("ExpiresAt = %v after Renew(%v), want after %v", rec.ExpiresAt, longLease, min)
	}
	time.Sleep(time.Until(start.Add(lease + 100*time.Millisecond)))
	f.checkInFlight(f.lookup(key), tok, fp, longLease, end)
	if err := f.s.Renew(f.ctx, key, tok, longLease); err != nil {
		f.t.Errorf("Renew by the owner past the original lease: %v", err)
	}
	f.complete(key, tok, response("ok"), longRetention)
}

func testRenewStale(f *fixture) {
	key, owner, fp := f.key("k"), newToken(), []byte("fp")
	start := time.Now()
	f.acquireWins(key, owner, fp, shortLease)
	f.wantLeaseLost("Renew with a stale token", f.s.Renew(f.ctx, key, newToken(), longLease))
	taken := f.waitFree(key, newToken(), []byte("next"))
	if taken.Sub(start) < shortLease-earlySlack {
		f.t.Errorf("the key was free %v after a %v lease", taken.Sub(start), shortLease)
	}
	// The stale Renew extended nothing: had it, the key would have stayed
	// held for a minute and waitFree would have failed.
}

func testLeaseExpiry(f *fixture) {
	key, old, fp := f.key("k"), newToken(), []byte("fp")
	start := time.Now()
	f.acquireWins(key, old, fp, shortLease)
	next, nextFP := newToken(), []byte("fp-next")
	taken := f.waitFree(key, next, nextFP)
	if taken.Sub(start) < shortLease-earlySlack {
		f.t.Errorf("the lease ended %v after it was taken, want at least %v", taken.Sub(start), shortLease)
	}
	f.writesFail(key, old, "by the expired owner")
	f.checkInFlight(f.lookup(key), next, nextFP, longLease, time.Now())
	f.completeAndCheck(key, next, nextFP, response("new owner"))
}

func testRecordExpiry(f *fixture) {
	key, tok, fp := f.key("k"), newToken(), []byte("fp")
	f.acquireWins(key, tok, fp, longLease)
	sent := response("kept briefly")
	start := time.Now()
	f.complete(key, tok, sent, shortKeep)
	end := time.Now()
	f.checkCompleted(f.lookup(key), sent, fp, shortKeep, end)
	taken := f.waitFree(key, newToken(), []byte("fp-new"))
	if taken.Sub(start) < shortKeep-earlySlack {
		f.t.Errorf("the completed record expired %v after Complete, want at least %v", taken.Sub(start), shortKeep)
	}
}

func testReleaseFrees(f *fixture) {
	key, tok, fp := f.key("k"), newToken(), []byte("fp")
	f.acquireWins(key, tok, fp, longLease)
	if err := f.s.Release(f.ctx, key, tok); err != nil {
		f.t.Fatalf("Release by the owner: %v", err)
	}
	f.writesFail(key, tok, "after Release")
	f.acquireWins(key, newToken(), fp, longLease)
}

func testReacquireAfterRelease(f *fixture) {
	key, first, fp := f.key("k"), newToken(), []byte("fp")
	f.acquireWins(key, first, fp, longLease)
	if err := f.s.Release(f.ctx, key, first); err != nil {
		f.t.Fatalf("Release by the owner: %v", err)
	}
	second, fp2 := newToken(), []byte("fp-2")
	f.acquireWins(key, second, fp2, longLease)
	f.checkInFlight(f.lookup(key), second, fp2, longLease, time.Now())
	f.wantLeaseLost("Complete by the released token", f.s.Complete(f.ctx, key, first, response("old"), longRetention))
	f.completeAndCheck(key, second, fp2, response("second"))
}

// allBytes returns every byte value n times over, in order.
func allBytes(n int) []byte {
	b := make([]byte, 0, 256*n)
	for range n {
		for i := range 256 {
			b = append(b, byte(i))
		}
	}
	return b
}

func testBinarySafe(f *fixture) {
	all := string(allBytes(1))
	header := []idem.HeaderField{
		{Name: "Content-Type", Value: "application/octet-stream"},
		{Name: "X-Binary", Value: all},
		{Name: "X-Empty", Value: ""},
		{Name: "Link", Value: "</a>; rel=next"},
		{Name: "Link", Value: "</b>; rel=prev"},
		{Name: "link", Value: "lower-case name kept"},
		{Name: "X-Nul", Value: "\x00\x00\xff\x00"},
	}
	for i := range 200 {
		header = append(header, idem.HeaderField{Name: fmt.Sprintf("X-Field-%03d", i%50), Value: fmt.Sprint(i, "\r\n\x00", i)})
	}
	header = append(header, idem.HeaderField{Name: "Link", Value: "</c>; rel=last"})
	fp := allBytes(1)
	for i, body := range [][]byte{allBytes(4), {0}, {0xff}, []byte("\x00\r\n\x00")} {
		key, tok := f.key(fmt.Sprint("body-", i)), newToken()
		f.acquireWins(key, tok, fp, longLease)
		sent := &idem.Record{State: idem.Completed, Status: 200, Header: header, Body: body}
		f.completeAndCheck(key, tok, fp, sent)
	}
	// Tokens are bytes too: all-zero and all-one tokens are ordinary tokens.
	for _, tok := range []idem.Token{{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		key := f.key("token-" + tok.String())
		f.acquireWins(key, tok, fp, longLease)
		f.checkInFlight(f.lookup(key), tok, fp, longLease, time.Now())
		f.complete(key, tok, response("ok"), longRetention)
	}
}

func testEmptyAndNil(f *fixture) {
	for _, c := range []struct {
		name   string
		fp     []byte
		body   []byte
		header []idem.HeaderField
	}{
		{"nil", nil, nil, nil},
		{"empty", []byte{}, []byte{}, []idem.HeaderField{}},
	} {
		key, tok := f.key(c.name), newToken()
		f.acquireWins(key, tok, c.fp, longLease)
		f.checkInFlight(f.lookup(key), tok, c.fp, longLease, time.Now())
		sent := &idem.Record{State: idem.Completed, Status: 204, Header: c.header, Body: c.body}
		f.complete(key, tok, sent, longRetention)
		got := f.lookup(key)
		f.checkCompleted(got, sent, c.fp, longRetention, time.Now())
	}
}

func testLargeBody(f *fixture) {
	key, tok, fp := f.key("k"), newToken(), []byte("fp")
	body := randomBytes(1 << 20)
	f.acquireWins(key, tok, fp, longLease)
	sent := &idem.Record{State: idem.Completed, Status: 200, Header: []idem.HeaderField{{Name: "Content-Type", Value: "application/octet-stream"}}, Body: body}
	f.completeAndCheck(key, tok, fp, sent)
}

func testCancelledContext(f *fixture) {
	cancelled, cancel := context.WithCancel(f.ctx)
	cancel()
	expired, cancel2 := context.WithDeadline(f.ctx, time.Now().Add(-time.Second))
	defer cancel2()
	for _, done := range []struct {
		name string
		ctx  context.Context
		want error
	}{{"cancelled", cancelled, context.Canceled}, {"past its deadline", expired, context.DeadlineExceeded}} {
		check := func(op string, err error) {
			f.t.Helper()
			if !errors.Is(err, done.want) {
				f.t.Errorf("%s with a context %s = %v, want an error wrapping %v", op, done.name, err, done.want)
			}
		}
		free := f.key("free-" + done.name)
		rec, err := f.s.Acquire(done.ctx, free, newToken(), []byte("fp"), longLease)
		check("Acquire", err)
		if rec != nil {
			f.t.Errorf("Acquire with a context %s returned a record", done.name)
		}
		f.acquireWins(free, newToken(), []byte("fp"), longLease)

		held, tok, fp := f.key("held-"+done.name), newToken(), []byte("fp")
		f.acquireWins(held, tok, fp, longLease)
		check("Complete", f.s.Complete(done.ctx, held, tok, response("x"), longRetention))
		check("Release", f.s.Release(done.ctx, held, tok))
		check("Renew", f.s.Renew(done.ctx, held, tok, time.Millisecond))
		time.Sleep(20 * time.Millisecond) // a Renew that took effect would have ended the lease
		f.checkInFlight(f.lookup(held), tok, fp, longLease, time.Now())
		f.complete(held, tok, response("owner"), longRetention)
	}
}

func testArgumentsCopied(f *fixture) {
	key, tok := f.key("k"), newToken()
	fp := []byte("fingerprint")
	f.acquireWins(key, tok, fp, longLease)
	fp[0] = 'X'
	want := []byte("fingerprint")
	f.checkInFlight(f.lookup(key), tok, want, longLease, time.Now())

	sent := response("the body")
	f.complete(key, tok, sent, longRetention)
	keep := response("the body")
	sent.Body[0] = 'X'
	sent.Header[0].Value = "mutated"
	sent.Header = append(sent.Header[:1], idem.HeaderField{Name: "X-Appended", Value: "yes"})
	sent.Status = 599
	f.checkCompleted(f.lookup(key), keep, want, longRetention, time.Now())
}

func testManyKeys(f *fixture) {
	const workers, perWorker = 16, 32
	// forKeys runs do for every key, from workers goroutines at once.
	forKeys := func(do func(key, name string) error) {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					name := fmt.Sprintf("w%d-k%d", w, i)
					if err := do(f.key(name), name); err != nil {
						f.t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	forKeys(func(key, name string) error {
		tok := newToken()
		rec, err := f.s.Acquire(f.ctx, key, tok, []byte(name), longLease)
		if err != nil || rec != nil {
			return fmt.Errorf("Acquire(%q) on a new key = (%v, %v), want the lease", key, rec, err)
		}
		return f.s.Complete(f.ctx, key, tok, response(name), longRetention)
	})
	if f.t.Failed() {
		return
	}
	forKeys(func(key, name string) error {
		rec, err := f.s.Acquire(f.ctx, key, newToken(), []byte(name), longLease)
		switch {
		case err != nil:
			return fmt.Errorf("Acquire(%q): %v", key, err)
		case rec == nil:
			return fmt.Errorf("key %q lost its completed record", key)
		case rec.State != idem.Completed || string(rec.Body) != name || string(rec.Fingerprint) != name:
			return fmt.Errorf("key %q holds a %s record with body %q and fingerprint %q, want its own", key, rec.State, rec.Body, rec.Fingerprint)
		}
		return nil
	})
}

func testNotReplayable(f *fixture) {
	key, tok, fp := f.key("k"), newToken(), []byte("fp")
	f.acquireWins(key, tok, fp, longLease)
	sent := &idem.Record{State: idem.Completed, Status: 200, NotReplayable: true}
	f.completeAndCheck(key, tok, fp, sent)
}

func testDistinctKeys(f *fixture) {
	base := f.key("Key-abc")
	keys := []string{base, strings.ToLower(base), strings.ToUpper(base), base + "x", base[:len(base)-1], "x" + base, base + " "}
	tokens := make([]idem.Token, len(keys))
	for i, k := range keys {
		tokens[i] = newToken()
		f.acquireWins(k, tokens[i], []byte(k), longLease)
	}
	for i, k := range keys {
		f.checkInFlight(f.lookup(k), tokens[i], []byte(k), longLease, time.Now())
	}
	f.complete(keys[0], tokens[0], response("only the first"), longRetention)
	for i, k := range keys[1:] {
		if rec := f.lookup(k); rec.State != idem.InFlight {
			f.t.Errorf("completing %q changed %q to %s", keys[0], k, rec.State)
		}
		if err := f.s.Release(f.ctx, k, tokens[i+1]); err != nil {
			f.t.Errorf("Release(%q): %v", k, err)
		}
	}
	if rec := f.lookup(keys[0]); rec.State != idem.Completed {
		f.t.Errorf("releasing the other keys changed %q to %s", keys[0], rec.State)
	}
}
