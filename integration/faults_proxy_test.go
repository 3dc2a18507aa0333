package integration

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// faultDirection is one direction of the traffic through a [faultProxy].
type faultDirection int

const (
	// faultClientToServer is the traffic the client sends: requests and
	// uploaded chunks.
	faultClientToServer faultDirection = iota
	// faultServerToClient is the traffic the server sends: responses and
	// downloaded data.
	faultServerToClient
)

func (d faultDirection) String() string {
	if d == faultClientToServer {
		return "client→server"
	}
	return "server→client"
}

// faultCut reports one connection that a [faultProxy] cut.
type faultCut struct {
	// Dir is the direction whose byte count triggered the cut.
	Dir faultDirection
	// Forwarded is how many bytes the proxy had passed on in each direction
	// (indexed by faultDirection) when it reset the connection. Bytes the
	// kernel still held in a send buffer when the reset came are lost, so a
	// peer may have received fewer.
	Forwarded [2]int64
}

// faultProxy is a TCP proxy on a free loopback port that forwards every
// connection to a target address. Armed with [faultProxy.cutNext], it resets
// the next connection it accepts once a given number of bytes has passed in
// one direction: it forwards exactly that many bytes, then closes both sides
// with SO_LINGER 0, so client and server each see a TCP RST in the middle of
// whatever message was crossing, as when a load balancer or NAT drops a
// connection.
type faultProxy struct {
	// addr is the host:port clients dial instead of the target.
	addr   string
	target string
	ln     net.Listener

	mu    sync.Mutex
	armed *faultArm
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// faultArm is a cut waiting for the next connection.
type faultArm struct {
	dir   faultDirection
	after int64
	done  chan faultCut
	// graceful ends the client's side with a FIN after the bytes forwarded
	// (the server's side still gets a RST), so the client reads everything
	// that was forwarded before it sees the connection end. A RST to the
	// client would let its kernel discard bytes it had received but not yet
	// read, making what "arrived" a matter of timing.
	graceful bool
}

// startFaultProxy starts a proxy to target (host:port) and stops it, closing
// every connection, when the test ends.
func startFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fault proxy: listen: %v", err)
	}
	p := &faultProxy{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// url is the base URL of the proxied ferry server.
func (p *faultProxy) url() string { return "http://" + p.addr }

// cutNext arms the proxy: the next connection it accepts is reset once
// after bytes have been forwarded in direction dir, counted from the start
// of that connection (so they include the HTTP/2 preface and headers). The
// returned channel receives the cut when it happens. Only one cut may be
// armed at a time.
func (p *faultProxy) cutNext(dir faultDirection, after int64) <-chan faultCut {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.armed != nil {
		panic("fault proxy: a cut is already armed")
	}
	p.armed = &faultArm{dir: dir, after: after, done: make(chan faultCut, 1)}
	return p.armed.done
}

// cutNextGraceful is [faultProxy.cutNext] with a graceful end toward the
// client: it receives every byte forwarded, then end of stream.
func (p *faultProxy) cutNextGraceful(dir faultDirection, after int64) <-chan faultCut {
	done := p.cutNext(dir, after)
	p.mu.Lock()
	p.armed.graceful = true
	p.mu.Unlock()
	return done
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		arm := p.armed
		p.armed = nil
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(client, arm)
	}
}

// track adds c to the open connections, or reports false (and closes c)
// when the proxy is closing.
func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *faultProxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

// serve forwards one connection in both directions until either side
// closes it or the armed cut fires.
func (p *faultProxy) serve(client net.Conn, arm *faultArm) {
	defer p.wg.Done()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		faultReset(client)
		return
	}
	if !p.track(server) {
		faultReset(client)
		return
	}
	defer p.untrack(server)

	var (
		mu        sync.Mutex
		forwarded [2]int64
		cut       bool
	)
	// reset cuts the connection once: RST to both peers.
	reset := func(dir faultDirection) {
		mu.Lock()
		defer mu.Unlock()
		if cut {
			return
		}
		cut = true
		if arm != nil && arm.graceful {
			if tc, ok := client.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
		} else {
			faultReset(client)
		}
		faultReset(server)
		if arm != nil {
			arm.done <- faultCut{Dir: dir, Forwarded: forwarded}
		}
	}
	pipe := func(dir faultDirection, dst, src net.Conn) {
		budget := int64(-1) // no cut in this direction
		if arm != nil && arm.dir == dir {
			budget = arm.after
		}
		buf := make([]byte, 32<<10)
		for {
			n, rerr := src.Read(buf)
			if n > 0 {
				send, trigger := n, false
				if budget >= 0 {
					mu.Lock()
					if left := budget - forwarded[dir]; int64(n) >= left {
						send, trigger = int(left), true
					}
					mu.Unlock()
				}
				if send > 0 {
					if _, err := dst.Write(buf[:send]); err != nil {
						if dir == faultClientToServer && arm != nil && arm.graceful {
							// Read the client until it closes, so closing
							// our side later sends no RST over its data.
							_ = src.SetReadDeadline(time.Now().Add(10 * time.Second))
							_, _ = io.Copy(io.Discard, src)
						}
						break
					}
					mu.Lock()
					forwarded[dir] += int64(send)
					mu.Unlock()
				}
				if trigger {
					reset(dir)
					return
				}
			}
			if rerr != nil {
				if errors.Is(rerr, io.EOF) {
					// Half-close: pass the FIN on, keep the other direction.
					if tc, ok := dst.(*net.TCPConn); ok {
						_ = tc.CloseWrite()
						return
					}
				}
				break
			}
		}
		// A read or write failed: the connection is gone on one side, so
		// end it on the other as well.
		mu.Lock()
		already := cut
		mu.Unlock()
		if !already {
			client.Close()
			server.Close()
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(faultClientToServer, server, client) }()
	go func() { defer wg.Done(); pipe(faultServerToClient, client, server) }()
	wg.Wait()
	client.Close()
	server.Close()
}

// faultReset closes c with SO_LINGER 0, so its peer gets a TCP RST (and
// loses any bytes not yet sent) instead of an orderly FIN.
func faultReset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// close stops accepting, resets every open connection and waits for the
// forwarding goroutines to end.
func (p *faultProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for c := range conns {
		faultReset(c)
	}
	p.wg.Wait()
}
