package idemotel_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
	idemotel "github.com/idemkit/idem/observability/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Secrets the requests carry, which nothing recorded may contain.
const (
	secretKey   = "order-key-4c1d"
	secretScope = "Bearer scope-7f3e"
	secretBody  = `{"sku":"body-9a2b"}`
)

// fixture is an engine observed by an Observer over in-memory metric and
// span readers.
type fixture struct {
	t      *testing.T
	eng    *idem.Engine
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	tracer trace.Tracer
}

func newFixture(t *testing.T, cfg idem.Config) *fixture {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	obs, err := idemotel.New(idemotel.Options{MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Observer = obs
	eng, err := idem.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	return &fixture{t: t, eng: eng, reader: reader, spans: spans, tracer: tp.Tracer("test")}
}

// request is a POST to the route "orders" under a span of its own.
func (f *fixture) request(key, body string) (*idem.Request, trace.Span) {
	ctx, span := f.tracer.Start(context.Background(), "POST /orders")
	h := http.Header{"Authorization": {secretScope}}
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	return &idem.Request{Method: "POST", Path: "/orders", Header: h, Body: strings.NewReader(body),
		Route: idem.Route{Name: "orders"}, Context: ctx}, span
}

// serve sends one request; a handler that runs answers status.
func (f *fixture) serve(key, body string, status int) idem.Decision {
	r, span := f.request(key, body)
	defer span.End()
	d := f.eng.Begin(r)
	if d.Action == idem.Run {
		_ = d.Lease.Complete(idem.Recorded{Status: status, Body: []byte("created")})
	}
	return d
}

func (f *fixture) collect() metricdata.ResourceMetrics {
	f.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := f.reader.Collect(context.Background(), &rm); err != nil {
		f.t.Fatal(err)
	}
	return rm
}

func find(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

func encode(s attribute.Set) string { return s.Encoded(attribute.DefaultEncoder()) }

// sums returns an int64 sum's data points by their attributes.
func (f *fixture) sums(name string) map[string]int64 {
	f.t.Helper()
	out := map[string]int64{}
	m, ok := find(f.collect(), name)
	if !ok {
		return out
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		f.t.Fatalf("%s is a %T, want an int64 sum", name, m.Data)
	}
	for _, p := range sum.DataPoints {
		out[encode(p.Attributes)] = p.Value
	}
	return out
}

// counts returns the histogram's counts by their attributes.
func (f *fixture) counts(name string) map[string]uint64 {
	f.t.Helper()
	out := map[string]uint64{}
	m, ok := find(f.collect(), name)
	if !ok {
		f.t.Fatalf("no %s", name)
	}
	h := m.Data.(metricdata.Histogram[float64])
	for _, p := range h.DataPoints {
		out[encode(p.Attributes)] = p.Count
	}
	return out
}

func equal[V comparable](t *testing.T, what string, got, want map[string]V) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s:\n got %v\nwant %v", what, got, want)
			return
		}
	}
}

