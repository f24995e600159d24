package idem

// resolve returns r with the settings it leaves to the engine filled in
// from the engine's configuration: an Inherit Policy becomes
// Config.DefaultPolicy, a nil Store the engine's store, and a Retention of
// 0 (or a negative one, which adapters refuse) Config.Retention. Begin
// applies r.Route as resolve returns it.
func (e *Engine) resolve(r Route) Route {
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
