package idem

import (
	"encoding/json"
	"strconv"
	"time"
)

// ProblemBase is the prefix of every problem type URI the engine uses.
const ProblemBase = "https://idemkit.github.io/idem/problems/"

// The problem type URIs, one per rule that makes the engine answer itself
// (B25). They are stable: clients may match on them.
const (
	ProblemKeyMissing       = ProblemBase + "key-missing"       // B6
	ProblemKeyInvalid       = ProblemBase + "key-invalid"       // B5, B7
	ProblemKeyReused        = ProblemBase + "key-reused"        // B10
	ProblemInFlight         = ProblemBase + "in-flight"         // B12
	ProblemNotReplayable    = ProblemBase + "not-replayable"    // B19
	ProblemRequestTooLarge  = ProblemBase + "request-too-large" // B21
	ProblemRequestBody      = ProblemBase + "request-body"      // B21
	ProblemStoreUnavailable = ProblemBase + "store-unavailable" // B22, B33
	ProblemRequestCanceled  = ProblemBase + "request-canceled"  // B29
	ProblemStoreFull        = ProblemBase + "store-full"        // B30
	ProblemScopeQuota       = ProblemBase + "scope-quota"       // B30
	ProblemNotCommitted     = ProblemBase + "not-committed"     // B35
)

// Problem is an RFC 9457 problem the engine answers with (B25). It is also
// an error, so an adapter can hand it to a framework's error handler.
type Problem struct {
	// Type is one of the Problem* URIs.
	Type string `json:"type"`
	// Title is a short, fixed summary of the problem type.
	Title string `json:"title"`
	// Status is the HTTP status code.
	Status int `json:"status"`
	// Detail tells the client what happened and what to do.
	Detail string `json:"detail"`
	// Rule names the rule of the behaviour contract, for instance "B10".
	Rule string `json:"rule"`
	// RetryAfter, when positive, is sent as the Retry-After header.
	RetryAfter time.Duration `json:"-"`
}

// Error returns the title and detail.
func (p *Problem) Error() string { return "idem: " + p.Title + ": " + p.Detail }

// StatusCode returns p.Status. A framework error handler that asks an
// error for its status this way (echo v5's HTTPStatusCoder, among others)
// answers a Problem returned as an error with the problem's status, not
// 500.
func (p *Problem) StatusCode() int { return p.Status }

// ProblemContentType is the media type of a rendered problem.
const ProblemContentType = "application/problem+json"

// RenderProblem is the default problem renderer: an
// application/problem+json body with type, title, status, detail and rule,
// and a Retry-After header (whole seconds, at least 1) when p.RetryAfter is
// positive.
func RenderProblem(p *Problem) *Response {
	body, err := json.Marshal(p)
	if err != nil { // cannot happen: every field is a string or an int
		body = []byte(`{"title":"internal error","status":500}`)
	}
	h := make([]HeaderField, 1, 3)
	h[0] = HeaderField{"Content-Type", ProblemContentType}
	h = append(h, HeaderField{"Cache-Control", "no-store"})
	if p.RetryAfter > 0 {
		secs := int64((p.RetryAfter + time.Second - 1) / time.Second)
		h = append(h, HeaderField{"Retry-After", strconv.FormatInt(secs, 10)})
	}
	return &Response{Status: p.Status, Header: h, Body: body}
}

func problemKeyMissing(header string) *Problem {
	return &Problem{Type: ProblemKeyMissing, Title: "Idempotency key missing", Status: 400, Rule: "B6",
		Detail: "This operation requires an " + header + " header. Send a unique key (for instance a UUID) and reuse it when you retry the same operation."}
}

func problemKeyInvalid(header, why string) *Problem {
	return &Problem{Type: ProblemKeyInvalid, Title: "Idempotency key invalid", Status: 400, Rule: "B7",
		Detail: "The " + header + " header is invalid: " + why + ". Send exactly one key of visible ASCII characters."}
}

func problemKeyReused() *Problem {
	return &Problem{Type: ProblemKeyReused, Title: "Idempotency key reused", Status: 422, Rule: "B10",
		Detail: "This idempotency key was already used for a different request (method, path, query or body differ). Use a new key for a new operation, or resend the original request unchanged."}
}