// TestMetrics drives each kind of answer through an engine and checks
// the four instruments: one request counted per request, by its final
// outcome, route and status; a lease counted while its handler runs; the
// replayed bytes; and every store call timed by operation and store.
func TestMetrics(t *testing.T) {
	f := newFixture(t, idem.Config{})
	f.serve(secretKey, secretBody, 201)                        // executed, stored
	if d := f.serve(secretKey, secretBody, 201); !d.Replayed { // replayed
		t.Fatalf("the retry was not replayed: %+v", d)
	}
	f.serve(secretKey, `{"sku":"other"}`, 201) // mismatch, 422
	f.serve("", secretBody, 201)               // missing, 400
	f.serve("k2", secretBody, 500)             // executed, released

	r, span := f.request("k3", secretBody)
	running := f.eng.Begin(r) // executed, still running
	if got := f.sums(idemotel.MetricLeasesActive); got["idem.route=orders"] != 1 {
		t.Errorf("leases while one handler runs: %v, want 1", got)
	}
	f.serve("k3", secretBody, 201) // in-flight, 409
	_ = running.Lease.Complete(idem.Recorded{Status: 201, Body: []byte("created")})
	span.End()

	equal(t, "requests", f.sums(idemotel.MetricRequests), map[string]int64{
		"http.response.status_code=201,idem.outcome=stored,idem.route=orders":    2,
		"http.response.status_code=201,idem.outcome=replayed,idem.route=orders":  1,
		"http.response.status_code=422,idem.outcome=mismatch,idem.route=orders":  1,
		"http.response.status_code=400,idem.outcome=missing,idem.route=orders":   1,
		"http.response.status_code=500,idem.outcome=released,idem.route=orders":  1,
		"http.response.status_code=409,idem.outcome=in-flight,idem.route=orders": 1,
	})
	equal(t, "leases held", f.sums(idemotel.MetricLeasesActive), map[string]int64{"idem.route=orders": 0})
	equal(t, "replayed bytes", f.sums(idemotel.MetricReplayedBytes), map[string]int64{"idem.route=orders": int64(len("created"))})
	equal(t, "store calls", f.counts(idemotel.MetricStoreDuration), map[string]uint64{
		"idem.store=idem.MemoryStore,idem.store.operation=acquire":  6,
		"idem.store=idem.MemoryStore,idem.store.operation=complete": 2,
		"idem.store=idem.MemoryStore,idem.store.operation=release":  1,
	})
}

// TestSpans checks what the request's span carries: the final outcome, the
// short key id and whether the answer was a replay, and never the key, the
// scope or the body.
func TestSpans(t *testing.T) {
	f := newFixture(t, idem.Config{})
	f.serve(secretKey, secretBody, 201)
	f.serve(secretKey, secretBody, 201)
	ended := f.spans.Ended()
	if len(ended) != 2 {
		t.Fatalf("%d spans, want 2", len(ended))
	}
	for i, want := range []struct {
		outcome  string
		replayed bool
	}{{"stored", false}, {"replayed", true}} {
		attrs := attribute.NewSet(ended[i].Attributes()...)
		if v, _ := attrs.Value(idemotel.AttrOutcome); v.AsString() != want.outcome {
			t.Errorf("span %d: outcome %q, want %q", i, v.AsString(), want.outcome)
		}
		if v, ok := attrs.Value(idemotel.AttrReplayed); !ok || v.AsBool() != want.replayed {
			t.Errorf("span %d: replayed %v (set: %v), want %v", i, v.AsBool(), ok, want.replayed)
		}
		if v, _ := attrs.Value(idemotel.AttrKeyID); len(v.AsString()) != 8 {
			t.Errorf("span %d: key id %q, want 8 characters", i, v.AsString())
		}
		noSecrets(t, ended[i])
	}
	set0, set1 := attribute.NewSet(ended[0].Attributes()...), attribute.NewSet(ended[1].Attributes()...)
	first, _ := set0.Value(idemotel.AttrKeyID)
	second, _ := set1.Value(idemotel.AttrKeyID)
	if first != second {
		t.Errorf("the request and its retry have key ids %q and %q", first.AsString(), second.AsString())
	}
}

// noSecrets fails when an attribute or an event of s holds the raw key,
// the scope or the body.
func noSecrets(t *testing.T, s sdktrace.ReadOnlySpan) {
	t.Helper()
	var all []attribute.KeyValue
	all = append(all, s.Attributes()...)
	for _, ev := range s.Events() {
		all = append(all, attribute.String("event", ev.Name))
		all = append(all, ev.Attributes...)
	}
	for _, kv := range all {
		v := kv.Value.String()
		for _, secret := range []string{secretKey, secretScope, "scope-7f3e", secretBody, "body-9a2b"} {
			if strings.Contains(v, secret) {
				t.Errorf("span %q: %s=%q holds %q", s.Name(), kv.Key, v, secret)
			}
		}
	}
}

// faultyStore fails the calls it is told to.
type faultyStore struct {
	idem.Store
	failAcquire, failRenew atomic.Bool
}

var errDown = errors.New("store down")

