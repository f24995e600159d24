package reliability

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// errRenewal is the fault the stale-owner test injects.
var errRenewal = errors.New("injected fault: renewal failed")

// unrenewable is a store whose leases cannot be renewed: every Renew fails
// as a store outage would, so a lease ends at its first expiry.
type unrenewable struct{ idem.Store }

func (unrenewable) Renew(context.Context, string, idem.Token, time.Duration) error {
	return errRenewal
}

// staleLease is the lease time of the stale-owner test: long enough that
// the default StoreTimeout it implies (a quarter of it, B34) leaves a
// Redis or PostgreSQL call on a loaded machine time to answer.
const staleLease = time.Second

// TestStaleOwner (B16): a handler outlives a lease that could not be
// renewed, and a retry takes the key over. The late completion, whether it
// comes while the new owner still runs or after it completed, changes
// nothing: the new owner's record stands, the late client still gets its
// own response, and the loss is reported.
func TestStaleOwner(t *testing.T) {
	for _, sk := range storeKinds {
		for _, ad := range adapters {
			for _, lateFirst := range []bool{true, false} {
				name := ad.name + "/" + sk.name + "/late-after-owner"
				if lateFirst {
					name = ad.name + "/" + sk.name + "/late-while-owner-runs"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					staleOwner(t, ad, sk.open(t), lateFirst)
				})
			}
		}
	}
}

func staleOwner(t *testing.T, ad adapter, store idem.Store, lateFirst bool) {
	ev := &events{}
	engine := newEngine(t, idem.Config{Store: unrenewable{store}, LeaseTime: staleLease, Observer: ev})
	ex := newExecutions()
	gates := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	entered := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	inner := orderHandler(ex, 0)
	handler := func(ctx context.Context, h http.Header, body []byte) reply {
		rep := inner(ctx, h, body)
		// The first owner outlives its lease; with lateFirst the new owner
		// is still running when it finishes.
		if n := ex.total.Load(); n == 1 || n == 2 && lateFirst {
			close(entered[n-1])
			<-gates[n-1]
		}
		return rep
	}
	base := ad.serve(t, engine, idem.Route{}, handler)
	client := newClient(t, 4)
	key := "stale-" + randomHex(8)
	body := []byte("stale-order")
	send := func() <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			a, err := post(ctx, client, base, key, body)
			if err != nil {
				t.Errorf("POST: %v", err)
			}
			ch <- a
		}()
		return ch
	}

	late := send()
	<-entered[0]
	// The lease ends unrenewed; a retry then runs as a first request.
	time.Sleep(staleLease + staleLease/2)
	newOwner := send()
	var stale, owner answer
	if lateFirst {
		select {
		case <-entered[1]:
		case a := <-newOwner:
			close(gates[0])
			t.Fatalf("retry after the lease ended: %v, want a first execution", a)
		}
		close(gates[0])
		stale = <-late
		close(gates[1])
		owner = <-newOwner
	} else {
		owner = <-newOwner
		close(gates[0])
		stale = <-late
	}
	if owner.Status != http.StatusCreated || owner.replayed() {
		t.Fatalf("retry after the lease ended: %v, want a first execution", owner)
	}
	if stale.Status != http.StatusCreated || stale.replayed() || bytes.Equal(stale.Body, owner.Body) {
		t.Fatalf("late client got %v, want its own response (the new owner's is %v)", stale, owner)
	}
	for range 2 {
		r := mustPost(t, client, base, key, body)
		if !r.replayed() || !bytes.Equal(r.Body, owner.Body) {
			t.Fatalf("after the late completion: %v, want a replay of the new owner's %v", r, owner)
		}
	}
	if n := ex.of(string(body)); n != 2 {
		t.Errorf("the handler ran %d times, want 2 (the stale owner and the new one)", n)
	}
	if len(ev.With(idem.LeaseLost)) == 0 {
		t.Error("the late completion was not reported as lease-lost")
	}
	if len(ev.With(idem.StoreError)) == 0 {
		t.Error("the failed renewals were not reported")
	}
}
