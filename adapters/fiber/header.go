package idemfiber

import (
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
	idem "github.com/idemkit/idem/core"
	"github.com/valyala/fasthttp"
)

// The engine reads headers through idem.Header views over fasthttp's own
// headers, so no http.Header is built. Each value is copied into a new
// string: fasthttp reuses its buffers once the handler returns, and the
// engine keeps what it reads (stored response headers, a scope or key a
// custom EncodeKey keeps whole).

// requestHeader views a request's headers, matching names the way fasthttp
// normalizes them.
type requestHeader fasthttp.RequestHeader

// Values returns copies of the values of the header fields called name.
func (h *requestHeader) Values(name string) []string {
	return copyValues((*fasthttp.RequestHeader)(h).PeekAll(name))
}

// responseHeader views a response's headers, matching names the way
// fasthttp normalizes them.
type responseHeader fasthttp.ResponseHeader

// Values returns copies of the values of the header fields called name.
func (h *responseHeader) Values(name string) []string {
	return copyValues((*fasthttp.ResponseHeader)(h).PeekAll(name))
}

// foldHeader views the headers of an app that disables fasthttp's header
// name normalization (fiber.Config.DisableHeaderNormalizing): names are
// kept as sent, so they are matched case-insensitively here (B4).
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
		if strings.EqualFold(utils.UnsafeString(key), name) {
			out = append(out, string(value))
		}
	})
	return out
}

func copyValues(vs [][]byte) []string {
	if len(vs) == 0 {
		return nil
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

func viewRequestHeader(h *fasthttp.RequestHeader, fold bool) idem.Header {
	if fold {
		return foldHeader{h}
	}
	return (*requestHeader)(h)
}

func viewResponseHeader(h *fasthttp.ResponseHeader, fold bool) idem.Header {
	if fold {
		return foldHeader{h}
	}
	return (*responseHeader)(h)
}

// methods are the methods fiber registers by default, as constants.
var methods = [...]string{
	fiber.MethodPost, fiber.MethodPut, fiber.MethodPatch, fiber.MethodDelete,
	fiber.MethodGet, fiber.MethodHead, fiber.MethodOptions, fiber.MethodConnect, fiber.MethodTrace,
}

// method returns m as a string that does not share fasthttp's buffer:
// a constant for the common methods, a copy otherwise. The engine keeps
// the method in its events.
func method(m string) string {
	for _, c := range methods {
		if m == c {
			return c
		}
	}
	return strings.Clone(m)
}