func (s *faultyStore) Acquire(ctx context.Context, key string, tok idem.Token, fp []byte, lease time.Duration) (*idem.Record, error) {
	if s.failAcquire.Load() {
		return nil, errDown
	}
	return s.Store.Acquire(ctx, key, tok, fp, lease)
}

func (s *faultyStore) Renew(ctx context.Context, key string, tok idem.Token, lease time.Duration) error {
	if s.failRenew.Load() {
		return errDown
	}
	return s.Store.Renew(ctx, key, tok, lease)
}

// TestStoreFailures checks that a failed store call is an event on the
// request's span, and that a failed renewal is not counted as a request:
// the request is counted once, by how its lease ended.
func TestStoreFailures(t *testing.T) {
	mem := idem.NewMemoryStore(idem.MemoryOptions{})
	t.Cleanup(func() { _ = mem.Close() })
	store := &faultyStore{Store: mem}
	// The first renewal comes half a lease in, and fails; the lease then
	// still has half its time for the Complete below, a margin that a
	// loaded machine does not use up.
	f := newFixture(t, idem.Config{Store: store, LeaseTime: time.Second, StoreTimeout: 100 * time.Millisecond})

	store.failAcquire.Store(true)
	if d := f.serve(secretKey, secretBody, 201); d.Response == nil || d.Response.Status != 503 {
		t.Fatalf("a failing Acquire: %+v, want 503", d)
	}
	store.failAcquire.Store(false)

	store.failRenew.Store(true)
	r, span := f.request("slow", secretBody)
	d := f.eng.Begin(r)
	deadline := time.Now().Add(5 * time.Second)
	for f.counts(idemotel.MetricStoreDuration)["idem.store=idemotel_test.faultyStore,idem.store.operation=renew"] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no renewal within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = d.Lease.Complete(idem.Recorded{Status: 201})
	span.End()

	equal(t, "requests", f.sums(idemotel.MetricRequests), map[string]int64{
		"http.response.status_code=503,idem.outcome=store-error,idem.route=orders": 1,
		"http.response.status_code=201,idem.outcome=stored,idem.route=orders":      1,
	})
	ended := f.spans.Ended()
	if len(ended) != 2 {
		t.Fatalf("%d spans, want 2", len(ended))
	}
	for i, op := range []string{"acquire", "renew"} {
		var found bool
		for _, ev := range ended[i].Events() {
			set := attribute.NewSet(ev.Attributes...)
			v, _ := set.Value(idemotel.AttrStoreOperation)
			s, _ := set.Value(idemotel.AttrStore)
			if ev.Name == idemotel.EventStoreError && v.AsString() == op && s.AsString() == "idemotel_test.faultyStore" {
				found = true
			}
		}
		if !found {
			t.Errorf("span %d has no %s event for the failed %s: %v", i, idemotel.EventStoreError, op, ended[i].Events())
		}
		noSecrets(t, ended[i])
	}
}

// TestStoreName checks that Options.StoreName names the stores.
func TestStoreName(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	obs, err := idemotel.New(idemotel.Options{
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		StoreName:     func(idem.Store) string { return "primary" },
	})
	if err != nil {
		t.Fatal(err)
	}
	obs.ObserveStore(context.Background(), idem.StoreCall{Op: idem.OpAcquire, Duration: time.Millisecond})
	f := &fixture{t: t, reader: reader}
	equal(t, "store calls", f.counts(idemotel.MetricStoreDuration), map[string]uint64{
		"idem.store=primary,idem.store.operation=acquire": 1,
	})
}

// TestUnscopedNoticeIsNotARequest checks that the engine's notice of a
// route without a scope (B32), which comes before the request's decision,
// is not counted as a request of its own.
func TestUnscopedNoticeIsNotARequest(t *testing.T) {
	f := newFixture(t, idem.Config{})
	r, span := f.request(secretKey, secretBody)
	r.Header.(http.Header).Del("Authorization")
	d := f.eng.Begin(r)
	_ = d.Lease.Complete(idem.Recorded{Status: 201})
	span.End()
	equal(t, "requests", f.sums(idemotel.MetricRequests), map[string]int64{
		"http.response.status_code=201,idem.outcome=stored,idem.route=orders": 1,
	})
}
