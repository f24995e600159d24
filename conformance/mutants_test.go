package conformance_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idemkit/idem/conformance"
)

// The mutation catalogue: each entry is a plausible mistake of an adapter
// author, switched on by its name in the reference adapter
// (reference_test.go) or, for the kit_ ones, in the adapter on the kit
// (kitref_test.go). TestMutants runs the suite against each mutant in a child process
// and fails unless some case fails for every one of them.
var mutants = []struct{ name, mistake string }{
	// The reference adapter (reference_test.go): every translation point
	// written by hand.
	{"wrong_method", "hands the engine POST for every request (keys are for POST, isn't it?)"},
	{"wrong_path", "hands the engine the mount point instead of the request's path"},
	{"dropped_query", "leaves RawQuery out of the request"},
	{"scope_header_dropped", "shows the engine only the key header, so Authorization never scopes a key"},
	{"request_header_first_value_only", "shows the engine the first value of each header name only (fasthttp's Peek), so two key fields look like one"},
	{"body_not_restored_on_run", "runs the handler on the request body the engine already drained"},
	{"body_not_restored_on_pass", "passes a request whose body the engine read (fail-open, a Manual finding) with the drained body"},
	{"handler_runs_after_respond", "writes the replay or problem and then runs the handler anyway"},
	{"problem_as_text_plain", "writes a problem as text/plain with its detail, not the engine's problem+json"},
	{"respond_status_ignored", "writes every engine response with status 200"},
	{"replay_without_marker", "writes a replay without the Idempotent-Replayed field"},
	{"replay_headers_set_not_added", "writes replayed header fields with Set, so a repeated name keeps only its last value"},
	{"replay_written_before_headers", "sends the replay's status before its header fields, which are then lost"},
	{"headers_at_status", "records the header when the status is chosen, missing fields a handler (or c.JSON) sets before the body"},
	{"late_headers_dropped", "sends the header as soon as the status is chosen, so fields set after it never reach the client"},
	{"status_only_as_200", "records the status only when body bytes are written, so a status-only response is stored as 200"},
	{"status_not_recorded", "wraps only the writer's Write, so every recorded status is 200 (a 500 is stored, a 201 replays as 200)"},
	{"recorded_header_first_values_only", "records the first value of each header name only"},
	{"truncation_not_reported", "cuts the recorded body at the limit without marking it truncated"},
	{"flush_bypasses_recorder", "passes a flush on without marking the response streamed"},
	{"panic_not_released", "does not release the lease when the handler panics"},
	{"panic_swallowed", "releases on a panic but swallows it, so the framework's recovery never sees it"},
	{"goexit_not_released", "tells a failed handler by recover(), which runtime.Goexit gets past, so the key stays in flight until the lease expires"},
	{"hijack_not_released", "does not notice a hijack, and completes the lease after the handler returns"},
	{"complete_on_handler_error", "completes the lease with what was written when the handler returned an error"},
	{"lease_left_on_handler_error", "neither completes nor releases the lease when the handler returned an error"},
	{"finding_not_passed", "runs a Manual route's handler without the engine's Finding in its context"},
	{"outer_layer_wins", "lets the router-wide layer decide with its own settings, ignoring the route's layer"},
	{"two_layers_process", "lets every stacked layer process the request"},
	{"route_layer_not_merged", "lets the route layer decide with only its own settings, dropping what it inherits from the router-wide layer"},
	{"route_store_dropped", "hands the engine the route's policy and retention but not its store"},
	{"route_retention_dropped", "hands the engine the route's policy and store but not its retention"},
	{"run_context_not_passed", "runs the handler with the request's context, not the lease's, so a transactional store's handler has no transaction"},
	{"response_not_held", "passes the response on as the handler writes it under a transactional store, so the client may see a success whose commit then fails"},
	// The adapter on the kit (kitref_test.go): what an author writes on
	// core/adapterkit.
	{"kit_query_dropped", "Framework.Request leaves RawQuery out"},
	{"kit_header_first_value_only", "Framework.Request shows the engine the first value of each header name only"},
	{"kit_mark_lost", "Framework.Mark does not find the mark Hand left, so two stacked layers both process"},
	{"kit_context_not_handed", "Framework.Hand does not hand the handler h.Context: no finding, no mark"},
	{"kit_body_not_handed", "Framework.Hand does not hand the handler the body the engine read"},
	{"kit_writer_not_wrapped", "Framework.Hand does not wrap the response writer with h.Wrap, so nothing is recorded"},
	{"kit_write_status_first", "Framework.Write sends the status before the header fields, which are then lost"},
}

