package storetest_test

import (
	"testing"

	"github.com/idemkit/idem/conformance"
	"github.com/idemkit/idem/conformance/storetest"
	idem "github.com/idemkit/idem/core"
)

// A store's own test file runs the suite and the benchmarks with one
// function that makes a fresh store for each case and registers its
// cleanup; the same function gives the adapter suite its store. Here the
// store is the in-memory one; a networked store's function would also skip
// when its server is not configured.
func Example() {
	var newStore storetest.NewStore = func(tb testing.TB) idem.Store {
		s := idem.NewMemoryStore(idem.MemoryOptions{})
		tb.Cleanup(func() { _ = s.Close() })
		return s
	}
	// In a _test.go file:
	//
	//	func TestStore(t *testing.T)      { storetest.Run(t, newStore) }
	//	func BenchmarkStore(b *testing.B) { storetest.RunBenchmarks(b, newStore) }
	//
	// and, in an adapter's tests, conformance.WithStore(newStore).
	testStore := func(t *testing.T) { storetest.Run(t, newStore) }
	benchStore := func(b *testing.B) { storetest.RunBenchmarks(b, newStore) }
	withStore := conformance.WithStore(newStore)
	_, _, _ = testStore, benchStore, withStore
}
