package conformance_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// plainHarness serves an App with net/http and no idem middleware at all;
// a real harness wraps each handler with its adapter. Run against it, most
// cases fail: that is what the suite is for.
type plainHarness struct{}

func (plainHarness) Serve(t testing.TB, app conformance.App) string {
	mux := http.NewServeMux()
	for _, rt := range app.Routes {
		mux.Handle(rt.Method+" "+rt.Path, rt.Handler) // a real harness wraps it with its adapter
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func (plainHarness) Lacks() map[conformance.Capability]string {
	return map[conformance.Capability]string{
		conformance.HandlerError: "net/http handlers return no error",
	}
}

// An adapter's test implements Harness and calls Run from a Test function.
// Here the harness is plainHarness; WithStore would pair it with a store
// of your own.
func ExampleRun() {
	var _ conformance.Harness = plainHarness{}
	test := func(t *testing.T) {
		conformance.Run(t, plainHarness{}, conformance.WithStore(func(t testing.TB) idem.Store {
			s := idem.NewMemoryStore(idem.MemoryOptions{Shards: 4})
			t.Cleanup(func() { _ = s.Close() })
			return s
		}))
	}
	_ = test // in a _test.go file: func TestConformance(t *testing.T) { test(t) }
}
