//go:build crashtest

package main

import (
	"os"
	"syscall"
)

// A test build kills its process with SIGKILL at the crash point named by
// $ORDERS_CRASH_AT (see crashpoint.go); TestCrash builds it.
func init() {
	crashAt = os.Getenv("ORDERS_CRASH_AT")
	crash = func() {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
