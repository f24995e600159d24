package idempg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
)

func token(b byte) idem.Token {
	var t idem.Token
	t[0], t[15] = b, b
	return t
}

func TestConcurrentAcquireExactlyOneWins(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx := context.Background()
	const callers = 100
	// race runs callers concurrent acquires for key and checks that exactly
	// one wins and every other one sees the winner's in-flight record.
	race := func(t *testing.T, key string, lease time.Duration) {
		t.Helper()
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			records = make([]*idem.Record, callers)
			errs    = make([]error, callers)
		)
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				tok := token(byte(i))
				tok[1] = 0xee // distinct from the tokens of earlier rounds
				records[i], errs[i] = s.Acquire(ctx, key, tok, []byte{byte(i)}, lease)
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i := range callers {
			switch {
			case errs[i] != nil:
				t.Fatalf("acquire %d: %v", i, errs[i])
			case records[i] == nil && winner >= 0:
				t.Fatalf("callers %d and %d both won the key", winner, i)
			case records[i] == nil:
				winner = i
			}
		}
		if winner < 0 {
			t.Fatal("no caller won the key")
		}
		for i, rec := range records {
			if rec == nil {
				continue
			}
			if rec.State != idem.InFlight || rec.Token[0] != byte(winner) || !bytes.Equal(rec.Fingerprint, []byte{byte(winner)}) {
				t.Fatalf("loser %d saw state %v, token %v, fingerprint %x; want the winner %d's in-flight record", i, rec.State, rec.Token, rec.Fingerprint, winner)
			}
		}
	}
	t.Run("new key", func(t *testing.T) {
		for round := range 20 {
			race(t, fmt.Sprintf("new-%d", round), time.Minute)
		}
	})
	t.Run("expired key", func(t *testing.T) {
		for round := range 10 {
			key := fmt.Sprintf("expired-%d", round)
			insertRows(t, s, key, 1, -time.Second) // the row for key+"1"
			race(t, key+"1", time.Minute)
		}
	})
}

func TestAcquireReturnsLiveRecord(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx := context.Background()
	if rec, err := s.Acquire(ctx, "k", token(1), []byte("fp1"), time.Minute); rec != nil || err != nil {
		t.Fatalf("first acquire = %v, %v; want nil, nil", rec, err)
	}
	// The same token again does not win a second time.
	for _, tok := range []idem.Token{token(2), token(1)} {
		rec, err := s.Acquire(ctx, "k", tok, []byte("fp2"), time.Minute)
		if err != nil || rec == nil {
			t.Fatalf("acquire with token %v = %v, %v; want the live record", tok, rec, err)
		}
		if rec.State != idem.InFlight || rec.Token != token(1) || string(rec.Fingerprint) != "fp1" {
			t.Fatalf("live record = %+v; want in-flight, token 1, fingerprint fp1", rec)
		}
		if d := time.Until(rec.ExpiresAt); d < 30*time.Second || d > 2*time.Minute {
			t.Fatalf("ExpiresAt is %v from now; want about a minute", d)
		}
	}
}

func TestAcquireTakesOverExpiredLease(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx := context.Background()
	if rec, err := s.Acquire(ctx, "k", token(1), []byte("old"), 50*time.Millisecond); rec != nil || err != nil {
		t.Fatalf("first acquire = %v, %v", rec, err)
	}
	time.Sleep(100 * time.Millisecond)
	if rec, err := s.Acquire(ctx, "k", token(2), []byte("new"), time.Minute); rec != nil || err != nil {
		t.Fatalf("acquire after the lease expired = %v, %v; want a takeover", rec, err)
	}
	for name, op := range map[string]func() error{
		"complete": func() error { return s.Complete(ctx, "k", token(1), &idem.Record{Status: 201}, time.Hour) },
		"release":  func() error { return s.Release(ctx, "k", token(1)) },
		"renew":    func() error { return s.Renew(ctx, "k", token(1), time.Hour) },
	} {
		if err := op(); !errors.Is(err, idem.ErrLeaseLost) {
			t.Errorf("%s with the old token = %v; want ErrLeaseLost", name, err)
		}
	}
	rec, err := s.Acquire(ctx, "k", token(3), nil, time.Minute)
	if err != nil || rec == nil || rec.Token != token(2) || string(rec.Fingerprint) != "new" || rec.State != idem.InFlight {
		t.Fatalf("record after the stale writes = %+v, %v; want the new owner's in-flight record", rec, err)
	}
}

