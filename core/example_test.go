package idem_test

import (
	"fmt"
	"net/http"
	"strings"

	idem "github.com/idemkit/idem/core"
)

// An adapter's view of the engine: Begin decides, the handler runs once
// under the lease, Complete records the response, and a retry is replayed.
func Example() {
	engine, err := idem.New(idem.Config{}) // every default; an in-memory store
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	send := func(body string) {
		h := http.Header{}
		h.Set("Idempotency-Key", "order-42")
		d := engine.Begin(&idem.Request{Method: "POST", Path: "/orders", Header: h, Body: strings.NewReader(body)})
		switch d.Action {
		case idem.Run:
			// Run the handler with d.Body, then report what it sent.
			fmt.Println("handler runs with", string(d.Body))
			resp := http.Header{"Content-Type": {"application/json"}}
			_ = d.Lease.Complete(idem.Recorded{Status: 201, Header: resp, Body: []byte(`{"id":1}`)})
		case idem.Respond:
			fmt.Println(d.Response.Status, string(d.Response.Body), "replayed:", d.Replayed)
		}
	}
	send(`{"sku":"tea"}`)
	send(`{"sku":"tea"}`)
	send(`{"sku":"coffee"}`)
	// Output:
	// handler runs with {"sku":"tea"}
	// 201 {"id":1} replayed: true
	// 422 {"type":"https://idemkit.github.io/idem/problems/key-reused","title":"Idempotency key reused","status":422,"detail":"This idempotency key was already used for a different request (method, path, query or body differ). Use a new key for a new operation, or resend the original request unchanged.","rule":"B10"} replayed: false
}
