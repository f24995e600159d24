package conformance

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
)

// EnvVar is an environment variable that enables tests, with an example
// value for the line AnnounceSkips prints.
type EnvVar struct{ Name, Example string }

// RedisURL and PostgresURL are the variables the workspace's server tests
// read.
var (
	RedisURL    = EnvVar{"IDEM_REDIS_URL", "redis://127.0.0.1:6379/0"}
	PostgresURL = EnvVar{"IDEM_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"}
)

// AnnounceSkips is for the TestMain of a package whose tests need servers
// named by environment variables. When some of vars are unset it prints
// one line naming the package, what skips and the variables that enable
// it, such as
//
//	github.com/idemkit/idem/storage/redis: skipping the Redis store tests: set IDEM_REDIS_URL=redis://127.0.0.1:6379/0 to run them
//
// and it reports whether it did. go test shows what a passing package
// printed only under -v, so without -v the line goes to the terminal
// (/dev/tty) when there is one: a plain `go test work` then shows one such
// line per package that skips something. With -v (or -json) the line is
// part of the package's output. A result that go test replays from its
// cache prints nothing.
func AnnounceSkips(what string, vars ...EnvVar) bool {
	pkg := "this package"
	if pc, _, _, ok := runtime.Caller(1); ok {
		if f := runtime.FuncForPC(pc); f != nil {
			pkg = packageOf(f.Name())
		}
	}
	line, skips := skipLine(pkg, what, vars)
	if !skips {
		return false
	}
	if !flag.Parsed() {
		flag.Parse()
	}
	var out io.Writer = os.Stdout
	if !testing.Verbose() {
		tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0)
		if err != nil {
			return true // no terminal: nobody to tell
		}
		defer tty.Close()
		out = tty
	}
	_, _ = io.WriteString(out, line)
	return true
}

// packageOf returns the import path of the package of a function named as
// runtime.FuncForPC names it, without the _test of an external test
// package: github.com/idemkit/idem/storage/redis_test.TestMain gives
// github.com/idemkit/idem/storage/redis.
func packageOf(funcName string) string {
	if i := strings.LastIndex(funcName, "."); i > strings.LastIndex(funcName, "/") {
		funcName = funcName[:i]
	}
	return strings.TrimSuffix(funcName, "_test")
}

// skipLine is the line AnnounceSkips prints for pkg, and whether any of
// vars is unset.
func skipLine(pkg, what string, vars []EnvVar) (string, bool) {
	var unset []string
	for _, v := range vars {
		if os.Getenv(v.Name) == "" {
			unset = append(unset, v.Name+"="+v.Example)
		}
	}
	if len(unset) == 0 {
		return "", false
	}
	return fmt.Sprintf("%s: skipping %s: set %s to run them\n", pkg, what, strings.Join(unset, " and ")), true
}