func TestCompleteRoundTripsBytes(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx := context.Background()
	body := []byte("\x00\xff\xfe{\"id\":1}\r\n\x00")
	header := []idem.HeaderField{
		{Name: "Content-Type", Value: "application/json"},
		{Name: "Link", Value: "<a>; rel=\"next\""},
		{Name: "Link", Value: ""},
		{Name: "X-Bin", Value: "\x00\xc3\x28\n"},
	}
	if _, err := s.Acquire(ctx, "k", token(1), []byte("fp"), time.Minute); err != nil {
		t.Fatal(err)
	}
	in := &idem.Record{State: idem.Completed, Token: token(1), Status: 201, Header: header, Body: body}
	if err := s.Complete(ctx, "k", token(1), in, time.Hour); err != nil {
		t.Fatal(err)
	}
	in.Body[0], in.Header[0].Value = 'X', "changed" // the store keeps its own copy
	rec, err := s.Acquire(ctx, "k", token(2), []byte("fp"), time.Minute)
	if err != nil || rec == nil {
		t.Fatalf("acquire after complete = %v, %v", rec, err)
	}
	want := []idem.HeaderField{{Name: "Content-Type", Value: "application/json"}, header[1], header[2], header[3]}
	if rec.State != idem.Completed || rec.Status != 201 || rec.NotReplayable || string(rec.Fingerprint) != "fp" || rec.Token != token(1) {
		t.Fatalf("completed record = %+v", rec)
	}
	if !bytes.Equal(rec.Body, []byte("\x00\xff\xfe{\"id\":1}\r\n\x00")) {
		t.Fatalf("body = %q", rec.Body)
	}
	if fmt.Sprint(rec.Header) != fmt.Sprint(want) {
		t.Fatalf("header = %q; want %q", rec.Header, want)
	}
	if d := time.Until(rec.ExpiresAt); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("ExpiresAt is %v from now; want the hour of retention", d)
	}
	// A completed record is not in flight: the lease calls are stale now.
	if err := s.Complete(ctx, "k", token(1), in, time.Hour); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("second complete = %v; want ErrLeaseLost", err)
	}
	if err := s.Release(ctx, "k", token(1)); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("release after complete = %v; want ErrLeaseLost", err)
	}
}

func TestCompleteNotReplayableDropsResponse(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx := context.Background()
	if _, err := s.Acquire(ctx, "k", token(1), nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	in := &idem.Record{Status: 200, NotReplayable: true, Body: []byte("partial"), Header: []idem.HeaderField{{Name: "ETag", Value: "x"}}}
	if err := s.Complete(ctx, "k", token(1), in, time.Hour); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Acquire(ctx, "k", token(2), nil, time.Minute)
	if err != nil || rec == nil || !rec.NotReplayable || rec.Body != nil || rec.Header != nil || rec.Fingerprint != nil || rec.Status != 200 {
		t.Fatalf("record = %+v, %v; want completed, not replayable, no response, no fingerprint", rec, err)
	}
}

func TestRenewAndRelease(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx := context.Background()
	if _, err := s.Acquire(ctx, "k", token(1), nil, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.Renew(ctx, "k", token(2), time.Minute); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("renew with another token = %v; want ErrLeaseLost", err)
	}
	if err := s.Renew(ctx, "k", token(1), time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // past the original lease
	if rec, err := s.Acquire(ctx, "k", token(3), nil, time.Minute); err != nil || rec == nil || rec.Token != token(1) {
		t.Fatalf("acquire after renew = %+v, %v; want token 1 still in flight", rec, err)
	}
	if err := s.Release(ctx, "k", token(2)); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("release with another token = %v; want ErrLeaseLost", err)
	}
	if err := s.Release(ctx, "k", token(1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "k", token(1)); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("second release = %v; want ErrLeaseLost", err)
	}
	if rec, err := s.Acquire(ctx, "k", token(4), nil, time.Minute); rec != nil || err != nil {
		t.Fatalf("acquire after release = %v, %v; want nil, nil", rec, err)
	}
}

func TestExpiredLeaseCannotComplete(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx := context.Background()
	if _, err := s.Acquire(ctx, "k", token(1), nil, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := s.Complete(ctx, "k", token(1), &idem.Record{Status: 200}, time.Hour); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("complete after the lease expired = %v; want ErrLeaseLost", err)
	}
	if err := s.Renew(ctx, "k", token(1), time.Hour); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("renew after the lease expired = %v; want ErrLeaseLost", err)
	}
}

