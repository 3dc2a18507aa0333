package upload

import (
	"context"
	"errors"
	"sync"
	"time"
)

// budget is a shared allowance of bytes, such as the request-body bytes a
// server holds in memory at once, with an optional fair share per tenant
// (a token). Requests take bytes from it through an [account] as the bytes
// arrive and give them back when they are done with them.
//
// A request takes the bytes of a message before it reads them, but never
// more than [Limits].MaxAheadBytes ahead of what it has read, so nobody holds much that
// they have not sent; the price is that requests holding part of a large
// message can wait for each other.
// The budget breaks such a wait at once rather than after a timeout: a
// request that already holds bytes may wait only while some other holder is
// not waiting (it is being read, or its handler is working, and will give
// bytes back); when every holder of the exhausted budget (or of one
// tenant's share) waits, the one holding the least is refused: it loses the
// least work, and the others, nearer the end of their messages, go on (if
// what it gives back is not enough, the next least is refused once it has
// given it back). Holders are served before requests that hold nothing, so
// that started messages finish first.
type budget struct {
	mu        sync.Mutex
	total     int64 // capacity, bytes
	used      int64
	peak      int64 // the most used, for tests
	tenantCap int64 // each tenant's share, bytes; 0: no shares
	holders   int   // accounts holding bytes
	blocked   int   // of those, how many wait in acquire
	tenants   map[string]*tenantUse
	waiters   []*waiter     // in arrival order
	changed   chan struct{} // closed and replaced at every change, for tests
}

// budgetState is a snapshot of a budget, for tests.
type budgetState struct {
	used, peak       int64
	holders, blocked int
	waiters          int
}

// state returns a snapshot of b and a channel closed at its next change.
func (b *budget) state() (budgetState, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return budgetState{used: b.used, peak: b.peak, holders: b.holders, blocked: b.blocked, waiters: len(b.waiters)}, b.changed
}

// tenantUse is one tenant's part of a budget.
type tenantUse struct {
	used    int64
	holders int
	blocked int
}

// waiter is an acquire waiting for room.
type waiter struct {
	acc    *account
	n      int64
	holder bool          // acc held bytes when it began to wait
	done   chan struct{} // closed when granted or refused
	err    error         // set before done closes: nil when granted
}

// errDeadlock is why a holder is refused when every holder waits.
var errDeadlock = errors.New("every request holding part of the budget is waiting for more")

// errEnded is returned to an acquire of an account already closed.
var errEnded = errors.New("request ended")

func newBudget(total, tenantCap int64) *budget {
	return &budget{total: total, tenantCap: tenantCap, tenants: make(map[string]*tenantUse), changed: make(chan struct{})}
}

// account is one request's use of a budget. Its methods are safe for
// concurrent use.
type account struct {
	b      *budget
	tenant *tenantUse // nil: not counted per tenant
	held   int64
	closed bool
}

// open returns an account for a request of tenant ("" for none).
func (b *budget) open(tenant string) *account {
	a := &account{b: b}
	if tenant != "" && b.tenantCap > 0 {
		b.mu.Lock()
		t := b.tenants[tenant]
		if t == nil {
			t = &tenantUse{}
			b.tenants[tenant] = t
		}
		a.tenant = t
		b.mu.Unlock()
	}
	return a
}

// Held returns the bytes the account holds.
func (a *account) Held() int64 {
	a.b.mu.Lock()
	defer a.b.mu.Unlock()
	return a.held
}

