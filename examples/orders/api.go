package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// call is one request as an operation of the API sees it, whatever the
// framework that received it.
type call struct {
	ctx  context.Context
	body []byte
	// param returns a path parameter, such as "id" of /orders/{id}.
	param func(name string) string
}

// reply is an operation's answer: a status, an optional Location and a
// JSON body.
type reply struct {
	status      int
	location    string
	contentType string
	body        []byte
}

// operation is one endpoint's business logic.
type operation func(call) reply

// Order is an order created through POST /orders.
type Order struct {
	ID  string `json:"id"`
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// Payment is a payment created through POST /payments.
type Payment struct {
	ID       string `json:"id"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// api holds the application's state. It knows nothing of HTTP frameworks
// or of idempotency: the adapters and the idem layers around it do.
type api struct {
	// latency is the simulated work of creating one order.
	latency time.Duration

	// orders keeps the orders.
	orders orderBook

	mu       sync.Mutex
	payments int64
	webhooks atomic.Int64
}

// newAPI returns the API with its orders in memory.
func newAPI(latency time.Duration) *api { return &api{latency: latency, orders: &memoryOrders{}} }

// createOrder serves POST /orders.
func (a *api) createOrder(c call) reply {
	var in struct {
		SKU *string `json:"sku"`
		Qty *int    `json:"qty"`
	}
	if err := decodeJSON(c.body, &in); err != nil {
		return problem(http.StatusBadRequest, "Invalid order", err.Error())
	}
	switch {
	case in.SKU == nil || strings.TrimSpace(*in.SKU) == "":
		return problem(http.StatusBadRequest, "Invalid order", `"sku" must be a non-empty string`)
	case in.Qty == nil || *in.Qty <= 0:
		return problem(http.StatusBadRequest, "Invalid order", `"qty" must be a positive integer`)
	}
	if a.latency > 0 {
		t := time.NewTimer(a.latency)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return problem(http.StatusServiceUnavailable, "Order not created", "The request was cancelled before the order was created. Retry with the same key.")
		}
	}
	crashPoint(beforeWrite)
	o, err := a.orders.create(c.ctx, *in.SKU, *in.Qty)
	if err != nil {
		return problem(http.StatusServiceUnavailable, "Order not created", "The order could not be stored. Retry with the same key.")
	}
	crashPoint(afterWrite)
	r := jsonReply(http.StatusCreated, o)
	r.location = "/orders/" + o.ID
	return r
}

// listOrders serves GET /orders.
func (a *api) listOrders(c call) reply {
	orders, err := a.orders.list(c.ctx)
	if err != nil {
		return problem(http.StatusServiceUnavailable, "Orders unavailable", err.Error())
	}
	if orders == nil {
		orders = []Order{}
	}
	return jsonReply(http.StatusOK, orders)
}

// getOrder serves GET /orders/{id}.
func (a *api) getOrder(c call) reply {
	id := c.param("id")
	o, ok, err := a.orders.get(c.ctx, id)
	switch {
	case err != nil:
		return problem(http.StatusServiceUnavailable, "Order unavailable", err.Error())
	case ok:
		return jsonReply(http.StatusOK, o)
	}
	return problem(http.StatusNotFound, "Order not found", "There is no order "+id+".")
}

// createPayment serves POST /payments.
func (a *api) createPayment(c call) reply {
	var in struct {
		Amount   int64  `json:"amount"`
		Currency string `json:"currency"`
	}
	if err := decodeJSON(c.body, &in); err != nil {
		return problem(http.StatusBadRequest, "Invalid payment", err.Error())
	}
	if in.Amount <= 0 || len(in.Currency) != 3 {
		return problem(http.StatusBadRequest, "Invalid payment", `"amount" must be a positive integer and "currency" a three-letter code`)
	}
	a.mu.Lock()
	a.payments++
	p := Payment{ID: fmt.Sprintf("pay_%d", a.payments), Amount: in.Amount, Currency: in.Currency}
	a.mu.Unlock()
	return jsonReply(http.StatusCreated, p)
}

// receiveWebhook serves POST /webhooks: it accepts every delivery, and
// numbers them so that a client can see it ran.
func (a *api) receiveWebhook(call) reply {
	n := a.webhooks.Add(1)
	return jsonReply(http.StatusAccepted, map[string]int64{"delivery": n})
}

// decodeJSON decodes exactly one JSON value of body into v.
func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("the body is not the expected JSON object: %v", err)
	}
	if dec.More() {
		return errors.New("the body holds more than one JSON value")
	}
	return nil
}

func jsonReply(status int, v any) reply {
	body, err := json.Marshal(v)
	if err != nil {
		return problem(http.StatusInternalServerError, "Internal error", err.Error())
	}
	return reply{status: status, contentType: "application/json", body: append(body, '\n')}
}

// problem answers with an RFC 9457 problem, as idem's own answers are.
func problem(status int, title, detail string) reply {
	body, _ := json.Marshal(struct {
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}{title, status, detail})
	return reply{status: status, contentType: "application/problem+json", body: append(body, '\n')}
}
