package idem

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// The documented defaults. A zero Config field means the default.
const (
	DefaultHeaderName      = "Idempotency-Key"
	DefaultMaxKeyLength    = 255
	DefaultLeaseTime       = 30 * time.Second
	DefaultRetention       = 24 * time.Hour
	DefaultMaxRequestBody  = 1 << 20
	DefaultMaxResponseBody = 1 << 20
	DefaultStoreTimeout    = 5 * time.Second
	// MaxStoreTimeoutShare bounds StoreTimeout: at most
	// LeaseTime/MaxStoreTimeoutShare (B34).
	MaxStoreTimeoutShare  = 4
	DefaultInFlightStatus = http.StatusConflict
	// ReplayedHeader is added to every replayed response (B13).
	ReplayedHeader = "Idempotent-Replayed"
)

// DefaultSafeMethods are the methods that pass straight through (B1).
var DefaultSafeMethods = []string{http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace}

// DefaultReplayHeaders are the response headers stored and replayed (B20).
var DefaultReplayHeaders = []string{
	"Content-Type", "Content-Encoding", "Content-Language", "Content-Location",
	"Location", "ETag", "Last-Modified", "Link", "Cache-Control", "Vary",
}

// neverStored are the headers that no configuration may store (B20).
var neverStored = map[string]bool{
	"Set-Cookie": true, "Date": true, "Content-Length": true,
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Proxy-Connection": true,
}

// Clock tells the time. Tests replace it to move time by hand.
type Clock interface {
	Now() time.Time
}

// systemClock is the default Clock. It reads the monotonic clock alone,
// at about half the cost of time.Now: its time is clockBase's plus the
// monotonic time elapsed since. Times it returns compare and subtract by
// their monotonic readings, exactly; their wall clock readings do not
// follow later steps of the system's wall clock, which nothing the engine
// times depends on.
type systemClock struct{}

// clockBase is when the process's first systemClock reading counts from.
var clockBase = time.Now()

func (systemClock) Now() time.Time { return clockBase.Add(time.Since(clockBase)) }

// Config configures an Engine. The zero value means every documented
// default; New reports a contradictory Config as an error.
type Config struct {
	// Store keeps the records. Default: a MemoryStore with default limits,
	// closed by Engine.Close.
	Store Store

	// DefaultPolicy applies to routes whose Route.Policy is Inherit.
	// Default: Required.
	DefaultPolicy Policy

	// SafeMethods pass straight through (B1). Nil means DefaultSafeMethods;
	// an empty, non-nil slice means none.
	SafeMethods []string

	// HeaderName is the key's header, matched case-insensitively.
	// Default: "Idempotency-Key".
	HeaderName string
	// MaxKeyLength bounds the key after unquoting. Default: 255.
	MaxKeyLength int
	// ValidateKey, when set, runs after the built-in syntax check; an error
	// makes the key invalid (400) and its text reaches the client. It runs
	// inside Begin, and key may be a view of an adapter's buffer (see
	// Request): a validator that keeps the key past the call (to log it
	// later, say) must keep strings.Clone(key).
	ValidateKey func(key string) error

	// Scope, Fingerprint and EncodeKey run inside Begin; they must not keep
	// the *Request or any of its strings or byte slices, which may be views
	// of an adapter's buffers, and EncodeKey must return a string of its
	// own.

	// Scope names who the key belongs to (B8, B32). Default: the
	// principal an auth middleware put in the request's context with
	// WithPrincipal; without one, the Authorization header's value, or ""
	// without one. A tracked request with an empty scope is reported once
	// per route (outcome Unscoped).
	Scope func(*Request) string
	// Fingerprint hashes what the request asks for (B9). body is the body as
	// read. Returning nil turns the mismatch check off for the request.
	// Default: DefaultFingerprint.
	Fingerprint func(r *Request, body []byte) []byte
	// EncodeKey derives the storage key from scope and key (B8). It must be
	// collision resistant. Default: DefaultEncodeKey.
	EncodeKey func(scope, key string) string

	// StoredStatuses lists the statuses that complete a record (B14).
	// Default: every 2xx. Set at most one of StoredStatuses and ShouldStore.
	StoredStatuses []int
	// ShouldStore decides by status whether a response completes a record.
	ShouldStore func(status int) bool

	// ReplayStatus, when set, replaces the original status of a replay.
	ReplayStatus int
	// InFlightWait is how long a duplicate waits for the first request to
	// finish before it is answered (B12). Default: 0, answer at once.
	InFlightWait time.Duration
	// InFlightStatus answers a duplicate of an in-flight request.
	// Default: 409.
	InFlightStatus int

	// LeaseTime is how long a lease lasts before it must be renewed; a
	// crashed owner's key is free again after it (B16, B17). Default: 30s.
	LeaseTime time.Duration
	// Retention is how long completed records are kept (B18). Default: 24h.
	Retention time.Duration

	// MaxRequestBody bounds the body read for the fingerprint (B21).
	// Default: 1 MiB.
	MaxRequestBody int64
	// MaxResponseBody bounds the response body stored (B19). Default: 1 MiB.
	MaxResponseBody int

	// ReplayHeaders lists the response headers stored and replayed (B20).
	// Nil means DefaultReplayHeaders. Set-Cookie, hop-by-hop headers, Date
	// and Content-Length are refused.
	ReplayHeaders []string

	// FailOpen runs handlers untracked when the store fails before the
	// handler, instead of answering 503 (B22).
	FailOpen bool
	// StoreTimeout bounds every store call. It may be at most
	// LeaseTime/4, so that a renewal that hangs (it starts at half the
	// lease) leaves time for another before the lease ends; New refuses a
	// longer one (B34). Renewals are also cut off where the lease ends.
	// Default: 5s, or LeaseTime/4 when that is shorter.
	StoreTimeout time.Duration

	// Logger, when set, logs every decision (B28).
	Logger *slog.Logger
	// Observer, when set, receives every decision (B28).
	Observer Observer
	// Clock tells the time. Default: the system clock.
	Clock Clock

	// RenderProblem turns a problem into a response (B25).
	// Default: RenderProblem.
	RenderProblem func(*Problem) *Response
}

