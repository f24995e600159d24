package reliability

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	idem "github.com/idemkit/idem/core"
	idempg "github.com/idemkit/idem/storage/postgres"
	idemredis "github.com/idemkit/idem/storage/redis"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// The crash test runs servers as child processes: the test binary itself,
// started with childEnv set, which TestMain hands to childMain. The child
// serves POST /orders through the net/http adapter with a shared store and
// the lease time it is given, prints "listening ADDR" when it serves and
// "running PID" each time its handler starts; with hold set its handler
// never returns, so the process can be killed in the middle of it.
const (
	childEnv      = "IDEM_RELIABILITY_CHILD" // "server"
	childStoreEnv = "IDEM_CHILD_STORE"       // "redis" or "postgres"
	childURLEnv   = "IDEM_CHILD_URL"
	childNSEnv    = "IDEM_CHILD_NAMESPACE" // Redis key prefix or PostgreSQL table
	childLeaseEnv = "IDEM_CHILD_LEASE"
	childHoldEnv  = "IDEM_CHILD_HOLD" // "1": the handler blocks forever
)

// crashLease is the children's LeaseTime: short, so the test is quick, and
// long enough that a retry sent right after the kill meets the lease.
const crashLease = 2 * time.Second

func childMain() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	lease, err := time.ParseDuration(os.Getenv(childLeaseEnv))
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	var store idem.Store
	switch os.Getenv(childStoreEnv) {
	case "redis":
		opts, err := redis.ParseURL(os.Getenv(childURLEnv))
		if err != nil {
			return fail(err)
		}
		opts.ContextTimeoutEnabled = true
		s, err := idemredis.New(ctx, redis.NewClient(opts), idemredis.Options{KeyPrefix: os.Getenv(childNSEnv)})
		if err != nil {
			return fail(err)
		}
		store = s
	case "postgres":
		pool, err := pgxpool.New(ctx, os.Getenv(childURLEnv))
		if err != nil {
			return fail(err)
		}
		s, err := idempg.New(pool, idempg.Options{Table: os.Getenv(childNSEnv), SweepInterval: -1})
		if err != nil {
			return fail(err)
		}
		store = s
	default:
		return fail(errors.New("unknown store " + os.Getenv(childStoreEnv)))
	}
	engine, err := idem.New(idem.Config{Store: store, LeaseTime: lease,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		return fail(err)
	}
	hold := os.Getenv(childHoldEnv) == "1"
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		say("running %d", os.Getpid())
		if hold {
			select {}
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "served by %d, %s", os.Getpid(), randomHex(8))
	})
	mux := http.NewServeMux()
	mux.Handle("POST "+orderPath, idemhttp.Middleware(engine)(handler))
	ln, err := netListen()
	if err != nil {
		return fail(err)
	}
	say("listening %s", ln.Addr())
	return fail((&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln))
}

// child is a running child server.
type child struct {
	cmd    *exec.Cmd
	base   string
	lines  chan string
	stderr *syncBuffer
	exited chan struct{}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startChild starts a child server and waits until it listens.
func startChild(t *testing.T, storeName, url, namespace string, hold bool) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=server", childStoreEnv+"="+storeName, childURLEnv+"="+url,
		childNSEnv+"="+namespace, childLeaseEnv+"="+crashLease.String())
	if hold {
		cmd.Env = append(cmd.Env, childHoldEnv+"=1")
	}
	c := &child{cmd: cmd, lines: make(chan string, 16), stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		_ = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			t.Logf("child %d stderr:\n%s", cmd.Process.Pid, c.stderr.String())
		}
	})
	line := c.next(t, 20*time.Second)
	addr, ok := strings.CutPrefix(line, "listening ")
	if !ok {
		t.Fatalf("child said %q, want listening", line)
	}
	c.base = "http://" + addr
	return c
}

// next returns the child's next line of output.
func (c *child) next(t *testing.T, within time.Duration) string {
	t.Helper()
	select {
	case l := <-c.lines:
		return l
	case <-c.exited:
		t.Fatalf("child %d exited: %s", c.cmd.Process.Pid, c.stderr.String())
	case <-time.After(within):
		t.Fatalf("child %d said nothing for %v", c.cmd.Process.Pid, within)
	}
	return ""
}

// runs counts the child's handler starts reported within settle: the
// child prints each start before it answers, but its output reaches the
// test through a pipe, possibly after the answer.
func (c *child) runs(settle time.Duration) int {
	n := 0
	deadline := time.After(settle)
	for {
		select {
		case l := <-c.lines:
			if strings.HasPrefix(l, "running ") {
				n++
			}
		case <-deadline:
			return n
		}
	}
}

// peek returns the live record of storageKey without changing it, or nil
// when there is none: Acquire returns a live record unchanged, and a lease
// the peek takes by accident is released at once.
func peek(t *testing.T, store idem.Store, storageKey string) *idem.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	probe := idem.Token{0xff, 'p', 'e', 'e', 'k'}
	rec, err := store.Acquire(ctx, storageKey, probe, nil, time.Second)
	if err != nil {
		t.Fatalf("peek: %v", err)
	}
	if rec == nil {
		if err := store.Release(ctx, storageKey, probe); err != nil {
			t.Fatalf("peek release: %v", err)
		}
	}
	return rec
}

