package upload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/semaphore"

	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
)

// Defaults for [Limits].
const (
	// DefaultMaxInflightBytes is the default bound on the bytes of upload
	// messages held at once: 96 MiB, thirteen chunks of the default 7 MiB,
	// or one of the largest (64 MiB) chunks a server accepts by default.
	DefaultMaxInflightBytes = 96 << 20
	// DefaultMaxStreams is the default bound on transfer requests served at
	// once: 16, which keep two cores busy; more wait their turn.
	DefaultMaxStreams = 16
	// DefaultLimitWait is how long a request waits for room by default
	// before it is refused: five minutes, so that many clients sharing a
	// server queue rather than fail.
	DefaultLimitWait = 5 * time.Minute
)

// Limits bound the memory a server spends on transfers, whatever the number
// of clients or the size of their files (design invariant 3: server memory
// is bounded by configuration). The zero value means the defaults.
//
// Why here, in front of the RPC handlers: connect-go reads a whole message
// into memory before a handler sees it, so a bound applied in the handler
// comes too late. [Limiter.Wrap] works at the HTTP layer, in two steps.
// First a transfer request waits for one of MaxStreams places before
// connect-go sees it at all: while it waits it holds no buffer (connect-go
// takes a read buffer from its pool, up to 8 MiB, before it reads a
// message, so waiting later would pin one per waiting request), and what
// its client sent is bounded by the HTTP/2 stream window. Then, within a
// request, [Limiter.Wrap] reads the 5-byte envelope prefix of every message
// of an Upload or PutChunk (gRPC, gRPC-Web and Connect streaming all frame
// messages this way) and takes the message's size from a shared budget
// before letting its bytes through; the size is given back when the
// handler asks for the next message or the request ends (a PutChunk, a
// unary RPC whose handler holds its message to the end, and messages a
// handler keeps while it reads ahead, only then). A unary Connect
// PutChunk, which is not enveloped, takes its Content-Length.
//
// So the chunk data a server holds is at most MaxInflightBytes, plus for
// each of the MaxStreams requests one connect-go read buffer, plus per
// HTTP/2 connection its receive window.
type Limits struct {
	// MaxInflightBytes bounds the bytes of upload messages (chunks, in
	// practice) being read or held by handlers at once, across all
	// requests. The server's memory for chunk data is about this much,
	// plus connect-go's read buffer of the messages being read. A message
	// larger than the budget waits for all of it. 0 means
	// [DefaultMaxInflightBytes]; it should be at least the largest message
	// allowed (the max chunk size plus 1 MiB).
	MaxInflightBytes int64
	// MaxStreams bounds the Upload, PutChunk and Download requests being
	// served at once; each costs buffers of its own (a read buffer of up to
	// 8 MiB for uploads, about 2 MiB for a download stream). Others wait
	// before they are read. 0 means [DefaultMaxStreams].
	MaxStreams int
	// Wait is how long a request or message waits for room before it fails
	// with RESOURCE_EXHAUSTED (which clients retry after a backoff).
	// 0 means [DefaultLimitWait].
	Wait time.Duration
	// MaxMessageBytes is the largest upload message the handlers read: their
	// read limit (connect.WithReadMaxBytes). A message whose prefix declares
	// more is refused with RESOURCE_EXHAUSTED before any of it is read or
	// any budget is taken (connect-go would refuse it only after reading
	// and discarding all of it, while the budget it took is held), and a
	// compressed message, or a unary body of unknown size, weighs this much
	// rather than the whole budget. 0 means MaxInflightBytes.
	MaxMessageBytes int64
}

// Limiter enforces [Limits] on HTTP requests; see [Limits] for how. It is
// safe for concurrent use.
type Limiter struct {
	bytes      *semaphore.Weighted
	streams    *semaphore.Weighted
	maxBytes   int64
	maxMessage int64 // Limits.MaxMessageBytes, at most maxBytes
	maxStreams int64
	wait       time.Duration
}