func (c *Config) fill() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("idem: config: "+format, args...)) }

	switch c.DefaultPolicy {
	case Inherit:
		c.DefaultPolicy = Required
	case Required, Optional, Exempt, Manual:
	default:
		bad("DefaultPolicy %d is not a policy", c.DefaultPolicy)
	}
	if c.SafeMethods == nil {
		c.SafeMethods = DefaultSafeMethods
	}
	if c.HeaderName == "" {
		c.HeaderName = DefaultHeaderName
	} else if !isToken(c.HeaderName) {
		bad("HeaderName %q is not a valid header name", c.HeaderName)
	}
	c.HeaderName = http.CanonicalHeaderKey(c.HeaderName)
	switch {
	case c.MaxKeyLength == 0:
		c.MaxKeyLength = DefaultMaxKeyLength
	case c.MaxKeyLength < 0:
		bad("MaxKeyLength %d is negative", c.MaxKeyLength)
	}
	if c.Scope == nil {
		c.Scope = defaultScope
	}
	if c.Fingerprint == nil {
		c.Fingerprint = DefaultFingerprint
	}
	if c.EncodeKey == nil {
		c.EncodeKey = DefaultEncodeKey
	}
	if c.StoredStatuses != nil && c.ShouldStore != nil {
		bad("set StoredStatuses or ShouldStore, not both")
	}
	for _, s := range c.StoredStatuses {
		if s < 100 || s > 599 {
			bad("StoredStatuses holds %d, which is not a status code in 100..599", s)
		}
	}
	if c.ReplayStatus != 0 && (c.ReplayStatus < 200 || c.ReplayStatus > 599) {
		bad("ReplayStatus %d is not a status code in 200..599", c.ReplayStatus)
	}
	switch {
	case c.InFlightStatus == 0:
		c.InFlightStatus = DefaultInFlightStatus
	case c.InFlightStatus < 400 || c.InFlightStatus > 599:
		bad("InFlightStatus %d is not an error status in 400..599", c.InFlightStatus)
	}
	if c.InFlightWait < 0 {
		bad("InFlightWait %v is negative", c.InFlightWait)
	}
	switch {
	case c.LeaseTime == 0:
		c.LeaseTime = DefaultLeaseTime
	case c.LeaseTime < time.Millisecond:
		bad("LeaseTime %v is shorter than 1ms", c.LeaseTime)
	}
	switch {
	case c.Retention == 0:
		c.Retention = DefaultRetention
	case c.Retention < time.Millisecond:
		bad("Retention %v is shorter than 1ms", c.Retention)
	}
	if c.InFlightWait >= c.LeaseTime && c.LeaseTime > 0 {
		bad("InFlightWait %v must be shorter than LeaseTime %v", c.InFlightWait, c.LeaseTime)
	}
	switch {
	case c.MaxRequestBody == 0:
		c.MaxRequestBody = DefaultMaxRequestBody
	case c.MaxRequestBody < 0:
		bad("MaxRequestBody %d is negative", c.MaxRequestBody)
	}
	switch {
	case c.MaxResponseBody == 0:
		c.MaxResponseBody = DefaultMaxResponseBody
	case c.MaxResponseBody < 0:
		bad("MaxResponseBody %d is negative", c.MaxResponseBody)
	}
	if c.ReplayHeaders == nil {
		c.ReplayHeaders = DefaultReplayHeaders
	}
	canon := make([]string, 0, len(c.ReplayHeaders))
	for _, h := range c.ReplayHeaders {
		name := http.CanonicalHeaderKey(h)
		switch {
		case !isToken(h):
			bad("ReplayHeaders holds %q, which is not a header name", h)
		case neverStored[name]:
			bad("ReplayHeaders holds %s, which is never stored (B20)", name)
		case strings.EqualFold(name, ReplayedHeader):
			bad("ReplayHeaders holds %s, which the engine sets itself", name)
		default:
			canon = append(canon, name)
		}
	}
	c.ReplayHeaders = canon
	// One store call that hangs for StoreTimeout must leave time for
	// another attempt before the lease ends: a renewal starts at half the
	// lease, so a quarter leaves a quarter (B34).
	maxTimeout := c.LeaseTime / MaxStoreTimeoutShare
	switch {
	case c.StoreTimeout == 0:
		c.StoreTimeout = min(DefaultStoreTimeout, maxTimeout)
	case c.StoreTimeout < 0:
		bad("StoreTimeout %v is negative", c.StoreTimeout)
	case c.StoreTimeout > maxTimeout && c.LeaseTime > 0:
		bad("StoreTimeout %v is longer than LeaseTime/%d (%v): one hung renewal would outlive the lease (B34)", c.StoreTimeout, MaxStoreTimeoutShare, maxTimeout)
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.RenderProblem == nil {
		c.RenderProblem = RenderProblem
	}
	return errors.Join(errs...)
}

func defaultScope(r *Request) string {
	if p := principalOf(r.context()); p != nil {
		return p.scope
	}
	if r.Header == nil {
		return ""
	}
	v := r.Header.Values("Authorization")
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// isToken reports whether s is an RFC 9110 token, as header names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
