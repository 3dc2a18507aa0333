package upload

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/semaphore"

	"github.com/ferryhq/ferry/proto/wire"
)

// Defaults for [Limits].
const (
	// DefaultMaxInflightBytes is the default bound on the request-body
	// bytes held at once: 96 MiB, thirteen chunks of the default 7 MiB, or
	// one of the largest (64 MiB) chunks a server accepts by default.
	DefaultMaxInflightBytes = 96 << 20
	// DefaultMaxStreams is the default bound on transfer requests served at
	// once: 16, which keep two cores busy; more wait their turn.
	DefaultMaxStreams = 16
	// DefaultLimitWait is how long a request waits for room by default
	// before it is refused: five minutes, so that many clients sharing a
	// server queue rather than fail.
	DefaultLimitWait = 5 * time.Minute
)

// DefaultMaxAheadBytes is the default of [Limits].MaxAheadBytes: 16 MiB.
const DefaultMaxAheadBytes = 16 << 20

// maxRead is the most bytes the limiter reads at once for its own buffers
// (a compressed message, and what it inflates to), taking each read from
// the budget first: 256 KiB.
const maxRead = 256 << 10

// Limits bound the memory a server spends on request bodies and the
// transfers it serves, whatever the number of clients, their tokens or the
// size and compression of their messages (design invariant 3). The zero
// value of a field means its default.
//
// Why at the HTTP layer, in front of the RPC handlers: connect-go reads a
// whole message into memory, and decompresses it, before a handler sees
// it, so a bound applied in a handler comes too late. [Limiter.Wrap]
// works in two steps. First, a transfer request (an upload or a download)
// waits for one of MaxStreams places, and one of its tenant's
// MaxStreamsPerTenant, before connect-go sees it: while it waits it holds no
// buffer, and what its client sent is bounded by the HTTP/2 stream window.
// Then every request's body passes through an accountant that takes each
// byte from the shared budget (MaxInflightBytes, and the tenant's share)
// before it is read, at most MaxAheadBytes ahead, and refuses a message larger
// than its procedure accepts ([Route]) from its 5-byte prefix (or its
// Content-Length), before reading it. gzip-compressed messages are inflated by the accountant itself, every
// inflated byte taken from the budget as it is produced, so connect-go only
// ever sees uncompressed messages of known size: a compressed message
// costs what it really holds, and a decompression bomb stops at its
// procedure's limit. A message's bytes are given back when the handler
// asks for the next message, or when the request ends for a unary request
// (its handler holds the message to the end) and for messages a handler
// keeps while it reads on (keepMessage).
type Limits struct {
	// MaxInflightBytes bounds the request-body bytes received and not yet
	// released, over all requests: messages being read, decompressed or
	// held by handlers. 0 means [DefaultMaxInflightBytes]. It must be at
	// least the largest message any route accepts.
	MaxInflightBytes int64
	// MaxInflightBytesPerTenant bounds what one tenant (one bearer token)
	// may hold of MaxInflightBytes, so that one token cannot take the whole
	// budget. 0 means half of MaxInflightBytes, or the largest message any
	// route accepts if that is more. Requests without a tenant are not
	// limited per tenant.
	MaxInflightBytesPerTenant int64
	// MaxStreams bounds the transfer requests (routes with Stream set:
	// Upload, PutChunk, Download) served at once. Others wait before they
	// are read. 0 means [DefaultMaxStreams].
	MaxStreams int
	// MaxStreamsPerTenant bounds the transfer requests one tenant has
	// served at once; its others wait. 0 means a quarter of MaxStreams (at
	// least 1).
	MaxStreamsPerTenant int
	// MaxAheadBytes is the most bytes a request takes from the budget for a
	// message ahead of what it has read. A message of up to that size (a
	// chunk of any usual chunk size: ferry's default is 7 MiB) is taken
	// whole when it begins, so once started it never waits, and requests
	// cannot deadlock over such messages; a larger one is taken
	// MaxAheadBytes at a time. So a client that announces a message and
	// then stalls or trickles holds at most this much it has not sent per
	// request, and its token's share in all. 0 means
	// [DefaultMaxAheadBytes].
	MaxAheadBytes int64
	// Wait is how long a request waits for a place or for bytes before it
	// fails with RESOURCE_EXHAUSTED (which clients retry after a backoff).
	// 0 means [DefaultLimitWait].
	Wait time.Duration
	// Route says how requests to a URL path are limited. A path for which
	// it reports false is not an RPC: its body may not be read (a handler
	// that tries gets an error). Nil: every path is a control RPC with
	// messages of at most [wire.MaxControlMessageBytes].
	Route func(path string) (Route, bool)
	// Tenant names the tenant a request counts against ("" for none),
	// such as the name of its bearer token. Nil: no tenants.
	Tenant func(r *http.Request) string
}

