package fasthttpkit

import (
	"net/http"
	"strings"
	"unsafe"

	"github.com/valyala/fasthttp"

	idem "github.com/idemkit/idem/core"
)

// The engine reads headers through idem.Header views over fasthttp's own
// headers, so no http.Header is built, and the values it gets are views of
// fasthttp's buffers, not copies. That is safe because of when the engine
// reads them: request headers inside Begin (idem.Request allows views,
// and Config's Scope and EncodeKey must not keep them), response headers
// inside Lease.Complete, which hands them to a store that copies what it
// keeps (idem.Store). fasthttp changes neither while the handler chain
// runs. The header of a response is read after the handler returned to
// the adapter, before fasthttp reuses it for the next request.

// unsafeString returns b as a string without a copy: a view of b.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// valueSlots hands out the []string results of Values from a fixed array,
// so that reading a header allocates nothing; each call gets slots of its
// own, and past the array a call allocates.
type valueSlots struct {
	slots [8]string
	used  int
}

// view returns views of vs.
func (s *valueSlots) view(vs [][]byte) []string {
	if len(vs) == 0 {
		return nil
	}
	var out []string
	if s.used+len(vs) <= len(s.slots) {
		out = s.slots[s.used : s.used : s.used+len(vs)]
		s.used += len(vs)
	} else {
		out = make([]string, 0, len(vs))
	}
	for _, v := range vs {
		out = append(out, unsafeString(v))
	}
	return out
}

// requestHeader views a request's headers, matching names the way fasthttp
// normalizes them.
type requestHeader struct {
	h *fasthttp.RequestHeader
	valueSlots
}

// Values returns the values of the header fields called name, as views of
// fasthttp's buffer.
func (h *requestHeader) Values(name string) []string {
	return h.view(h.h.PeekAll(name))
}

// responseHeader views a response's headers, matching names the way
// fasthttp normalizes them. The engine asks it for every name it stores
// (B20), most of them absent: it lists the response's fields once and
// answers from that list instead of having fasthttp normalize and look up
// each name.
type responseHeader struct {
	h *fasthttp.ResponseHeader
	valueSlots
	listed bool
	many   bool // more fields than fields holds: ask fasthttp
	n      int
	fields [12]struct{ name, value []byte }
}

// Values returns the values of the header fields called name, as views of
// fasthttp's buffer.
func (h *responseHeader) Values(name string) []string {
	if !h.listed {
		h.listed = true
		//lint:ignore SA1019 All, its replacement, is missing from fasthttp v1.51.0, the version Fiber v2 requires
		h.h.VisitAll(func(k, v []byte) {
			if h.n == len(h.fields) {
				h.many = true
				return
			}
			h.fields[h.n].name, h.fields[h.n].value = k, v
			h.n++
		})
	}
	if h.many {
		return h.view(h.h.PeekAll(name))
	}
	var out []string
	for _, f := range h.fields[:h.n] {
		// fasthttp normalizes names as the engine writes them
		// ("Content-Type"); an app that turns that off is read through
		// foldHeader instead.
		if string(f.name) == name {
			if out == nil {
				out = h.view([][]byte{f.value})
			} else {
				out = append(out, unsafeString(f.value))
			}
		}
	}
	return out
}

// foldHeader views the headers of an app that disables fasthttp's header
// name normalization (Fiber's DisableHeaderNormalizing): names are kept as
// sent, so they are matched case-insensitively here (B4).
type foldHeader struct {
	h interface {
		VisitAll(f func(key, value []byte))
	}
}

// Values returns copies of the values of the header fields whose name
// equals name, ignoring case.
func (h foldHeader) Values(name string) []string {
	var out []string
	h.h.VisitAll(func(key, value []byte) {
		if strings.EqualFold(unsafeString(key), name) {
			out = append(out, string(value))
		}
	})
	return out
}

// viewRequestHeader returns h as an idem.Header, through v unless fold.
func viewRequestHeader(v *requestHeader, h *fasthttp.RequestHeader, fold bool) idem.Header {
	if fold {
		return foldHeader{h}
	}
	*v = requestHeader{h: h}
	return v
}

// viewResponseHeader returns h as an idem.Header, through v unless fold.
func viewResponseHeader(v *responseHeader, h *fasthttp.ResponseHeader, fold bool) idem.Header {
	if fold {
		return foldHeader{h}
	}
	*v = responseHeader{h: h}
	return v
}

// methods are the methods Fiber registers by default, as constants.
var methods = [...]string{
	http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
	http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodConnect, http.MethodTrace,
}

// stableMethod returns m as a string that does not share fasthttp's
// buffer: a constant for the common methods, a copy otherwise. The engine
// keeps the method in its events.
func stableMethod(m string) string {
	for _, c := range methods {
		if m == c {
			return c
		}
	}
	return strings.Clone(m)
}
