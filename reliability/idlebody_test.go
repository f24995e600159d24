package reliability

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

// TestB31IdleBodiesHoldLittleMemory: 200 connections to a real server
// each declare a 1 MiB body, send one byte of it and then nothing, as a
// slow or hostile client does. The memory held for their bodies follows
// the bytes received, not the sizes declared: the heap grows by less
// than 40 MiB (200 MiB if each declared size were allocated) (B31).
func TestB31IdleBodiesHoldLittleMemory(t *testing.T) {
	const conns, declared = 200, 1 << 20
	engine := newEngine(t, idem.Config{})
	ex := newExecutions()
	base := serveNetHTTP(t, engine, idem.Route{}, orderHandler(ex, 0))
	addr := strings.TrimPrefix(base, "http://")

	before := heapAlloc()
	goroutines := runtime.NumGoroutine()
	open := make([]net.Conn, 0, conns)
	t.Cleanup(func() {
		for _, c := range open {
			_ = c.Close()
		}
	})
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		open = append(open, c)
		head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\n%s: idle-%d\r\nContent-Length: %d\r\n\r\n{",
			orderPath, addr, idem.DefaultHeaderName, i, declared)
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	// Each connection has a goroutine on the server once its request is
	// read; give the handlers a moment to start reading the bodies.
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() < goroutines+conns && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	grown := heapAlloc() - before
	t.Logf("%d idle connections declaring %d bytes each: heap grew by %.1f MiB", conns, declared, float64(grown)/(1<<20))
	if grown >= 40<<20 {
		t.Fatalf("heap grew by %.1f MiB, want < 40 MiB: memory follows the declared sizes", float64(grown)/(1<<20))
	}
	if n := ex.total.Load(); n != 0 {
		t.Fatalf("%d handlers ran for incomplete bodies", n)
	}
}

func heapAlloc() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