func TestDoneContext(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Acquire(ctx, "k", token(1), nil, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire = %v; want an error wrapping context.Canceled", err)
	}
	if err := s.Complete(ctx, "k", token(1), &idem.Record{}, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("complete = %v; want an error wrapping context.Canceled", err)
	}
	if _, err := s.DeleteExpired(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("delete expired = %v; want an error wrapping context.Canceled", err)
	}
	if err := s.Migrate(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("migrate = %v; want an error wrapping context.Canceled", err)
	}
	if n := countRows(t, s); n != 0 {
		t.Fatalf("%d rows after calls with a done context; want 0", n)
	}
	// A deadline that passes while the statement waits for a row lock.
	tx, err := s.pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(context.Background(), s.sql.acquire, []byte("locked"), []byte("sixteen byte tok"), nil, int64(60e6)); err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer dcancel()
	if _, err := s.Acquire(dctx, "locked", token(2), nil, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire blocked on a row lock = %v; want an error wrapping context.DeadlineExceeded", err)
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	s := newTestStore(t, Options{}) // migrated once
	ctx := context.Background()
	if _, err := s.Acquire(ctx, "kept", token(1), nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	migrateConcurrently(t, s)
	if rec, err := s.Acquire(ctx, "kept", token(2), nil, time.Minute); err != nil || rec == nil || rec.Token != token(1) {
		t.Fatalf("record after migrating again = %+v, %v; want it kept", rec, err)
	}
	// Concurrent first-time migrations of a fresh table do not collide.
	fresh, err := New(s.pool, Options{Table: "idem_test_" + randomSuffix(t), SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropTable(t, s.pool, fresh.Table()) })
	migrateConcurrently(t, fresh)
	if countRows(t, fresh) != 0 {
		t.Fatal("fresh table is not empty")
	}
}

// migrateConcurrently runs s.Migrate from several goroutines at once.
func migrateConcurrently(t *testing.T, s *Store) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Migrate(context.Background())
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate of %s: %v", s.Table(), err)
		}
	}
}

