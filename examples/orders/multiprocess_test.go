package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// The many-processes test: two separate server processes share one store,
// and duplicates of each key reach both of them at once. Across processes
// exactly one request per key may run the operation (B11); every other
// answer is a replay of that one (B13) or a 409 while it runs (B12).
const (
	mpKeys        = 100
	mpPerKey      = 10
	mpConcurrency = 32
	// mpLatency is each order's simulated work, so that duplicates overlap
	// the first request of their key.
	mpLatency = 20 * time.Millisecond
)

func TestManyProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command and starts processes; skipped with -short")
	}
	build := sync.OnceValues(func() (string, error) { return buildCommand(t.TempDir()) })
	for _, c := range []struct {
		store    string
		env      string
		adapters [2]string
		// setup returns the store's flags for a fresh, isolated run and
		// registers the cleanup of what the run leaves in the store, after
		// checking that it holds one record per key.
		setup func(t *testing.T, url string) []string
	}{
		{"redis", "IDEM_REDIS_URL", [2]string{"nethttp", "fiber"}, func(t *testing.T, url string) []string {
			return setupRedis(t, url, mpKeys)
		}},
		{"postgres", "IDEM_POSTGRES_URL", [2]string{"chi", "echo"}, func(t *testing.T, url string) []string {
			return setupPostgres(t, url, "postgres", mpKeys)
		}},
	} {
		t.Run(c.store, func(t *testing.T) {
			url := os.Getenv(c.env)
			if url == "" {
				t.Skipf("set %s to run the %s part (for instance %s=%s)", c.env, c.store, c.env, map[string]string{
					"redis": defaultRedisURL, "postgres": defaultPostgresURL,
				}[c.store])
			}
			bin, err := build()
			if err != nil {
				t.Fatal(err)
			}
			flags := c.setup(t, url)
			var procs [2]*process
			for i, adapter := range c.adapters {
				procs[i] = startProcess(t, bin, append([]string{"-adapter", adapter, "-latency", mpLatency.String()}, flags...)...)
			}
			s := sendDuplicates(t, procs)
			t.Logf("%s (%s + %s): %d requests sent, %d orders created (%d + %d), %d replays, %d 409s",
				c.store, c.adapters[0], c.adapters[1], s.sent, s.created[0]+s.created[1], s.created[0], s.created[1], s.replays, s.conflicts)
		})
	}
}

// buildCommand builds this command into dir, with the build tags given,
// and returns the binary's path.
func buildCommand(dir string, tags ...string) (string, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is needed to build the server: %w", err)
	}
	bin := filepath.Join(dir, "orders")
	out, err := exec.Command(goCmd, "build", "-tags", strings.Join(tags, ","), "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// randomName returns prefix followed by random lower-case hex digits.
func randomName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// setupRedis isolates the run behind a random key prefix, and deletes the
// run's keys at the end, after checking that there are wantKeys of them
// (unless wantKeys is negative or the test failed).
func setupRedis(t *testing.T, url string, wantKeys int) []string {
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("IDEM_REDIS_URL: %v", err)
	}
	client := redis.NewClient(opts)
	prefix := randomName("idem-test-") + ":"
	t.Cleanup(func() {
		defer client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var keys []string
		iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("scan %s*: %v", prefix, err)
			return
		}
		if !t.Failed() && wantKeys >= 0 && len(keys) != wantKeys {
			t.Errorf("Redis holds %d keys with the run's prefix, want one per idempotency key (%d)", len(keys), wantKeys)
		}
		if len(keys) > 0 {
			if err := client.Del(ctx, keys...).Err(); err != nil {
				t.Errorf("delete the run's keys: %v", err)
			}
		}
	})
	return []string{"-store", "redis", "-redis-url", url, "-key-prefix", prefix}
}

// setupPostgres isolates the run of store (postgres or postgres-tx) in a
// fresh table, and drops it at the end, after checking that it holds
// wantRows records (see dropPostgresTable).
func setupPostgres(t *testing.T, url, store string, wantRows int) []string {
	table := randomName("idem_test_")
	t.Cleanup(func() { dropPostgresTable(t, url, table, wantRows) })
	return []string{"-store", store, "-postgres-url", url, "-table", table}
}

// dropPostgresTable drops table at url, if it exists, after checking that
// it holds wantRows rows (unless wantRows is negative or the test failed).
func dropPostgresTable(t *testing.T, url, table string, wantRows int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("connect to drop %s: %v", table, err)
		return
	}
	defer conn.Close(ctx)
	name := pgx.Identifier{table}.Sanitize()
	if !t.Failed() && wantRows >= 0 {
		var rows int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+name).Scan(&rows); err != nil {
			t.Errorf("count %s: %v", table, err)
		} else if rows != wantRows {
			t.Errorf("%s holds %d records, want one per idempotency key (%d)", table, rows, wantRows)
		}
	}
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+name); err != nil {
		t.Errorf("drop %s: %v", table, err)
	}
}

// process is a server started from the built command.
type process struct {
	base string // http://host:port
	name string

	mu  sync.Mutex
	log strings.Builder // everything the process wrote to stderr
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// readLog keeps what the process writes to stderr, until it closes, and
// sends the address of its "serving" line to addr (once; addr has room).
func (p *process) readLog(stderr io.Reader, addr chan<- string) {
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		if m := servingAddr.FindStringSubmatch(line); m != nil {
			select {
			case addr <- m[1]:
			default:
			}
		}
		p.mu.Lock()
		p.log.WriteString(line + "\n")
		p.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, stderr)
}

// servingAddr finds the address in the command's "serving" log line.
var servingAddr = regexp.MustCompile(`msg="orders: serving" addr=(\S+)`)

