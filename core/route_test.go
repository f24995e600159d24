package idem_test

import (
	"context"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// Begin fills what a route leaves to the engine from its configuration.
func TestRouteInheritsTheEngine(t *testing.T) {
	e, err := idem.New(idem.Config{DefaultPolicy: idem.Optional, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })

	// A request on a zero route runs Optional: without a key it passes.
	if d := e.Begin(&idem.Request{Method: "POST", Path: "/orders", Context: context.Background()}); d.Action != idem.Pass || d.TookPart() {
		t.Errorf("zero route without a key: %v (took part %v), want an untracked pass", d.Action, d.TookPart())
	}
}
