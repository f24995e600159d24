package adapterkit_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
)

// HandlerFunc is the handler of a small router: net/http, with an error
// to return (as echo's and many others' are).
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// call is the kit's handle on one request.
type call struct {
	w    http.ResponseWriter
	r    *http.Request
	next HandlerFunc
}

// framework tells the kit how the router does things.
type framework struct{}

func (framework) Request(c call, r *idem.Request) {
	*r = idem.Request{Method: c.r.Method, Path: c.r.URL.EscapedPath(), RawQuery: c.r.URL.RawQuery,
		Header: c.r.Header, Context: c.r.Context(), Body: c.r.Body, ContentLength: c.r.ContentLength}
}

func (framework) RouteName(c call) string { return c.r.Pattern }

// Mark finds the mark Hand leaves in the request's context.
func (framework) Mark(c call) *adapterkit.Mark[call] {
	return adapterkit.MarkFrom[call](c.r.Context())
}

func (framework) Hand(c call, h adapterkit.Handoff[call]) call {
	c.r = c.r.WithContext(h.Context(c.r.Context())) // the mark, a finding, a transaction
	if _, read := h.Body(); read {
		c.r.Body = h.BodyReader() // the bytes the engine read (B21)
	}
	c.w = h.Wrap(c.w) // records the response under a lease
	return c
}

func (framework) Next(c call) error { return c.next(c.w, c.r) }

func (framework) Write(c call, resp *idem.Response) { adapterkit.WriteResponse(c.w, resp) }

// Fail renders a handler's error before the kit releases the key.
func (framework) Fail(c call, err error) error {
	http.Error(c.w, err.Error(), http.StatusInternalServerError)
	return err
}

// Middleware returns the idem middleware of e with the settings s.
func Middleware(e *idem.Engine, s adapterkit.Settings[call]) (func(HandlerFunc) HandlerFunc, error) {
	l, err := adapterkit.NewLayer[call](e, framework{}, s)
	if err != nil {
		return nil, fmt.Errorf("myadapter: %w", err)
	}
	return func(next HandlerFunc) HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error {
			return l.Serve(call{w: w, r: r, next: next})
		}
	}, nil
}

// A complete adapter, for a router whose handlers return an error. The
// same key sent twice runs the handler once; the retry is a replay.
func Example() {
	engine, err := idem.New(idem.Config{})
	if err != nil {
		panic(err)
	}
	defer engine.Close()
	required, err := Middleware(engine, adapterkit.Settings[call]{Policy: idem.Required})
	if err != nil {
		panic(err)
	}
	h := required(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusCreated)
		_, err := io.WriteString(w, "order 1")
		return err
	})
	for range 2 {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/orders", nil)
		r.Header.Set("Idempotency-Key", "k1")
		_ = h(w, r)
		fmt.Printf("%d %q %s\n", w.Code, w.Header().Get(idem.ReplayedHeader), w.Body)
	}
	// Output:
	// 201 "" order 1
	// 201 "true" order 1
}
