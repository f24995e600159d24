package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
)

// newClient returns an HTTP client that keeps up to conns connections to
// one server alive.
func newClient(t testing.TB, conns int) *http.Client {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		IdleConnTimeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// answer is what a client got.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

func (a answer) replayed() bool { return a.Header.Get(idem.ReplayedHeader) == "true" }

// problemType returns the type of an application/problem+json answer, or ""
// when the answer is not a well-formed problem whose status matches.
func (a answer) problemType() string {
	if a.Header.Get("Content-Type") != idem.ProblemContentType {
		return ""
	}
	var p struct {
		Type, Title, Detail string
		Status              int
	}
	if json.Unmarshal(a.Body, &p) != nil || p.Title == "" || p.Detail == "" || p.Status != a.Status {
		return ""
	}
	return p.Type
}

func (a answer) String() string {
	body := a.Body
	if len(body) > 200 {
		body = body[:200]
	}
	return fmt.Sprintf("%d %q", a.Status, body)
}

// post sends a POST to base+orderPath with key (none when key is "") and
// the extra header fields in hdr (name, value pairs).
func post(ctx context.Context, c *http.Client, base, key string, body []byte, hdr ...string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+orderPath, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	if key != "" {
		req.Header.Set(idem.DefaultHeaderName, key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// mustPost is post that fails the test on a transport error.
func mustPost(t testing.TB, c *http.Client, base, key string, body []byte, hdr ...string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := post(ctx, c, base, key, body, hdr...)
	if err != nil {
		t.Fatalf("POST %s: %v", base, err)
	}
	return a
}

// rawPost writes head (the request line and header fields, each line ending
// in CRLF, without the blank line) and body on a new connection to base,
// bytes exactly as given, and reads the response. It sends what net/http's
// client refuses to send: control characters, repeated fields.
func rawPost(t testing.TB, base string, head string, body []byte) answer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	msg := head + fmt.Sprintf("Host: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", strings.TrimPrefix(base, "http://"), len(body))
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, err := conn.Write(body); err != nil {
		t.Fatalf("write body: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	// A server that refuses a request may reset the connection after its
	// answer; the status and header fields are what count then.
	b, _ := io.ReadAll(resp.Body)
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// executions counts handler runs per key; the key is the request body.
type executions struct {
	mu    sync.Mutex
	byKey map[string]int
	total atomic.Int64
}

func newExecutions() *executions { return &executions{byKey: map[string]int{}} }

// run records one execution for key and returns its number for the key.
func (e *executions) run(key string) int {
	e.total.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.byKey[key]++
	return e.byKey[key]
}

func (e *executions) of(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.byKey[key]
}

// orderHandler is the handler most tests use: it counts an execution for
// the request body, waits for hold, and answers 201 with a body no other
// execution can produce (a random nonce), a Location, and a Set-Cookie and
// an X-Internal header that must never be replayed.
func orderHandler(ex *executions, hold time.Duration) handlerFunc {
	return func(ctx context.Context, _ http.Header, body []byte) reply {
		n := ex.run(string(body))
		if hold > 0 {
			select {
			case <-time.After(hold):
			case <-ctx.Done():
			}
		}
		id := randomHex(8)
		return reply{Status: http.StatusCreated,
			Header: []idem.HeaderField{
				{Name: "Content-Type", Value: "application/json"},
				{Name: "Location", Value: "/orders/" + id},
				{Name: "Set-Cookie", Value: "session=" + id},
				{Name: "X-Internal", Value: id},
			},
			Body: fmt.Appendf(nil, `{"id":%q,"execution":%d}`, id, n)}
	}
}

// events collects the engine's events (B28).
type events = conformance.EventRecorder

// distinctErrors returns the distinct errors of the events ev recorded
// with outcome o.
func distinctErrors(ev *events, o idem.Outcome) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range ev.With(o) {
		if e.Err != nil && !seen[e.Err.Error()] {
			seen[e.Err.Error()] = true
			out = append(out, e.Err.Error())
		}
	}
	return out
}

// newEngine returns an engine for cfg, closed when the test ends.
var newEngine = conformance.NewEngine
