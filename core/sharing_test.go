package idem_test

import (
	"bytes"
	"net/http"
	"testing"

	idem "github.com/idemkit/idem/core"
)

// The engine shares the memory store's records with replays instead of
// copying them, hands recorded bodies over when the adapter says so, and
// renders fixed problems once. These tests check that none of it shows: a
// client always gets what the first request answered.

func sharingEngine(t *testing.T, configure func(*idem.Config)) *idem.Engine {
	t.Helper()
	var cfg idem.Config
	if configure != nil {
		configure(&cfg)
	}
	e, err := idem.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func sharingRequest(key string, policy idem.Policy) *idem.Request {
	return &idem.Request{Method: "POST", Path: "/orders", BodyBytes: []byte(`{"n":1}`),
		Header: http.Header{"Idempotency-Key": {key}}, Route: idem.Route{Policy: policy}}
}

// TestRecordedBodyIsCopied reuses the recorded body's buffer once
// Complete returned, as idemhttp's pooled recorder does, and writes past
// its length too: replays still carry the bytes the client got.
func TestRecordedBodyIsCopied(t *testing.T) {
	e := sharingEngine(t, nil)
	d := e.Begin(sharingRequest("k", idem.Inherit))
	body := make([]byte, 0, 9)
	body = append(body, "12345678"...)
	if err := d.Lease.Complete(idem.Recorded{Status: 201, Body: body}); err != nil {
		t.Fatal(err)
	}
	copy(body, "xxxxxxxx")
	_ = append(body, '9') // writes past len, into the spare capacity
	for range 2 {
		r := e.Begin(sharingRequest("k", idem.Inherit))
		if !r.Replayed || string(r.Response.Body) != "12345678" {
			t.Fatalf("replay = %+v, want the body 12345678", r.Response)
		}
	}
}

// TestManualFindingIsTheHandlersOwn lets a Manual handler scribble over
// the response it found; a later replay is unchanged.
func TestManualFindingIsTheHandlersOwn(t *testing.T) {
	e := sharingEngine(t, nil)
	d := e.Begin(sharingRequest("k", idem.Inherit))
	_ = d.Lease.Complete(idem.Recorded{Status: 201, Body: []byte("original"),
		Header: http.Header{"Content-Type": {"text/plain"}}})

	m := e.Begin(sharingRequest("k", idem.Manual))
	if m.Finding == nil || m.Finding.Response == nil {
		t.Fatalf("Manual decision %+v, want a finding with the response", m)
	}
	copy(m.Finding.Response.Body, "XXXXXXXX")
	m.Finding.Response.Header[0].Value = "changed"

	r := e.Begin(sharingRequest("k", idem.Inherit))
	if string(r.Response.Body) != "original" || r.Response.Header[0] != (idem.HeaderField{Name: "Content-Type", Value: "text/plain"}) {
		t.Fatalf("replay after the Manual handler = %+v, want the original response", r.Response)
	}
}

// TestKeepHeader snapshots only stored fields; changing the header after
// the snapshot changes nothing that is replayed (B20).
func TestKeepHeader(t *testing.T) {
	e := sharingEngine(t, nil)
	d := e.Begin(sharingRequest("k", idem.Inherit))
	h := http.Header{"Content-Type": {"application/json"}, "Set-Cookie": {"s=1"}, "Location": {"/orders/1"}}
	kept := d.Lease.KeepHeader(h)
	if v := kept.Values("Set-Cookie"); v != nil {
		t.Errorf("KeepHeader kept Set-Cookie: %q", v)
	}
	if v := kept.Values("location"); len(v) != 1 || v[0] != "/orders/1" {
		t.Errorf("KeepHeader Values(location) = %q, want [/orders/1]", v)
	}
	h.Set("Content-Type", "text/html")
	_ = d.Lease.Complete(idem.Recorded{Status: 201, Header: kept, Body: []byte("{}")})

	r := e.Begin(sharingRequest("k", idem.Inherit))
	want := []idem.HeaderField{{Name: "Content-Type", Value: "application/json"}, {Name: "Location", Value: "/orders/1"},
		{Name: idem.ReplayedHeader, Value: "true"}}
	if len(r.Response.Header) != len(want) {
		t.Fatalf("replayed header %v, want %v", r.Response.Header, want)
	}
	for i := range want {
		if r.Response.Header[i] != want[i] {
			t.Fatalf("replayed header %v, want %v", r.Response.Header, want)
		}
	}
}

// TestFixedProblemsMatchTheRenderer checks that a problem rendered once per
// engine reads exactly as the renderer renders it, and that a custom
// renderer still renders every answer.
func TestFixedProblemsMatchTheRenderer(t *testing.T) {
	e := sharingEngine(t, nil)
	held := e.Begin(sharingRequest("k", idem.Inherit))
	defer held.Lease.Release(nil)
	for range 2 {
		d := e.Begin(sharingRequest("k", idem.Inherit))
		want := idem.RenderProblem(d.Problem)
		if d.Response.Status != 409 || !bytes.Equal(d.Response.Body, want.Body) || len(d.Response.Header) != len(want.Header) {
			t.Fatalf("409 = %+v, want %+v", d.Response, want)
		}
	}

	calls := 0
	custom := sharingEngine(t, func(c *idem.Config) {
		c.RenderProblem = func(p *idem.Problem) *idem.Response {
			calls++
			return &idem.Response{Status: p.Status, Body: []byte(p.Type)}
		}
	})
	held2 := custom.Begin(sharingRequest("k", idem.Inherit))
	defer held2.Lease.Release(nil)
	for range 3 {
		if d := custom.Begin(sharingRequest("k", idem.Inherit)); string(d.Response.Body) != idem.ProblemInFlight {
			t.Fatalf("custom renderer: body %q", d.Response.Body)
		}
	}
	if calls != 3 {
		t.Errorf("the custom renderer ran %d times for 3 problems, want 3", calls)
	}
}