// The environment of a child process: which harness serves the suite, and
// for the reference adapter which mutant.
const (
	childEnv  = "IDEM_CONFORMANCE_CHILD"
	mutantEnv = "IDEM_MUTANT"
	// mutantsEnv turns TestMutants on; .ci/run sets it.
	mutantsEnv = "IDEM_MUTANTS"
)

// TestSuiteChild runs the suite in a child process started by TestMutants
// or TestNoMiddleware; it is skipped otherwise.
func TestSuiteChild(t *testing.T) {
	switch os.Getenv(childEnv) {
	case "":
		t.Skip("runs only in a child process of TestMutants or TestNoMiddleware")
	case "reference", "kit":
		fault = os.Getenv(mutantEnv)
		if !knownMutant(fault) {
			t.Fatalf("no mutant %q in the catalogue", fault)
		}
		var h conformance.Harness = refHarness{}
		if os.Getenv(childEnv) == "kit" {
			h = kitHarness{}
		}
		conformance.Run(t, h, conformance.WithTimeout(10*time.Second))
	case "none":
		conformance.Run(t, bareHarness{}, conformance.WithTimeout(10*time.Second))
	default:
		t.Fatalf("unknown harness %q", os.Getenv(childEnv))
	}
}

// harnessOf returns the child harness a mutant belongs to.
func harnessOf(mutant string) string {
	if strings.HasPrefix(mutant, "kit_") {
		return "kit"
	}
	return "reference"
}

func knownMutant(name string) bool {
	if name == "" {
		return true
	}
	for _, m := range mutants {
		if m.name == name {
			return true
		}
	}
	return false
}

// suiteRun is what a child process reported: the cases that passed,
// failed (in order) and were skipped.
type suiteRun struct {
	passed, failed, skipped []string
	output                  string
	err                     error
}

var caseLine = regexp.MustCompile(`(?m)^\s*--- (PASS|FAIL|SKIP): TestSuiteChild/(\S+) \(`)

// runChild runs the suite in a child process of this test binary with
// the harness and mutant named; with failFast it stops at the first
// failing case.
func runChild(harness, mutant string, failFast bool) suiteRun {
	args := []string{"-test.run=^TestSuiteChild$", "-test.v", "-test.count=1", "-test.timeout=5m"}
	if failFast {
		args = append(args, "-test.failfast")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"="+harness, mutantEnv+"="+mutant)
	out, err := cmd.CombinedOutput()
	run := suiteRun{output: string(out), err: err}
	for _, m := range caseLine.FindAllStringSubmatch(run.output, -1) {
		switch m[1] {
		case "PASS":
			run.passed = append(run.passed, m[2])
		case "FAIL":
			run.failed = append(run.failed, m[2])
		case "SKIP":
			run.skipped = append(run.skipped, m[2])
		}
	}
	return run
}

// TestMutants runs the suite against every mutant of the reference
// adapter, each in a child process that stops at its first failing case,
// and fails unless every mutant is killed. It prints the catalogue with
// the case that killed each mutant and the line
// "conformance mutants: K of N killed". It runs when IDEM_MUTANTS is set,
// as .ci/run does.
func TestMutants(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("a child process runs only TestSuiteChild")
	}
	if os.Getenv(mutantsEnv) == "" {
		t.Skipf("set %s=1 to run the mutation catalogue (.ci/run does)", mutantsEnv)
	}
	start := time.Now()
	// Without a fault both adapters pass every case, so a failing case
	// means the fault.
	for _, harness := range []string{"reference", "kit"} {
		base := runChild(harness, "", false)
		if base.err != nil || len(base.failed) > 0 || len(base.passed) == 0 {
			t.Fatalf("the %s adapter without a fault does not pass the suite (%v), so no kill would mean anything:\n%s", harness, base.err, base.output)
		}
		t.Logf("the %s adapter without a fault passes %d cases, skips %d", harness, len(base.passed), len(base.skipped))
	}

	results := make([]suiteRun, len(mutants))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, m := range mutants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = runChild(harnessOf(m.name), m.name, true)
		}()
	}
	wg.Wait()

	killed := 0
	var survivors []string
	for i, m := range mutants {
		r := results[i]
		if len(r.failed) > 0 {
			killed++
			t.Logf("  %-34s killed by %s", m.name, r.failed[0])
			continue
		}
		why := "survived every case"
		if r.err != nil {
			why = fmt.Sprintf("no case failed, but the child process ended with %v:\n%s", r.err, tail(r.output, 2000))
		}
		survivors = append(survivors, m.name)
		t.Logf("  %-34s %s (%s)", m.name, why, m.mistake)
	}
	t.Logf("conformance mutants: %d of %d killed (%s)", killed, len(mutants), time.Since(start).Round(time.Second))
	if killed != len(mutants) {
		t.Errorf("surviving mutants: %s", strings.Join(survivors, ", "))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
