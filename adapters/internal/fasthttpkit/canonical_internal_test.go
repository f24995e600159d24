package fasthttpkit

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// TestCanonicalName checks canonicalName against fasthttp's own
// normalisation: Write hands a name to SetCanonical, skipping it, only
// when normalising would leave the name as it is.
func TestCanonicalName(t *testing.T) {
	for _, name := range []string{
		"Content-Type", "Location", "Idempotent-Replayed", "Etag", "X-Request-Id", "X-B3-Traceid",
		"content-type", "CONTENT-TYPE", "Content-type", "ETag", "X_Id", "X Id", "-Leading", "Trailing-",
		"Double--Dash", "A", "a", "", "1st-Field", "Ünicode", "Content-Type\r\n",
	} {
		var h fasthttp.ResponseHeader
		h.Set(name, "v")
		normalised := false
		//lint:ignore SA1019 All, its replacement, is missing from fasthttp v1.51.0, the version Fiber v2 requires
		h.VisitAll(func(k, _ []byte) { normalised = normalised || string(k) == name })
		if got := canonicalName(name); got && !normalised {
			t.Errorf("canonicalName(%q) = true, but fasthttp stores the name otherwise", name)
		}
	}
	for _, name := range []string{"Content-Type", "Location", "Idempotent-Replayed", "X-Request-Id"} {
		if !canonicalName(name) {
			t.Errorf("canonicalName(%q) = false, want true", name)
		}
	}
}
