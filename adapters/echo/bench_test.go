package idemecho_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	idemecho "github.com/idemkit/idem/adapters/echo"
	idem "github.com/idemkit/idem/core"
	"github.com/labstack/echo/v4"
)

// benchAppMounted mounts idem with e.Use, or, when stacked, as a group
// layer and a route layer, which passes the request the group's layer
// took charge of.
func benchAppMounted(b *testing.B, withIdem, stacked bool) *echo.Echo {
	e := echo.New()
	answer := `{"order":"ord_0123456789","status":"created","amount":1999,"x":1}`
	handler := func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
		return c.String(http.StatusCreated, answer)
	}
	if !withIdem {
		e.POST("/orders", handler)
		return e
	}
	engine, err := idem.New(idem.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = engine.Close() })
	if stacked {
		e.Group("", idemecho.Middleware(engine)).POST("/orders", handler, idemecho.Required(engine))
	} else {
		e.Use(idemecho.Middleware(engine))
		e.POST("/orders", handler)
	}
	return e
}

func benchServe(b *testing.B, e *echo.Echo, key func(i int) string) {
	body := `{"sku":"book","quantity":1}`
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
		if k := key(i); k != "" {
			req.Header.Set(idem.DefaultHeaderName, k)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

// BenchmarkReplayStacked replays through a group layer and a route layer,
// which echo composes on every request; compare with BenchmarkReplayUse,
// one layer mounted with e.Use. The other paths are measured by
// BenchmarkHTTP.
func BenchmarkReplayStacked(b *testing.B) {
	benchServe(b, benchAppMounted(b, true, true), func(int) string { return "same-key" })
}

// BenchmarkReplayUse replays through a single layer mounted with e.Use.
func BenchmarkReplayUse(b *testing.B) {
	benchServe(b, benchAppMounted(b, true, false), func(int) string { return "same-key" })
}