func problemInFlight(status int, retry time.Duration) *Problem {
	return &Problem{Type: ProblemInFlight, Title: "Request in progress", Status: status, Rule: "B12", RetryAfter: retry,
		Detail: "A request with this idempotency key is still being processed. Retry after the time given in Retry-After to get its result."}
}

func problemNotReplayable() *Problem {
	return &Problem{Type: ProblemNotReplayable, Title: "Response not replayable", Status: 410, Rule: "B19",
		Detail: "The request with this idempotency key was already processed, but its response was too large or streamed and was not stored. It will not be run again; use a new key to start a new operation."}
}

// NewTooLargeProblem returns the problem the engine answers a request body
// over limit bytes with (413, B21). An adapter whose framework refuses an
// oversized body before the engine sees it (Fiber's BodyLimit) renders it
// with Engine.RenderProblem, so that every 413 is the same problem
// document (B25).
func NewTooLargeProblem(limit int64) *Problem { return problemTooLarge(limit) }

func problemTooLarge(limit int64) *Problem {
	return &Problem{Type: ProblemRequestTooLarge, Title: "Request body too large", Status: 413, Rule: "B21",
		Detail: "Requests with an idempotency key may carry at most " + strconv.FormatInt(limit, 10) + " bytes of body."}
}

func problemBodyUnreadable() *Problem {
	return &Problem{Type: ProblemRequestBody, Title: "Request body unreadable", Status: 400, Rule: "B21",
		Detail: "The request body could not be read completely. Send the request again."}
}

func problemStoreUnavailable(retry time.Duration) *Problem {
	return &Problem{Type: ProblemStoreUnavailable, Title: "Idempotency store unavailable", Status: 503, Rule: "B22", RetryAfter: retry,
		Detail: "The request was not processed because its idempotency record could not be checked. Retry with the same key after the time given in Retry-After."}
}

// problemRequestCanceled answers a request whose context ended before it
// held a lease (B29). It is a 503 with Retry-After rather than a 4xx:
// usually the client is gone and reads nothing, but when a server-side
// deadline ended the context the client is still there, and nothing is
// wrong with its request; a 5xx tells it that a retry with the same key
// is safe. (499, nginx's "client closed request", is not a standard
// status and a client that reads it cannot tell what to do.)
func problemRequestCanceled(retry time.Duration) *Problem {
	return &Problem{Type: ProblemRequestCanceled, Title: "Request canceled", Status: 503, Rule: "B29", RetryAfter: retry,
		Detail: "The request was canceled (the connection closed or a server deadline passed) before it was processed; nothing was run. Retry with the same key."}
}

// problemStoreFull answers a new key that a bounded store refused because
// it is full (B30): the store keeps every record until its retention ends
// rather than forget one that may be retried.
func problemStoreFull(retry time.Duration) *Problem {
	return &Problem{Type: ProblemStoreFull, Title: "Idempotency store full", Status: 503, Rule: "B30", RetryAfter: retry,
		Detail: "The request was not processed because the idempotency store cannot take new keys right now. Retry with the same key after the time given in Retry-After."}
}

// problemScopeQuota answers a new key from a scope that holds more than
// its share of a bounded store under pressure (B30).
func problemScopeQuota(retry time.Duration) *Problem {
	return &Problem{Type: ProblemScopeQuota, Title: "Too many idempotency keys", Status: 429, Rule: "B30", RetryAfter: retry,
		Detail: "The request was not processed because this client holds more than its share of the idempotency store. Retry with the same key after the time given in Retry-After, and reuse keys only for retries."}
}

// problemNotCommitted answers in place of a held response whose record
// could not commit with the handler's writes (B35).
func problemNotCommitted(retry time.Duration) *Problem {
	return &Problem{Type: ProblemNotCommitted, Title: "Request not committed", Status: 503, Rule: "B35", RetryAfter: retry,
		Detail: "The request ran, but its result could not be committed, so none of its effects were kept. Retry with the same key after the time given in Retry-After."}
}
