package conformance

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	idem "github.com/idemkit/idem/core"
)

// BenchPath is the route the benchmarks of RunBenchmarks request, with
// the POST method.
const BenchPath = "/orders"

// BenchRequestBody and BenchResponseBody are the bodies of the benchmark
// requests and of their answers: 1 KiB of JSON each.
var (
	BenchRequestBody  = benchJSON("order", 1024)
	BenchResponseBody = benchJSON("receipt", 1024)
)

func benchJSON(field string, size int) []byte {
	head, tail := `{"`+field+`":"`, `"}`
	return []byte(head + strings.Repeat("x", size-len(head)-len(tail)) + tail)
}

// BenchHandler is the net/http handler the benchmarks expect behind the
// adapter, and in front of nothing in the bare case: it reads the whole
// request body and answers 201 with Content-Type application/json, a
// Location and BenchResponseBody. A handler of another framework should do
// the same work its own way.
var BenchHandler http.Handler = http.HandlerFunc(serveBench)

func serveBench(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || len(body) != len(BenchRequestBody) {
		http.Error(w, "the request body did not arrive whole", http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Location", BenchPath+"/1")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(BenchResponseBody)
}

// BenchClient sends benchmark requests to an application in process, from
// one goroutine.
type BenchClient interface {
	// Post sends POST BenchPath with BenchRequestBody, Content-Type
	// application/json and the idempotency key, and returns the status of
	// the answer and whether it carries Idempotent-Replayed: true.
	Post(key string) (status int, replayed bool)
}

// HTTPBenchClient returns a BenchClient for a net/http handler: each Post
// builds its request with httptest.NewRequest and serves it on an
// httptest.ResponseRecorder, without a network.
func HTTPBenchClient(h http.Handler) BenchClient { return httpBenchClient{h} }

type httpBenchClient struct{ h http.Handler }

func (c httpBenchClient) Post(key string) (int, bool) {
	r := httptest.NewRequest(http.MethodPost, BenchPath, bytes.NewReader(BenchRequestBody))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set(idem.DefaultHeaderName, key)
	w := httptest.NewRecorder()
	c.h.ServeHTTP(w, r)
	return w.Code, w.Header().Get(idem.ReplayedHeader) == "true"
}

// BenchApp builds the application a benchmark measures: the route POST
// BenchPath served by a handler that does BenchHandler's work, behind the
// adapter's middleware built from e or, when e is nil, without it. It
// returns a constructor of clients, called once per goroutine.
type BenchApp func(b *testing.B, e *idem.Engine) (newClient func() BenchClient)

// RunBenchmarks measures an adapter in process with the memory store, as
// sub-benchmarks whose names benchstat can project (-col /path):
//
//   - mode=serial/path=bare: the handler without idem, the baseline;
//   - path=first: every request carries a new key, so the handler runs
//     under a lease and its response is recorded;
//   - path=replay: every request repeats a completed key and is replayed;
//   - path=in-flight: every request repeats a key whose first request is
//     still running, and is answered 409;
//
// and the same four under b.RunParallel as mode=parallel. Each run gets a
// fresh engine with the default configuration.
func RunBenchmarks(b *testing.B, app BenchApp) {
	for _, mode := range []string{"serial", "parallel"} {
		parallel := mode == "parallel"
		b.Run("mode="+mode+"/path=bare", func(b *testing.B) {
			MeasureRequests(b, app(b, nil), NewKeySet(b.N), http.StatusCreated, false, parallel)
		})
		b.Run("mode="+mode+"/path=first", func(b *testing.B) {
			newClient := app(b, benchEngineFor(b, b.N))
			keys := NewKeySet(b.N)
			WarmHeap(b.N * FirstRequestHeap)
			MeasureRequests(b, newClient, keys, http.StatusCreated, false, parallel)
		})
		b.Run("mode="+mode+"/path=replay", func(b *testing.B) {
			newClient := app(b, benchEngine(b))
			keys := RepeatKey(b.N)
			if status, _ := newClient().Post(keys.Key(0)); status != http.StatusCreated {
				b.Fatalf("the first request answered %d, want 201", status)
			}
			MeasureRequests(b, newClient, keys, http.StatusCreated, true, parallel)
		})
		b.Run("mode="+mode+"/path=in-flight", func(b *testing.B) {
			e := benchEngine(b)
			newClient := app(b, e)
			keys := RepeatKey(b.N)
			d := e.Begin(&idem.Request{Method: http.MethodPost, Path: BenchPath,
				Header: http.Header{idem.DefaultHeaderName: {keys.Key(0)}}, BodyBytes: BenchRequestBody})
			if d.Action != idem.Run {
				b.Fatalf("leasing the key: Begin = %v, want run", d.Action)
			}
			b.Cleanup(func() { _ = d.Lease.Release(nil) })
			MeasureRequests(b, newClient, keys, http.StatusConflict, false, parallel)
		})
	}
}

func benchEngine(b *testing.B) *idem.Engine { return benchEngineFor(b, 0) }

// benchEngineFor returns an engine with the default configuration whose
// memory store holds at least records new records (with 1 KiB bodies)
// besides its defaults: a bounded store refuses new keys once full rather
// than evict records (B30), and a run of first requests keeps one record
// per request, as the heap WarmHeap prepares for it assumes.
func benchEngineFor(b *testing.B, records int) *idem.Engine {
	var cfg idem.Config
	if records > 0 {
		store := BenchMemoryStore(records)
		b.Cleanup(func() { _ = store.Close() })
		cfg.Store = store
	}
	e, err := idem.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	return e
}

// BenchMemoryStore returns a memory store with room for records first
// requests of the benchmarks (1 KiB bodies) on top of its default limits,
// for a benchmark of first requests that does not use RunBenchmarks: a
// memory store refuses new keys once full rather than evict records (B30).
// Close it when the benchmark ends.
func BenchMemoryStore(records int) *idem.MemoryStore {
	// Twice the records: keys spread over the shards unevenly.
	return idem.NewMemoryStore(idem.MemoryOptions{
		MaxEntries: idem.DefaultMemoryMaxEntries + 2*records,
		MaxBytes:   idem.DefaultMemoryMaxBytes + 2*int64(records)*FirstRequestHeap,
	})
}

// KeySet holds the keys of a benchmark run, made before its timer
// starts. The keys live in one pointer-free buffer that is never written
// after it is made, and Key returns views of it: a run of b.N requests
// keeps no b.N strings or string headers for the garbage collector to scan
// on every cycle, which would otherwise add a cost per request that grows
// with b.N and with how often the benchmark collects, unlike anything a
// server does. Every KeySet of n keys holds n*36 bytes, repeated keys
// too, so that each path of a benchmark runs with the same live heap and
// the collector runs as often in each (with a smaller heap it runs more
// often, and a path would pay for that, not for its own work).
type KeySet struct {
	buf []byte
}

// keyLen is the length of a benchmark key: the shape of a UUID.
const keyLen = 36

// NewKeySet returns n distinct keys in the shape of a UUID (36
// characters), with a random part so that they are new to any store.
func NewKeySet(n int) KeySet {
	var r [4]byte
	_, _ = rand.Read(r[:])
	buf := make([]byte, 0, n*keyLen)
	for i := range n {
		buf = fmt.Appendf(buf, "%08x-0000-4000-8000-%012d", r, i)
	}
	return KeySet{buf: buf}
}

// RepeatKey returns a KeySet of n times the same new key.
func RepeatKey(n int) KeySet {
	key := NewKeySet(1).buf
	buf := make([]byte, 0, n*keyLen)
	for range n {
		buf = append(buf, key...)
	}
	return KeySet{buf: buf}
}

// Len returns how many keys k holds.
func (k KeySet) Len() int { return len(k.buf) / keyLen }

// Key returns the i-th key, without allocating.
func (k KeySet) Key(i int) string {
	return unsafe.String(&k.buf[i*keyLen], keyLen)
}

// ReportCPU starts counting the process's CPU time (user and system,
// garbage collection included) and returns the function that stops and
// reports it per operation as cpu-ns/op, which benchstat shows as
// cpu-sec/op; call it as defer ReportCPU(b)(). Wall time per operation
// depends on how much of the machine the benchmark gets; CPU time much
// less so. On systems where the process's CPU time is not known it
// reports nothing.
func ReportCPU(b *testing.B) func() {
	cpu0, cpuKnown := processCPU()
	return func() {
		if cpu1, ok := processCPU(); ok && cpuKnown && b.N > 0 {
			b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
		}
	}
}

// FirstRequestHeap is how many bytes of warm heap per request a benchmark
// of first requests asks WarmHeap for: more than a record with a 1 KiB
// body keeps.
const FirstRequestHeap = 4 << 10

// WarmHeap makes the Go runtime hold at least size bytes of heap that the
// operating system has already mapped, then frees it. A benchmark whose
// requests each keep a record (a first request) calls it before its timer
// starts: the memory a run keeps then costs allocations, not the page
// faults of a heap growing from nothing, which otherwise dominate on
// virtual machines and favour whichever benchmark runs after another one's
// garbage.
func WarmHeap(size int) {
	const chunk = 1 << 20
	ballast := make([][]byte, 0, size/chunk+1)
	for n := 0; n < size; n += chunk {
		b := make([]byte, chunk)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1 // touch every page
		}
		ballast = append(ballast, b)
	}
	runtime.KeepAlive(ballast)
	ballast = nil
	runtime.GC()
}

// MeasureRequests sends keys.Len() requests, the i-th with keys.Key(i),
// through clients made by newClient, serially or under b.RunParallel (one
// client per goroutine), and fails the benchmark at the first answer whose
// status is not want or that is not replayed as replayed says.
// keys.Len() should be b.N.
func MeasureRequests(b *testing.B, newClient func() BenchClient, keys KeySet, want int, replayed bool, parallel bool) {
	check := func(status int, rep bool) bool {
		if status != want || rep != replayed {
			b.Errorf("answer: status %d, replayed %v; want %d, replayed %v", status, rep, want, replayed)
			return false
		}
		return true
	}
	b.ReportAllocs()
	defer ReportCPU(b)()
	if !parallel {
		c := newClient()
		b.ResetTimer()
		for i := range keys.Len() {
			if !check(c.Post(keys.Key(i))) {
				return
			}
		}
		return
	}
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := newClient()
		for pb.Next() {
			if !check(c.Post(keys.Key(int(next.Add(1) - 1)))) {
				return
			}
		}
	})
}
