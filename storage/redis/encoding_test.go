package idemredis

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	idem "github.com/idemkit/idem/core"
)

// completed builds a stored completed record the way the Complete script
// does: the in-flight head with state 2, then the response.
func completed(tok idem.Token, fp []byte, rec *idem.Record) string {
	head := encodeInFlight(tok, fp)
	return "\x01\x02" + string(head[2:]) + string(encodeResponse(rec))
}

func TestEncodingRoundTrip(t *testing.T) {
	tok := idem.Token{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	for _, fp := range [][]byte{nil, {}, []byte("fingerprint\x00\xff")} {
		rec, err := decode(string(encodeInFlight(tok, fp)))
		if err != nil {
			t.Fatalf("decode in-flight: %v", err)
		}
		if rec.State != idem.InFlight || rec.Token != tok || !bytes.Equal(rec.Fingerprint, fp) || (rec.Fingerprint == nil) != (fp == nil) {
			t.Errorf("in-flight record with fingerprint %q decoded as %+v", fp, rec)
		}
	}
	sent := &idem.Record{Status: 999, Body: []byte("\x00body\xff"), Header: []idem.HeaderField{{Name: "A", Value: "\x00\r\n"}, {Name: "A", Value: ""}}}
	rec, err := decode(completed(tok, []byte("fp"), sent))
	if err != nil {
		t.Fatalf("decode completed: %v", err)
	}
	if rec.State != idem.Completed || rec.Token != tok || string(rec.Fingerprint) != "fp" || rec.Status != 999 ||
		!bytes.Equal(rec.Body, sent.Body) || len(rec.Header) != 2 || rec.Header[0] != sent.Header[0] || rec.Header[1] != sent.Header[1] {
		t.Errorf("completed record decoded as %+v, want %+v", rec, sent)
	}
}

// TestDecodeRejectsDamage truncates and extends valid records: every
// damaged value is an error, never a panic or a wrong record.
func TestDecodeRejectsDamage(t *testing.T) {
	tok := idem.Token{7}
	for _, v := range []string{
		string(encodeInFlight(tok, []byte("fp"))),
		completed(tok, []byte("fp"), &idem.Record{Status: 200, Body: []byte("body"), Header: []idem.HeaderField{{Name: "Link", Value: "</a>"}}}),
		completed(tok, nil, &idem.Record{Status: 200, NotReplayable: true}),
	} {
		for n := range len(v) {
			if _, err := decode(v[:n]); err == nil {
				t.Errorf("decode accepted %q, cut to %d of %d bytes", v[:n], n, len(v))
			}
		}
		if _, err := decode(v + "x"); err == nil {
			t.Errorf("decode accepted %q with a trailing byte", v)
		}
	}
	if _, err := decode("\x01\x03" + strings.Repeat("\x00", 21)); err == nil || !strings.Contains(err.Error(), "state") {
		t.Errorf("decode of an unknown state = %v, want a corrupt-record error", err)
	}
	_, err := decode("\x09rest")
	if !errors.Is(err, ErrUnknownVersion) || !strings.Contains(err.Error(), "version 9") {
		t.Errorf("decode of version 9 = %v, want ErrUnknownVersion naming version 9", err)
	}
}
