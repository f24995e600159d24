package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// startedByGoRun reports whether this binary is the one `go run` built and
// started: it lives in a go-build directory's exe folder. When `go run` is
// killed by a signal other than the terminal's Ctrl-C (a SIGTERM, a
// SIGKILL, an IDE's stop button), it exits without passing the signal on,
// and the server it started would keep serving, orphaned.
func startedByGoRun() bool {
	exe, err := os.Executable()
	if err != nil {
		return false
	}
	dir := filepath.Dir(exe)
	return filepath.Base(dir) == "exe" && strings.HasPrefix(filepath.Base(filepath.Dir(filepath.Dir(dir))), "go-build")
}

// parentPoll is how often withParent checks on the parent process.
const parentPoll = 250 * time.Millisecond

// withParent returns a context that is done when ctx is, or when the
// process that started this one has exited (this process then has another
// parent). Where a parent's exit does not change the parent id (Windows),
// it is ctx.
func withParent(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	parent := os.Getppid()
	go func() {
		t := time.NewTicker(parentPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if os.Getppid() != parent {
					cancel(errParentExited)
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

var errParentExited = errors.New("the parent process exited")
