package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	idem "github.com/idemkit/idem/core"
)

// options are the command's settings, from its flags.
type options struct {
	adapter string
	store   string
	latency time.Duration
}

// shutdownTimeout bounds how long a graceful shutdown waits for requests
// in progress.
const shutdownTimeout = 10 * time.Second

func main() {
	var o options
	addr := flag.String("addr", "127.0.0.1:8080", "listen `address`")
	flag.StringVar(&o.adapter, "adapter", "nethttp", "adapter that serves the routes: "+names(adapters))
	flag.StringVar(&o.store, "store", "memory", "idempotency store: "+names(stores))
	flag.DurationVar(&o.latency, "latency", 0, "simulated work per order, such as 2s")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := listenAndRun(ctx, *addr, o, logger); err != nil {
		logger.Error("orders", "error", err)
		os.Exit(1)
	}
}

func listenAndRun(ctx context.Context, addr string, o options, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return run(ctx, ln, o, logger)
}

// check reports an unknown adapter or store.
func (o options) check() error {
	if _, ok := adapters[o.adapter]; !ok {
		return fmt.Errorf("unknown -adapter %q: use one of %s", o.adapter, names(adapters))
	}
	if _, ok := stores[o.store]; !ok {
		return fmt.Errorf("unknown -store %q: use one of %s", o.store, names(stores))
	}
	return nil
}

// run serves the API on ln until ctx is done, then shuts down gracefully:
// requests in progress finish (their idempotency records complete), then
// the engine and the store close. It closes ln.
func run(ctx context.Context, ln net.Listener, o options, logger *slog.Logger) error {
	if err := o.check(); err != nil {
		ln.Close()
		return err
	}
	store, closeStore, err := stores[o.store](ctx, o)
	if err != nil {
		ln.Close()
		return fmt.Errorf("open %s store: %w", o.store, err)
	}
	defer closeStore()
	engine, err := idem.New(idem.Config{Store: store, Logger: logger})
	if err != nil {
		ln.Close()
		return err
	}
	defer engine.Close()

	srv := adapters[o.adapter](engine, newAPI(o.latency))
	logger.Info("orders: serving", "addr", ln.Addr().String(), "adapter", o.adapter, "store", o.store, "latency", o.latency)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Info("orders: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// names lists a map's keys, sorted, for flag help and errors.
func names[V any](m map[string]V) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}
