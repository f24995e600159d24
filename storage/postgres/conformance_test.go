package idempg

import (
	"testing"

	"github.com/idemkit/idem/conformance/storetest"
	idem "github.com/idemkit/idem/core"
	"github.com/jackc/pgx/v5"
)

// TestConformance runs the Store contract's conformance suite, each case
// against a store over its own table.
func TestConformance(t *testing.T) {
	storetest.Run(t, suiteStore)
}

// suiteStore is the constructor the store suite and its benchmarks share.
var suiteStore storetest.NewStore = func(tb testing.TB) idem.Store { return newTestStore(tb, Options{}) }

// TestConformanceSimpleProtocol runs the suite over a pool that sends
// every query with the simple protocol, as pools behind PgBouncer in
// transaction mode are configured.
func TestConformanceSimpleProtocol(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) idem.Store {
		return newTestStoreOn(tb, testPoolMode(tb, pgx.QueryExecModeSimpleProtocol), Options{})
	})
}

// BenchmarkStore measures the store through the suite's benchmarks.
func BenchmarkStore(b *testing.B) {
	storetest.RunBenchmarks(b, suiteStore)
}
