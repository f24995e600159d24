package main

import (
	"context"

	idem "github.com/idemkit/idem/core"
)

// stores maps each -store name to the function that opens that store. The
// returned close function runs after the server has shut down. A shared
// store (redis, postgres) is one more entry here, reading its own flag
// (-redis-url, -postgres-url) from options.
var stores = map[string]func(ctx context.Context, o options) (idem.Store, func() error, error){
	"memory": openMemory,
}

// openMemory opens the in-memory store: records live as long as the
// process and are not shared between replicas.
func openMemory(context.Context, options) (idem.Store, func() error, error) {
	s := idem.NewMemoryStore(idem.MemoryOptions{})
	return s, s.Close, nil
}
