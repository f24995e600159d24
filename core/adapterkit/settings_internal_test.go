package adapterkit

import (
	"errors"
	"strings"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

type settings = Settings[struct{}]

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		s    settings
		want []string // substrings of the errors; none means valid
	}{
		{"zero", settings{}, nil},
		{"every policy and a retention", settings{Policy: idem.Manual, Retention: time.Millisecond}, nil},
		{"bad policy", settings{Policy: idem.Manual + 1}, []string{"Policy 5 is not a policy"}},
		{"negative retention", settings{Retention: -time.Second}, []string{"Retention -1s"}},
		{"retention under 1ms", settings{Retention: time.Microsecond}, []string{"Retention 1µs"}},
		{"both", settings{Policy: 9, Retention: -1}, []string{"Policy 9", "Retention -1ns"}},
	} {
		errs := c.s.validate()
		if len(errs) != len(c.want) {
			t.Errorf("%s: %v, want %d problems", c.name, errs, len(c.want))
			continue
		}
		for i, w := range c.want {
			if !strings.Contains(errs[i].Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.name, errs[i], w)
			}
		}
	}
}

// notComparable is a Store whose dynamic type cannot be compared with ==.
type notComparable struct {
	idem.Store
	tags []string
}

func TestOverrides(t *testing.T) {
	engineStore := idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1})
	other := idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1})
	t.Cleanup(func() { _ = errors.Join(engineStore.Close(), other.Close()) })
	odd := notComparable{Store: other, tags: []string{"a"}}
	d := &defaults{policy: idem.Required, store: engineStore, retention: 24 * time.Hour}

	for _, c := range []struct {
		name         string
		inner, outer settings
		want         []string
	}{
		{"inner sets nothing", settings{}, settings{Policy: idem.Manual, Store: other, Retention: time.Hour}, nil},
		{"same settings", settings{Policy: idem.Manual, Store: other, Retention: time.Hour}, settings{Policy: idem.Manual, Store: other, Retention: time.Hour}, nil},
		{"required under optional: keyed alike", settings{Policy: idem.Required}, settings{Policy: idem.Optional}, nil},
		{"optional under the default required", settings{Policy: idem.Optional}, settings{}, nil},
		{"engine's store and retention named", settings{Store: engineStore, Retention: 24 * time.Hour}, settings{}, nil},
		{"exempt under optional", settings{Policy: idem.Exempt}, settings{Policy: idem.Optional},
			[]string{"policy exempt (the request ran as optional)"}},
		{"manual under the default", settings{Policy: idem.Manual}, settings{},
			[]string{"policy manual (the request ran as required)"}},
		{"own store and retention", settings{Store: other, Retention: time.Hour}, settings{Policy: idem.Optional},
			[]string{"store", "retention 1h0m0s (the request used 24h0m0s)"}},
		{"non-comparable stores differ, without a panic", settings{Store: odd}, settings{Store: odd}, []string{"store"}},
		{"non-comparable against comparable", settings{Store: odd}, settings{}, []string{"store"}},
	} {
		got := overrides(d, &c.inner, &c.outer)
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: overrides = %q, want %q", c.name, got, c.want)
		}
	}
}