// Route says how the [Limiter] treats the requests of one procedure.
type Route struct {
	// MaxMessageBytes is the largest request message, in bytes once
	// decompressed, that the procedure accepts: a larger one is refused
	// with RESOURCE_EXHAUSTED. Required.
	MaxMessageBytes int64
	// FirstMessageBytes, when not 0, is the largest first message of a
	// client stream: the header of an Upload stream, read before the
	// request is authorized, is small.
	FirstMessageBytes int64
	// Stream makes each request take a place under MaxStreams and
	// MaxStreamsPerTenant while it is served.
	Stream bool
	// ClientStream reports whether the client sends a stream of messages.
	// Otherwise the request has one message, which the handler holds until
	// it returns.
	ClientStream bool
}

// ProcedureRoute returns the [Route] of ferry procedure p on a server whose
// largest upload message is dataLimit bytes (see [MaxMessageBytes]):
// Upload and PutChunk messages up to dataLimit, but the header that opens
// an Upload stream, and every message of the other procedures, up to
// [wire.MaxControlMessageBytes]; uploads and downloads take stream places.
func ProcedureRoute(p wire.Procedure, dataLimit int64) Route {
	r := Route{MaxMessageBytes: wire.MaxControlMessageBytes, Stream: p.Transfer(), ClientStream: p.Stream}
	if p.Kind == wire.Upload {
		r.MaxMessageBytes = dataLimit
		if p.Stream {
			r.FirstMessageBytes = wire.MaxControlMessageBytes
		}
	}
	return r
}

// Limiter enforces [Limits] on HTTP requests; see [Limits] for how. It is
// safe for concurrent use.
type Limiter struct {
	budget      *budget
	streams     *semaphore.Weighted
	maxBytes    int64
	tenantBytes int64
	maxStreams  int64
	tenantMax   int64
	maxAhead    int64
	wait        time.Duration
	route       func(string) (Route, bool)
	tenant      func(*http.Request) string

	mu            sync.Mutex
	tenantStreams map[string]*semaphore.Weighted
}

// defaultRoute is the route of every path when Limits.Route is nil.
var defaultRoute = Route{MaxMessageBytes: wire.MaxControlMessageBytes}

// NewLimiter returns a Limiter for l, with defaults filled in. It fails
// when a limit is negative, when a tenant's share is over the total, or
// when maxMessage (the largest message any route accepts, in bytes) does
// not fit in the budget or a tenant's share.
func NewLimiter(l Limits, maxMessage int64) (*Limiter, error) {
	if l.MaxInflightBytes < 0 || l.MaxInflightBytesPerTenant < 0 || l.MaxStreams < 0 || l.MaxStreamsPerTenant < 0 || l.MaxAheadBytes < 0 || l.Wait < 0 {
		return nil, fmt.Errorf("upload: negative limit in %+v", l)
	}
	if l.MaxInflightBytes == 0 {
		l.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if l.MaxInflightBytesPerTenant == 0 {
		l.MaxInflightBytesPerTenant = min(l.MaxInflightBytes, max(l.MaxInflightBytes/2, maxMessage))
	}
	if l.MaxStreams == 0 {
		l.MaxStreams = DefaultMaxStreams
	}
	if l.MaxStreamsPerTenant == 0 {
		l.MaxStreamsPerTenant = max(1, l.MaxStreams/4)
	}
	if l.Wait == 0 {
		l.Wait = DefaultLimitWait
	}
	if l.MaxAheadBytes == 0 {
		l.MaxAheadBytes = DefaultMaxAheadBytes
	}
	switch {
	case l.MaxInflightBytesPerTenant > l.MaxInflightBytes:
		return nil, fmt.Errorf("upload: a tenant's share of %d bytes is over the total of %d", l.MaxInflightBytesPerTenant, l.MaxInflightBytes)
	case l.MaxStreamsPerTenant > l.MaxStreams:
		return nil, fmt.Errorf("upload: a tenant's %d streams are over the total of %d", l.MaxStreamsPerTenant, l.MaxStreams)
	case maxMessage > l.MaxInflightBytesPerTenant:
		return nil, fmt.Errorf("upload: the largest message, %d bytes, does not fit in a budget of %d bytes per tenant (%d in all)", maxMessage, l.MaxInflightBytesPerTenant, l.MaxInflightBytes)
	}
	if l.Route == nil {
		l.Route = func(string) (Route, bool) { return defaultRoute, true }
	}
	if l.Tenant == nil {
		l.Tenant = func(*http.Request) string { return "" }
	}
	return &Limiter{
		budget:        newBudget(l.MaxInflightBytes, l.MaxInflightBytesPerTenant),
		streams:       semaphore.NewWeighted(int64(l.MaxStreams)),
		maxBytes:      l.MaxInflightBytes,
		tenantBytes:   l.MaxInflightBytesPerTenant,
		maxStreams:    int64(l.MaxStreams),
		tenantMax:     int64(l.MaxStreamsPerTenant),
		maxAhead:      l.MaxAheadBytes,
		wait:          l.Wait,
		route:         l.Route,
		tenant:        l.Tenant,
		tenantStreams: make(map[string]*semaphore.Weighted),
	}, nil
}

// Wrap returns next with the limits applied to every request.
func (l *Limiter) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, ok := l.route(r.URL.Path)
		if !ok {
			// Not an RPC: nothing here reads a body, and nothing may.
			r.Body = http.MaxBytesReader(w, r.Body, 0)
			next.ServeHTTP(w, r)
			return
		}
		tenant := l.tenant(r)
		body := &limitedBody{
			body:  r.Body,
			l:     l,
			ctx:   r.Context(),
			acc:   l.budget.open(tenant),
			route: route,
		}
		defer body.close()
		r = r.WithContext(context.WithValue(r.Context(), limitedBodyKey{}, body))
		if route.Stream {
			// Wait for a place before connect-go sees the request. When
			// none comes free, the body fails its first read with the
			// reason, so that connect-go answers in the request's protocol.
			release, err := l.takeStream(r.Context(), tenant)
			if err != nil {
				body.err = err
			} else {
				defer release()
			}
		}
		if body.err == nil {
			body.err = body.prepare(r)
		}
		r.Body = body // the server closes the body it made, not this one
		next.ServeHTTP(w, r)
	})
}

