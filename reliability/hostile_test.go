package reliability

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	idemhttp "github.com/idemkit/idem/adapters/nethttp"
	idem "github.com/idemkit/idem/core"
)

// The limits of the hostile-input engine.
const (
	hostileMaxBody  = 4096
	hostileMaxReply = 4096
)

// sizedHandler counts executions by request body, like orderHandler, and
// answers a body of X-Reply-Size bytes when the request asks for one.
func sizedHandler(ex *executions) handlerFunc {
	order := orderHandler(ex, 0)
	return func(ctx context.Context, h http.Header, body []byte) reply {
		rep := order(ctx, h, body)
		if n, err := strconv.Atoi(h.Get("X-Reply-Size")); err == nil {
			rep.Body = bytes.Repeat([]byte{'r'}, n)
			copy(rep.Body, randomHex(8)) // no two executions answer alike
		}
		return rep
	}
}

// TestHostileKeys (B4, B5, B6, B7): through every adapter, keys that are
// missing, empty, repeated, listed, over-long, or carry control or
// non-ASCII characters are refused with 400 and never run the handler;
// the longest valid key, a quoted key and a lower-case header name work.
// The requests are written byte for byte on the wire, since net/http's
// client refuses to send most of them.
func TestHostileKeys(t *testing.T) {
	long := strings.Repeat("k", idem.DefaultMaxKeyLength)
	cases := []struct {
		name   string
		fields string // raw header lines carrying the key
		want   int
		// wantType is the problem type the engine answers with; a case
		// with serverMayRefuse may instead be refused by the framework's
		// HTTP parser before the adapter sees it (still 400, never run).
		wantType        string
		serverMayRefuse bool
	}{
		{"missing", "", 400, idem.ProblemKeyMissing, false},
		{"empty", "Idempotency-Key: \r\n", 400, idem.ProblemKeyInvalid, false},
		{"empty quoted", "Idempotency-Key: \"\"\r\n", 400, idem.ProblemKeyInvalid, false},
		{"duplicated", "Idempotency-Key: dup-a\r\nIdempotency-Key: dup-b\r\n", 400, idem.ProblemKeyInvalid, false},
		{"duplicated same", "Idempotency-Key: dup-a\r\nIdempotency-Key: dup-a\r\n", 400, idem.ProblemKeyInvalid, false},
		{"comma-listed", "Idempotency-Key: list-a, list-b\r\n", 400, idem.ProblemKeyInvalid, false},
		{"quoted list", "Idempotency-Key: \"list-a\", \"list-b\"\r\n", 400, idem.ProblemKeyInvalid, false},
		{"over-long", "Idempotency-Key: " + long + "k\r\n", 400, idem.ProblemKeyInvalid, false},
		{"over-long quoted", "Idempotency-Key: \"" + long + "k\"\r\n", 400, idem.ProblemKeyInvalid, false},
		{"white space", "Idempotency-Key: a b\r\n", 400, idem.ProblemKeyInvalid, false},
		{"tab", "Idempotency-Key: a\tb\r\n", 400, idem.ProblemKeyInvalid, false},
		{"NUL", "Idempotency-Key: a\x00b\r\n", 400, idem.ProblemKeyInvalid, true},
		{"control", "Idempotency-Key: a\x01b\r\n", 400, idem.ProblemKeyInvalid, true},
		{"DEL", "Idempotency-Key: a\x7fb\r\n", 400, idem.ProblemKeyInvalid, true},
		{"escape in quotes", "Idempotency-Key: \"a\x1bb\"\r\n", 400, idem.ProblemKeyInvalid, true},
		{"UTF-8", "Idempotency-Key: ключ-1\r\n", 400, idem.ProblemKeyInvalid, false},
		{"Latin-1", "Idempotency-Key: cl\xe9\r\n", 400, idem.ProblemKeyInvalid, false},
		{"unclosed quote", "Idempotency-Key: \"abc\r\n", 400, idem.ProblemKeyInvalid, false},
		{"bad escape", "Idempotency-Key: \"a\\bc\"\r\n", 400, idem.ProblemKeyInvalid, false},
		{"longest", "Idempotency-Key: " + long[:idem.DefaultMaxKeyLength-13] + "-KEYSUFFIXX\r\n", 201, "", false},
		{"quoted", "Idempotency-Key: \"quoted-KEYSUFFIXX\"\r\n", 201, "", false},
		{"lower-case name", "idempotency-key: lower-KEYSUFFIXX\r\n", 201, "", false},
	}
	for _, ad := range adapters {
		t.Run(ad.name, func(t *testing.T) {
			t.Parallel()
			ex := newExecutions()
			engine := newEngine(t, idem.Config{})
			base := ad.serve(t, engine, idem.Route{}, orderHandler(ex, 0))
			for _, c := range cases {
				// No body: a server that refuses the request unread then
				// closes the connection without resetting it.
				fields := strings.ReplaceAll(c.fields, "KEYSUFFIXX", randomHex(5))
				before := ex.total.Load()
				a := rawPost(t, base, "POST "+orderPath+" HTTP/1.1\r\n"+fields, nil)
				ran := ex.total.Load() - before
				switch {
				case a.Status != c.want:
					t.Errorf("%s: %v, want %d", c.name, a, c.want)
				case c.want != 201 && ran != 0:
					t.Errorf("%s: refused with %d, but the handler ran", c.name, a.Status)
				case c.want == 201 && (ran != 1 || a.replayed()):
					t.Errorf("%s: %v with %d executions, want one execution", c.name, a, ran)
				case c.wantType != "" && a.problemType() != c.wantType &&
					!(c.serverMayRefuse && a.Header.Get("Content-Type") != idem.ProblemContentType):
					t.Errorf("%s: %v (%s), want a %s problem", c.name, a, a.Header.Get("Content-Type"), c.wantType)
				}
				if c.want == 201 { // the same request again is a replay
					if r := rawPost(t, base, "POST "+orderPath+" HTTP/1.1\r\n"+fields, nil); !r.replayed() || !bytes.Equal(r.Body, a.Body) {
						t.Errorf("%s: retry %v, want a replay of %v", c.name, r, a)
					}
				}
			}
		})
	}
}

