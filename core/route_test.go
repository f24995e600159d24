package idem_test

import (
	"context"
	"strings"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

func TestRouteValidate(t *testing.T) {
	for _, c := range []struct {
		name  string
		route idem.Route
		want  []string // substrings of the error; none means valid
	}{
		{"zero", idem.Route{}, nil},
		{"every policy and a retention", idem.Route{Policy: idem.Manual, Retention: time.Millisecond}, nil},
		{"bad policy", idem.Route{Policy: idem.Manual + 1}, []string{"Policy 5 is not a policy"}},
		{"negative retention", idem.Route{Retention: -time.Second}, []string{"Retention -1s"}},
		{"retention under 1ms", idem.Route{Retention: time.Microsecond}, []string{"Retention 1µs"}},
		{"both", idem.Route{Policy: 9, Retention: -1}, []string{"Policy 9", "Retention -1ns"}},
	} {
		err := c.route.Validate()
		if len(c.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v, want valid", c.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: valid, want an error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.name, err, w)
			}
		}
		if joined, ok := err.(interface{ Unwrap() []error }); !ok || len(joined.Unwrap()) != len(c.want) {
			t.Errorf("%s: error %q does not unwrap to %d problems", c.name, err, len(c.want))
		}
	}
}

// Resolve fills what a route leaves to the engine, and Begin applies the
// route as Resolve returns it.
func TestEngineResolve(t *testing.T) {
	own := idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1})
	t.Cleanup(func() { _ = own.Close() })
	e, err := idem.New(idem.Config{DefaultPolicy: idem.Optional, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })

	got := e.Resolve(idem.Route{Name: "/orders"})
	if got.Policy != idem.Optional || got.Store != e.Store() || got.Retention != time.Hour || got.Name != "/orders" {
		t.Errorf("Resolve(zero route) = %+v, want the engine's policy, store and retention, and the name kept", got)
	}
	set := idem.Route{Policy: idem.Manual, Store: own, Retention: time.Minute}
	if got := e.Resolve(set); got != set {
		t.Errorf("Resolve(%+v) = %+v, want it unchanged", set, got)
	}
	if got := e.Resolve(idem.Route{Retention: -time.Second}); got.Retention != time.Hour {
		t.Errorf("Resolve with a negative retention: %v, want the engine's", got.Retention)
	}

	// A request on a zero route runs Optional: without a key it passes.
	if d := e.Begin(&idem.Request{Method: "POST", Path: "/orders", Context: context.Background()}); d.Action != idem.Pass || d.TookPart() {
		t.Errorf("zero route without a key: %v (took part %v), want an untracked pass", d.Action, d.TookPart())
	}
}

// notComparable is a Store whose dynamic type cannot be compared with ==.
type notComparable struct {
	idem.Store
	tags []string
}

func TestEngineOverrides(t *testing.T) {
	e, err := idem.New(idem.Config{Retention: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	other := idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1})
	t.Cleanup(func() { _ = other.Close() })
	odd := notComparable{Store: other, tags: []string{"a"}}

	for _, c := range []struct {
		name         string
		inner, outer idem.Route
		want         []string
	}{
		{"inner sets nothing", idem.Route{Name: "/x"}, idem.Route{Policy: idem.Manual, Store: other, Retention: time.Hour}, nil},
		{"same settings", idem.Route{Policy: idem.Manual, Store: other, Retention: time.Hour}, idem.Route{Policy: idem.Manual, Store: other, Retention: time.Hour}, nil},
		{"required under optional: keyed alike", idem.Route{Policy: idem.Required}, idem.Route{Policy: idem.Optional}, nil},
		{"optional under the default required", idem.Route{Policy: idem.Optional}, idem.Route{}, nil},
		{"engine's store and retention named", idem.Route{Store: e.Store(), Retention: 24 * time.Hour}, idem.Route{}, nil},
		{"exempt under optional", idem.Route{Policy: idem.Exempt}, idem.Route{Policy: idem.Optional},
			[]string{"policy exempt (the request ran as optional)"}},
		{"manual under the default", idem.Route{Policy: idem.Manual}, idem.Route{},
			[]string{"policy manual (the request ran as required)"}},
		{"own store and retention", idem.Route{Store: other, Retention: time.Hour}, idem.Route{Policy: idem.Optional},
			[]string{"store", "retention 1h0m0s (the request used 24h0m0s)"}},
		{"non-comparable stores differ, without a panic", idem.Route{Store: odd}, idem.Route{Store: odd}, []string{"store"}},
		{"non-comparable against comparable", idem.Route{Store: odd}, idem.Route{}, []string{"store"}},
	} {
		got := e.Overrides(c.inner, c.outer)
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: Overrides = %q, want %q", c.name, got, c.want)
		}
	}
}
