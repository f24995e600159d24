package conformance

import (
	"context"
	"sync"

	idem "github.com/idemkit/idem/core"
)

// EventRecorder is an idem.Observer that keeps every event the engine
// reports (B28), for tests that check them: set it as Config.Observer. It
// is safe for concurrent use; the zero value is ready.
type EventRecorder struct {
	mu     sync.Mutex
	events []idem.Event
}

// Observe implements idem.Observer.
func (r *EventRecorder) Observe(_ context.Context, ev idem.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

// Events returns the events recorded so far, oldest first.
func (r *EventRecorder) Events() []idem.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]idem.Event(nil), r.events...)
}

// With returns the recorded events whose outcome is o, oldest first.
func (r *EventRecorder) With(o idem.Outcome) []idem.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []idem.Event
	for _, ev := range r.events {
		if ev.Outcome == o {
			out = append(out, ev)
		}
	}
	return out
}

// Take returns the events recorded so far and forgets them.
func (r *EventRecorder) Take() []idem.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	events := r.events
	r.events = nil
	return events
}