// NewLimiter returns a Limiter for l, with defaults filled in. It fails
// when a limit is negative.
func NewLimiter(l Limits) (*Limiter, error) {
	if l.MaxInflightBytes < 0 || l.MaxStreams < 0 || l.Wait < 0 || l.MaxMessageBytes < 0 {
		return nil, fmt.Errorf("upload: negative limit in %+v", l)
	}
	if l.MaxInflightBytes == 0 {
		l.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if l.MaxStreams == 0 {
		l.MaxStreams = DefaultMaxStreams
	}
	if l.Wait == 0 {
		l.Wait = DefaultLimitWait
	}
	if l.MaxMessageBytes == 0 || l.MaxMessageBytes > l.MaxInflightBytes {
		l.MaxMessageBytes = l.MaxInflightBytes
	}
	return &Limiter{
		bytes:      semaphore.NewWeighted(l.MaxInflightBytes),
		streams:    semaphore.NewWeighted(int64(l.MaxStreams)),
		maxBytes:   l.MaxInflightBytes,
		maxMessage: l.MaxMessageBytes,
		maxStreams: int64(l.MaxStreams),
		wait:       l.Wait,
	}, nil
}

// Wrap returns next with the limits applied to ferry's transfer
// procedures: Upload and PutChunk count toward both limits, Download
// toward MaxStreams. Other requests pass untouched.
func (l *Limiter) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var weighBytes bool
		switch r.URL.Path {
		case ferryv1connect.UploadServiceUploadProcedure, ferryv1connect.UploadServicePutChunkProcedure:
			weighBytes = true
		case ferryv1connect.DownloadServiceDownloadProcedure:
		default:
			next.ServeHTTP(w, r)
			return
		}
		body := &limitedBody{
			body:       r.Body,
			l:          l,
			ctx:        r.Context(),
			weighBytes: weighBytes,
			unary:      r.URL.Path == ferryv1connect.UploadServicePutChunkProcedure,
			enveloped:  isEnveloped(r.Header.Get("Content-Type")),
			length:     r.ContentLength,
			compressed: r.Header.Get("Content-Encoding") != "" && r.Header.Get("Content-Encoding") != "identity",
		}
		defer body.release()
		// Wait for a place before connect-go sees the request. When none
		// comes free, the body fails its first read with the reason, so
		// that connect-go answers in the request's protocol.
		body.err = body.take(l.streams, 1, l.maxStreams, "transfer requests", "--max-streams")
		if weighBytes {
			// So that a handler holding a message while it reads the next
			// can say so (keepMessage).
			r = r.WithContext(context.WithValue(r.Context(), limitedBodyKey{}, body))
		}
		r.Body = body // the server closes the body it made, not this one
		next.ServeHTTP(w, r)
	})
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

// limitedBody is a request body that takes its stream's place and each
// message's bytes from a [Limiter] before passing them on.
type limitedBody struct {
	body       io.ReadCloser
	l          *Limiter
	ctx        context.Context
	weighBytes bool
	// unary: the request has one message, which its handler holds until it
	// returns (connect-go reads on to the end of an enveloped unary request
	// before calling the handler), so its bytes are kept to the end.
	unary      bool
	enveloped  bool
	length     int64 // Content-Length, -1 when unknown
	compressed bool  // the whole body is compressed (unary Connect)

	// Read state; Read is not called concurrently with itself.
	started   bool
	prefix    [5]byte
	prefixLen int   // bytes of prefix read from the body
	prefixOff int   // bytes of prefix passed on
	remaining int64 // bytes of the current message still to pass on
	messages  int   // message prefixes read
	err       error // sticky

	mu     sync.Mutex
	held   int64 // bytes taken from l.bytes for the message being read
	kept   int64 // bytes taken from l.bytes for earlier messages still held (keepMessage)
	slot   bool  // holds a place in l.streams
	closed bool  // released: take nothing more
}

// Read implements io.Reader.
func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if !b.started {
		b.started = true
		if b.weighBytes && !b.enveloped {
			n := b.length
			if n < 0 || b.compressed {
				n = b.l.maxMessage // unknown, or larger once decompressed
			}
			if err := b.take(b.l.bytes, min(n, b.l.maxMessage), b.l.maxBytes, "bytes of upload chunks", "--max-inflight-bytes"); err != nil {
				b.err = err
				return 0, err
			}
		}
	}
	if !b.weighBytes || !b.enveloped {
		return b.body.Read(p)
	}
	if b.prefixOff < b.prefixLen {
		n := copy(p, b.prefix[b.prefixOff:b.prefixLen])
		b.prefixOff += n
		return n, nil
	}
	if b.remaining == 0 {
		// A message boundary: the handler has asked for the next message,
		// so it is done with the previous one; not so in a unary request,
		// where connect-go looks for the end of the body before it calls
		// the handler with the message.
		if !b.unary {
			b.giveBytes()
		}
		n, err := io.ReadFull(b.body, b.prefix[:])
		b.prefixLen, b.prefixOff = n, 0
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF // the reader above reports the incomplete prefix
			}
			b.err = err
			if n == 0 {
				return 0, err
			}
			k := copy(p, b.prefix[:n])
			b.prefixOff = k
			return k, nil
		}
		if b.unary && b.messages > 0 {
			// Refused before it is read, as connect-go would after.
			b.err = connect.NewError(connect.CodeUnimplemented, errors.New("unary request has multiple messages"))
			return 0, b.err
		}
		b.messages++
		size := int64(binary.BigEndian.Uint32(b.prefix[1:]))
		if size > b.l.maxMessage {
			b.err = connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("message size %d is larger than configured max %d", size, b.l.maxMessage))
			return 0, b.err
		}
		weight := size
		if b.prefix[0]&1 != 0 {
			weight = b.l.maxMessage // compressed: larger once decompressed
		}
		if err := b.takeMessage(weight); err != nil {
			b.err = err
			return 0, err
		}
		b.remaining = size
		k := copy(p, b.prefix[:])
		b.prefixOff = k
		return k, nil
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.body.Read(p)
	b.remaining -= int64(n)
	if err != nil {
		b.err = err
	}
	return n, err
}

