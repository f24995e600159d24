package conformance_test

import (
	"go/parser"
	"go/token"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/idemkit/idem/conformance"
)

// bareHarness serves conformance apps with plain net/http and no idem
// middleware at all: the engine is built and never used.
type bareHarness struct{}

func (bareHarness) Lacks() map[conformance.Capability]string {
	return map[conformance.Capability]string{
		conformance.HandlerError: "net/http handlers return no error",
	}
}

func (bareHarness) Serve(t testing.TB, app conformance.App) string {
	mux := http.NewServeMux()
	for _, r := range app.Routes {
		mux.Handle(r.Method+" "+r.Path, r.Handler)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // scripted panics
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestNoMiddleware serves the suite with no idem middleware at all: only
// the non-interference cases the package documentation names may pass,
// at most five of them, and every one of them must.
func TestNoMiddleware(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("a child process runs only TestSuiteChild")
	}
	named := nonInterferenceCases(t)
	if len(named) == 0 || len(named) > 5 {
		t.Fatalf("the package documentation names %d non-interference cases, want 1 to 5: %q", len(named), named)
	}
	run := runChild("none", "", false)
	if len(run.passed)+len(run.failed) == 0 {
		t.Fatalf("the child process ran no case (%v):\n%s", run.err, tail(run.output, 4000))
	}
	passed := slices.Sorted(slices.Values(run.passed))
	if !slices.Equal(passed, named) {
		t.Fatalf("without middleware these cases pass: %q; the package documentation names as non-interference: %q", passed, named)
	}
	t.Logf("without middleware %d cases pass (the non-interference ones), %d fail, %d skip", len(run.passed), len(run.failed), len(run.skipped))
}

// nonInterferenceCases returns the case names listed, sorted, in the
// "Non-interference cases" section of the package documentation.
func nonInterferenceCases(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil || f.Doc == nil {
		t.Fatalf("reading the package documentation in doc.go: %v", err)
	}
	doc := f.Doc.Text()
	_, section, ok := strings.Cut(doc, "# Non-interference cases\n")
	if !ok {
		t.Fatalf("the package documentation has no \"# Non-interference cases\" section")
	}
	if i := strings.Index(section, "\n# "); i >= 0 {
		section = section[:i]
	}
	names := regexp.MustCompile(`(?m)^\s+- (B\d+/[a-z0-9_]+)`).FindAllStringSubmatch(section, -1)
	var out []string
	for _, m := range names {
		out = append(out, m[1])
	}
	slices.Sort(out)
	return out
}
