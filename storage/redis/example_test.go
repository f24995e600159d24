package idemredis_test

import (
	"context"
	"log"

	idem "github.com/idemkit/idem/core"
	idemredis "github.com/idemkit/idem/storage/redis"
	"github.com/redis/go-redis/v9"
)

// Every server of an API shares one Redis; the engine built on the Redis
// store is then handed to an adapter (idemhttp, idemchi, idemecho,
// idemfiber).
func Example() {
	client := redis.NewClient(&redis.Options{
		Addr: "127.0.0.1:6379",
		// Let the engine's StoreTimeout bound each call.
		ContextTimeoutEnabled: true,
	})
	defer client.Close()

	// New checks that the server never evicts idem's records
	// (maxmemory-policy noeviction).
	store, err := idemredis.New(context.Background(), client, idemredis.Options{KeyPrefix: "orders-api:idem:"})
	if err != nil {
		log.Fatal(err)
	}
	engine, err := idem.New(idem.Config{
		Store: store,
		// The defaults, spelled out: a crashed request's key is free again
		// after LeaseTime; completed records are replayed for Retention.
		LeaseTime: idem.DefaultLeaseTime,
		Retention: idem.DefaultRetention,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer engine.Close()
	// For instance: http.ListenAndServe(":8080", idemhttp.New(engine)(mux))
}
