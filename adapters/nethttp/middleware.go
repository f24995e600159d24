package idemhttp

import (
	"net/http"
	"slices"
	"sync"

	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
)

// Middleware returns middleware that runs each unsafe request carrying an
// idempotency key once and answers its retries with the recorded response.
// Options set the layer's policy and other route-level settings; without
// them the engine's configuration applies. See the package documentation
// for how stacked layers combine.
//
// It panics when e is nil, or an option sets a policy that is not one of
// idem's or a retention that is negative or shorter than 1ms.
func Middleware(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	var cfg layerConfig
	for _, o := range opts {
		o(&cfg)
	}
	kit, err := adapterkit.NewLayer[call](e, framework{}, cfg.Settings)
	if err != nil {
		panic("idemhttp: " + err.Error())
	}
	return func(next http.Handler) http.Handler { return newLayer(kit, next) }
}

// Required is Middleware with the Required policy: a request without a key
// is answered 400 (B6).
func Required(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return withPolicy(e, idem.Required, opts)
}

// Optional is Middleware with the Optional policy: a request without a key
// runs untracked; one with a key is handled as on a Required route.
func Optional(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return withPolicy(e, idem.Optional, opts)
}

// Exempt is Middleware with the Exempt policy: the handler runs every time
// and the key is never read (B3).
func Exempt(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return withPolicy(e, idem.Exempt, opts)
}

// Manual is Middleware with the Manual policy: where the engine would
// answer a retry itself, the handler runs instead and reads what the engine
// found with idem.FindingFrom(r.Context()) (B26). Its response is then not
// stored.
func Manual(e *idem.Engine, opts ...Option) func(http.Handler) http.Handler {
	return withPolicy(e, idem.Manual, opts)
}

func withPolicy(e *idem.Engine, p idem.Policy, opts []Option) func(http.Handler) http.Handler {
	all := make([]Option, 0, len(opts)+1)
	all = append(all, Policy(p))
	return Middleware(e, append(all, opts...)...)
}

// call is the kit's handle on one request.
type call struct {
	w    http.ResponseWriter
	r    *http.Request
	next http.Handler
	// pattern is the pattern of the route an http.ServeMux picked, when
	// the layer wraps the mux.
	pattern string
}

// framework tells the kit how net/http does things.
type framework struct{}

func (framework) Request(c call, r *idem.Request) {
	*r = idem.Request{
		Method:   c.r.Method,
		Path:     c.r.URL.EscapedPath(),
		RawQuery: c.r.URL.RawQuery,
		Header:   c.r.Header,
		Context:  c.r.Context(),
	}
	if c.r.Body != nil && c.r.Body != http.NoBody {
		r.Body = c.r.Body
		r.ContentLength = c.r.ContentLength
	}
}

func (framework) RouteName(c call) string {
	if c.r.Pattern != "" {
		return c.r.Pattern
	}
	return c.pattern
}

func (framework) Mark(c call) *adapterkit.Mark[call] {
	return adapterkit.MarkFrom[call](c.r.Context())
}

func (framework) Hand(c call, h adapterkit.Handoff[call]) call {
	ctx := c.r.Context()
	handed := h.Context(ctx)
	if _, read := h.Body(); read || handed != ctx {
		c.r = c.r.WithContext(handed)
		if read {
			c.r.Body = h.BodyReader()
		}
	}
	c.w = h.Wrap(c.w)
	return c
}

func (framework) Next(c call) error {
	c.next.ServeHTTP(c.w, c.r)
	return nil
}

func (framework) Write(c call, resp *idem.Response) { adapterkit.WriteResponse(c.w, resp) }

// Fail is never called: net/http handlers return no error.
func (framework) Fail(_ call, err error) error { return err }

// layer is one idem middleware around a handler.
type layer struct {
	kit  *adapterkit.Layer[call]
	next http.Handler
	// mux is next when next is an http.ServeMux: the layer then looks up
	// the route a request is for, to apply the route's own layer's
	// settings, except for the engine's safe methods, which pass anyway.
	mux  *http.ServeMux
	safe []string
	// merged holds, per route layer of the mux, the layer this one and
	// the route's merge into.
	merged sync.Map
}

// newLayer wraps next; when next is itself a layer of the same engine the
// two merge into one, the inner layer's settings winning (B2).
func newLayer(kit *adapterkit.Layer[call], next http.Handler) http.Handler {
	if inner, ok := next.(*layer); ok && inner.kit.Engine() == kit.Engine() {
		return &layer{kit: inner.kit.Under(kit), next: inner.next, mux: inner.mux, safe: inner.safe}
	}
	l := &layer{kit: kit, next: next}
	if mux, ok := next.(*http.ServeMux); ok {
		l.mux, l.safe = mux, kit.Engine().Config().SafeMethods
	}
	return l
}

func (l *layer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kit, pattern := l.kit, ""
	if l.mux != nil && !slices.Contains(l.safe, r.Method) {
		// Around a mux the layer the route's handler is wins, although
		// the mux runs it later (B2): the two merge for the request, and
		// the route's layer passes it through.
		var h http.Handler
		h, pattern = l.mux.Handler(r)
		if inner, ok := h.(*layer); ok && inner.kit.Engine() == kit.Engine() {
			kit = l.under(inner.kit)
		}
	}
	_ = kit.Serve(call{w: w, r: r, next: l.next, pattern: pattern})
}

// under returns, made once, the layer l and the route layer inner merge
// into.
func (l *layer) under(inner *adapterkit.Layer[call]) *adapterkit.Layer[call] {
	if m, ok := l.merged.Load(inner); ok {
		return m.(*adapterkit.Layer[call])
	}
	m, _ := l.merged.LoadOrStore(inner, inner.Under(l.kit))
	return m.(*adapterkit.Layer[call])
}
