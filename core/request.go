package idem

import (
	"context"
	"io"
	"time"
)

// Policy says how a route takes part in idempotency (B2).
type Policy uint8

const (
	// Inherit is the zero Policy: the route uses the engine's default.
	Inherit Policy = iota
	// Required routes answer 400 when the key is missing; with a key the
	// request runs once and retries are replayed.
	Required
	// Optional routes run requests without a key untracked, and treat
	// requests with a key as Required does.
	Optional
	// Exempt routes never read the key and never touch the store.
	Exempt
	// Manual routes lease like Required, but where the engine would answer
	// a retry itself (replay, 409, 410, 422) the handler runs instead and
	// reads what the engine found with FindingFrom (B26).
	Manual
)

// String returns the policy's name.
func (p Policy) String() string {
	switch p {
	case Inherit:
		return "inherit"
	case Required:
		return "required"
	case Optional:
		return "optional"
	case Exempt:
		return "exempt"
	case Manual:
		return "manual"
	}
	return "invalid"
}

// Route holds route-level settings (B2, B27). Zero fields inherit the
// engine's configuration.
type Route struct {
	// Policy overrides Config.DefaultPolicy.
	Policy Policy
	// Store overrides Config.Store.
	Store Store
	// Retention overrides Config.Retention.
	Retention time.Duration
	// Name names the route in logs and events, for instance its pattern.
	Name string
}

// Header gives read access to a set of header fields by name. Names match
// case-insensitively. net/http's http.Header satisfies it.
type Header interface {
	Values(name string) []string
}

// Request is the framework-neutral view of an HTTP request that an adapter
// hands to Engine.Begin.
//
// Begin does not keep the Request: an adapter may pass Path, RawQuery,
// header values and BodyBytes that are views of its own buffers, valid only
// while Begin runs. Method and Route.Name must be stable strings: the engine
// keeps them in the Lease for its events.
type Request struct {
	Method   string
	Path     string
	RawQuery string
	Header   Header
	// Body is the request body; nil means empty. The engine reads it only
	// when the request takes part in idempotency; see Decision.Body.
	Body io.Reader
	// ContentLength, when positive, is the body size the client declared;
	// the engine uses it to size its buffer and to refuse an oversized body
	// before reading it.
	ContentLength int64
	// BodyBytes, when non-nil, is the whole body, already in memory (as
	// fasthttp holds it). The engine fingerprints it without copying and
	// without touching Body, and leaves Decision.BodyRead false.
	BodyBytes []byte
	// Context is the request's context; nil means context.Background().
	Context context.Context
	// Route holds the settings of the route that serves the request.
	Route Route
}

func (r *Request) context() context.Context {
	if r.Context != nil {
		return r.Context
	}
	return context.Background()
}

// Response is a response the engine answers with itself: a replay or a
// problem. An adapter writes Header, then Status, then Body. A Response may
// be shared with other requests and with the store (a rendered problem, a
// replayed body): write it out, never modify it.
type Response struct {
	Status int
	Header []HeaderField
	Body   []byte
}

// Recorded is the response a handler produced, as an adapter saw it while
// passing it on to the client.
type Recorded struct {
	// Status is the status code sent; 0 means 200.
	Status int
	// Header holds the response header fields as sent.
	Header Header
	// Body holds the body bytes sent, up to Lease.MaxBody. Complete hands
	// it to a store, which copies what it keeps: the adapter may reuse the
	// buffer once Complete returned.
	Body []byte
	// Truncated reports that the handler wrote more than Lease.MaxBody
	// bytes, so Body is incomplete.
	Truncated bool
	// Streamed reports that the response was flushed or streamed to the
	// client before the handler finished.
	Streamed bool
}
