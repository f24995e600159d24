package storetest_test

import (
	"testing"

	"github.com/idemkit/idem/conformance/storetest"
	idem "github.com/idemkit/idem/core"
)

// A store's own test file runs the suite and the benchmarks with a function
// that makes a fresh store for each case and registers its cleanup. Here
// the store is the in-memory one; a networked store's function would also
// skip when its server is not configured.
func Example() {
	newStore := func(t *testing.T) idem.Store {
		s := idem.NewMemoryStore(idem.MemoryOptions{})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	// In a _test.go file:
	//
	//	func TestStore(t *testing.T) { storetest.Run(t, newStore) }
	testStore := func(t *testing.T) { storetest.Run(t, newStore) }
	_ = testStore
}