// TestHostileBodies (B19, B21): through every adapter, a request body at the
// limit runs and one byte over it is refused with 413 (declared or chunked)
// without running the handler; a response at the stored limit is replayed
// byte for byte, and one byte over it reaches the first client whole while
// its retries get 410 and never a second execution.
func TestHostileBodies(t *testing.T) {
	for _, ad := range adapters {
		t.Run(ad.name, func(t *testing.T) {
			t.Parallel()
			ex := newExecutions()
			engine := newEngine(t, idem.Config{MaxRequestBody: hostileMaxBody, MaxResponseBody: hostileMaxReply})
			base := ad.serve(t, engine, idem.Route{}, sizedHandler(ex))
			client := newClient(t, 2)

			atLimit := append([]byte(ad.name+"-at-limit-"), bytes.Repeat([]byte{'b'}, hostileMaxBody)...)[:hostileMaxBody]
			if a := mustPost(t, client, base, "body-"+randomHex(6), atLimit); a.Status != http.StatusCreated || ex.of(string(atLimit)) != 1 {
				t.Errorf("body at the limit: %v", a)
			}
			over := append([]byte(ad.name+"-over-"), bytes.Repeat([]byte{'b'}, hostileMaxBody)...)[:hostileMaxBody+1]
			if a := mustPost(t, client, base, "body-"+randomHex(6), over); a.Status != http.StatusRequestEntityTooLarge || a.problemType() != idem.ProblemRequestTooLarge {
				t.Errorf("body over the limit: %v, want 413", a)
			}
			chunked := append([]byte(ad.name+"-chunked-"), bytes.Repeat([]byte{'b'}, 4*hostileMaxBody)...)
			if a := postChunked(t, client, base, "body-"+randomHex(6), chunked); a.Status != http.StatusRequestEntityTooLarge || a.problemType() != idem.ProblemRequestTooLarge {
				t.Errorf("chunked body over the limit: %v, want 413", a)
			}
			if ex.of(string(over))+ex.of(string(chunked)) != 0 {
				t.Error("the handler ran for a body over the limit")
			}

			for _, size := range []int{hostileMaxReply, hostileMaxReply + 1} {
				key := "reply-" + randomHex(6)
				body := []byte(ad.name + "-reply-" + strconv.Itoa(size))
				hdr := []string{"X-Reply-Size", strconv.Itoa(size)}
				first := mustPost(t, client, base, key, body, hdr...)
				if first.Status != http.StatusCreated || len(first.Body) != size {
					t.Fatalf("response of %d bytes: the first client got %d %d bytes", size, first.Status, len(first.Body))
				}
				for range 2 {
					r := mustPost(t, client, base, key, body, hdr...)
					switch {
					case size <= hostileMaxReply && (!r.replayed() || !bytes.Equal(r.Body, first.Body)):
						t.Errorf("response of %d bytes: retry %v, want a byte-identical replay", size, r)
					case size > hostileMaxReply && (r.Status != http.StatusGone || r.problemType() != idem.ProblemNotReplayable):
						t.Errorf("response of %d bytes: retry %v, want 410 not-replayable", size, r)
					}
				}
				if n := ex.of(string(body)); n != 1 {
					t.Errorf("response of %d bytes: the handler ran %d times, want once", size, n)
				}
			}
		})
	}
}

