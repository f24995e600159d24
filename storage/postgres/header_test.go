package idempg

import (
	"errors"
	"fmt"
	"testing"

	idem "github.com/idemkit/idem/core"
)

func TestHeaderEncodingRoundTrips(t *testing.T) {
	for _, h := range [][]idem.HeaderField{
		{{Name: "Content-Type", Value: "text/plain"}},
		{{Name: "Link", Value: "<a>"}, {Name: "Link", Value: "<b>"}, {Name: "Vary", Value: ""}},
		{{Name: "", Value: "\x00\xff"}, {Name: string(make([]byte, 300)), Value: string(make([]byte, 70000))}},
	} {
		got, err := decodeHeader(encodeHeader(h))
		if err != nil || fmt.Sprintf("%q", got) != fmt.Sprintf("%q", h) {
			t.Errorf("round trip of %.60q = %.60q, %v", h, got, err)
		}
	}
	if b := encodeHeader(nil); b != nil {
		t.Errorf("no fields encode to %x; want nil (NULL)", b)
	}
	if h, err := decodeHeader(nil); h != nil || err != nil {
		t.Errorf("NULL decodes to %v, %v; want nil, nil", h, err)
	}
}

func TestHeaderDecodingRejectsCorruptValues(t *testing.T) {
	good := encodeHeader([]idem.HeaderField{{Name: "ETag", Value: `"x"`}})
	for name, b := range map[string][]byte{
		"unknown version":  append([]byte{9}, good[1:]...),
		"truncated":        good[:len(good)-1],
		"trailing bytes":   append(append([]byte{}, good...), 0),
		"huge count":       {headerVersion, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad varint":       {headerVersion, 0x80},
		"long varint":      {headerVersion, 0x81, 0x00, 0, 0},
		"name past end":    {headerVersion, 1, 5, 'a'},
		"missing value":    {headerVersion, 1, 1, 'a'},
		"count over bytes": {headerVersion, 2, 0, 0},
	} {
		if h, err := decodeHeader(b); !errors.Is(err, errBadHeader) {
			t.Errorf("%s: decode = %q, %v; want errBadHeader", name, h, err)
		}
	}
}

func FuzzDecodeHeader(f *testing.F) {
	f.Add(encodeHeader([]idem.HeaderField{{Name: "A", Value: "b"}, {Name: "C", Value: ""}}))
	f.Add([]byte{headerVersion, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err != nil || len(b) == 0 {
			return
		}
		// Whatever decodes encodes back to the same bytes, except that
		// zero fields encode to NULL.
		if again := encodeHeader(h); len(h) > 0 && string(again) != string(b) {
			t.Fatalf("decode(%x) = %q re-encodes to %x", b, h, again)
		}
	})
}
