package conformance

import "testing"

func TestSkipLine(t *testing.T) {
	a, b := EnvVar{"IDEM_TEST_SKIP_A", "a://x"}, EnvVar{"IDEM_TEST_SKIP_B", "b://y"}
	t.Setenv(a.Name, "")
	t.Setenv(b.Name, "set")
	line, skips := skipLine("example.com/p", "the A tests", []EnvVar{a, b})
	if want := "example.com/p: skipping the A tests: set IDEM_TEST_SKIP_A=a://x to run them\n"; !skips || line != want {
		t.Errorf("skipLine = %q, %v; want %q, true", line, skips, want)
	}
	t.Setenv(a.Name, "set")
	if line, skips := skipLine("example.com/p", "the A tests", []EnvVar{a, b}); skips || line != "" {
		t.Errorf("with every variable set: %q, %v; want nothing", line, skips)
	}
	for name, want := range map[string]string{
		"github.com/idemkit/idem/storage/redis_test.TestMain": "github.com/idemkit/idem/storage/redis",
		"github.com/idemkit/idem/examples/orders.TestMain":    "github.com/idemkit/idem/examples/orders",
		"main.TestMain": "main",
	} {
		if got := packageOf(name); got != want {
			t.Errorf("packageOf(%q) = %q, want %q", name, got, want)
		}
	}
}
