package idem_test

import (
	"fmt"
	"net/http"
	"strings"
	"time"

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

// An adapter whose route-level layer is passed through, because an outer
// layer already took charge of the request, asks the engine whether its
// own settings would have changed anything, and warns when they would.
func ExampleEngine_Overrides() {
	engine, err := idem.New(idem.Config{}) // default policy Required, 24h retention
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	outer := idem.Route{Policy: idem.Optional}
	fmt.Println(engine.Overrides(idem.Route{Policy: idem.Required}, outer))
	fmt.Println(engine.Overrides(idem.Route{Policy: idem.Exempt, Retention: time.Hour}, outer))
	// Output:
	// []
	// [policy exempt (the request ran as optional) retention 1h0m0s (the request used 24h0m0s)]
}
