package idemgin_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	idemgin "github.com/idemkit/idem/adapters/gin"
	idem "github.com/idemkit/idem/core"
)

func newEngine(t testing.TB) *idem.Engine {
	t.Helper()
	e, err := idem.New(idem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// post sends POST path with key to r and returns the answer.
func post(r http.Handler, path, key string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"n":1}`))
	if key != "" {
		req.Header.Set(idem.DefaultHeaderName, key)
	}
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	return rec
}

// twice sends the same keyed request twice, checks that the second is a
// replay of the first, and returns both.
func twice(t *testing.T, r http.Handler, path string) (first, replay *httptest.ResponseRecorder) {
	t.Helper()
	first, replay = post(r, path, "k-"+path), post(r, path, "k-"+path)
	if replay.Header().Get(idem.ReplayedHeader) != "true" {
		t.Fatalf("%s: the retry was not replayed: %d %q", path, replay.Code, replay.Body)
	}
	if replay.Code != first.Code || replay.Body.String() != first.Body.String() ||
		replay.Header().Get("Content-Type") != first.Header().Get("Content-Type") {
		t.Fatalf("%s: replay %d %q %q differs from the first answer %d %q %q", path,
			replay.Code, replay.Header().Get("Content-Type"), replay.Body,
			first.Code, first.Header().Get("Content-Type"), first.Body)
	}
	return first, replay
}

// TestGinStatusRules: gin's writer keeps the status until the first body
// byte, so the last status chosen before it wins, and a handler that
// returns after c.Status, or aborts with a status, answers that status
// without a body; the replays say the same.
func TestGinStatusRules(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(idemgin.Middleware(newEngine(t)))
	var seen []int
	r.POST("/changed", func(c *gin.Context) {
		c.Status(http.StatusOK)
		c.JSON(http.StatusCreated, gin.H{"id": 1})
		seen = append(seen, c.Writer.Status(), c.Writer.Size())
	})
	r.POST("/status-only", func(c *gin.Context) { c.Status(http.StatusAccepted) })
	r.POST("/aborted", func(c *gin.Context) { c.AbortWithStatus(http.StatusNoContent) })
	r.POST("/header-after-status", func(c *gin.Context) {
		c.Status(http.StatusCreated)
		c.Header("Location", "/orders/1")
		c.String(http.StatusCreated, "made")
	})

	first, _ := twice(t, r, "/changed")
	if first.Code != http.StatusCreated || !strings.HasPrefix(first.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("c.Status(200) then c.JSON(201): answered %d %q, want 201 application/json", first.Code, first.Header().Get("Content-Type"))
	}
	if len(seen) != 2 || seen[0] != http.StatusCreated || seen[1] != len(`{"id":1}`) {
		t.Fatalf("c.Writer.Status(), Size() in the handler = %v, want [201 %d]", seen, len(`{"id":1}`))
	}
	for path, want := range map[string]int{"/status-only": http.StatusAccepted, "/aborted": http.StatusNoContent} {
		if first, _ := twice(t, r, path); first.Code != want || first.Body.Len() != 0 {
			t.Fatalf("%s answered %d %q, want %d without a body", path, first.Code, first.Body, want)
		}
	}
	if first, _ := twice(t, r, "/header-after-status"); first.Header().Get("Location") != "/orders/1" {
		t.Fatalf("a header set after c.Status was not sent: %v", first.Header())
	}
}

// TestGinErrors: a handler that records an error with c.Error and writes
// nothing leaves the response to the application's error middleware,
// outside idemgin, and the key is released: the retry runs the handler
// again. One that wrote its response keeps it: the retry is a replay.
func TestGinErrors(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	var outerStatus int
	r.Use(func(c *gin.Context) { // the application's error middleware
		c.Next()
		if len(c.Errors) > 0 && !c.Writer.Written() {
			c.JSON(http.StatusInternalServerError, gin.H{"error": c.Errors.Last().Error()})
		}
		outerStatus = c.Writer.Status()
	})
	r.Use(idemgin.Middleware(newEngine(t)))
	calls := map[string]int{}
	r.POST("/fails", func(c *gin.Context) {
		calls["fails"]++
		_ = c.Error(errors.New("the database is down"))
	})
	r.POST("/logs", func(c *gin.Context) {
		calls["logs"]++
		c.String(http.StatusCreated, "made")
		_ = c.Error(errors.New("a warning for the log"))
	})

	for i := range 2 {
		if rec := post(r, "/fails", "k-fails"); rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "database") {
			t.Fatalf("attempt %d: answered %d %q, want the error middleware's 500", i+1, rec.Code, rec.Body)
		}
	}
	if calls["fails"] != 2 {
		t.Fatalf("the failing handler ran %d times for two attempts, want 2: the key was not released", calls["fails"])
	}
	twice(t, r, "/logs")
	if calls["logs"] != 1 || outerStatus != http.StatusCreated {
		t.Fatalf("the handler that answered ran %d times (want 1); the outer middleware saw status %d (want 201)", calls["logs"], outerStatus)
	}
}

// TestGinManualAndSkip: a Manual handler reads the engine's finding from
// c.Request.Context(); an engine-wide layer that skips a route leaves it
// to the route's own layer.
func TestGinManualAndSkip(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	e := newEngine(t)
	r := gin.New()
	r.Use(idemgin.Middleware(e, idemgin.Skip(func(c *gin.Context) bool { return c.FullPath() == "/manual" })))
	r.POST("/manual", idemgin.Manual(e), func(c *gin.Context) {
		if f, ok := idem.FindingFrom(c.Request.Context()); ok {
			c.String(http.StatusOK, "found "+f.Kind.String())
			return
		}
		c.String(http.StatusCreated, "first")
	})
	if rec := post(r, "/manual", "k1"); rec.Code != http.StatusCreated {
		t.Fatalf("first request: %d %q", rec.Code, rec.Body)
	}
	if rec := post(r, "/manual", "k1"); rec.Code != http.StatusOK || rec.Body.String() != "found completed" {
		t.Fatalf("retry on a Manual route: %d %q, want 200 \"found completed\"", rec.Code, rec.Body)
	}
}
