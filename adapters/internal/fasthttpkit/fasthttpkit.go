// Package fasthttpkit is the part of idem's Fiber adapters (Fiber v2,
// adapters/fiber, and Fiber v3, adapters/fiber3) that deals with fasthttp
// alone: describing a *fasthttp.RequestCtx to the engine, reading the
// response fasthttp buffers, writing an engine response, and leaving the
// adapterkit mark on a request. Each adapter adds only what its Fiber
// major does its own way (the context type, the handler signature, the
// error handler).
//
// It is internal to the adapters: Go lets only packages under
// github.com/idemkit/idem/adapters import it.
package fasthttpkit

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/valyala/fasthttp"

	idem "github.com/idemkit/idem/core"
	"github.com/idemkit/idem/core/adapterkit"
)

// Scratch holds the views of fasthttp's headers that the engine reads
// inside Begin and Lease.Complete, which keep neither: it is pooled
// rather than allocated for every request. An adapter takes one with
// GetScratch for each request and puts it back when the kit returned.
type Scratch struct {
	reqHdr  requestHeader
	respHdr responseHeader
}

var scratchPool = sync.Pool{New: func() any { return new(Scratch) }}

// GetScratch returns a Scratch from the pool.
func GetScratch() *Scratch { return scratchPool.Get().(*Scratch) }

// Put clears st and returns it to the pool.
func (st *Scratch) Put() {
	*st = Scratch{}
	scratchPool.Put(st)
}

// Request fills r with what fctx says of a request: Method (method, the
// framework's view of it, made stable), Path, RawQuery, Header, Context
// (ctx, the context the framework hands its handlers) and the body. fold
// says that the app disables fasthttp's header name normalization (see
// Fold).
func Request(fctx *fasthttp.RequestCtx, r *idem.Request, st *Scratch, fold bool, method, path string, ctx context.Context) {
	*r = idem.Request{
		Method:   stableMethod(method),
		Path:     path,
		RawQuery: unsafeString(fctx.URI().QueryString()),
		Header:   viewRequestHeader(&st.reqHdr, &fctx.Request.Header, fold),
		Context:  ctx,
	}
	// fasthttp holds the body in memory unless StreamRequestBody is on: the
	// engine then fingerprints fasthttp's buffer in place, without a copy,
	// and the handler reads that buffer untouched (B21).
	if stream := fctx.RequestBodyStream(); stream != nil {
		r.Body = stream
	} else if b := fctx.Request.Body(); len(b) > 0 {
		r.BodyBytes = b
	}
}

// markKey is the fasthttp user value under which a layer leaves its mark
// for the layers inside it.
type markKey struct{}

// Mark returns the mark a layer left on fctx with Hand, or nil.
func Mark[C any](fctx *fasthttp.RequestCtx) *adapterkit.Mark[C] {
	m, _ := fctx.UserValue(markKey{}).(*adapterkit.Mark[C])
	return m
}

// Hand leaves h's mark on fctx and, when the engine drained a request
// body stream, hands the handler the bytes it read (B21). It returns the
// context the handler must run with, and false when it is the request's
// own; the adapter sets it the framework's way.
func Hand[C any](fctx *fasthttp.RequestCtx, h adapterkit.Handoff[C]) (context.Context, bool) {
	if h.Mark != nil {
		fctx.SetUserValue(markKey{}, h.Mark)
	}
	if body, read := h.Body(); read {
		fctx.Request.SetBodyRaw(body)
	}
	return h.HandlerContext()
}

// Write writes an engine response to resp: its header fields in order,
// the first of each name replacing fields of that name already set; its
// status and its body. fasthttp sets Content-Length from the body.
func Write(resp *fasthttp.Response, r *idem.Response) {
	for i, f := range r.Header {
		switch {
		case repeated(r.Header[:i], f.Name):
			resp.Header.Add(f.Name, f.Value)
		case canonicalName(f.Name) && strings.IndexByte(f.Value, '\r') < 0 && strings.IndexByte(f.Value, '\n') < 0:
			// Set would copy the name to normalise it and strip line
			// breaks from the value: neither changes such a field, and
			// SetCanonical copies both as they are.
			resp.Header.SetCanonical(unsafe.Slice(unsafe.StringData(f.Name), len(f.Name)),
				unsafe.Slice(unsafe.StringData(f.Value), len(f.Value)))
		default:
			resp.Header.Set(f.Name, f.Value)
		}
	}
	resp.SetStatusCode(r.Status)
	// The body may be shared with the store or other requests: copy it
	// into fasthttp's own buffer, which later handlers may write into.
	resp.SetBody(r.Body)
}

// WriteTooLarge writes to resp idem's request-too-large problem, rendered
// by e, for a body over limit, Fiber's BodyLimit (defaultLimit when it is
// not positive): Fiber refuses such a body before any handler runs, and
// its ErrorHandler answers as every idem adapter does (B21, B25).
func WriteTooLarge(e *idem.Engine, resp *fasthttp.Response, limit, defaultLimit int) {
	if limit <= 0 {
		limit = defaultLimit
	}
	Write(resp, e.RenderProblem(idem.NewTooLargeProblem(int64(limit))))
}

// canonicalName reports whether name is a non-empty header name of
// letters, digits and '-' that fasthttp's normalisation leaves as it is:
// the first character and the one after each '-' upper case (that one
// is not looked at further), every other letter lower case.
func canonicalName(name string) bool {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		lower, capital := 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z'
		if !lower && !capital && c != '-' && (c < '0' || c > '9') {
			return false
		}
		if upper {
			if lower {
				return false
			}
			upper = false
			continue
		}
		if capital {
			return false
		}
		upper = c == '-'
	}
	return name != ""
}

// repeated reports whether a field called name is among fields.
func repeated(fields []idem.HeaderField, name string) bool {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// Recorded reads the response fasthttp holds for fctx, as
// adapterkit.Buffered.Recorded returns it: status, the engine's view of
// its header, and its body when it fits in maxBody.
func Recorded(fctx *fasthttp.RequestCtx, st *Scratch, fold bool, maxBody int) (idem.Recorded, bool) {
	if fctx.Hijacked() {
		return idem.Recorded{}, true // B19
	}
	resp := &fctx.Response
	rec := idem.Recorded{Status: resp.StatusCode(), Header: viewResponseHeader(&st.respHdr, &resp.Header, fold)}
	if resp.IsBodyStream() {
		// SendStream, SetBodyStreamWriter, large files: the body is sent
		// after the handler returns and cannot be recorded (B19).
		rec.Streamed = true
	} else if body := resp.Body(); len(body) > maxBody {
		rec.Truncated = true
	} else {
		// Complete hands the body to the store before it returns, and a
		// store copies what it keeps (idem.Store contract), so fasthttp's
		// buffer is safe to pass as is.
		rec.Body = body
	}
	return rec, false
}

// Fold caches, per layer, whether the app a layer serves disables
// fasthttp's header name normalization, so that header names must be
// matched case-insensitively by hand (B4). A is the framework's app type.
type Fold[A comparable] struct {
	last atomic.Pointer[appFold[A]]
}

type appFold[A comparable] struct {
	app  A
	fold bool
}

// For reports whether app folds header names, asking disabled (the app's
// DisableHeaderNormalizing) only when app is not the one seen last.
func (f *Fold[A]) For(app A, disabled func(A) bool) bool {
	if last := f.last.Load(); last != nil && last.app == app {
		return last.fold
	}
	last := &appFold[A]{app: app, fold: disabled(app)}
	f.last.Store(last)
	return last.fold
}
