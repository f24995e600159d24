package idemotel

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	idem "github.com/idemkit/idem/core"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the meter the Observer uses.
const ScopeName = "github.com/idemkit/idem/observability/otel"

// The names of the instruments, as OpenTelemetry writes them. The
// Prometheus exporter turns the dots into underscores and adds the unit
// and "_total" to counters: idem_requests_total,
// idem_store_duration_seconds, idem_leases_active,
// idem_replayed_bytes_total.
const (
	MetricRequests      = "idem.requests"
	MetricStoreDuration = "idem.store.duration"
	MetricLeasesActive  = "idem.leases.active"
	MetricReplayedBytes = "idem.replayed"
)

// The attributes the Observer sets, on metrics and on the request's span.
// None carries a raw key, a scope or a body.
const (
	// AttrOutcome is the engine's decision (idem.Outcome.String()).
	AttrOutcome = attribute.Key("idem.outcome")
	// AttrRoute is idem.Route.Name, "" when the route has none.
	AttrRoute = attribute.Key("idem.route")
	// AttrStatus is the status answered or recorded.
	AttrStatus = attribute.Key("http.response.status_code")
	// AttrKeyID is the short prefix of the storage key (a hash of scope and
	// key), enough to find a request's log lines; spans only.
	AttrKeyID = attribute.Key("idem.key_id")
	// AttrReplayed reports whether the answer was a replay; spans only.
	AttrReplayed = attribute.Key("idem.replayed")
	// AttrStoreOperation is the store method called (idem.StoreOp.String()).
	AttrStoreOperation = attribute.Key("idem.store.operation")
	// AttrStore names the store called (see Options.StoreName).
	AttrStore = attribute.Key("idem.store")
)

// EventStoreError is the name of the span event for a failed store call.
const EventStoreError = "idem.store.error"

// storeDurationBuckets are the histogram's bounds in seconds: from the
// memory store's microseconds to a store call near the engine's default
// StoreTimeout of 5 s.
var storeDurationBuckets = []float64{
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
}

// Options configures an Observer. The zero value uses the global meter
// provider.
type Options struct {
	// MeterProvider makes the Observer's meter; otel.GetMeterProvider()
	// when nil.
	MeterProvider metric.MeterProvider
	// StoreName names a store in metrics and span events. The default is
	// the store's Go type without the pointer, such as "idemredis.Store" or
	// "idem.MemoryStore".
	StoreName func(idem.Store) string
}

// Observer records the engine's decisions and store calls as OpenTelemetry
// metrics, and annotates the request's active span (the one in the
// request's context, such as otelhttp's). Set it as idem.Config.Observer;
// it is an idem.StoreObserver, so the engine also times its store calls.
// It is safe for concurrent use.
//
// Metrics:
//   - idem.requests (counter): requests by outcome, route and status,
//     one per request: a request that ran its handler is counted by how
//     its lease ended (stored, released, lease-lost, store-error);
//   - idem.store.duration (histogram, seconds): store calls by operation
//     and store;
//   - idem.leases.active (up-down counter): leases held now, by route;
//   - idem.replayed (counter, bytes): replayed body bytes, by route.
//
// On the request's span: the attributes idem.outcome (the last decision,
// so "stored" for a request that ran and was recorded), idem.key_id and
// idem.replayed, and an idem.store.error event for each store call that
// failed. A stale lease's refused write (idem.ErrLeaseLost) is the outcome
// lease-lost, not a failed call. Nothing recorded holds a raw key, a scope
// or a body.
type Observer struct {
	requests      metric.Int64Counter
	storeDuration metric.Float64Histogram
	leases        metric.Int64UpDownCounter
	replayed      metric.Int64Counter
	storeName     func(idem.Store) string
	names         sync.Map // reflect.Type -> string, the default names
}

var _ idem.StoreObserver = (*Observer)(nil)

