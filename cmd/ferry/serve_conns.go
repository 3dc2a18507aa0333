package main

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// connLimiter is a listener that serves at most max connections at once
// (--max-connections), so that the memory they cost before any request is
// authenticated is bounded, without letting anyone hold the places with
// connections that do nothing: when all places are taken, a new
// connection takes the place of the one idle the longest (no request in
// progress: keep-alive between requests, HTTP/2 with no open stream) or,
// failing that, of the oldest that has sent no request within grace (the
// time to read a request's headers: a connection that takes longer is
// stalling); otherwise it waits. This is what nginx does with keep-alive
// connections when it runs out of connections. A client whose idle
// connection is closed opens another; a request that is refused (no
// token, say) leaves its connection idle, so an unauthenticated client
// cannot keep a place beyond one refusal, or beyond grace by sending
// nothing.
//
// It learns each connection's state from the server's ConnState hook
// ([connLimiter.track]), which must be installed on the http.Server.
type connLimiter struct {
	net.Listener
	max   int
	grace time.Duration

	// evicted, if set, is called (with mu held) for each connection
	// closed to make room for a new one.
	evicted func()

	mu    sync.Mutex
	cond  *sync.Cond
	conns map[net.Conn]*connInfo // keyed by the net.Conn Accept returned
}

// connInfo is what the limiter knows of one connection.
type connInfo struct {
	state http.ConnState
	since time.Time // when it entered state
}

// newConnLimiter returns ln limited to max connections at once, of which
// one that has not sent a request within grace may be closed for a new one.
func newConnLimiter(ln net.Listener, max int, grace time.Duration) *connLimiter {
	l := &connLimiter{Listener: ln, max: max, grace: grace, conns: make(map[net.Conn]*connInfo)}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// Accept waits for a connection and for a place for it.
func (l *connLimiter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.conns) >= l.max {
		if victim := l.evictable(); victim != nil {
			delete(l.conns, victim)
			_ = victim.Close() // the server then reports it closed
			if l.evicted != nil {
				l.evicted()
			}
			continue
		}
		l.waitChange()
	}
	l.conns[c] = &connInfo{state: http.StateNew, since: time.Now()}
	return c, nil
}

// Len returns the number of connections served now.
func (l *connLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// waitChange waits until a connection changes state, or a connection that
// has sent nothing may have passed its grace. l.mu is held.
func (l *connLimiter) waitChange() {
	t := time.AfterFunc(l.grace, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	l.cond.Wait()
	t.Stop()
}

// evictable returns the connection idle the longest, or else the oldest
// that has sent no request within grace, or nil. l.mu is held.
func (l *connLimiter) evictable() net.Conn {
	var best net.Conn
	var bestInfo *connInfo
	now := time.Now()
	for c, info := range l.conns {
		if info.state != http.StateIdle && (info.state != http.StateNew || now.Sub(info.since) < l.grace) {
			continue
		}
		switch {
		case bestInfo == nil,
			info.state == http.StateIdle && bestInfo.state == http.StateNew,
			info.state == bestInfo.state && info.since.Before(bestInfo.since):
			best, bestInfo = c, info
		}
	}
	return best
}

// track is the http.Server's ConnState hook. The server may report a
// connection as a wrapper of the one Accept returned: a *tls.Conn, or, for
// HTTP/2 without TLS, a *tls.Conn around a wrapper of it.
func (l *connLimiter) track(c net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	info, ok := l.conns[c]
	for !ok {
		switch w := c.(type) {
		case interface{ NetConn() net.Conn }:
			c = w.NetConn()
		case interface{ UnencryptedNetConn() net.Conn }:
			c = w.UnencryptedNetConn()
		default:
			return // evicted already
		}
		info, ok = l.conns[c]
	}
	switch state {
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, c)
	default:
		info.state, info.since = state, time.Now()
	}
	l.cond.Broadcast()
}
