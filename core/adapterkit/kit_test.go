package adapterkit_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
)

type handlerFunc = HandlerFunc

// mw returns the middleware of the example adapter with settings s.
func mw(t testing.TB, e *idem.Engine, s adapterkit.Settings[call]) func(HandlerFunc) HandlerFunc {
	m, err := Middleware(e, s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func handler(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _ = h(w, r) })
}

func newEngine(t testing.TB, cfg idem.Config) *idem.Engine {
	e, err := idem.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func post(h http.Handler, key, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", "/orders", strings.NewReader(body))
	if key != "" {
		r.Header.Set(idem.DefaultHeaderName, key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// The response is recorded as the client gets it: headers as they stand
// at the first body byte, whenever the status was chosen; a status-only
// response with its status; repeated fields in order.
func TestRecordingRules(t *testing.T) {
	e := newEngine(t, idem.Config{})
	cases := map[string]struct {
		h          handlerFunc
		status     int
		header     http.Header
		body       string
		replayable bool
	}{
		"headers after the status": {
			h: func(w http.ResponseWriter, r *http.Request) error {
				w.WriteHeader(201) // a framework's JSON helper: status first
				w.Header().Set("Content-Type", "application/json")
				_, err := w.Write([]byte(`{}`))
				w.Header().Set("Location", "/too-late") // after the first byte
				return err
			},
			status: 201, header: http.Header{"Content-Type": {"application/json"}}, body: `{}`,
		},
		"status only, 202": {
			h: func(w http.ResponseWriter, r *http.Request) error {
				w.WriteHeader(202)
				w.Header().Set("Location", "/jobs/1")
				return nil
			},
			status: 202, header: http.Header{"Location": {"/jobs/1"}},
		},
		"no content, 204": {
			h:      func(w http.ResponseWriter, r *http.Request) error { w.WriteHeader(204); return nil },
			status: 204,
		},
		"nothing written": {
			h:      func(w http.ResponseWriter, r *http.Request) error { return nil },
			status: 200,
		},
		"repeated fields": {
			h: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Add("Link", "</a>; rel=a")
				w.Header().Add("Vary", "Accept")
				w.Header().Add("Link", "</b>; rel=b")
				w.Header().Add("Vary", "Origin")
				w.WriteHeader(200)
				_, err := io.WriteString(w, "x")
				return err
			},
			status: 200, header: http.Header{"Link": {"</a>; rel=a", "</b>; rel=b"}, "Vary": {"Accept", "Origin"}}, body: "x",
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			runs := 0
			h := handler(mw(t, e, adapterkit.Settings[call]{})(func(w http.ResponseWriter, r *http.Request) error {
				runs++
				return c.h(w, r)
			}))
			key := fmt.Sprintf("k%x", name)
			for i, wantReplayed := range []string{"", "true"} {
				rec := post(h, key, "")
				got := rec.Result()
				body, _ := io.ReadAll(got.Body)
				if got.StatusCode != c.status || string(body) != c.body || got.Header.Get(idem.ReplayedHeader) != wantReplayed {
					t.Fatalf("response %d: %d %q replayed %q; want %d %q %q", i, got.StatusCode, body, got.Header.Get(idem.ReplayedHeader), c.status, c.body, wantReplayed)
				}
				for name, want := range c.header {
					if v := got.Header[name]; !slices.Equal(v, want) {
						t.Errorf("response %d: %s = %q, want %q", i, name, v, want)
					}
				}
				if got.Header.Get("Location") == "/too-late" {
					t.Errorf("response %d: a header set after the first body byte reached the client", i)
				}
			}
			if runs != 1 {
				t.Fatalf("handler ran %d times, want 1", runs)
			}
		})
	}
}

// A flushed response reaches the client whole but is not replayable
// (B19); so is one over the body limit.
func TestFlushAndLimitNotReplayable(t *testing.T) {
	e := newEngine(t, idem.Config{MaxResponseBody: 4})
	for name, h := range map[string]handlerFunc{
		"flushed": func(w http.ResponseWriter, r *http.Request) error {
			_, _ = io.WriteString(w, "ab")
			return http.NewResponseController(w).Flush()
		},
		"too large": func(w http.ResponseWriter, r *http.Request) error {
			_, err := io.WriteString(w, "abcdefgh")
			return err
		},
	} {
		s := handler(mw(t, e, adapterkit.Settings[call]{})(h))
		if got := post(s, "k-"+strings.ReplaceAll(name, " ", "-"), ""); got.Code != 200 {
			t.Fatalf("%s: first response %d", name, got.Code)
		}
		if got := post(s, "k-"+strings.ReplaceAll(name, " ", "-"), ""); got.Code != 410 {
			t.Fatalf("%s: retry %d, want 410", name, got.Code)
		}
	}
}

// A panic and runtime.Goexit release the key; the panic reaches the
// caller with its own value; a framework error is rendered by Fail and
// releases the key (B15).
func TestAbortsRelease(t *testing.T) {
	e := newEngine(t, idem.Config{})
	boom := errors.New("boom")
	for name, fail := range map[string]func(w http.ResponseWriter) error{
		"panic": func(http.ResponseWriter) error { panic(boom) },
		"goexit": func(http.ResponseWriter) error {
			runtime.Goexit()
			return nil
		},
		"error": func(w http.ResponseWriter) error {
			w.Header().Set("Content-Type", "text/plain")
			return boom
		},
	} {
		runs := 0
		h := handler(mw(t, e, adapterkit.Settings[call]{})(func(w http.ResponseWriter, r *http.Request) error {
			runs++
			if runs == 1 {
				return fail(w)
			}
			_, err := io.WriteString(w, "ok")
			return err
		}))
		done := make(chan *httptest.ResponseRecorder)
		go func() {
			var w *httptest.ResponseRecorder
			defer func() {
				if v := recover(); v != nil && v != boom {
					t.Errorf("%s: recovered %v, want the handler's panic", name, v)
				}
				done <- w
			}()
			w = post(h, "k-"+name, "")
		}()
		first := <-done
		if name == "error" && (first.Code != 500 || !strings.HasPrefix(first.Body.String(), "boom")) {
			t.Errorf("%s: first response %d %q, want Fail's rendering", name, first.Code, first.Body)
		}
		if got := post(h, "k-"+name, ""); got.Code != 200 || got.Body.String() != "ok" || runs != 2 {
			t.Errorf("%s: retry %d %q after %d runs; want the handler to run again", name, got.Code, got.Body, runs)
		}
	}
}

// A hijack releases the key at once, before the handler is done with the
// connection (B19); a status chosen before goes out first.
func TestHijackReleasesAtOnce(t *testing.T) {
	e := newEngine(t, idem.Config{})
	hijacked, finish := make(chan struct{}), make(chan struct{})
	h := handler(mw(t, e, adapterkit.Settings[call]{})(func(w http.ResponseWriter, r *http.Request) error {
		if r.Header.Get("X-Hijack") == "" {
			_, err := io.WriteString(w, "plain")
			return err
		}
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return err
		}
		close(hijacked)
		<-finish
		_ = brw.Flush()
		return conn.Close()
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\nX-Hijack: 1\r\nContent-Length: 0\r\n\r\n")
	<-hijacked
	status, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.Contains(status, "101") {
		t.Errorf("hijacked connection got %q, want the 101 chosen before the hijack", status)
	}
	got := post(h, "k", "")
	close(finish)
	if got.Code != 200 || got.Body.String() != "plain" {
		t.Fatalf("retry while the connection is hijacked: %d %q, want a run: the key was released", got.Code, got.Body)
	}
}

// Stacked layers: a layer that does not take part leaves its settings to
// the inner one, which wins with its own; a layer that takes part makes
// the inner one pass, which warns once when its settings differ (B2).
func TestStacking(t *testing.T) {
	logs := &bytes.Buffer{}
	e := newEngine(t, idem.Config{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	outerStore := idem.NewMemoryStore(idem.MemoryOptions{SweepInterval: -1})
	t.Cleanup(func() { _ = outerStore.Close() })
	var problems []string
	outer := mw(t, e, adapterkit.Settings[call]{Policy: idem.Exempt, Store: outerStore,
		ProblemHandler: func(c call, p *idem.Problem) error { problems = append(problems, p.Rule); return nil }})
	runs := 0
	inner := mw(t, e, adapterkit.Settings[call]{Policy: idem.Required})
	ok := func(w http.ResponseWriter, r *http.Request) error {
		runs++
		_, err := io.WriteString(w, "ok")
		return err
	}
	h := handler(outer(inner(ok)))
	post(h, "", "")
	post(h, "k", "")
	if got := post(h, "k", ""); got.Header().Get(idem.ReplayedHeader) != "true" || runs != 1 {
		t.Fatalf("inner Required under outer Exempt: replayed %q after %d runs", got.Header().Get(idem.ReplayedHeader), runs)
	}
	if rec, _ := outerStore.Acquire(context.Background(), idem.DefaultEncodeKey("", "k"), idem.Token{1}, nil, time.Minute); rec == nil {
		t.Error("the record is not in the outer layer's store, which the inner layer left unset")
	}
	if !slices.Equal(problems, []string{"B6"}) {
		t.Errorf("problems through the outer ProblemHandler: %v, want [B6]", problems)
	}
	problems = nil

	// The inner layer's policy is its own: under the outer Exempt layer
	// an inner layer without a policy has the engine's, Required.
	runs = 0
	h = handler(outer(mw(t, e, adapterkit.Settings[call]{})(ok)))
	if post(h, "", ""); len(problems) != 1 || runs != 0 {
		t.Fatalf("inner layer without a policy under an outer Exempt one: problems %v after %d runs, want the engine's Required (B6, through the outer ProblemHandler)", problems, runs)
	}

	// Outer Required takes part; inner Exempt passes and warns once.
	runs = 0
	h = handler(mw(t, e, adapterkit.Settings[call]{})(mw(t, e, adapterkit.Settings[call]{Policy: idem.Exempt, RouteName: func(c call) string { return c.r.URL.Path }})(ok)))
	post(h, "k2", "")
	post(h, "k2", "")
	post(h, "k3", "")
	if runs != 2 || strings.Count(logs.String(), "route-level setting ignored") != 1 || !strings.Contains(logs.String(), "route=/orders") {
		t.Fatalf("%d runs, log:\n%s\nwant 2 runs and one warning naming the route", runs, logs)
	}

	// Under merges two layers into one, the inner winning.
	lo, _ := adapterkit.NewLayer[call](e, framework{}, adapterkit.Settings[call]{Policy: idem.Required, Retention: time.Hour})
	li, _ := adapterkit.NewLayer[call](e, framework{}, adapterkit.Settings[call]{Policy: idem.Optional})
	if s := li.Under(lo).Settings(); s.Policy != idem.Optional || s.Retention != time.Hour {
		t.Fatalf("merged settings %+v, want Optional with an hour's retention", s)
	}
}

// The handler reads exactly the body the client sent (B21), and a Manual
// handler gets the finding in its context (B26).
func TestBodyAndFinding(t *testing.T) {
	e := newEngine(t, idem.Config{})
	var bodies []string
	var findings []bool
	h := handler(mw(t, e, adapterkit.Settings[call]{Policy: idem.Manual})(func(w http.ResponseWriter, r *http.Request) error {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		_, found := idem.FindingFrom(r.Context())
		findings = append(findings, found)
		return nil
	}))
	post(h, "k", "line\r\none\x00")
	post(h, "k", "line\r\none\x00")
	if !slices.Equal(bodies, []string{"line\r\none\x00", "line\r\none\x00"}) || !slices.Equal(findings, []bool{false, true}) {
		t.Fatalf("bodies %q, findings %v", bodies, findings)
	}
}

// NewLayer reports every bad setting, without a prefix.
func TestNewLayerErrors(t *testing.T) {
	_, err := adapterkit.NewLayer[call](nil, framework{}, adapterkit.Settings[call]{Policy: 9, Retention: -1})
	if err == nil || len(err.(interface{ Unwrap() []error }).Unwrap()) != 3 || !strings.HasPrefix(err.Error(), "Engine is nil") {
		t.Fatalf("error %v, want three problems, the first the missing engine", err)
	}
}

// readFromWriter is a ResponseWriter with its own ReadFrom, standing in
// for net/http's, which can use sendfile.
type readFromWriter struct {
	*httptest.ResponseRecorder
	readFrom int64
}

func (w *readFromWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(w.ResponseRecorder, r)
	w.readFrom += n
	return n, err
}

// Past the recording limit the writer hands the rest of a ReadFrom to the
// underlying writer's ReadFrom.
func TestReadFromDelegatesPastTheLimit(t *testing.T) {
	e := newEngine(t, idem.Config{MaxResponseBody: 10})
	h := mw(t, e, adapterkit.Settings[call]{})(func(w http.ResponseWriter, r *http.Request) error {
		n, err := w.(io.ReaderFrom).ReadFrom(strings.NewReader(strings.Repeat("x", 100)))
		if err != nil || n != 100 {
			t.Errorf("ReadFrom: %d, %v; want 100, nil", n, err)
		}
		return nil
	})
	w := &readFromWriter{ResponseRecorder: httptest.NewRecorder()}
	r := httptest.NewRequest("POST", "/orders", nil)
	r.Header.Set(idem.DefaultHeaderName, "k")
	_ = h(w, r)
	if w.Body.Len() != 100 || w.readFrom == 0 || w.readFrom > 89 {
		t.Fatalf("client got %d bytes, the underlying ReadFrom copied %d; want 100, and the rest past the limit", w.Body.Len(), w.readFrom)
	}
	if got := post(handler(h), "k", ""); got.Code != 410 {
		t.Fatalf("retry: %d, want 410 (over the limit)", got.Code)
	}
}

// WriteResponse replaces fields an outer handler already set under the
// same names, keeps repeated fields in order and leaves other fields
// alone, whatever the case of the names it gets and however many.
func TestWriteResponseHeader(t *testing.T) {
	for _, extra := range []int{0, 10} {
		w := httptest.NewRecorder()
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Link", "<old>")
		w.Header().Set("X-Request-Id", "r-1")
		fields := []idem.HeaderField{
			{Name: "content-type", Value: "application/json"},
			{Name: "Link", Value: "<a>"},
			{Name: "Vary", Value: "Accept"},
			{Name: "LINK", Value: "<b>"},
		}
		for i := range extra {
			fields = append(fields, idem.HeaderField{Name: "X-Extra", Value: strconv.Itoa(i)})
		}
		adapterkit.WriteResponse(w, &idem.Response{Status: 201, Header: fields, Body: []byte("{}")})
		h := w.Result().Header
		want := map[string][]string{
			"Content-Type":   {"application/json"},
			"Link":           {"<a>", "<b>"},
			"Vary":           {"Accept"},
			"X-Request-Id":   {"r-1"},
			"Content-Length": {"2"},
		}
		if extra > 0 {
			for i := range extra {
				want["X-Extra"] = append(want["X-Extra"], strconv.Itoa(i))
			}
		}
		if len(h) != len(want) {
			t.Errorf("%d extra fields: header %v, want %v", extra, h, want)
		}
		for name, vs := range want {
			if got := h[name]; !slices.Equal(got, vs) {
				t.Errorf("%d extra fields: %s = %q, want %q", extra, name, got, vs)
			}
		}
		if w.Code != 201 || w.Body.String() != "{}" {
			t.Errorf("%d extra fields: %d %q", extra, w.Code, w.Body.String())
		}
	}
}

// A layer that leaves a request to the rest of the chain with nothing to
// hand on (its policy only) leaves no mark and allocates nothing.
func TestPassingLayerAllocatesNothing(t *testing.T) {
	e := newEngine(t, idem.Config{})
	for _, policy := range []idem.Policy{idem.Exempt, idem.Optional} {
		h := mw(t, e, adapterkit.Settings[call]{Policy: policy})(func(w http.ResponseWriter, r *http.Request) error { return nil })
		w, r := httptest.NewRecorder(), httptest.NewRequest("POST", "/hooks", nil)
		if n := testing.AllocsPerRun(100, func() { _ = h(w, r) }); n != 0 {
			t.Errorf("%v layer passing a keyless POST: %v allocations, want 0", policy, n)
		}
	}
}
