package tiny

import (
	"net/http"

	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
)

// This file is the whole idem adapter for the router in router.go, on
// github.com/idemkit/idem/core/adapterkit: seven small methods that say how
// this router does things. The kit does the rest (deciding, stacking,
// recording, replaying, releasing on panic or error).

// Settings are a layer's route-level settings: Policy, Store, Retention,
// RouteName, ProblemHandler.
type Settings = adapterkit.Settings[call]

// Idem returns a handler that makes the requests it sees idempotent with
// e: r.Use(tiny.Idem(e, tiny.Settings{})) for every route, or in a
// route's chain for that route.
func Idem(e *idem.Engine, s Settings) (Handler, error) {
	l, err := adapterkit.NewLayer[call](e, framework{}, s)
	if err != nil {
		return nil, err
	}
	return func(c *Ctx) error { return l.Serve(call{c: c}) }, nil
}

// call is the kit's handle on one request.
type call struct {
	c *Ctx
	// The router's writer, and the kit's recording writer Hand put in
	// its place while Next and Fail run.
	w, recorder http.ResponseWriter
}

type framework struct{}

type markKey struct{}

// Request: every field of idem.Request the engine reads.
func (framework) Request(c call, r *idem.Request) {
	req := c.c.R
	*r = idem.Request{Method: req.Method, Path: req.URL.EscapedPath(), RawQuery: req.URL.RawQuery,
		Header: req.Header, Context: req.Context(), Body: req.Body, ContentLength: req.ContentLength}
}

func (framework) RouteName(c call) string { return c.c.Pattern }

// Mark and Hand: the mark lives in the request's own store.
func (framework) Mark(c call) *adapterkit.Mark[call] {
	m, _ := c.c.Get(markKey{}).(*adapterkit.Mark[call])
	return m
}

func (framework) Hand(c call, h adapterkit.Handoff[call]) call {
	if h.Mark != nil {
		c.c.Set(markKey{}, h.Mark)
	}
	if ctx, ok := h.HandlerContext(); ok { // a Manual finding, a transaction
		c.c.R = c.c.R.WithContext(ctx)
	}
	if _, read := h.Body(); read { // the bytes the engine read (B21)
		r := *c.c.R
		r.Body = h.BodyReader()
		c.c.R = &r
	}
	if h.Lease() != nil { // the handler runs under a lease: record it
		c.w, c.recorder = c.c.W, h.Wrap(c.c.W)
	}
	return c
}

// Next runs the rest of the chain through the recording writer.
func (framework) Next(c call) error {
	defer c.use(c.recorder)()
	return c.c.Next()
}

// use puts w, when set, in the Ctx and returns what puts the router's
// writer back.
func (c call) use(w http.ResponseWriter) func() {
	if w == nil {
		return func() {}
	}
	c.c.W = w
	return func() { c.c.W = c.w }
}

func (framework) Write(c call, resp *idem.Response) { adapterkit.WriteResponse(c.c.W, resp) }

// Fail renders a handler's error, through the recording writer, before
// the kit releases the key; the error is handled.
func (framework) Fail(c call, err error) error {
	defer c.use(c.recorder)()
	c.c.HandleError(err)
	return nil
}
