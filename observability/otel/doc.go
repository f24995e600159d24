// Package idemotel reports what the idem engine decides as OpenTelemetry
// metrics and span attributes; its name carries an idem prefix so it does
// not collide with the otel packages it is used beside.
//
// Set an [Observer] as idem.Config.Observer:
//
//	obs, err := idemotel.New(idemotel.Options{MeterProvider: mp})
//	if err != nil { ... }
//	engine, err := idem.New(idem.Config{Observer: obs})
//
// It counts requests by outcome, route and status, times every store call
// by operation and store, tracks the leases held now and the bytes
// replayed, and sets the outcome, the short key id and whether the answer
// was a replay on the request's active span (the span in the request's
// context, such as the one otelhttp starts), with an event for each store
// call that failed. It never records a raw key, a scope or a body (B28).
package idemotel