// startProcess starts the server on a free loopback port, waits until it
// answers GET /orders, and stops it gracefully (SIGINT) when the test
// ends, checking that it exits cleanly.
func startProcess(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{name: strings.Join(cmd.Args, " ")}
	addr := make(chan string, 1)
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		p.readLog(stderr, addr)
	}()
	exited := make(chan error, 1)
	go func() {
		<-logDone // Wait closes the pipe: read it all first.
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case err := <-exited:
			t.Errorf("%s exited early: %v\n%s", p.name, err, p.output())
			return
		default:
		}
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("%s: graceful shutdown: %v\n%s", p.name, err, p.output())
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("%s did not stop within 15s of SIGINT\n%s", p.name, p.output())
		}
	})

	select {
	case a := <-addr:
		p.base = "http://" + a
	case err := <-exited:
		exited <- err // for the cleanup
		t.Fatalf("%s exited before serving: %v\n%s", p.name, err, p.output())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start serving within 30s\n%s", p.name, p.output())
	}
	if a, err := send(http.MethodGet, p.base+"/orders", "", ""); err != nil || a.status != http.StatusOK {
		t.Fatalf("%s: GET /orders: %v %d %s\n%s", p.name, err, a.status, a.body, p.output())
	}
	return p
}

// mpSummary is what sendDuplicates saw.
type mpSummary struct {
	sent               int
	created            [2]int // orders on each process
	replays, conflicts int
}

// sendDuplicates sends mpPerKey requests for each of mpKeys keys, each
// key's requests alternating between the two processes, in a random order
// from mpConcurrency goroutines, and checks the answers and the orders.
func sendDuplicates(t *testing.T, procs [2]*process) mpSummary {
	t.Helper()
	run := randomName("")
	keyOf := func(k int) string { return fmt.Sprintf("mp-%s-%03d", run, k) }
	skuOf := func(k int) string { return fmt.Sprintf("SKU-%03d", k) }
	bodyOf := func(k int) string { return fmt.Sprintf(`{"sku":%q,"qty":%d}`, skuOf(k), k%9+1) }

	type job struct{ key, n int }
	jobs := make([]job, 0, mpKeys*mpPerKey)
	for k := range mpKeys {
		for n := range mpPerKey {
			jobs = append(jobs, job{k, n})
		}
	}
	seed := mrand.Uint64()
	mrand.New(mrand.NewPCG(seed, 0)).Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })

	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: mpConcurrency},
		Timeout:   30 * time.Second,
	}
	defer client.CloseIdleConnections()
	answers := make([][mpPerKey]answer, mpKeys)
	errs := make([][mpPerKey]error, mpKeys)
	queue := make(chan job)
	var wg sync.WaitGroup
	for range mpConcurrency {
		wg.Go(func() {
			for j := range queue {
				p := procs[(j.key+j.n)%2]
				answers[j.key][j.n], errs[j.key][j.n] = sendWith(client, http.MethodPost, p.base+"/orders", keyOf(j.key), bodyOf(j.key))
			}
		})
	}
	for _, j := range jobs {
		queue <- j
	}
	close(queue)
	wg.Wait()

	s := mpSummary{sent: len(jobs)}
	for k := range mpKeys {
		var original *answer
		for n := range mpPerKey {
			if err := errs[k][n]; err != nil {
				t.Fatalf("key %d, request %d: %v", k, n, err)
			}
			if a := &answers[k][n]; a.status == http.StatusCreated && a.header.Get("Idempotent-Replayed") == "" {
				if original != nil {
					t.Fatalf("key %d ran twice (shuffle seed %d):\n%s\n%s", k, seed, original.body, a.body)
				}
				original = a
			}
		}
		if original == nil {
			t.Fatalf("key %d never ran; answers: %+v", k, answers[k])
		}
		if o := decode[Order](t, *original); o.SKU != skuOf(k) || o.Qty != k%9+1 {
			t.Fatalf("key %d created %+v from %s", k, o, bodyOf(k))
		}
		for n, a := range answers[k] {
			switch {
			case &answers[k][n] == original:
			case a.status == http.StatusCreated && a.header.Get("Idempotent-Replayed") == "true":
				if a.body != original.body || a.header.Get("Location") != original.header.Get("Location") {
					t.Fatalf("key %d, request %d: replay %q (Location %q), want the original %q (Location %q)",
						k, n, a.body, a.header.Get("Location"), original.body, original.header.Get("Location"))
				}
				s.replays++
			case a.status == http.StatusConflict:
				if a.header.Get("Retry-After") == "" || a.header.Get("Content-Type") != "application/problem+json" {
					t.Fatalf("key %d, request %d: 409 without Retry-After or problem body: %v %s", k, n, a.header, a.body)
				}
				s.conflicts++
			default:
				t.Fatalf("key %d, request %d: %d (Idempotent-Replayed %q) %s; want a replay or a 409",
					k, n, a.status, a.header.Get("Idempotent-Replayed"), a.body)
			}
		}
	}

	// Orders live in each process's memory: every key's order exists
	// exactly once, on one of them.
	created := map[string]int{}
	for i, p := range procs {
		list := orders(t, p.base)
		s.created[i] = len(list)
		for _, o := range list {
			created[o.SKU]++
		}
	}
	if total := s.created[0] + s.created[1]; total != mpKeys {
		t.Errorf("%d orders created in total (%d + %d), want %d: one per key", total, s.created[0], s.created[1], mpKeys)
	}
	for k := range mpKeys {
		if n := created[skuOf(k)]; n != 1 {
			t.Errorf("key %d: %d orders of %s, want 1", k, n, skuOf(k))
		}
	}
	return s
}
