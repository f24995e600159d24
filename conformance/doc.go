// Package conformance is the adapter conformance suite of idem: a table of
// named cases that speak real HTTP to an application served through an
// adapter and check every rule of the behaviour contract a client can
// observe.
//
// Each case is a named function and a subtest named after the rule it
// checks, such as "B10/key_reused_with_other_body", and prints a one-line
// explanation when it fails. Every case builds a fresh engine on a fresh
// store and its own App, has its own timeout, and is safe under the race
// detector. Every case that claims an effect on the store (a record
// completed, a lease released, nothing stored, a fail-open run) counts the
// store's calls for its key.
//
// # Non-interference cases
//
// A few cases check only that idem leaves alone what it must not touch,
// so an application served with no idem middleware at all passes them
// too. Every other case fails without a working adapter; a test of this
// module serves the suite with plain net/http and no middleware and
// checks that exactly these pass:
//
//   - B1/safe_methods_pass_through: safe methods run every time and never
//     touch the store.
//   - B3/exempt_ignores_key_and_store: an Exempt route runs every time and
//     never touches the store.
//   - B6/missing_key_optional_runs_untracked: an Optional route runs a
//     request without a key every time.
//
// # Mutation catalogue
//
// The module's tests also hold two reference adapters, one written by
// hand for a small gin-like framework and one on core/adapterkit, and a
// catalogue of faults an adapter author could plausibly make in them (a
// dropped query, a body not restored, headers recorded when the status is
// chosen, a status-only response stored as 200, a flush that bypasses the
// recorder, a panic, Goexit or hijack that does not release, two stacked
// layers that both process, a mark the kit cannot find, ...). Each fault
// must make at least one case fail:
//
//	IDEM_MUTANTS=1 go test -race -count=1 -run '^TestMutants$' -v ./conformance
//
// prints which case kills each fault and "conformance mutants: K of N
// killed", and fails unless K = N.
//
// # Running the suite against an adapter
//
// Implement [Harness] in a _test.go file of the adapter's module: Serve
// starts a server for an [App] on a loopback listener, with two stacked
// layers of the adapter's middleware built from App.Engine: a router-wide
// layer with App.Settings, and for each [Route] whose Settings are not
// zero a route layer with them, applied the way the adapter tells its
// users to give one route its own policy, store and retention. Each
// route's handler reads the whole request body, calls [Handler.Serve] with
// the request's context and does what the returned [Step] says, with the
// framework's own means: choosing a status before setting more header
// fields, its JSON responder, a status-only response. Lacks names the
// capabilities the framework does not have; the cases that need them skip
// with that reason. Then call [Run]:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, myHarness{})
//	}
//
// [WithStore] runs every case on stores of your own instead of the
// in-memory store, to check a store and an adapter together:
//
//	conformance.Run(t, myHarness{}, conformance.WithStore(func(t testing.TB) idem.Store {
//		return newRedisStore(t)
//	}))
//
// # Benchmarking an adapter
//
// [RunBenchmarks] measures an adapter the same way for every framework:
// POST [BenchPath] with a 1 KiB JSON body and a 1 KiB answer, without idem
// (path=bare) and behind it with the memory store (path=first, replay,
// in-flight), serially and in parallel, reporting CPU time per request
// besides wall time. Give it a [BenchApp] from a _test.go file:
//
//	func BenchmarkHTTP(b *testing.B) {
//		conformance.RunBenchmarks(b, func(b *testing.B, e *idem.Engine) func() conformance.BenchClient {
//			h := conformance.BenchHandler // behind your middleware when e is not nil
//			...
//			return func() conformance.BenchClient { return conformance.HTTPBenchClient(h) }
//		})
//	}
//
// A benchmark of its own (a race against another middleware, say) can
// reuse the pieces: [NewKeySet] and [RepeatKey] make a run's keys before
// its timer starts without giving the garbage collector b.N strings to
// scan, [WarmHeap] readies the memory a run of first requests keeps, and
// [MeasureRequests] sends the requests and checks every answer.
//
// The package imports only the standard library and the core package; it
// never imports an adapter. Stores have their own suite, in package
// storetest.
package conformance
