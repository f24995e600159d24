package idempg

import (
	"context"
	"time"
)

// deleteBatch bounds the rows one DELETE removes, so that a large backlog
// is removed in short transactions.
const deleteBatch = 1000

// DeleteExpired deletes every row whose expiry has passed by the database
// clock and returns how many it deleted. It deletes in batches of short
// transactions, skips rows that a concurrent request is taking over, and
// stops early, with an error wrapping ctx.Err(), when ctx is done. Run it
// from a scheduled job when the store's sweeper is off.
func (s *Store) DeleteExpired(ctx context.Context) (int64, error) {
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, wrapErr(ctx, "delete expired", err)
		}
		tag, err := s.pool.Exec(ctx, s.sql.deleteExpired, deleteBatch)
		if err != nil {
			return total, wrapErr(ctx, "delete expired", err)
		}
		n := tag.RowsAffected()
		total += n
		if n < deleteBatch {
			return total, nil
		}
	}
}

// sweep calls DeleteExpired every interval until ctx is cancelled.
func (s *Store) sweep(ctx context.Context, every time.Duration) {
	defer close(s.sweeperDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.DeleteExpired(ctx); err != nil && ctx.Err() == nil && s.logger != nil {
				s.logger.WarnContext(ctx, "idempg: sweeping expired records failed", "table", s.table, "error", err)
			}
		}
	}
}