// takeStream waits for a transfer place of the server and of tenant.
func (l *Limiter) takeStream(ctx context.Context, tenant string) (release func(), err error) {
	waitCtx, cancel := context.WithTimeout(ctx, l.wait)
	defer cancel()
	var ts *semaphore.Weighted
	if tenant != "" {
		ts = l.tenantSem(tenant)
		if err := ts.Acquire(waitCtx, 1); err != nil {
			return nil, l.busy(ctx, fmt.Sprintf("token %q has %d transfer requests served, its share (--max-streams-per-token)", tenant, l.tenantMax))
		}
	}
	if err := l.streams.Acquire(waitCtx, 1); err != nil {
		if ts != nil {
			ts.Release(1)
		}
		return nil, l.busy(ctx, fmt.Sprintf("it serves %d transfer requests, its limit (--max-streams)", l.maxStreams))
	}
	return func() {
		l.streams.Release(1)
		if ts != nil {
			ts.Release(1)
		}
	}, nil
}

// tenantSem returns tenant's semaphore of stream places.
func (l *Limiter) tenantSem(tenant string) *semaphore.Weighted {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.tenantStreams[tenant]
	if s == nil {
		s = semaphore.NewWeighted(l.tenantMax)
		l.tenantStreams[tenant] = s
	}
	return s
}

// busy is the error of a request that found no room within the wait: the
// request's own context error if it ended, RESOURCE_EXHAUSTED otherwise.
func (l *Limiter) busy(ctx context.Context, why string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("server busy: %s, and none came free within %v; retry later", why, l.wait))
}

// acquireBytes takes n bytes of the budget for a, or explains why not.
func (l *Limiter) acquireBytes(ctx context.Context, a *account, n int64) error {
	err := a.acquire(ctx, n, l.wait)
	var timeout *waitTimeout
	switch {
	case err == nil:
		return nil
	case errors.As(err, &timeout):
		return l.busy(ctx, fmt.Sprintf("it holds %d bytes of request bodies (--max-inflight-bytes; %d per token, --max-inflight-bytes-per-token)", l.maxBytes, l.tenantBytes))
	case errors.Is(err, errDeadlock):
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"server busy: every request holding part of its %d bytes for request bodies (--max-inflight-bytes) is waiting for more; retry later", l.maxBytes))
	}
	return err
}

// isEnveloped reports whether a request body of content type ct is a
// sequence of enveloped messages: gRPC, gRPC-Web and Connect streaming.
// Unary Connect (application/proto, application/json) is not. Media types
// are case-insensitive, and connect-go accepts them in any case.
func isEnveloped(ct string) bool {
	ct = strings.ToLower(strings.TrimSpace(ct))
	for _, p := range []string{"application/grpc", "application/connect+"} {
		if strings.HasPrefix(ct, p) {
			return true
		}
	}
	return false
}

// limitedBodyKey is the context key of a request's *limitedBody.
type limitedBodyKey struct{}

// keepMessage tells the Limiter in front of the request of ctx, if any,
// that the handler keeps the message it received last while it receives
// the next ones (as [Service.oneShot] does): its bytes stay taken until the
// request ends, instead of being given back when the next message is asked
// for. Without it, a handler reading ahead would hold messages the budget
// no longer counts, and the server's memory would no longer be bounded by
// MaxInflightBytes.
func keepMessage(ctx context.Context) {
	if b, ok := ctx.Value(limitedBodyKey{}).(*limitedBody); ok {
		b.keep()
	}
}
