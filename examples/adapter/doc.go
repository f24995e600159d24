// Package tiny is a complete idem adapter for a router outside the set
// this repository supports: router.go is a small router with gin- or
// Fiber-style handler chains, adapter.go its adapter on
// github.com/idemkit/idem/core/adapterkit, and conformance_test.go runs
// the adapter conformance suite against it. Copy the pattern for your own
// router.
package tiny
