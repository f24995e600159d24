package idem

import (
	"errors"
	"fmt"
	"reflect"
	"time"
)

// Validate reports whether r's settings can serve a route: Policy must be
// Inherit or one of the policies, and Retention 0 (the engine's) or at
// least 1ms, the bound New applies to Config.Retention. An adapter calls
// it when it builds a route-level middleware, to refuse a bad setting
// before any request arrives, and reports the error as its own
// configuration error: the error joins one error per problem (it unwraps
// to them, as errors.Join's do), each naming the setting as the adapter's
// configuration spells it, without a package prefix, for instance
// "Retention 1µs is neither 0 nor at least 1ms".
func (r Route) Validate() error {
	var errs []error
	if r.Policy > Manual {
		errs = append(errs, fmt.Errorf("Policy %d is not a policy", r.Policy))
	}
	if r.Retention < 0 || r.Retention > 0 && r.Retention < time.Millisecond {
		//lint:ignore ST1005 the message starts with the field's name, Retention
		errs = append(errs, fmt.Errorf("Retention %v is neither 0 nor at least 1ms", r.Retention))
	}
	return errors.Join(errs...)
}

// Resolve returns r with the settings it leaves to the engine filled in
// from the engine's configuration: an Inherit Policy becomes
// Config.DefaultPolicy, a nil Store the engine's store, and a Retention of
// 0 (or a negative one, which Validate refuses) Config.Retention. Name is
// kept as it is. Begin applies r.Route as Resolve returns it.
func (e *Engine) Resolve(r Route) Route {
	if r.Policy == Inherit {
		r.Policy = e.cfg.DefaultPolicy
	}
	if r.Store == nil {
		r.Store = e.store
	}
	if r.Retention <= 0 {
		r.Retention = e.cfg.Retention
	}
	return r
}

// Overrides lists the settings of inner that would have changed how a
// request was handled, where stacked idem layers let an outer layer with
// the route settings outer take charge of the request (it took part, see
// Decision.TookPart) and the inner layer, with its own settings inner,
// passes the request through. It returns nil when inner would have handled
// the request the same way; an adapter then has nothing to warn about.
//
// A setting inner leaves zero would have come from outer, so it changes
// nothing. An outer layer takes charge only of a request that carries a
// key, and with a key Optional acts as Required, so those two policies
// count as equal. Stores are compared without panicking on store types
// that are not comparable: two such stores count as different. Name is
// not compared.
//
// Each entry describes one setting for a log line, for instance
// "policy exempt (the request ran as optional)", "store" or
// "retention 1h0m0s (the request used 24h0m0s)".
func (e *Engine) Overrides(inner, outer Route) []string {
	applied := e.Resolve(outer)
	wanted := e.Resolve(inner.Merge(applied))
	var diffs []string
	if keyed(wanted.Policy) != keyed(applied.Policy) {
		diffs = append(diffs, "policy "+wanted.Policy.String()+" (the request ran as "+applied.Policy.String()+")")
	}
	if !sameStore(wanted.Store, applied.Store) {
		diffs = append(diffs, "store")
	}
	if wanted.Retention != applied.Retention {
		diffs = append(diffs, "retention "+wanted.Retention.String()+" (the request used "+applied.Retention.String()+")")
	}
	return diffs
}

// keyed returns how policy p treats a request that carries a key:
// Optional then acts as Required.
func keyed(p Policy) Policy {
	if p == Optional {
		return Required
	}
	return p
}

// sameStore reports whether a and b are the same store. Comparing two
// interface values whose dynamic type is not comparable panics, so such
// stores count as different.
func sameStore(a, b Store) bool {
	t := reflect.TypeOf(a)
	if t != reflect.TypeOf(b) {
		return false
	}
	if t == nil {
		return true
	}
	return t.Comparable() && a == b
}
