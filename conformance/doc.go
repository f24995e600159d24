// Package conformance is the adapter conformance suite of idem: a table of
// named cases that speak real HTTP to an application served through an
// adapter and check every rule of the behaviour contract a client can
// observe.
//
// Each case is a subtest named after the rule it checks, such as
// "B10/key_reused_with_other_body", and prints a one-line explanation when
// it fails. Every case builds a fresh engine on a fresh store and its own
// App, has its own timeout, and is safe under the race detector.
//
// # Running the suite against an adapter
//
// Implement [Harness] in a _test.go file of the adapter's module: Serve
// starts a server for an [App] on a loopback listener, with the adapter's
// middleware built from App.Engine and, for each [Route] whose Settings are
// not zero, the route-level settings applied the way the adapter tells its
// users to give one route its own policy, store and retention. Each route's
// handler reads the whole request body, calls [Handler.Serve] with the
// request's context and does what the returned [Step] says. Lacks names
// the capabilities the framework does not have; the cases that need them
// skip with that reason. Then call [Run]:
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
