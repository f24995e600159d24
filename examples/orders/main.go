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
	idempg "github.com/idemkit/idem/storage/postgres"
	idemredis "github.com/idemkit/idem/storage/redis"
)

// options are the command's settings, from its flags.
type options struct {
	adapter string
	store   string
	latency time.Duration

	redisURL    string // -store redis: where Redis is
	keyPrefix   string // -store redis: the prefix of idem's keys
	postgresURL string // -store postgres(-tx), -orders postgres: where the database is
	table       string // -store postgres(-tx): the records' table
	fresh       bool   // -store redis or postgres(-tx): a namespace of this run's own

	orders      string        // where the orders live: memory or postgres
	ordersTable string        // -orders postgres: the orders' table
	lease       time.Duration // the engine's LeaseTime; 0: its default

	metricsAddr string       // serve Prometheus metrics there, when set
	metricsLn   net.Listener // the listener on metricsAddr
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
	flag.StringVar(&o.redisURL, "redis-url", envOr("IDEM_REDIS_URL", defaultRedisURL), "Redis `URL` for -store redis; $IDEM_REDIS_URL sets the default")
	flag.StringVar(&o.keyPrefix, "key-prefix", idemredis.DefaultKeyPrefix, "`prefix` of the idempotency keys in Redis, for -store redis")
	flag.StringVar(&o.postgresURL, "postgres-url", envOr("IDEM_POSTGRES_URL", defaultPostgresURL), "PostgreSQL `URL` for -store postgres; $IDEM_POSTGRES_URL sets the default")
	flag.StringVar(&o.table, "table", idempg.DefaultTable, "`table` of the idempotency records, for -store postgres and postgres-tx; created if missing")
	flag.BoolVar(&o.fresh, "fresh", false, "with -store redis, postgres or postgres-tx, keep this run's records apart (a random key prefix or table, removed at shutdown), so a new run starts from no records")
	flag.StringVar(&o.orders, "orders", "", "where the orders live: memory or postgres (default postgres with -store postgres-tx, else memory)")
	flag.StringVar(&o.ordersTable, "orders-table", defaultOrdersTable, "`table` of the orders, for -orders postgres; created if missing")
	flag.DurationVar(&o.lease, "lease", 0, "lease time of a request's key, such as 5s (default the engine's, 30s): how long a crashed request blocks its retry")
	flag.StringVar(&o.metricsAddr, "metrics-addr", "", "serve the engine's OpenTelemetry metrics for Prometheus on this `address` (GET /metrics), such as 127.0.0.1:9464")
	exitWithParent := flag.Bool("exit-with-parent", startedByGoRun(), "shut down when the process that started this one exits (default true under go run)")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if *exitWithParent {
		var cancel context.CancelFunc
		ctx, cancel = withParent(ctx)
		defer cancel()
	}

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
	if o.metricsAddr != "" {
		if o.metricsLn, err = net.Listen("tcp", o.metricsAddr); err != nil {
			ln.Close()
			return fmt.Errorf("-metrics-addr: %w", err)
		}
	}
	return run(ctx, ln, o, logger)
}

// check reports an unknown adapter, store or order book, and fills in
// the default order book.
func (o *options) check() error {
	if _, ok := adapters[o.adapter]; !ok {
		return fmt.Errorf("unknown -adapter %q: use one of %s", o.adapter, names(adapters))
	}
	if _, ok := stores[o.store]; !ok {
		return fmt.Errorf("unknown -store %q: use one of %s", o.store, names(stores))
	}
	if o.orders == "" {
		o.orders = "memory"
		if o.store == "postgres-tx" {
			o.orders = "postgres"
		}
	}
	switch {
	case o.orders != "memory" && o.orders != "postgres":
		return fmt.Errorf("unknown -orders %q: use memory or postgres", o.orders)
	case o.store == "postgres-tx" && o.orders != "postgres":
		return errors.New("-store postgres-tx creates the orders in the request's transaction: use -orders postgres")
	}
	return nil
}

// run serves the API on ln, and the metrics on o.metricsLn when it is
// set, until ctx is done, then shuts down gracefully: requests in progress
// finish (their idempotency records complete), then the engine and the
// store close. It closes the listeners.
func run(ctx context.Context, ln net.Listener, o options, logger *slog.Logger) error {
	closeListeners := func() {
		ln.Close()
		if o.metricsLn != nil {
			o.metricsLn.Close()
		}
	}
	if err := o.check(); err != nil { // o is run's own copy
		closeListeners()
		return err
	}
	store, closeStore, err := stores[o.store](ctx, o, logger)
	if err != nil {
		closeListeners()
		return fmt.Errorf("open %s store: %w", o.store, err)
	}
	defer func() {
		if err := closeStore(); err != nil {
			logger.Warn("orders: close store", "store", o.store, "error", err)
		}
	}()
	a := newAPI(o.latency)
	if o.orders == "postgres" {
		book, closeBook, err := openOrders(ctx, o)
		if err != nil {
			closeListeners()
			return fmt.Errorf("open the orders table: %w", err)
		}
		defer closeBook()
		a.orders = book
	}
	cfg := idem.Config{Store: store, Logger: logger, LeaseTime: o.lease}
	var metricsSrv *http.Server
	if o.metricsLn != nil {
		m, err := newMetrics()
		if err != nil {
			closeListeners()
			return fmt.Errorf("metrics: %w", err)
		}
		defer m.provider.Shutdown(context.Background())
		cfg.Observer = m.observer
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.handler)
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go metricsSrv.Serve(o.metricsLn)
		defer metricsSrv.Close()
		logger.Info("orders: metrics", "addr", o.metricsLn.Addr().String(), "path", "/metrics")
	}
	if crash := crashObserver(); crash != nil {
		cfg.Observer = crash // a test build (crashtest.go)
	}
	engine, err := idem.New(cfg)
	if err != nil {
		closeListeners()
		return err
	}
	defer engine.Close()

	srv := adapters[o.adapter](engine, a)
	logger.Info("orders: serving", "addr", ln.Addr().String(), "adapter", o.adapter, "store", o.store, "orders", o.orders, "latency", o.latency, "pid", os.Getpid())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Info("orders: shutting down, letting requests in progress finish", "cause", context.Cause(ctx))
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	logger.Info("orders: stopped")
	return nil
}

// names lists a map's keys, sorted, for flag help and errors.
func names[V any](m map[string]V) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}
