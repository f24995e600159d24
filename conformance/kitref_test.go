package conformance_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/idemkit/idem/conformance"
	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
)

// This file holds a second reference adapter, written on the adapter kit
// (core/adapterkit) the way the repository's adapters are, for a router
// whose handlers return an error. Only what an adapter author writes on
// the kit can be broken here (each `if faulty("kit_...")`): the request
// handed to the engine, the mark, the handoff to the handler and writing
// the engine's answer. The kit's own part (recording, stacking, releases)
// is the reference adapter's in reference_test.go.

// kitHandler is the router's handler: net/http with an error to return.
type kitHandler func(w http.ResponseWriter, r *http.Request) error

// kitCall is the kit's handle on one request.
type kitCall struct {
	w    http.ResponseWriter
	r    *http.Request
	next kitHandler
}

// kitFramework tells the kit how the router does things.
type kitFramework struct{}

func (kitFramework) Request(c kitCall, r *idem.Request) {
	*r = idem.Request{Method: c.r.Method, Path: c.r.URL.EscapedPath(), RawQuery: c.r.URL.RawQuery,
		Header: c.r.Header, Context: c.r.Context(), Body: c.r.Body, ContentLength: c.r.ContentLength}
	switch {
	case faulty("kit_query_dropped"):
		r.RawQuery = ""
	case faulty("kit_header_first_value_only"):
		r.Header = firstValues{c.r.Header}
	}
}

func (kitFramework) RouteName(c kitCall) string { return c.r.URL.Path }

func (kitFramework) Mark(c kitCall) *adapterkit.Mark[kitCall] {
	if faulty("kit_mark_lost") {
		return nil
	}
	return adapterkit.MarkFrom[kitCall](c.r.Context())
}

func (kitFramework) Hand(c kitCall, h adapterkit.Handoff[kitCall]) kitCall {
	if !faulty("kit_context_not_handed") {
		c.r = c.r.WithContext(h.Context(c.r.Context()))
	}
	if _, read := h.Body(); read && !faulty("kit_body_not_handed") {
		c.r.Body = h.BodyReader()
	}
	if !faulty("kit_writer_not_wrapped") {
		c.w = h.Wrap(c.w)
	}
	return c
}

func (kitFramework) Next(c kitCall) error { return c.next(c.w, c.r) }

func (kitFramework) Write(c kitCall, resp *idem.Response) {
	if !faulty("kit_write_status_first") {
		adapterkit.WriteResponse(c.w, resp)
		return
	}
	c.w.WriteHeader(resp.Status)
	for _, f := range resp.Header {
		c.w.Header().Add(f.Name, f.Value)
	}
	c.w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
	_, _ = c.w.Write(resp.Body)
}

func (kitFramework) Fail(c kitCall, err error) error {
	http.Error(c.w, err.Error(), http.StatusInternalServerError)
	return err
}

// kitMiddleware returns the idem middleware of e with the settings s.
func kitMiddleware(e *idem.Engine, s idem.Route) (func(kitHandler) kitHandler, error) {
	l, err := adapterkit.NewLayer[kitCall](e, kitFramework{}, adapterkit.Settings[kitCall]{
		Policy: s.Policy, Store: s.Store, Retention: s.Retention})
	if err != nil {
		return nil, fmt.Errorf("kitref: %w", err)
	}
	return func(next kitHandler) kitHandler {
		return func(w http.ResponseWriter, r *http.Request) error {
			return l.Serve(kitCall{w: w, r: r, next: next})
		}
	}, nil
}

// kitHarness serves conformance apps with the router: a route with layers
// of its own gets them, over the App's settings; every other route gets
// the router-wide layer.
type kitHarness struct{}

func (kitHarness) Lacks() map[conformance.Capability]string { return nil }

func (kitHarness) Serve(t testing.TB, app conformance.App) string {
	mux := http.NewServeMux()
	for _, r := range app.Routes {
		layers := []idem.Route{app.Settings}
		if r.Settings != (idem.Route{}) || r.Outer != (idem.Route{}) {
			layers = nil
			for _, s := range []idem.Route{r.Outer, r.Settings} {
				if s != (idem.Route{}) {
					layers = append(layers, conformance.Merge(s, app.Settings))
				}
			}
		}
		h := kitScripted(r.Handler)
		for i := len(layers) - 1; i >= 0; i-- {
			mw, err := kitMiddleware(app.Engine, layers[i])
			if err != nil {
				t.Fatal(err)
			}
			h = mw(h)
		}
		mux.HandleFunc(r.Method+" "+r.Path, func(w http.ResponseWriter, req *http.Request) {
			if err := h(w, req); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		})
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // scripted panics
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// kitScripted runs a conformance handler as the router's handler.
func kitScripted(h *conformance.Handler) kitHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		st := h.Serve(r.Context(), body)
		switch {
		case st.Panic:
			panic("conformance: scripted panic")
		case st.Goexit:
			runtime.Goexit()
		case st.Fail:
			return conformance.ErrScripted
		case st.Hijack:
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return err
			}
			_, _ = io.WriteString(conn, conformance.HijackedResponse)
			return conn.Close()
		}
		for _, f := range st.Header {
			w.Header().Add(f.Name, f.Value)
		}
		if st.JSON {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(st.Status)
		for _, f := range st.Late {
			w.Header().Add(f.Name, f.Value)
		}
		if len(st.Body) == 0 {
			return nil
		}
		if st.Flush {
			half := len(st.Body) / 2
			_, _ = w.Write(st.Body[:half])
			_ = http.NewResponseController(w).Flush()
			st.Body = st.Body[half:]
		}
		_, err = w.Write(st.Body)
		return err
	}
}

// TestKitReferenceAdapter runs the suite against the adapter on the kit
// with no fault.
func TestKitReferenceAdapter(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("a child process runs only TestSuiteChild")
	}
	conformance.Run(t, kitHarness{})
}
