package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestMetricsEndpoint runs the README's session against a server with
// -metrics-addr and checks what the metrics address then serves: the
// session's requests by outcome, the replayed bytes and the store calls.
func TestMetricsEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, ln, options{adapter: "nethttp", store: "memory", metricsLn: mln}, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	for _, r := range []struct {
		method, key, body string
		status            int
	}{
		{"POST", "order-1001", `{"sku":"MUG","qty":2}`, 201},
		{"POST", "order-1001", `{"sku":"MUG","qty":2}`, 201},
		{"GET", "", "", 200},
		{"POST", "order-1001", `{"sku":"MUG","qty":3}`, 422},
	} {
		a, err := send(r.method, base+"/orders", r.key, r.body)
		if err != nil || a.status != r.status {
			t.Fatalf("%s /orders %s: %d %v, want %d", r.method, r.key, a.status, err, r.status)
		}
	}

	resp, err := http.Get("http://" + mln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`idem_requests_total{http_response_status_code="201",idem_outcome="stored",idem_route="POST /orders"} 1`,
		`idem_requests_total{http_response_status_code="201",idem_outcome="replayed",idem_route="POST /orders"} 1`,
		`idem_requests_total{http_response_status_code="422",idem_outcome="mismatch",idem_route="POST /orders"} 1`,
		`idem_replayed_bytes_total{idem_route="POST /orders"} 35`,
		`idem_leases_active{idem_route="POST /orders"} 0`,
		`idem_store_duration_seconds_count{idem_store="idem.MemoryStore",idem_store_operation="acquire"} 3`,
		`idem_store_duration_seconds_count{idem_store="idem.MemoryStore",idem_store_operation="complete"} 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("the metrics lack %s\n%s", want, body)
		}
	}
	if strings.Contains(string(body), "order-1001") || strings.Contains(string(body), "MUG") {
		t.Errorf("the metrics show a key or a body:\n%s", body)
	}
}
