package tiny

import "net/http"

// This file is the router: a small one of the kind many teams write, with
// gin- or Fiber-style handler chains. It knows nothing of idem; adapter.go
// is the adapter.

// Handler handles a request, or passes it on with c.Next.
type Handler func(c *Ctx) error

// Ctx is one request as the router's handlers see it.
type Ctx struct {
	W       http.ResponseWriter
	R       *http.Request
	Pattern string // the route, "POST /orders"
	chain   []Handler
	values  map[any]any
	router  *Router
}

// Next runs the next handler of the chain.
func (c *Ctx) Next() error {
	if len(c.chain) == 0 {
		return nil
	}
	h := c.chain[0]
	c.chain = c.chain[1:]
	return h(c)
}

// Set keeps a value for the rest of the request.
func (c *Ctx) Set(key, value any) {
	if c.values == nil {
		c.values = map[any]any{}
	}
	c.values[key] = value
}

// Get returns a value Set kept.
func (c *Ctx) Get(key any) any { return c.values[key] }

// HandleError renders err the router's way.
func (c *Ctx) HandleError(err error) { c.router.OnError(c, err) }

// Router routes "METHOD /path" to a chain of handlers, after the
// router-wide ones (Use).
type Router struct {
	use    []Handler
	routes map[string][]Handler
	// OnError renders an error a chain returned.
	OnError func(c *Ctx, err error)
}

// New returns an empty router.
func New() *Router {
	return &Router{routes: map[string][]Handler{}, OnError: func(c *Ctx, err error) {
		http.Error(c.W, err.Error(), http.StatusInternalServerError)
	}}
}

// Use adds router-wide handlers, run before every route's.
func (rt *Router) Use(h ...Handler) { rt.use = append(rt.use, h...) }

// Handle adds a route: method, literal path, handlers.
func (rt *Router) Handle(method, path string, h ...Handler) { rt.routes[method+" "+path] = h }

// ServeHTTP runs the route's chain.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pattern := r.Method + " " + r.URL.Path
	route, ok := rt.routes[pattern]
	if !ok {
		http.NotFound(w, r)
		return
	}
	c := &Ctx{W: w, R: r, Pattern: pattern, router: rt, chain: append(append([]Handler(nil), rt.use...), route...)}
	if err := c.Next(); err != nil {
		rt.OnError(c, err)
	}
}
