package upload

import (
	"context"
	"errors"
	"testing"
	"time"
)

// waitState waits until b's state satisfies cond (it changes only through
// dispatch, which signals every change), failing the test after a minute.
func waitState(t *testing.T, b *budget, what string, cond func(budgetState) bool) {
	t.Helper()
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for {
		st, changed := b.state()
		if cond(st) {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("waiting for %s: still %+v", what, st)
		}
	}
}

// acquireAsync runs a.acquire(n) in a goroutine and returns its result.
func acquireAsync(a *account, n int64, wait time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() { done <- a.acquire(context.Background(), n, wait) }()
	return done
}

const long = time.Hour // a wait no test reaches: results come from state changes

// TestBudgetHoldersFirst: when room comes free, a request that already
// holds part of a message is served before one that holds nothing, even
// if it began to wait later.
func TestBudgetHoldersFirst(t *testing.T) {
	t.Parallel()
	b := newBudget(10, 0)
	a, holder, fresh := b.open(""), b.open(""), b.open("")
	if err := a.acquire(t.Context(), 8, long); err != nil {
		t.Fatal(err)
	}
	if err := holder.acquire(t.Context(), 2, long); err != nil {
		t.Fatal(err)
	}
	freshDone := acquireAsync(fresh, 4, long)
	waitState(t, b, "the fresh request to wait", func(s budgetState) bool { return s.waiters == 1 })
	holderDone := acquireAsync(holder, 4, long)
	waitState(t, b, "the holder to wait", func(s budgetState) bool { return s.waiters == 2 })
	a.close() // 8 free: room for one of the two 4s... and the other
	if err := <-holderDone; err != nil {
		t.Fatalf("holder: %v", err)
	}
	if err := <-freshDone; err != nil {
		t.Fatalf("fresh: %v", err)
	}
	if got := holder.Held(); got != 6 {
		t.Errorf("holder holds %d, want 6", got)
	}

	// Now 10 of 10 are held (holder 6, fresh 4). A fresh request queued
	// first must not take what a holder waits for.
	other := b.open("")
	otherDone := acquireAsync(other, 1, long)
	waitState(t, b, "other to wait", func(s budgetState) bool { return s.waiters == 1 })
	holderDone = acquireAsync(holder, 3, long)
	waitState(t, b, "holder to wait", func(s budgetState) bool { return s.waiters == 2 })
	fresh.release(3) // 3 free: exactly the holder's need, nothing for other
	if err := <-holderDone; err != nil {
		t.Fatalf("holder, second wait: %v", err)
	}
	select {
	case err := <-otherDone:
		t.Fatalf("a request holding nothing was served before the waiting holder, or at once: %v", err)
	default:
	}
	fresh.close()
	if err := <-otherDone; err != nil {
		t.Fatal(err)
	}
}

// TestBudgetBreaksDeadlock: two requests each hold part of a message and
// both need more of a budget they fill; neither can ever be served, so the
// one holding less is refused at once (not after the wait), and the other
// is served with what it gives back.
func TestBudgetBreaksDeadlock(t *testing.T) {
	t.Parallel()
	b := newBudget(10, 0)
	big, small := b.open(""), b.open("")
	if err := big.acquire(t.Context(), 7, long); err != nil {
		t.Fatal(err)
	}
	if err := small.acquire(t.Context(), 3, long); err != nil {
		t.Fatal(err)
	}
	bigDone := acquireAsync(big, 2, long)
	waitState(t, b, "big to wait", func(s budgetState) bool { return s.blocked == 1 })
	// small is not waiting (its request is being read): big waits for it.
	select {
	case err := <-bigDone:
		t.Fatalf("big was answered while small could still give bytes back: %v", err)
	default:
	}
	smallDone := acquireAsync(small, 2, long)
	err := <-smallDone
	if !errors.Is(err, errDeadlock) {
		t.Fatalf("small, the lesser holder in a deadlock: %v, want errDeadlock", err)
	}
	select {
	case err := <-bigDone:
		t.Fatalf("big was answered before small gave its bytes back: %v", err)
	default:
	}
	small.close() // its request ends with the error
	if err := <-bigDone; err != nil {
		t.Fatalf("big after small gave back: %v", err)
	}
}

// TestBudgetTenantShare: a tenant cannot hold more than its share, and its
// waiting does not hold back another tenant; a tenant whose own holders
// all wait on its share is broken out of its deadlock like the budget's.
func TestBudgetTenantShare(t *testing.T) {
	t.Parallel()
	b := newBudget(10, 6)
	a1, a2, other := b.open("a"), b.open("a"), b.open("b")
	if err := a1.acquire(t.Context(), 4, long); err != nil {
		t.Fatal(err)
	}
	if err := a2.acquire(t.Context(), 2, long); err != nil {
		t.Fatal(err)
	}
	a1Done := acquireAsync(a1, 1, long) // over a's share of 6
	waitState(t, b, "a1 to wait", func(s budgetState) bool { return s.blocked == 1 })
	if err := other.acquire(t.Context(), 4, long); err != nil {
		t.Fatalf("tenant b behind tenant a's full share: %v", err)
	}
	if err := <-acquireAsync(a2, 1, long); !errors.Is(err, errDeadlock) {
		t.Fatalf("a2, the lesser of a's two waiting holders: %v, want errDeadlock", err)
	}
	a2.close()
	if err := <-a1Done; err != nil {
		t.Fatalf("a1 after a2 gave back: %v", err)
	}
	// No tenant: not limited by shares.
	none := b.open("")
	other.close()
	if err := none.acquire(t.Context(), 5, long); err != nil {
		t.Fatalf("a request of no tenant: %v", err)
	}
}

// TestBudgetWaitAndCancel: a request that finds no room fails after the
// wait (a *waitTimeout) or when its context ends, gives nothing up it did
// not have, and leaves the budget consistent.
func TestBudgetWaitAndCancel(t *testing.T) {
	t.Parallel()
	b := newBudget(4, 0)
	full := b.open("")
	if err := full.acquire(t.Context(), 4, long); err != nil {
		t.Fatal(err)
	}
	var timeout *waitTimeout
	if err := b.open("").acquire(t.Context(), 1, time.Millisecond); !errors.As(err, &timeout) {
		t.Fatalf("no room: %v, want a wait timeout", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.open("").acquire(ctx, 1, long) }()
	waitState(t, b, "the request to wait", func(s budgetState) bool { return s.waiters == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	full.close()
	if st, _ := b.state(); st.used != 0 || st.holders != 0 || st.blocked != 0 || st.waiters != 0 {
		t.Errorf("after everything ended the budget is %+v, want empty", st)
	}
	if err := full.acquire(t.Context(), 1, long); !errors.Is(err, errEnded) {
		t.Errorf("acquire on a closed account: %v, want errEnded", err)
	}
}
