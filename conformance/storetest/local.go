package storetest

import (
	"bytes"
	"context"
	"testing"
	"time"
	"unsafe"

	idem "github.com/idemkit/idem/core"
)

// runLocal runs the suite again on the path the engine takes with a store
// that implements idem.LocalStore: every lookup through AcquireView, plus
// the cases of the views themselves. A store that does not implement it
// skips the group.
func runLocal(t *testing.T, newStore NewStore) {
	local := func(s idem.Store) (idem.Store, bool) {
		l, ok := s.(idem.LocalStore)
		return viewStore{l}, ok
	}
	runGroup(t, "LocalStore", newStore, local, append(cases[:len(cases):len(cases)], localCases...))
}

// runGroup runs cases under name on the stores newStore makes, each seen
// through as, which reports whether the store implements the interface
// idem.<name>; when the first store it tries does not, the group skips.
func runGroup(t *testing.T, name string, newStore NewStore, as func(idem.Store) (idem.Store, bool), cases []testCase) {
	t.Run(name, func(t *testing.T) {
		if _, ok := as(newStore(t)); !ok {
			t.Skip("the store does not implement idem." + name)
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				s, _ := as(newStore(t))
				f := newFixture(t, c, s)
				defer f.stop()
				c.run(f)
			})
		}
	})
}

var localCases = []testCase{
	{"B13/ViewStaysPut", "a record AcquireView returns shares bytes the store never writes into again: it stays as it was while the key is completed anew, released, expired and reused, and its Header slice is the caller's own with room for one more field", testViewStaysPut},
	{"B11/ViewKeepsNoArgument", "AcquireView copies the key and fingerprint it stores: changing their bytes after the call changes nothing", testViewKeepsNoArgument},
}

// viewStore is a LocalStore whose Acquire goes through AcquireView, as
// the engine's does. Acquire's caller may change the record it gets, which
// a view forbids, so it gets a copy.
type viewStore struct{ idem.LocalStore }

func (s viewStore) Acquire(ctx context.Context, key string, token idem.Token, fp []byte, lease time.Duration) (*idem.Record, error) {
	rec, found, err := s.AcquireView(ctx, key, token, fp, lease)
	if err != nil {
		if found {
			return nil, errFoundWithError
		}
		return nil, err
	}
	if !found {
		return nil, nil
	}
	c := copyRecord(rec)
	return &c, nil
}

var errFoundWithError = &contractError{"AcquireView returned found together with an error"}

type contractError struct{ s string }

func (e *contractError) Error() string { return "storetest: " + e.s }

func copyRecord(r idem.Record) idem.Record {
	if r.Fingerprint != nil {
		r.Fingerprint = bytes.Clone(r.Fingerprint)
	}
	if r.Body != nil {
		r.Body = bytes.Clone(r.Body)
	}
	if r.Header != nil {
		r.Header = append([]idem.HeaderField(nil), r.Header...)
	}
	return r
}

// view returns what AcquireView returns for key, failing unless it found
// a live record.
func (f *fixture) view(key string) idem.Record {
	f.t.Helper()
	rec, found, err := f.s.(viewStore).AcquireView(f.ctx, key, newToken(), []byte("lookup"), longLease)
	if err != nil || !found {
		f.t.Fatalf("AcquireView(%q): found %v, %v; want the key's live record", key, found, err)
	}
	return rec
}

func testViewStaysPut(f *fixture) {
	key, tok := f.key("k"), newToken()
	fp := []byte("fingerprint")
	f.acquireWins(key, tok, fp, longLease)
	sent := response("the first body")
	f.complete(key, tok, sent, shortKeep)
	v := f.view(key)
	keep := copyRecord(v)
	if cap(v.Header) <= len(v.Header) {
		f.t.Errorf("the view's Header has no room for another field (len %d, cap %d)", len(v.Header), cap(v.Header))
	}
	// The engine appends Idempotent-Replayed to the view's Header.
	v.Header = append(v.Header, idem.HeaderField{Name: idem.ReplayedHeader, Value: "true"})
	if w := f.view(key); len(w.Header) != len(keep.Header) {
		f.t.Errorf("a second view has %d header fields after the first was appended to, want %d", len(w.Header), len(keep.Header))
	}

	// Other keys come and go; the key expires and is completed anew.
	other, otok := f.key("other"), newToken()
	f.acquireWins(other, otok, fp, longLease)
	if err := f.s.Release(f.ctx, other, otok); err != nil {
		f.t.Fatalf("Release(%q) by the owner: %v", other, err)
	}
	f.acquireWins(other, otok, fp, longLease)
	f.complete(other, otok, response("another body, long enough to take the freed room"), longRetention)
	tok2 := newToken()
	f.waitFree(key, tok2, []byte("other fingerprint"))
	f.complete(key, tok2, response("a second, different body"), longRetention)

	switch {
	case !bytes.Equal(v.Body, keep.Body):
		f.t.Errorf("the view's body changed to %s, want %s", showBytes(v.Body), showBytes(keep.Body))
	case !bytes.Equal(v.Fingerprint, keep.Fingerprint):
		f.t.Errorf("the view's fingerprint changed to %s, want %s", showBytes(v.Fingerprint), showBytes(keep.Fingerprint))
	}
	for i, h := range keep.Header {
		if v.Header[i] != h {
			f.t.Errorf("the view's header field %d changed to %q, want %q", i, v.Header[i], h)
		}
	}
}

func testViewKeepsNoArgument(f *fixture) {
	keyBytes := []byte(f.key("k"))
	want := string(keyBytes)
	key := unsafe.String(&keyBytes[0], len(keyBytes))
	fp := []byte("fingerprint")
	tok := newToken()
	if _, found, err := f.s.(viewStore).AcquireView(f.ctx, key, tok, fp, longLease); err != nil || found {
		f.t.Fatalf("AcquireView(%q) on a free key: found %v, %v; want the lease", want, found, err)
	}
	for i := range keyBytes {
		keyBytes[i] = 'x'
	}
	fp[0] = 'X'
	f.checkInFlight(f.lookup(want), tok, []byte("fingerprint"), longLease, time.Now())
	f.complete(want, tok, response("body"), longRetention)
}
