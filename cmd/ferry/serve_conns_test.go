package main

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// acceptAsync runs l.Accept in a goroutine and returns its result.
func acceptAsync(l *connLimiter) <-chan net.Conn {
	c := make(chan net.Conn, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			conn = nil
		}
		c <- conn
	}()
	return c
}

// dial opens a connection to ln that the test closes at its end.
func dial(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestConnLimiter: with every place taken, a new connection takes the
// place of the one idle the longest, then of the oldest that has sent
// nothing within its grace (here none: a connection accepted is at once
// past it); while every connection has a request in progress it waits,
// and it is accepted as soon as one goes idle.
func TestConnLimiter(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newConnLimiter(ln, 2, 0)
	var evicted atomic.Int32
	l.evicted = func() { evicted.Add(1) }
	t.Cleanup(func() { l.Close() })
	accept := func() net.Conn {
		t.Helper()
		dial(t, ln)
		c := <-acceptAsync(l)
		if c == nil {
			t.Fatal("accept failed")
		}
		return c
	}
	a, b := accept(), accept()
	l.track(a, http.StateActive)
	l.track(b, http.StateActive)
	l.track(b, http.StateIdle)
	// Full: b is idle, a active; a third connection takes b's place.
	c := accept()
	if _, err := b.Read(make([]byte, 1)); err == nil {
		t.Fatal("the idle connection b was not closed")
	}
	if _, ok := l.conns[b]; ok {
		t.Fatal("b is still counted")
	}
	l.track(b, http.StateClosed) // as the server reports it; ignored
	// Full: a active, c new (sent nothing): a fourth takes c's place.
	d := accept()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection c, which sent nothing, was not closed")
	}
	// Full, both with requests in progress: the next one waits.
	l.track(d, http.StateActive)
	dial(t, ln)
	next := acceptAsync(l)
	select {
	case <-next:
		t.Fatal("a connection was accepted while every place had a request in progress")
	case <-time.After(50 * time.Millisecond):
	}
	l.track(a, http.StateIdle)
	if e := <-next; e == nil {
		t.Fatal("accept failed")
	}
	if _, err := a.Read(make([]byte, 1)); err == nil {
		t.Fatal("a, gone idle, was not closed for the waiting connection")
	}
	if n := evicted.Load(); n != 3 {
		t.Errorf("%d evictions counted, want 3 (b, c, a)", n)
	}
	if n := l.Len(); n != 2 {
		t.Errorf("Len() = %d, want 2", n)
	}
}

// TestConnLimiterGrace: a connection that has not sent a request yet keeps
// its place for its grace: a new connection waits rather than take it.
func TestConnLimiterGrace(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newConnLimiter(ln, 1, time.Hour)
	t.Cleanup(func() { l.Close() })
	dial(t, ln)
	a := <-acceptAsync(l)
	dial(t, ln)
	next := acceptAsync(l)
	select {
	case <-next:
		t.Fatal("a new connection took the place of one within its grace")
	case <-time.After(50 * time.Millisecond):
	}
	l.track(a, http.StateActive)
	l.track(a, http.StateIdle)
	if c := <-next; c == nil {
		t.Fatal("accept failed")
	}
}
