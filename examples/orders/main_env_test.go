package main

import (
	"os"
	"testing"

	"github.com/idemkit/idem/conformance"
)

func TestMain(m *testing.M) {
	conformance.AnnounceSkips("the tests on Redis and PostgreSQL", conformance.RedisURL, conformance.PostgresURL)
	os.Exit(m.Run())
}