func TestSchemaConstCreatesAUsableTable(t *testing.T) {
	p := testPool(t)
	ctx := context.Background()
	schema := newTestSchema(t)
	// Run the documented SQL the way a team's own migration would.
	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+quote("", schema)); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, Schema); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := New(p, Options{Table: schema + "." + DefaultTable, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil { // a no-op on the existing table
		t.Fatal(err)
	}
	if rec, err := s.Acquire(ctx, "k", token(1), []byte("fp"), time.Minute); rec != nil || err != nil {
		t.Fatalf("acquire on the table made from Schema = %v, %v", rec, err)
	}
	if err := s.Complete(ctx, "k", token(1), &idem.Record{Status: 200, Body: []byte("ok")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := s.SchemaSQL(); strings.Contains(got, "idem_records") && !strings.Contains(got, `"`+schema+`"."idem_records"`) {
		t.Fatalf("SchemaSQL does not name the configured table:\n%s", got)
	}
}

func TestDeleteExpired(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx := context.Background()
	insertRows(t, s, "old-", 2*deleteBatch+7, -time.Second) // more than one batch
	insertRows(t, s, "live-", 5, time.Hour)
	if _, err := s.Acquire(ctx, "completed", token(1), nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, "completed", token(1), &idem.Record{Status: 200}, time.Hour); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteExpired(ctx)
	if err != nil || n != 2*deleteBatch+7 {
		t.Fatalf("DeleteExpired = %d, %v; want %d, nil", n, err, 2*deleteBatch+7)
	}
	if got := countRows(t, s); got != 6 {
		t.Fatalf("%d rows left; want the 6 live ones", got)
	}
	if n, err := s.DeleteExpired(ctx); n != 0 || err != nil {
		t.Fatalf("second DeleteExpired = %d, %v; want 0, nil", n, err)
	}
}

func TestSweeperDeletesUntilClosed(t *testing.T) {
	s := newTestStore(t, Options{SweepInterval: 20 * time.Millisecond})
	insertRows(t, s, "a-", 10, -time.Second)
	insertRows(t, s, "live-", 3, time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for countRows(t, s) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the sweeper left %d rows; want the 3 live ones", countRows(t, s))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // a second Close is harmless
		t.Fatal(err)
	}
	insertRows(t, s, "b-", 10, -time.Second)
	time.Sleep(200 * time.Millisecond) // ten sweep intervals
	if got := countRows(t, s); got != 13 {
		t.Fatalf("%d rows after Close; want 13: the sweeper should have stopped", got)
	}
	// The store stays usable after Close.
	if rec, err := s.Acquire(context.Background(), "b-1", token(1), nil, time.Minute); rec != nil || err != nil {
		t.Fatalf("acquire of an expired key after Close = %v, %v; want nil, nil", rec, err)
	}
}

func TestTableNames(t *testing.T) {
	long := strings.Repeat("a", maxTable)
	valid := []string{"", "idem", "_x1", "public.idem_records", long, strings.Repeat("s", 63) + "." + long}
	invalid := []string{
		"Idem", "idem-records", "1idem", "idem records", `idem"; DROP TABLE x; --`, "a.b.c", ".idem", "idem.",
		long + "a", strings.Repeat("s", 64) + ".idem", "idém",
	}
	p := testPoolOrNil(t)
	for _, name := range valid {
		if _, _, err := splitTableName(name); name != "" && err != nil {
			t.Errorf("table %q rejected: %v", name, err)
		}
		if p != nil {
			s, err := New(p, Options{Table: name, SweepInterval: -1})
			if err != nil {
				t.Errorf("New with table %q: %v", name, err)
			} else if want := name; want != "" && s.Table() != want {
				t.Errorf("Table() = %q; want %q", s.Table(), want)
			}
		}
	}
	for _, name := range invalid {
		if _, _, err := splitTableName(name); !errors.Is(err, ErrInvalidTable) {
			t.Errorf("table %q: error %v; want ErrInvalidTable", name, err)
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New with a nil pool succeeded")
	}
}

func TestSchemaQualifiedTable(t *testing.T) {
	p := testPool(t)
	ctx := context.Background()
	schema := newTestSchema(t)
	s := newTestStore(t, Options{Table: schema + ".order"}) // a reserved word, quoted
	if rec, err := s.Acquire(ctx, "k", token(1), nil, time.Minute); rec != nil || err != nil {
		t.Fatalf("acquire = %v, %v", rec, err)
	}
	var n int
	if err := p.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = 'order' AND indexname = 'order_expires_at_idx'`, schema).Scan(&n); err != nil || n != 1 {
		t.Fatalf("expiry index found %d times (%v); want once", n, err)
	}
}

// waitForLockWait waits until a statement on the store's table is waiting
// for a lock held by another transaction.
func waitForLockWait(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		err := s.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`,
			s.Table()).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the acquire never waited for the other transaction")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAcquireAgainstUncommittedWriter checks the path where the row that
// decides an acquire is committed after the acquire's snapshot was taken:
// the acquire waits for the writer and answers with its outcome.
func TestAcquireAgainstUncommittedWriter(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		expired  bool // an expired row exists before the writer starts
		rollback bool // the writer rolls back instead of committing
		same     bool // the acquire presents the writer's token
	}{
		{name: "insert committed"},
		{name: "insert committed, same token", same: true},
		{name: "takeover committed", expired: true},
		{name: "insert rolled back", rollback: true},
		{name: "takeover rolled back", expired: true, rollback: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t, Options{})
			if tc.expired {
				insertRows(t, s, "k", 1, -time.Second) // key "k1"
			}
			tx, err := s.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			writer, mine := token(1), token(2)
			if tc.same {
				mine = writer
			}
			var won bool
			row := tx.QueryRow(ctx, s.sql.acquire, []byte("k1"), writer[:], []byte("writer"), int64(60e6))
			if err := row.Scan(&won, new(int16), new([]byte), new([]byte), new(int), new([]byte), new([]byte), new(bool), new(time.Time)); err != nil || !won {
				t.Fatalf("writer's acquire = %v, %v; want a win", won, err)
			}
			type result struct {
				rec *idem.Record
				err error
			}
			done := make(chan result, 1)
			go func() {
				rec, err := s.Acquire(ctx, "k1", mine, []byte("mine"), time.Minute)
				done <- result{rec, err}
			}()
			waitForLockWait(t, s)
			if tc.rollback {
				err = tx.Rollback(ctx)
			} else {
				err = tx.Commit(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			r := <-done
			switch {
			case r.err != nil:
				t.Fatal(r.err)
			case tc.rollback && r.rec != nil:
				t.Fatalf("acquire after the writer rolled back = %+v; want a win", r.rec)
			case !tc.rollback && (r.rec == nil || r.rec.Token != writer || string(r.rec.Fingerprint) != "writer" || r.rec.State != idem.InFlight):
				t.Fatalf("acquire after the writer committed = %+v; want the writer's in-flight record", r.rec)
			}
			// Whoever won holds the lease: its Complete succeeds.
			holder := writer
			if tc.rollback {
				holder = mine
			}
			if err := s.Complete(ctx, "k1", holder, &idem.Record{Status: 200}, time.Hour); err != nil {
				t.Fatalf("complete by the winner: %v", err)
			}
		})
	}
}

func TestLongestTableNameKeepsItsIndexName(t *testing.T) {
	table := "idem_test_" + randomSuffix(t)
	table += strings.Repeat("x", maxTable-len(table))
	s := newTestStore(t, Options{Table: table})
	var n int
	err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_indexes WHERE tablename = $1 AND indexname = $2`,
		table, table+indexSuffix).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("index %s found %d times (%v); want once, its name not truncated", table+indexSuffix, n, err)
	}
}

// TestEngineReplays runs requests through an engine backed by the store:
// the first runs its handler, the retry replays its response.
func TestEngineReplays(t *testing.T) {
	s := newTestStore(t, Options{})
	engine, err := idem.New(idem.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	request := func() *idem.Request {
		return &idem.Request{Method: "POST", Path: "/orders", Header: http.Header{"Idempotency-Key": {"order-1"}},
			Body: strings.NewReader(`{"amount":100}`)}
	}
	d := engine.Begin(request())
	if d.Action != idem.Run {
		t.Fatalf("first request: action %v; want run", d.Action)
	}
	if err := d.Lease.Complete(idem.Recorded{Status: 201, Header: http.Header{"Content-Type": {"application/json"}, "Set-Cookie": {"s=1"}},
		Body: []byte(`{"id":7}`)}); err != nil {
		t.Fatal(err)
	}
	d = engine.Begin(request())
	if d.Action != idem.Respond || !d.Replayed {
		t.Fatalf("retry: action %v, replayed %v; want a replay", d.Action, d.Replayed)
	}
	if d.Response.Status != 201 || string(d.Response.Body) != `{"id":7}` {
		t.Fatalf("replay = %d %q; want 201 {\"id\":7}", d.Response.Status, d.Response.Body)
	}
	if got := fmt.Sprint(d.Response.Header); got != "[{Content-Type application/json} {Idempotent-Replayed true}]" {
		t.Fatalf("replayed header = %s", got)
	}
	if n := countRows(t, s); n != 1 {
		t.Fatalf("%d rows; want 1", n)
	}
	var raw int
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+quote("", s.Table())+" WHERE position('order-1'::bytea in key) > 0").Scan(&raw); err != nil || raw != 0 {
		t.Fatalf("%d rows hold the raw client key (%v); want none", raw, err)
	}
}
