package reliability

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// The load every adapter × store combination gets: clients concurrent
// clients send duplicates of each of keys keys, in random order.
const (
	loadClients = 64
	loadKeys    = 200
)

// loadDuplicates is how many times each key is sent, per store: enough for
// thousands of requests per combination while the whole matrix stays well
// within a minute under -race on two cores.
var loadDuplicates = map[string]int{"memory": 10, "redis": 8, "postgres": 6}

// TestExactlyOnceUnderLoad (B11, B12, B13): for every adapter and store,
// concurrent duplicates of many keys run each key's handler exactly once;
// every other answer is a byte-identical replay of the key's first response
// or a 409 in-flight problem with Retry-After, and nothing else.
func TestExactlyOnceUnderLoad(t *testing.T) {
	for _, sk := range storeKinds {
		for _, ad := range adapters {
			t.Run(ad.name+"/"+sk.name, func(t *testing.T) {
				store := sk.open(t)
				runLoad(t, ad, store, loadDuplicates[sk.name])
			})
		}
	}
}

// loadResult is one request of the load and its answer.
type loadResult struct {
	key string
	ans answer
	err error
}

func runLoad(t *testing.T, ad adapter, store idem.Store, dups int) {
	ex := newExecutions()
	// The longest StoreTimeout the default lease allows (B34).
	engine := newEngine(t, idem.Config{Store: store, StoreTimeout: idem.DefaultLeaseTime / idem.MaxStoreTimeoutShare})
	// The handler holds each request a little, so that duplicates meet it
	// in flight as well as completed.
	base := ad.serve(t, engine, idem.Route{}, orderHandler(ex, 2*time.Millisecond))
	client := newClient(t, loadClients)

	run := randomHex(4)
	jobs := make([]string, 0, loadKeys*dups)
	for k := range loadKeys {
		for range dups {
			jobs = append(jobs, fmt.Sprintf("%s-key-%03d", run, k))
		}
	}
	rand.Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	queue := make(chan string)
	results := make(chan loadResult, len(jobs))
	var wg sync.WaitGroup
	for range loadClients {
		wg.Go(func() {
			for key := range queue {
				// The key is also the body: the handler counts executions by it.
				a, err := post(ctx, client, base, key, []byte(key))
				results <- loadResult{key, a, err}
			}
		})
	}
	start := time.Now()
	for _, k := range jobs {
		queue <- k
	}
	close(queue)
	wg.Wait()
	close(results)
	elapsed := time.Since(start)

	byKey := map[string][]answer{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("key %s: %v", r.key, r.err)
		}
		byKey[r.key] = append(byKey[r.key], r.ans)
	}
	var conflicts, replays int
	for key, answers := range byKey {
		if n := ex.of(key); n != 1 {
			t.Errorf("key %s: the handler ran %d times, want exactly once", key, n)
		}
		var first *answer
		for i := range answers {
			if a := &answers[i]; a.Status == http.StatusCreated && !a.replayed() {
				if first != nil {
					t.Errorf("key %s: two first responses:\n%v\n%v", key, *first, *a)
				}
				first = a
			}
		}
		if first == nil {
			t.Errorf("key %s: no client got the first response", key)
			continue
		}
		for _, a := range answers {
			switch {
			case a.Status == http.StatusCreated && a.replayed():
				replays++
				if !bytes.Equal(a.Body, first.Body) || a.Header.Get("Location") != first.Header.Get("Location") {
					t.Errorf("key %s: replay %v differs from the first response %v", key, a, *first)
				}
				if a.Header.Get("Set-Cookie") != "" || a.Header.Get("X-Internal") != "" {
					t.Errorf("key %s: replay carries headers off the allowlist: %v", key, a.Header)
				}
			case a.Status == http.StatusConflict:
				conflicts++
				if a.problemType() != idem.ProblemInFlight || a.Header.Get("Retry-After") == "" {
					t.Errorf("key %s: malformed 409: %v %v", key, a, a.Header)
				}
			case a.Status == http.StatusCreated: // the first response
			default:
				t.Errorf("key %s: unexpected answer %v", key, a)
			}
		}
	}
	execs := ex.total.Load()
	line := fmt.Sprintf("%s: %d requests in %v, %d keys, %d handler executions, %d replays, %d in-flight 409s",
		t.Name(), len(jobs), elapsed.Round(time.Millisecond), len(byKey), execs, replays, conflicts)
	t.Log(line)
	writeSummary(t, line)
	if execs != int64(loadKeys) || len(byKey) != loadKeys {
		t.Errorf("handler executions %d, keys %d: want both %d", execs, len(byKey), loadKeys)
	}
}

// summaryEnv names a file that the load tests append their summary lines
// to, so that CI can print them although go test shows no output of a
// passing package.
const summaryEnv = "IDEM_RELIABILITY_SUMMARY"

var summaryMu sync.Mutex

// writeSummary appends line to the file $IDEM_RELIABILITY_SUMMARY, when set.
func writeSummary(t *testing.T, line string) {
	path := os.Getenv(summaryEnv)
	if path == "" {
		return
	}
	summaryMu.Lock()
	defer summaryMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("summary: %v", err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		t.Errorf("summary: %v", err)
	}
}
