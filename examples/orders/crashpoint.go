package main

import (
	"context"

	idem "github.com/idemkit/idem/core"
)

// The points in a request where a test build of the command (built with
// -tags crashtest, see crashtest.go) can kill its own process with
// SIGKILL, to check what a retry finds after a crash there. In the command
// itself nothing happens at them.
const (
	// beforeHandler: the request won its key's lease; the handler has not
	// run (reported through the engine's Observer).
	beforeHandler = "before-handler"
	// beforeWrite: the handler runs; it has not written the order.
	beforeWrite = "before-write"
	// afterWrite: the handler wrote the order; the idempotency record is
	// not completed.
	afterWrite = "after-write"
	// afterComplete: the record is completed; the response has not reached
	// the client (reported through the engine's Observer).
	afterComplete = "after-complete"
)

// crashAt is the crash point of a test build, "" in the command.
var crashAt string

// crashPoint kills the process when a test build is set to crash at point.
func crashPoint(point string) {
	if point == crashAt {
		crash()
	}
}

// crash is set by a test build.
var crash = func() {}

// crashObserver calls crashPoint for the points the engine reports: the
// decision to run the handler (beforeHandler) and the completed record
// (afterComplete). It is nil in the command.
func crashObserver() idem.Observer {
	if crashAt == "" {
		return nil
	}
	return idem.ObserverFunc(func(_ context.Context, ev idem.Event) {
		switch ev.Outcome {
		case idem.Executed:
			crashPoint(beforeHandler)
		case idem.Stored:
			crashPoint(afterComplete)
		}
	})
}
