package idempg

import (
	"context"
	"fmt"
	"strings"
)

// Schema creates the store's table under its default name, DefaultTable.
// Migrate runs the same statements (for the configured table name), so
// teams that manage their own migrations can copy this text instead; for
// another table name, use Store.SchemaSQL.
//
// The key is the engine's storage key (a hash of scope and client key),
// never a client's raw key. state is 1 for in-flight and 2 for completed.
// header holds the recorded header fields in the store's own compact binary
// encoding, NULL when there are none; body holds the recorded body byte for
// byte. Both are NULL for a record that is in flight or not replayable. expires_at is the end of the
// lease for an in-flight row and the end of the retention time for a
// completed one, always computed by the database clock.
const Schema = `CREATE TABLE IF NOT EXISTS idem_records (
    key            bytea       PRIMARY KEY,
    state          smallint    NOT NULL CHECK (state IN (1, 2)),
    token          bytea       NOT NULL,
    fingerprint    bytea,
    status         integer     NOT NULL DEFAULT 0,
    header         bytea,
    body           bytea,
    not_replayable boolean     NOT NULL DEFAULT false,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS idem_records_expires_at_idx ON idem_records (expires_at);
`

// Identifier limits: PostgreSQL truncates names past 63 bytes, and the
// index name adds indexSuffix to the table name.
const (
	maxIdentifier = 63
	indexSuffix   = "_expires_at_idx"
	maxTable      = maxIdentifier - len(indexSuffix)
)

// splitTableName validates a table name, optionally qualified by a schema.
func splitTableName(name string) (schema, table string, err error) {
	table = name
	if i := strings.IndexByte(name, '.'); i >= 0 {
		schema, table = name[:i], name[i+1:]
		if err := checkIdentifier(schema, maxIdentifier); err != nil {
			return "", "", fmt.Errorf("%w %q: schema %w", ErrInvalidTable, name, err)
		}
	}
	if err := checkIdentifier(table, maxTable); err != nil {
		return "", "", fmt.Errorf("%w %q: table %w", ErrInvalidTable, name, err)
	}
	return schema, table, nil
}

func checkIdentifier(id string, maxLen int) error {
	switch {
	case id == "":
		return fmt.Errorf("name is empty")
	case len(id) > maxLen:
		return fmt.Errorf("name is longer than %d characters", maxLen)
	case id[0] >= '0' && id[0] <= '9':
		return fmt.Errorf("name starts with a digit")
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("name has %q; use lower-case letters, digits and underscores", c)
		}
	}
	return nil
}

// statements are the SQL texts of one store, built once for its table.
type statements struct {
	schema, acquire, complete, release, renew, deleteExpired string
	migrateLock                                              string

	// The statements of the transactional mode (see tx.go).
	acquireNoWait, lookup, lock, completeLocked, releaseOwn string
}

// newStatements builds the statements for a validated table name. Every
// statement reads the database clock through now(), which is fixed for the
// duration of a statement, so one statement never sees two times.
func newStatements(schema, table string) statements {
	t := quote(schema, table)
	index := quote("", table+indexSuffix)
	r := strings.NewReplacer("idem_records_expires_at_idx", index, "idem_records", t)
	return statements{
		schema:      r.Replace(Schema),
		migrateLock: "idempg.migrate:" + t,
		// The first CTE reads a live row from the statement's snapshot: a
		// lookup of a live record (a replay, a duplicate in flight) writes
		// nothing. Otherwise the upsert inserts an in-flight row or, on a
		// conflict, locks the latest committed version of the row: if that
		// has expired it writes a new lease over it, and if it is live (it
		// was committed after the snapshot) the update is a no-op that
		// keeps every value and returns them. The caller won when the row
		// it returns carries the caller's token and the new expiry.
		acquire: acquireSQL(t, false),
		complete: `UPDATE ` + t + ` SET state = 2, status = $3, header = $4, body = $5, not_replayable = $6,
    expires_at = now() + $7::bigint * interval '1 microsecond'
WHERE key = $1 AND token = $2 AND state = 1 AND expires_at > now()`,
		release: `DELETE FROM ` + t + `
WHERE key = $1 AND token = $2 AND state = 1 AND expires_at > now()`,
		renew: `UPDATE ` + t + ` SET expires_at = now() + $3::bigint * interval '1 microsecond'
WHERE key = $1 AND token = $2 AND state = 1 AND expires_at > now()`,
		// The transactional mode's acquire differs in one step: a row
		// whose lease has expired is first locked FOR UPDATE NOWAIT, which
		// fails at once (SQLSTATE 55P03) while a request's transaction
		// holds the row FOR KEY SHARE (see lock), so an expired lease is
		// never taken over while its transaction may still commit.
		// Renewals only take FOR NO KEY UPDATE, which FOR KEY SHARE
		// allows.
		acquireNoWait: acquireSQL(t, true),
		// lookup reads the row without a lock, for a duplicate that found
		// it locked: a running request's transaction, a takeover or a
		// sweep holds it. An expired row reads as in flight (the request
		// holding it may still commit, or it is on its way out), never as
		// a response to replay past its retention.
		lookup: `WITH r AS (SELECT *, expires_at > now() AS live FROM ` + t + ` WHERE key = $1)
SELECT false, CASE WHEN live THEN state ELSE 1::smallint END, token, fingerprint, CASE WHEN live THEN status ELSE 0 END,
    CASE WHEN live THEN header END, CASE WHEN live THEN body END, live AND not_replayable, expires_at
FROM r`,
		// lock is the first statement of a request's transaction: it holds
		// the in-flight row FOR KEY SHARE until the transaction ends.
		lock: `SELECT 1 FROM ` + t + ` WHERE key = $1 AND token = $2 AND state = 1 FOR KEY SHARE`,
		// completeLocked and releaseOwn need no expiry check: while the
		// transaction held the row, no other request could take it over,
		// so the token still holding it means the lease is the caller's.
		// completeLocked is sent with the COMMIT in one round trip, so it
		// fails (division_by_zero, 22012) when it matched no row: the
		// transaction is then aborted and the COMMIT cannot commit the
		// handler's writes without the record.
		completeLocked: `WITH done AS (
    UPDATE ` + t + ` SET state = 2, status = $3, header = $4, body = $5, not_replayable = $6,
        expires_at = now() + $7::bigint * interval '1 microsecond'
    WHERE key = $1 AND token = $2 AND state = 1
    RETURNING 1
)
SELECT 1 / count(*) FROM done`,
		releaseOwn: `DELETE FROM ` + t + ` WHERE key = $1 AND token = $2 AND state = 1`,
		// Rows locked by a concurrent acquire are skipped, and the outer
		// condition is checked again on the latest version of each row, so
		// a row taken over meanwhile is never deleted.
		deleteExpired: `DELETE FROM ` + t + ` WHERE key IN (
    SELECT key FROM ` + t + ` WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED
) AND expires_at <= now()`,
	}
}

