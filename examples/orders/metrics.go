package main

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	idemotel "github.com/idemkit/idem/observability/otel"
)

// metrics holds the engine's OpenTelemetry observer and the Prometheus
// handler that serves what it records (-metrics-addr).
type metrics struct {
	observer *idemotel.Observer
	provider *sdkmetric.MeterProvider
	handler  http.Handler
}

// newMetrics wires idemotel to the OpenTelemetry Prometheus exporter over
// a registry of its own, so the endpoint shows idem's metrics and nothing
// of the Go runtime.
func newMetrics() (*metrics, error) {
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry), otelprom.WithoutTargetInfo(), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	observer, err := idemotel.New(idemotel.Options{MeterProvider: provider})
	if err != nil {
		_ = provider.Shutdown(context.Background())
		return nil, err
	}
	return &metrics{observer: observer, provider: provider, handler: promhttp.HandlerFor(registry, promhttp.HandlerOpts{})}, nil
}
