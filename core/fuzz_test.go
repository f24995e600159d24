package idem_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	idem "github.com/idemkit/idem/core"
)

// FuzzEngine feeds the engine arbitrary methods, key header fields, routes
// and bodies: it must never panic, and every answer must be a handled
// request, a replay, or a well-formed problem.
func FuzzEngine(f *testing.F) {
	f.Add("POST", "k1", "", uint8(0), []byte(`{"a":1}`), "/orders", "")
	f.Add("PUT", `"quoted"`, "second", uint8(1), []byte{0, 1, 2}, "/x", "a=b")
	f.Add("GET", "a,b", "", uint8(2), []byte(nil), "/", "")
	f.Add("DELETE", "", "", uint8(4), []byte("x"), "", "")
	f.Add("PATCH", "k\x00", "", uint8(3), make([]byte, 2048), "/p", "q")
	eng, err := idem.New(idem.Config{MaxRequestBody: 1024, MaxKeyLength: 64})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = eng.Close() })
	f.Fuzz(func(t *testing.T, method, key1, key2 string, policy uint8, body []byte, path, query string) {
		h := http.Header{}
		if key1 != "" {
			h["Idempotency-Key"] = []string{key1}
		}
		if key2 != "" {
			h["Idempotency-Key"] = append(h["Idempotency-Key"], key2)
		}
		r := &idem.Request{Method: method, Path: path, RawQuery: query, Header: h,
			Body: strings.NewReader(string(body)), Route: idem.Route{Policy: idem.Policy(policy % 5)}}
		for range 2 { // a first request and its retry
			d := eng.Begin(r)
			r.Body = strings.NewReader(string(body))
			switch d.Action {
			case idem.Pass:
			case idem.Run:
				if err := d.Lease.Complete(idem.Recorded{Status: 201, Body: body}); err != nil {
					t.Fatalf("Complete: %v", err)
				}
			case idem.Respond:
				resp := d.Response
				if resp == nil || resp.Status < 200 || resp.Status > 599 {
					t.Fatalf("bad response %+v", resp)
				}
				if d.Problem != nil {
					var p struct {
						Type, Title, Detail string
						Status              int
					}
					if err := json.Unmarshal(resp.Body, &p); err != nil || p.Type == "" || p.Title == "" || p.Detail == "" || p.Status != resp.Status {
						t.Fatalf("malformed problem %q: %v", resp.Body, err)
					}
				} else if !d.Replayed {
					t.Fatalf("a response that is neither problem nor replay: %+v", d)
				}
			default:
				t.Fatalf("unknown action %v", d.Action)
			}
		}
	})
}
