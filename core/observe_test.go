package idem_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// callRecorder is a StoreObserver that keeps every event and store call.
type callRecorder struct {
	mu     sync.Mutex
	events []idem.Event
	calls  []idem.StoreCall
}

func (r *callRecorder) Observe(_ context.Context, ev idem.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *callRecorder) ObserveStore(_ context.Context, c idem.StoreCall) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

// trace lists the events as outcome/op and the calls as op:error.
func (r *callRecorder) trace() (events, calls string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ev, cs []string
	for _, e := range r.events {
		ev = append(ev, fmt.Sprintf("%s/%d", e.Outcome, e.Op))
	}
	for _, c := range r.calls {
		s := c.Op.String()
		if c.Err != nil {
			s += ":err"
		}
		cs = append(cs, s)
	}
	return strings.Join(ev, " "), strings.Join(cs, " ")
}

// renewFails makes every Renew fail.
type renewFails struct{ idem.Store }

func (renewFails) Renew(context.Context, string, idem.Token, time.Duration) error {
	return errInjected
}

// TestB28StoreCallsAreObserved checks that a StoreObserver gets one call,
// timed and named, per store call the engine makes, through the memory
// store's own path and through any other store, and that every event
// names the store call it reports: OpAcquire for Begin's decisions, and
// exactly one OpComplete or OpRelease after each Executed.
func TestB28StoreCallsAreObserved(t *testing.T) {
	for _, wrapped := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapped=%v", wrapped), func(t *testing.T) {
			mem := idem.NewMemoryStore(idem.MemoryOptions{})
			t.Cleanup(func() { _ = mem.Close() })
			var store idem.Store = mem
			fs := &faultyStore{Store: mem}
			if wrapped {
				store = fs
			}
			rec := &callRecorder{}
			eng, err := idem.New(idem.Config{Store: store, Observer: rec})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = eng.Close() })

			orders := func() *idem.Request {
				r := req("k1", "{}")
				r.Route = idem.Route{Name: "orders"}
				return r
			}
			d := eng.Begin(orders()) // a first request, stored
			if err := d.Lease.Complete(idem.Recorded{Status: 201, Body: []byte("ok")}); err != nil {
				t.Fatal(err)
			}
			if d := eng.Begin(orders()); !d.Replayed { // a replay
				t.Fatalf("second request: %+v", d)
			}
			rec.mu.Lock()
			if ev := rec.events[len(rec.events)-1]; ev.BodySize != len("ok") {
				t.Errorf("the replay's event has BodySize %d, want %d", ev.BodySize, len("ok"))
			}
			rec.mu.Unlock()
			d = eng.Begin(req("k2", "{}")) // a first request, released by its status
			_ = d.Lease.Complete(idem.Recorded{Status: 500})
			d = eng.Begin(req("k3", "{}")) // a first request, released after a panic
			_ = d.Lease.Release(errors.New("panic"))
			eng.Begin(req("", "{}")) // missing key: no store call

			wantEvents := "executed/1 stored/2 replayed/1 executed/1 released/3 executed/1 released/3 missing/0"
			wantCalls := "acquire complete acquire acquire release acquire release"
			if wrapped {
				d = eng.Begin(req("k4", "{}")) // a completion that fails
				fs.failComplete.Store(true)
				_ = d.Lease.Complete(idem.Recorded{Status: 201})
				wantEvents += " executed/1 store-error/2"
				wantCalls += " acquire complete:err"
			}
			events, calls := rec.trace()
			if events != wantEvents {
				t.Errorf("events (outcome/op):\n got %s\nwant %s", events, wantEvents)
			}
			if calls != wantCalls {
				t.Errorf("store calls:\n got %s\nwant %s", calls, wantCalls)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			first := rec.calls[0]
			if first.Store != store || first.Route != "orders" || len(first.KeyID) != 8 || first.KeyID != rec.events[0].KeyID {
				t.Errorf("the first call is %+v; want the store, route orders and the event's key id", first)
			}
			for _, c := range rec.calls {
				if c.Duration <= 0 {
					t.Errorf("%s call without a duration: %+v", c.Op, c)
				}
			}
		})
	}
}

// TestB28RenewalCallsAreObserved checks that renewals are reported as
// store calls, and that a failed renewal's event names OpRenew, so an
// observer can tell it from how the lease ended.
func TestB28RenewalCallsAreObserved(t *testing.T) {
	mem := idem.NewMemoryStore(idem.MemoryOptions{})
	t.Cleanup(func() { _ = mem.Close() })
	rec := &callRecorder{}
	eng, err := idem.New(idem.Config{Store: renewFails{mem}, Observer: rec, LeaseTime: 40 * time.Millisecond, StoreTimeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	d := eng.Begin(req("k", "{}"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, calls := rec.trace()
		if strings.Contains(calls, "renew:err") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewal reported in 5s; calls: %s", calls)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = d.Lease.Complete(idem.Recorded{Status: 201})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var renewEvent, end int
	for _, ev := range rec.events {
		switch ev.Op {
		case idem.OpRenew:
			if ev.Outcome != idem.StoreError {
				t.Errorf("a renewal event with outcome %s", ev.Outcome)
			}
			renewEvent++
		case idem.OpComplete, idem.OpRelease:
			end++
		}
	}
	if renewEvent == 0 || end != 1 {
		t.Errorf("%d renewal events and %d lease ends; want some and exactly one", renewEvent, end)
	}
}

// TestPlainObserverGetsNoStoreCalls checks that an Observer that is not a
// StoreObserver still gets its events and nothing else is required of it.
func TestPlainObserverGetsNoStoreCalls(t *testing.T) {
	var n int
	eng, err := idem.New(idem.Config{Observer: idem.ObserverFunc(func(context.Context, idem.Event) { n++ })})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	d := eng.Begin(req("k", "{}"))
	_ = d.Lease.Complete(idem.Recorded{Status: 201})
	if n != 2 {
		t.Fatalf("%d events, want executed and stored", n)
	}
}

func TestStoreOpString(t *testing.T) {
	for op, want := range map[idem.StoreOp]string{idem.OpAcquire: "acquire", idem.OpComplete: "complete", idem.OpRelease: "release", idem.OpRenew: "renew", 0: "unknown", 9: "unknown"} {
		if got := op.String(); got != want {
			t.Errorf("StoreOp(%d).String() = %q, want %q", op, got, want)
		}
	}
}
