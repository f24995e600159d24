package idem

import "context"

// FindingKind says what the engine found for a key on a Manual route.
type FindingKind uint8

const (
	// FoundCompleted: the key's request already ran; Finding.Response holds
	// its recorded response unless Finding.NotReplayable is set.
	FoundCompleted FindingKind = iota + 1
	// FoundInFlight: a request with the key is still running.
	FoundInFlight
	// FoundMismatch: the key was used for a different request.
	FoundMismatch
)

// String returns "completed", "in-flight" or "mismatch".
func (k FindingKind) String() string {
	switch k {
	case FoundCompleted:
		return "completed"
	case FoundInFlight:
		return "in-flight"
	case FoundMismatch:
		return "mismatch"
	}
	return "unknown"
}

// Finding is what the engine found on a Manual route where it would
// otherwise have answered itself (B26). The handler's response to such a
// request is not stored.
type Finding struct {
	Kind FindingKind
	// Response is the recorded response of a completed record (the
	// original status, the stored headers, the body), without the
	// Idempotent-Replayed header. Nil for other kinds.
	Response *Response
	// NotReplayable reports a completed record whose response was not
	// stored (B19).
	NotReplayable bool
	// Problem is the problem the engine would have answered with.
	Problem *Problem
}

type findingKey struct{}

// WithFinding returns a context that carries f. Adapters call it before
// running a Manual handler.
func WithFinding(ctx context.Context, f *Finding) context.Context {
	return context.WithValue(ctx, findingKey{}, f)
}

// FindingFrom returns the Finding a Manual handler's context carries; ok is
// false when the engine found nothing and the request runs as a first
// request.
func FindingFrom(ctx context.Context) (f *Finding, ok bool) {
	f, ok = ctx.Value(findingKey{}).(*Finding)
	return f, ok && f != nil
}
