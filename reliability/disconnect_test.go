package reliability

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
	"github.com/redis/go-redis/v9"
)

// networkDelay is a go-redis hook that delays every command as a slower
// network would, honouring the command's context as a real wait on the
// network does: a call whose context ends while it waits fails with the
// context's error.
type networkDelay time.Duration

func (networkDelay) DialHook(next redis.DialHook) redis.DialHook { return next }

func (d networkDelay) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		t := time.NewTimer(time.Duration(d))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			cmd.SetErr(ctx.Err())
			return ctx.Err()
		}
		return next(ctx, cmd)
	}
}

func (d networkDelay) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestB29DisconnectsNeverRunTwice: one request completes a key through a
// real server on Redis in fail-open mode; then 300 copies of it are sent
// on connections that close right after the request is written, as a
// client that gives up (or an attacker) does. A disconnect is not a store
// outage: the handler ran once, no request ran untracked, and no
// disconnect was reported as a store error (B29). Redis commands take a
// few milliseconds more, as over a real network, which widens the window
// in which a disconnect cuts a store call off.
func TestB29DisconnectsNeverRunTwice(t *testing.T) {
	fx := newRedis(t)
	fx.client.AddHook(networkDelay(3 * time.Millisecond))
	ev := &events{}
	engine := newEngine(t, idem.Config{Store: fx.store, FailOpen: true, Observer: ev})
	ex := newExecutions()
	base := serveNetHTTP(t, engine, idem.Route{}, orderHandler(ex, 0))
	const key, copies = "disconnect-1", 300
	body := []byte(key)
	client := newClient(t, 4)
	if a := mustPost(t, client, base, key, body); a.Status != 201 {
		t.Fatalf("first request: %v", a)
	}
	msg := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s",
		orderPath, strings.TrimPrefix(base, "http://"), idem.DefaultHeaderName, key, len(body), body)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for range copies {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			_, _ = io.WriteString(conn, msg)
			_ = conn.Close()
		}()
	}
	wg.Wait()
	// Every copy reaches a decision: wait for them (the first request
	// made two events, executed and stored).
	decided := func() int {
		n := 0
		for _, e := range ev.Events() {
			switch e.Outcome {
			case idem.Replayed, idem.ClientGone, idem.Untracked, idem.StoreError, idem.Executed, idem.InFlightConflict:
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(20 * time.Second); decided() < copies+1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	replayed, gone := len(ev.With(idem.Replayed)), len(ev.With(idem.ClientGone))
	untracked, storeErrors := len(ev.With(idem.Untracked)), len(ev.With(idem.StoreError))
	t.Logf("%d disconnecting copies: %d decided: %d replayed, %d client-gone, %d untracked, %d store errors; the handler ran %d times",
		copies, decided()-1, replayed, gone, untracked, storeErrors, ex.of(key))
	if ran := ex.of(key); ran != 1 {
		t.Fatalf("the handler ran %d times for one key: disconnects were taken for a store outage and run untracked", ran)
	}
	if untracked != 0 || storeErrors != 0 {
		t.Fatalf("%d untracked runs and %d store errors for disconnects; want none", untracked, storeErrors)
	}
	if gone == 0 {
		t.Errorf("no disconnect was reported as client-gone; the test did not cut a store call off")
	}
}