// New returns an Observer whose instruments come from opts.MeterProvider.
func New(opts Options) (*Observer, error) {
	mp := opts.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(ScopeName)
	o := &Observer{storeName: opts.StoreName}
	var errs [4]error
	o.requests, errs[0] = meter.Int64Counter(MetricRequests,
		metric.WithUnit("{request}"),
		metric.WithDescription("Requests by the idempotency engine's outcome, route and status."))
	o.storeDuration, errs[1] = meter.Float64Histogram(MetricStoreDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of the idempotency store's calls by operation and store."),
		metric.WithExplicitBucketBoundaries(storeDurationBuckets...))
	o.leases, errs[2] = meter.Int64UpDownCounter(MetricLeasesActive,
		metric.WithUnit("{lease}"),
		metric.WithDescription("Idempotency leases held now: handlers running under a key."))
	o.replayed, errs[3] = meter.Int64Counter(MetricReplayedBytes,
		metric.WithUnit("By"),
		metric.WithDescription("Bytes of response bodies replayed to retries."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("idemotel: %w", err)
	}
	return o, nil
}

// Observe records ev (idem.Observer).
func (o *Observer) Observe(ctx context.Context, ev idem.Event) {
	if ev.Outcome == idem.Unscoped {
		// A notice before the request's own decision, not a decision.
		return
	}
	route := AttrRoute.String(ev.Route)
	switch {
	case ev.Outcome == idem.Executed:
		o.leases.Add(ctx, 1, metric.WithAttributes(route))
	case ev.Op == idem.OpRenew:
		// A renewal that failed while the handler runs: the request is
		// counted when its lease ends.
	default:
		if ev.Op == idem.OpComplete || ev.Op == idem.OpRelease {
			o.leases.Add(ctx, -1, metric.WithAttributes(route))
		}
		outcome := AttrOutcome.String(ev.Outcome.String())
		if ev.Status != 0 {
			o.requests.Add(ctx, 1, metric.WithAttributes(outcome, route, AttrStatus.Int(ev.Status)))
		} else {
			o.requests.Add(ctx, 1, metric.WithAttributes(outcome, route))
		}
		if ev.Outcome == idem.Replayed {
			o.replayed.Add(ctx, int64(ev.BodySize), metric.WithAttributes(route))
		}
	}

	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 3)
	attrs = append(attrs, AttrOutcome.String(ev.Outcome.String()))
	if ev.KeyID != "" {
		attrs = append(attrs, AttrKeyID.String(ev.KeyID))
	}
	if ev.Op != idem.OpComplete && ev.Op != idem.OpRelease && ev.Op != idem.OpRenew {
		// Begin's decision: whether the answer is a replay.
		attrs = append(attrs, AttrReplayed.Bool(ev.Outcome == idem.Replayed))
	}
	span.SetAttributes(attrs...)
}

// ObserveStore records a store call (idem.StoreObserver).
func (o *Observer) ObserveStore(ctx context.Context, call idem.StoreCall) {
	op, store := AttrStoreOperation.String(call.Op.String()), AttrStore.String(o.nameOf(call.Store))
	o.storeDuration.Record(ctx, call.Duration.Seconds(), metric.WithAttributes(op, store))
	if call.Err == nil || errors.Is(call.Err, idem.ErrLeaseLost) {
		return
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(EventStoreError, trace.WithAttributes(op, store,
			attribute.String("error.type", fmt.Sprintf("%T", call.Err)),
			attribute.String("error.message", call.Err.Error())))
	}
}

// nameOf names s with Options.StoreName, or by its Go type.
func (o *Observer) nameOf(s idem.Store) string {
	if o.storeName != nil {
		return o.storeName(s)
	}
	if s == nil {
		return ""
	}
	t := reflect.TypeOf(s)
	if name, ok := o.names.Load(t); ok {
		return name.(string)
	}
	name := strings.TrimPrefix(t.String(), "*")
	o.names.Store(t, name)
	return name
}