// TestCrashMidRequest (B17, B11): a server process killed with SIGKILL while
// its handler runs leaves an in-flight record. A second process sharing the
// store answers a retry with 409 until the lease ends, then runs the
// handler once under a new token; the dead process's lease never completes
// the record, and further retries replay the second process's response.
func TestCrashMidRequest(t *testing.T) {
	type backend struct {
		name string
		open func(t *testing.T) (store idem.Store, url, namespace string)
	}
	backends := []backend{
		{"redis", func(t *testing.T) (idem.Store, string, string) {
			f := newRedis(t)
			return f.store, redisURL(t), f.prefix
		}},
		{"postgres", func(t *testing.T) (idem.Store, string, string) {
			f := newPostgres(t)
			return f.store, postgresURL(t), f.table
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store, url, ns := b.open(t)
			crashAndRetry(t, b.name, store, url, ns)
		})
	}
}

func crashAndRetry(t *testing.T, storeName string, store idem.Store, url, ns string) {
	doomed := startChild(t, storeName, url, ns, true)
	survivor := startChild(t, storeName, url, ns, false)
	client := newClient(t, 4)
	key := "crash-" + randomHex(8)
	storageKey := idem.DefaultEncodeKey("", key)
	body := []byte(`{"amount":100}`)

	firstErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a, err := post(ctx, client, doomed.base, key, body)
		if err == nil {
			err = fmt.Errorf("the doomed server answered %v", a)
		}
		firstErr <- err
	}()
	if l := doomed.next(t, 10*time.Second); !strings.HasPrefix(l, "running ") {
		t.Fatalf("doomed child said %q, want running", l)
	}
	// Past the first lease time the doomed process keeps its lease alive
	// by renewing it (B16): the survivor still answers 409.
	time.Sleep(crashLease * 5 / 4)
	if a := mustPost(t, client, survivor.base, key, body); a.Status != http.StatusConflict || a.problemType() != idem.ProblemInFlight {
		t.Fatalf("retry while the first process runs: %v, want 409 in-flight", a)
	}

	if err := doomed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	killed := time.Now()
	<-doomed.exited
	if err := <-firstErr; err == nil {
		t.Fatal("the first client got an answer from a killed server")
	}
	dead := peek(t, store, storageKey)
	if dead == nil || dead.State != idem.InFlight {
		t.Fatalf("after the crash the record is %+v, want in flight", dead)
	}

	// Before the lease ends: 409 with Retry-After, and no execution.
	a := mustPost(t, client, survivor.base, key, body)
	if a.Status != http.StatusConflict || a.Header.Get("Retry-After") == "" {
		t.Fatalf("retry before the lease ends: %v, want 409 with Retry-After", a)
	}
	if n := survivor.runs(300 * time.Millisecond); n != 0 {
		t.Fatalf("the survivor ran the handler %d times while the dead lease held the key", n)
	}

	// Retry until the lease ends; the first answer that is not 409 must be
	// a first execution, no earlier than the dead lease's expiry.
	var got answer
	deadline := killed.Add(crashLease + 3*time.Second)
	for {
		got = mustPost(t, client, survivor.base, key, body)
		if got.Status != http.StatusConflict {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still 409 %v after the kill, lease time %v", time.Since(killed), crashLease)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ranAt := time.Now()
	if got.Status != http.StatusCreated || got.replayed() {
		t.Fatalf("retry after the lease ended: %v, want a first execution (201)", got)
	}
	if ranAt.Before(dead.ExpiresAt.Add(-250 * time.Millisecond)) {
		t.Fatalf("the survivor ran at %v, before the dead lease expired at %v", ranAt, dead.ExpiresAt)
	}
	if n := survivor.runs(300 * time.Millisecond); n != 1 {
		t.Fatalf("the survivor ran the handler %d times, want once", n)
	}
	t.Logf("%s: killed with the lease %v from its end; retried successfully %v after the kill",
		storeName, dead.ExpiresAt.Sub(killed).Round(time.Millisecond), ranAt.Sub(killed).Round(time.Millisecond))

	done := peek(t, store, storageKey)
	if done == nil || done.State != idem.Completed || done.Token == dead.Token || done.Status != http.StatusCreated {
		t.Fatalf("record after the retry: %+v, want completed with a new token (dead token %v)", done, dead.Token)
	}
	// The dead owner's token can never complete the key.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := store.Complete(ctx, storageKey, dead.Token, &idem.Record{Status: 200, Body: []byte("zombie")}, time.Hour)
	if !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("completing with the dead token: %v, want ErrLeaseLost", err)
	}
	for range 3 {
		r := mustPost(t, client, survivor.base, key, body)
		if !r.replayed() || !bytes.Equal(r.Body, got.Body) || r.Status != http.StatusCreated {
			t.Fatalf("replay %v, want the survivor's response %v", r, got)
		}
	}
	if n := survivor.runs(300 * time.Millisecond); n != 0 {
		t.Fatalf("the survivor ran the handler again %d times", n)
	}
}
