// Package storetest is the conformance suite for idem.Store implementations:
// a store's own test file calls Run (and RunBenchmarks) with a function that
// makes a fresh store, and every case checks one part of the Store contract
// documented in package idem.
//
// The suite follows gocloud.dev's drivertest and testing/slogtest: a table
// of named cases, each with a one-line explanation printed when it fails, a
// fresh store per case, a per-case timeout, and no shared state, so it is
// meant to run under the race detector. Stores expire records by their own
// clock (a Redis server expires keys itself), so the time-based cases use
// real, short durations and poll with a deadline.
package storetest
