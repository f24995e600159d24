package adapterkit

import (
	"fmt"
	"reflect"
	"time"

	idem "github.com/idemkit/idem/core"
)

// Settings are the route-level settings of one idem layer, named the same
// in every adapter: Policy, Store, Retention, RouteName, ProblemHandler.
// A zero field means "not set here": the setting comes from an outer
// layer (see Stacking in the package documentation) or else from the
// engine's Config.
type Settings[C any] struct {
	// Policy overrides Config.DefaultPolicy (B2).
	Policy idem.Policy
	// Store keeps the layer's records in place of the engine's store (B27).
	Store idem.Store
	// Retention overrides Config.Retention (B27): 0, or at least 1ms.
	Retention time.Duration
	// RouteName names the request's route in logs and events. Nil: the
	// name Framework.RouteName gives, the framework's route pattern.
	RouteName func(c C) string
	// ProblemHandler answers in place of the engine's rendering where the
	// engine refuses a request (B25). What it returns is what Serve
	// returns. Nil: the engine's rendering, written with Framework.Write.
	ProblemHandler func(c C, p *idem.Problem) error
}

// under returns s with every field it leaves zero taken from outer: the
// layer nearer the handler wins (B2).
func (s Settings[C]) under(outer *Settings[C]) Settings[C] {
	s = s.inherit(outer)
	if s.Policy == idem.Inherit {
		s.Policy = outer.Policy
	}
	if s.RouteName == nil {
		s.RouteName = outer.RouteName
	}
	return s
}

// handsOn reports whether s holds settings that a layer which leaves a
// request to inner layers hands on to them (see inherit).
func (s *Settings[C]) handsOn() bool {
	return s.Store != nil || s.Retention != 0 || s.ProblemHandler != nil
}

// inherit returns s with the Store, Retention and ProblemHandler it
// leaves unset taken from outer, the settings of a layer that left the
// request to this one. Policy and RouteName stay s's: the outer layer's
// policy has had its say (it let the request through), and each layer
// names the request's route itself.
func (s Settings[C]) inherit(outer *Settings[C]) Settings[C] {
	if s.Store == nil {
		s.Store = outer.Store
	}
	if s.Retention == 0 {
		s.Retention = outer.Retention
	}
	if s.ProblemHandler == nil {
		s.ProblemHandler = outer.ProblemHandler
	}
	return s
}

// validate returns one error per setting that cannot serve a route.
func (s *Settings[C]) validate() []error {
	var errs []error
	if s.Policy > idem.Manual {
		//lint:ignore ST1005 the message starts with the setting's name, Policy
		errs = append(errs, fmt.Errorf("Policy %d is not a policy", s.Policy))
	}
	if s.Retention < 0 || s.Retention > 0 && s.Retention < time.Millisecond {
		//lint:ignore ST1005 the message starts with the setting's name, Retention
		errs = append(errs, fmt.Errorf("Retention %v is neither 0 nor at least 1ms", s.Retention))
	}
	return errs
}

// defaults are the engine's settings for what a layer leaves unset.
type defaults struct {
	policy    idem.Policy
	store     idem.Store
	retention time.Duration
}

// resolved is a layer's policy, store and retention as a request applies
// them.
type resolved struct {
	policy    idem.Policy
	store     idem.Store
	retention time.Duration
}

func resolve[C any](d *defaults, s *Settings[C]) resolved {
	r := resolved{s.Policy, s.Store, s.Retention}
	if r.policy == idem.Inherit {
		r.policy = d.policy
	}
	if r.store == nil {
		r.store = d.store
	}
	if r.retention <= 0 {
		r.retention = d.retention
	}
	return r
}

// overrides lists the settings of inner that would have changed how a
// request was handled, where an outer layer with the settings outer took
// charge of it and the inner layer passes it through; nil when inner
// would have handled it the same way. A setting inner leaves zero would
// have come from outer. An outer layer takes charge only of a request
// that carries a key (or lacks one on a Required route), and with a key
// Optional acts as Required, so those two policies count as equal.
// Stores are compared without panicking on store types that are not
// comparable: two such stores count as different.
func overrides[C any](d *defaults, inner, outer *Settings[C]) []string {
	applied := resolve(d, outer)
	merged := inner.under(outer)
	wanted := resolve(d, &merged)
	var diffs []string
	if keyed(wanted.policy) != keyed(applied.policy) {
		diffs = append(diffs, "policy "+wanted.policy.String()+" (the request ran as "+applied.policy.String()+")")
	}
	if !sameStore(wanted.store, applied.store) {
		diffs = append(diffs, "store")
	}
	if wanted.retention != applied.retention {
		diffs = append(diffs, "retention "+wanted.retention.String()+" (the request used "+applied.retention.String()+")")
	}
	return diffs
}

// keyed returns how policy p treats a request that carries a key:
// Optional then acts as Required.
func keyed(p idem.Policy) idem.Policy {
	if p == idem.Optional {
		return idem.Required
	}
	return p
}

// sameStore reports whether a and b are the same store. Comparing two
// interface values whose dynamic type is not comparable panics, so such
// stores count as different.
func sameStore(a, b idem.Store) bool {
	t := reflect.TypeOf(a)
	if t != reflect.TypeOf(b) {
		return false
	}
	if t == nil {
		return true
	}
	return t.Comparable() && a == b
}
