package idemotel_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	idem "github.com/idemkit/idem/core"
	idemotel "github.com/idemkit/idem/observability/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// An engine observed by idemotel: a request and its retry are counted as
// one stored and one replayed request. In a server the MeterProvider's
// reader is an exporter, such as the Prometheus one examples/orders uses.
func Example() {
	reader := sdkmetric.NewManualReader()
	obs, err := idemotel.New(idemotel.Options{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	if err != nil {
		panic(err)
	}
	engine, err := idem.New(idem.Config{Observer: obs})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	for range 2 {
		d := engine.Begin(&idem.Request{Method: "POST", Path: "/orders", Route: idem.Route{Name: "orders"},
			Header: http.Header{"Idempotency-Key": {"order-1"}}, Body: strings.NewReader(`{"sku":"MUG"}`)})
		if d.Action == idem.Run {
			_ = d.Lease.Complete(idem.Recorded{Status: 201, Body: []byte(`{"id":"ord_1"}`)})
		}
	}

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(context.Background(), &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == idemotel.MetricRequests {
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				outcome, _ := p.Attributes.Value(idemotel.AttrOutcome)
				status, _ := p.Attributes.Value(idemotel.AttrStatus)
				fmt.Println(outcome.AsString(), status.AsInt64(), p.Value)
			}
		}
	}
	// Unordered output:
	// stored 201 1
	// replayed 201 1
}
