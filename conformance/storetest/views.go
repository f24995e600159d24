package storetest

import (
	"bytes"
	"testing"
	"time"
	"unsafe"

	idem "github.com/idemkit/idem/core"
)

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

// testRecordStaysPut checks what a record Acquire returns may and may not
// share with the store: its Header slice is the caller's own (the engine
// appends Idempotent-Replayed to it), and its bytes stay as they were
// while the store changes.
func testRecordStaysPut(f *fixture) {
	key, tok := f.key("k"), newToken()
	fp := []byte("fingerprint")
	f.acquireWins(key, tok, fp, longLease)
	sent := response("the first body")
	f.complete(key, tok, sent, shortKeep)
	v := f.lookup(key)
	keep := copyRecord(*v)

	// The caller's own: the Header slice, the record's fields.
	v.Header = append(v.Header, idem.HeaderField{Name: idem.ReplayedHeader, Value: "true"})
	v.Header[0] = idem.HeaderField{Name: "X-Mutated", Value: "yes"}
	v.Status, v.Token[0] = 599, v.Token[0]^0xff
	w := f.lookup(key)
	if len(w.Header) != len(keep.Header) || w.Header[0] != keep.Header[0] || w.Status != keep.Status {
		f.t.Errorf("after the caller changed and appended to a returned record's Header, the store returns %d fields (first %q) and status %d, want %d (first %q) and %d",
			len(w.Header), w.Header[0], w.Status, len(keep.Header), keep.Header[0], keep.Status)
	}
	v.Header = v.Header[:len(keep.Header)]
	copy(v.Header, keep.Header)

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
		f.t.Errorf("the returned record's body changed to %s, want %s", showBytes(v.Body), showBytes(keep.Body))
	case !bytes.Equal(v.Fingerprint, keep.Fingerprint):
		f.t.Errorf("the returned record's fingerprint changed to %s, want %s", showBytes(v.Fingerprint), showBytes(keep.Fingerprint))
	}
	for i, h := range keep.Header {
		if v.Header[i] != h {
			f.t.Errorf("the returned record's header field %d changed to %q, want %q", i, v.Header[i], h)
		}
	}
}

// testKeyIsCopied checks that a store keeps no reference to the key
// passed to Acquire: the engine reuses the key's memory.
func testKeyIsCopied(f *fixture) {
	keyBytes := []byte(f.key("k"))
	want := string(keyBytes)
	key := unsafe.String(&keyBytes[0], len(keyBytes))
	fp := []byte("fingerprint")
	tok := newToken()
	f.acquireWins(key, tok, fp, longLease)
	for i := range keyBytes {
		keyBytes[i] = 'x'
	}
	f.checkInFlight(f.lookup(want), tok, []byte("fingerprint"), longLease, time.Now())
	f.complete(want, tok, response("body"), longRetention)
}
