package idem

import (
	"sync"
	"time"
)

// renewalShards is how many independently locked queues an engine spreads
// its leases over.
const renewalShards = 8

// renewals schedules the first renewal of leases (B16) on one timer instead
// of one timer per lease. Every lease of an engine falls due half a lease
// time after it starts, so leases fall due in the order they were queued,
// and a list in that order is the whole schedule: queueing and dequeueing
// a lease cost no allocation. A lease still running when it falls due gets
// a timer of its own for later renewals.
type renewals struct {
	mu         sync.Mutex
	head, tail *Lease
	timer      *time.Timer
	// armed is set while timer is set to fire: a queue that empties
	// leaves it armed, so a lease queued and dequeued within one timer
	// period (the common case) costs no timer operation.
	armed bool
	after time.Duration
	// clock is Config.Clock: due times follow the engine's clock, as the
	// lease's expiry does. The timer itself runs on real time, and waits
	// at most after, so a clock moved by hand is seen within that.
	clock Clock
}

// add queues l, which started at start by the engine's clock, to be
// renewed after r.after.
func (r *renewals) add(l *Lease, start time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l.due = start.Add(r.after)
	l.queued, l.prev, l.next = true, r.tail, nil
	if r.tail != nil {
		// The timer is set no later than for the head, which falls due no
		// later than l.
		r.tail.next = l
		r.tail = l
		return
	}
	r.head, r.tail = l, l
	switch {
	case r.armed:
		// It fires within r.after, and fire sets it again for l.
	case r.timer == nil:
		r.timer, r.armed = time.AfterFunc(r.after, r.fire), true
	default:
		r.timer.Reset(r.after)
		r.armed = true
	}
}

// remove dequeues l if it is still queued.
func (r *renewals) remove(l *Lease) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.queued {
		r.unlink(l)
	}
}

func (r *renewals) unlink(l *Lease) {
	if l.prev != nil {
		l.prev.next = l.next
	} else {
		r.head = l.next
	}
	if l.next != nil {
		l.next.prev = l.prev
	} else {
		r.tail = l.prev
	}
	l.queued, l.prev, l.next = false, nil, nil
}

// fire starts the renewal of every lease that fell due, each in a goroutine
// of its own as a store call may wait, and sets the timer for the next.
func (r *renewals) fire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.armed = false
	now := r.clock.Now()
	for r.head != nil && !now.Before(r.head.due) {
		l := r.head
		r.unlink(l)
		go l.renew()
	}
	if r.head != nil {
		r.timer.Reset(min(r.head.due.Sub(now), r.after))
		r.armed = true
	}
}