// postChunked posts body with chunked transfer encoding: no declared
// length.
func postChunked(t *testing.T, c *http.Client, base, key string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+orderPath, io.MultiReader(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(idem.DefaultHeaderName, key)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("chunked POST: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// FuzzNetHTTPAdapter drives the net/http adapter with arbitrary methods,
// paths, queries, key header fields and bodies, each sent twice (a request
// and its retry). It must never panic, and every answer must be a handled
// request, a byte-identical replay of it, or a well-formed problem.
func FuzzNetHTTPAdapter(f *testing.F) {
	f.Add("POST", "orders", "", "k1", "", []byte(`{"a":1}`))
	f.Add("PUT", "x/y", "a=b", `"quoted"`, "", []byte{0, 1, 2})
	f.Add("PATCH", "", "", "a,b", "", []byte(nil))
	f.Add("DELETE", "%zz", "q=%00", "k", "k", []byte("x"))
	f.Add("POST", "o", "", "k\x00", "", bytes.Repeat([]byte{'b'}, 300))
	f.Add("GET", "o", "", "", "", []byte("get"))
	engine, err := idem.New(idem.Config{MaxRequestBody: 256, MaxResponseBody: 64})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = engine.Close() })
	var runs int64
	handler := idemhttp.Middleware(engine)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
		_, _ = w.Write([]byte(strconv.FormatInt(runs, 10)))
	}))
	var iteration int64
	f.Fuzz(func(t *testing.T, method, path, query, key1, key2 string, body []byte) {
		if method == "" {
			method = "POST"
		}
		// Each input is its own scope (B8), so that it never meets the
		// records of earlier inputs with the same key.
		iteration++
		h := http.Header{"Authorization": {"fuzz-" + strconv.FormatInt(iteration, 10)}}
		for _, k := range []string{key1, key2} {
			if k != "" {
				h.Add(idem.DefaultHeaderName, k)
			}
		}
		var first []byte
		for try := range 2 {
			before := runs
			req := (&http.Request{Method: method, URL: &url.URL{Path: "/" + path, RawQuery: query}, Header: h,
				Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Host: "example.test"}).
				WithContext(context.Background())
			rec := httptest.NewRecorder()
			done := make(chan struct{})
			go func() { // a handler that never returns would hang the fuzzer
				defer close(done)
				handler.ServeHTTP(rec, req)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the handler did not return")
			}
			a := answer{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
			ran := runs > before
			switch {
			case a.Status < 100 || a.Status > 599:
				t.Fatalf("status %d", a.Status)
			case ran:
				if try == 0 {
					first = a.Body
				}
			case a.replayed():
				if !bytes.Equal(a.Body, first) {
					t.Fatalf("replay %q differs from the first response %q", a.Body, first)
				}
			case a.problemType() == "" || !strings.HasPrefix(a.problemType(), idem.ProblemBase):
				t.Fatalf("answer %v is neither a handled request, a replay nor a well-formed problem", a)
			}
		}
	})
}