// acquireSQL is the acquire statement for the quoted table t. With
// lockExpired, an expired row is first locked FOR UPDATE NOWAIT (the
// transactional mode's acquire): the scalar subquery makes the INSERT's
// SELECT evaluate the locking CTE before it inserts or updates anything.
func acquireSQL(t string, lockExpired bool) string {
	expired, evaluated := "", ""
	if lockExpired {
		expired = `
), expired AS (
    SELECT 1 FROM ` + t + ` WHERE key = $1::bytea AND expires_at <= now() FOR UPDATE NOWAIT`
		evaluated = ` AND (SELECT count(*) FROM expired) >= 0`
	}
	return `WITH live AS (
    SELECT state, token, fingerprint, status, header, body, not_replayable, expires_at
    FROM ` + t + ` WHERE key = $1::bytea AND expires_at > now()` + expired + `
), acquired AS (
    INSERT INTO ` + t + ` AS r (key, state, token, fingerprint, status, header, body, not_replayable, expires_at)
    SELECT $1::bytea, 1, $2::bytea, $3::bytea, 0, NULL, NULL, false, now() + $4::bigint * interval '1 microsecond'
    WHERE NOT EXISTS (SELECT FROM live)` + evaluated + `
    ON CONFLICT (key) DO UPDATE SET
        state          = CASE WHEN r.expires_at <= now() THEN excluded.state          ELSE r.state          END,
        token          = CASE WHEN r.expires_at <= now() THEN excluded.token          ELSE r.token          END,
        fingerprint    = CASE WHEN r.expires_at <= now() THEN excluded.fingerprint    ELSE r.fingerprint    END,
        status         = CASE WHEN r.expires_at <= now() THEN excluded.status         ELSE r.status         END,
        header         = CASE WHEN r.expires_at <= now() THEN excluded.header         ELSE r.header         END,
        body           = CASE WHEN r.expires_at <= now() THEN excluded.body           ELSE r.body           END,
        not_replayable = CASE WHEN r.expires_at <= now() THEN excluded.not_replayable ELSE r.not_replayable END,
        expires_at     = CASE WHEN r.expires_at <= now() THEN excluded.expires_at     ELSE r.expires_at     END
    RETURNING r.token = $2::bytea AND r.expires_at = now() + $4::bigint * interval '1 microsecond',
        r.state, r.token, r.fingerprint, r.status, r.header, r.body, r.not_replayable, r.expires_at
)
SELECT * FROM acquired
UNION ALL
SELECT false, * FROM live`
}

// SchemaSQL returns the statements that create the store's table and index:
// Schema with the store's table name, for teams that run their own
// migrations.
func (s *Store) SchemaSQL() string { return s.sql.schema }

// Migrate creates the store's table and index unless they exist. It is
// idempotent and safe to run from several processes at once: it holds a
// transaction-scoped advisory lock while it runs. It never alters an
// existing table.
func (s *Store) Migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return wrapErr(ctx, "migrate", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", s.sql.migrateLock); err != nil {
		return wrapErr(ctx, "migrate", err)
	}
	if _, err := tx.Exec(ctx, s.sql.schema); err != nil {
		return wrapErr(ctx, "migrate", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return wrapErr(ctx, "migrate", err)
	}
	return nil
}