// acquire takes n bytes (n at most the tenant share and the total), waiting
// up to wait for room. It fails with ctx's error when ctx ends, with
// [errDeadlock] when the wait could never end (see [budget]), and with a
// *waitTimeout when wait passes.
func (a *account) acquire(ctx context.Context, n int64, wait time.Duration) error {
	if n <= 0 {
		return nil
	}
	b := a.b
	b.mu.Lock()
	if a.closed {
		b.mu.Unlock()
		return errEnded
	}
	w := &waiter{acc: a, n: n, holder: a.held > 0, done: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	if w.holder {
		b.blocked++
		if a.tenant != nil {
			a.tenant.blocked++
		}
	}
	b.dispatch()
	b.mu.Unlock()

	select {
	case <-w.done:
		return w.err
	default:
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var err error
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = &waitTimeout{wait: wait}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.done: // granted or refused meanwhile: that answer stands
		return w.err
	default:
	}
	b.finish(w, err)
	b.dispatch() // others may fit now, or be deadlocked without w
	return err
}

// waitTimeout is the error of an acquire that found no room in time.
type waitTimeout struct{ wait time.Duration }

func (e *waitTimeout) Error() string { return "no room within " + e.wait.String() }

// release gives back n of the bytes the account holds.
func (a *account) release(n int64) {
	if n <= 0 {
		return
	}
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.release(a, n)
	b.dispatch()
}

// close gives back everything the account holds; later acquires fail.
func (a *account) close() {
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	a.closed = true
	b.release(a, a.held)
	b.dispatch()
}

// release returns n bytes of a to the budget. b.mu is held.
func (b *budget) release(a *account, n int64) {
	n = min(n, a.held)
	if n <= 0 {
		return
	}
	a.held -= n
	b.used -= n
	if a.tenant != nil {
		a.tenant.used -= n
	}
	if a.held == 0 {
		b.holders--
		if a.tenant != nil {
			a.tenant.holders--
		}
	}
}

// grant gives w its bytes. b.mu is held.
func (b *budget) grant(w *waiter) {
	a := w.acc
	if a.held == 0 {
		b.holders++
		if a.tenant != nil {
			a.tenant.holders++
		}
	}
	a.held += w.n
	b.used += w.n
	b.peak = max(b.peak, b.used)
	if a.tenant != nil {
		a.tenant.used += w.n
	}
	b.finish(w, nil)
}

// finish ends w's wait with err (nil: granted) and forgets it. b.mu is held.
func (b *budget) finish(w *waiter, err error) {
	if w.holder {
		b.blocked--
		if w.acc.tenant != nil {
			w.acc.tenant.blocked--
		}
	}
	b.remove(w)
	w.err = err
	close(w.done)
}

// remove takes w out of the queue. b.mu is held.
func (b *budget) remove(w *waiter) {
	for i, x := range b.waiters {
		if x == w {
			b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
			return
		}
	}
}

// smallRequest is the largest acquire that may be served ahead of larger
// ones waiting for the total: a control message (64 KiB) and its read, so
// that small requests never wait behind a large one (head-of-line
// blocking). They are short-lived, so they cannot hold a large one back for
// long.
const smallRequest = 64<<10 + 1

// dispatch grants what fits, holders first and each class in arrival
// order, then breaks a wait that could never end. Once a waiter is stopped
// by the total, only small requests ([smallRequest]) may pass it; a waiter
// stopped by its own tenant's share is passed over. b.mu is held.
func (b *budget) dispatch() {
	stopped := false // a waiter waits for the total
	for _, holders := range []bool{true, false} {
		for i := 0; i < len(b.waiters); {
			w := b.waiters[i]
			if w.holder != holders {
				i++
				continue
			}
			if t := w.acc.tenant; t != nil && t.used+w.n > b.tenantCap {
				i++
				continue
			}
			if b.used+w.n > b.total || stopped && w.n > smallRequest {
				stopped = true
				i++
				continue
			}
			b.grant(w) // removes w from b.waiters
		}
	}
	b.breakDeadlock()
	close(b.changed)
	b.changed = make(chan struct{})
}

// breakDeadlock refuses one waiting holder when every holder of the budget,
// or of one tenant's share, waits and none can be served: nothing would
// ever be given back. It refuses the waiting holder that holds the least,
// the latest to wait among equals. b.mu is held.
func (b *budget) breakDeadlock() {
	for {
		var victim *waiter
		for _, w := range b.waiters {
			if !w.holder {
				continue
			}
			t := w.acc.tenant
			stuck := b.holders > 0 && b.blocked == b.holders ||
				t != nil && t.used+w.n > b.tenantCap && t.blocked == t.holders
			if stuck && (victim == nil || w.acc.held <= victim.acc.held) {
				victim = w
			}
		}
		if victim == nil {
			return
		}
		b.finish(victim, errDeadlock)
	}
}