// maxFreeAhead is the largest message a request that keeps earlier
// messages (keepMessage) reads without taking its bytes from the budget:
// an upload's finish, read while its chunk is kept. At most one such
// message per request is held at a time.
const maxFreeAhead = 64 << 10

// takeMessage takes the bytes of a message of weight bytes, about to be
// read. A request that keeps earlier messages must not wait for room while
// it holds them: requests ahead of it in the queue could be waiting for
// what it holds, and the limits would deadlock until they time out. Such a
// request reads a small message free, and fails at once when a larger one
// finds no room.
func (b *limitedBody) takeMessage(weight int64) error {
	b.mu.Lock()
	keeping := b.kept > 0
	b.mu.Unlock()
	if !keeping {
		return b.take(b.l.bytes, weight, b.l.maxBytes, "bytes of upload chunks", "--max-inflight-bytes")
	}
	if weight <= maxFreeAhead {
		return nil
	}
	n := min(weight, b.l.maxBytes)
	if !b.l.bytes.TryAcquire(n) {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"server busy: no room under its limit of %d bytes of upload chunks in flight (--max-inflight-bytes) for a message read while this request holds others; retry later",
			b.l.maxBytes))
	}
	return b.hold(b.l.bytes, n)
}

// take acquires n (at most limit) of sem, waiting up to the Limiter's
// wait. what and flag name the limit in the error.
func (b *limitedBody) take(sem *semaphore.Weighted, n, limit int64, what, flag string) error {
	n = min(n, limit)
	if n <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.l.wait)
	defer cancel()
	if err := sem.Acquire(ctx, n); err != nil {
		if b.ctx.Err() != nil {
			return b.ctx.Err()
		}
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"server busy: it is at its limit of %d %s in flight (%s) and none came free within %v; retry later",
			limit, what, flag, b.l.wait))
	}
	return b.hold(sem, n)
}

// hold records n of sem, just acquired, as held by the request; if the
// request has ended meanwhile, it gives them back and fails.
func (b *limitedBody) hold(sem *semaphore.Weighted, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		sem.Release(n)
		return errors.New("request ended")
	}
	if sem == b.l.streams {
		b.slot = true
	} else {
		b.held += n
	}
	return nil
}

// giveBytes returns the bytes held for the previous message.
func (b *limitedBody) giveBytes() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held > 0 {
		b.l.bytes.Release(b.held)
		b.held = 0
	}
}

// limitedBodyKey is the context key of the *limitedBody of an Upload or
// PutChunk request.
type limitedBodyKey struct{}

// keepMessage tells the Limiter in front of the request of ctx, if any,
// that the handler keeps the message it received last while it receives
// the next ones (as [Service.oneShot] does): its bytes stay taken until the
// request ends, instead of being given back when the next message is asked
// for. Without it, a handler reading ahead would hold messages the budget
// no longer counts, and the server's memory would no longer be bounded by
// MaxInflightBytes.
func keepMessage(ctx context.Context) {
	b, ok := ctx.Value(limitedBodyKey{}).(*limitedBody)
	if !ok {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.kept += b.held
	b.held = 0
}

// release returns everything held; the request is over.
func (b *limitedBody) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if n := b.held + b.kept; n > 0 {
		b.l.bytes.Release(n)
		b.held, b.kept = 0, 0
	}
	if b.slot {
		b.l.streams.Release(1)
		b.slot = false
	}
}

// Close implements io.Closer. The places held are kept until the handler
// returns: the message last read may still be in use.
func (b *limitedBody) Close() error { return b.body.Close() }
