package upload

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"connectrpc.com/connect"
)

// limitedBody is a request body that takes every byte it passes on, and
// every byte it inflates, from a [Limiter]'s budget; see [Limits].
type limitedBody struct {
	body  io.ReadCloser
	l     *Limiter
	ctx   context.Context
	acc   *account
	route Route

	enveloped bool // a sequence of enveloped messages (gRPC, gRPC-Web, Connect streaming)
	inflate   bool // gzip: inflate compressed messages (enveloped) or the whole body (unary Connect)

	// Read state; Read is not called concurrently with itself.
	err       error // sticky
	prefix    [5]byte
	prefixLen int       // bytes of prefix read
	prefixOff int       // bytes of prefix passed on
	remaining int64     // bytes of the current message still to pass on
	ahead     int64     // bytes taken for the current message, not yet passed on
	unknown   bool      // a body that is one message and has no Content-Length
	messages  int       // message prefixes read
	src       io.Reader // the current message's bytes when inflated here; nil: the body

	mu      sync.Mutex
	msgHeld int64 // taken for the bytes of the current message passed on
	kept    int64 // taken for earlier messages the handler keeps (keepMessage) or holds to the end
	srcHeld int64 // taken for src, the inflated message not yet passed on
}

// prepare reads what the limits need from r's headers before its body is
// read: whether the body is enveloped and whether ferry inflates it. A
// body that ferry inflates reaches connect-go uncompressed, so the header
// that named its encoding is removed. A Connect GET request, whose message
// is in the URL (bounded by the header limit), takes its route's largest
// message twice (the encoded and the decoded form) for its whole life.
func (b *limitedBody) prepare(r *http.Request) error {
	b.enveloped = isEnveloped(r.Header.Get("Content-Type"))
	if r.Method == http.MethodGet {
		n := 2 * b.route.MaxMessageBytes
		if err := b.l.acquireBytes(b.ctx, b.acc, n); err != nil {
			return err
		}
		b.kept += n
		return nil
	}
	header := "Content-Encoding" // unary Connect: the whole body
	if b.enveloped {
		header = "Grpc-Encoding"
		if strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/connect+") {
			header = "Connect-Content-Encoding"
		}
	}
	if strings.EqualFold(strings.TrimSpace(r.Header.Get(header)), "gzip") {
		b.inflate = true
		r.Header.Del(header)
		if !b.enveloped {
			r.Header.Del("Content-Length")
			r.ContentLength = -1
			return nil // readWhole inflates it, then knows its length
		}
	}
	if !b.enveloped {
		// One message: its Content-Length, if given, is its size.
		switch limit := b.route.MaxMessageBytes; {
		case r.ContentLength > limit:
			return tooLarge(limit, false)
		case r.ContentLength >= 0:
			b.remaining = r.ContentLength
		default:
			b.remaining, b.unknown = limit+1, true // a byte past the limit shows it is larger
		}
	}
	return nil
}

// Read implements io.Reader.
func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	var n int
	var err error
	if b.enveloped {
		n, err = b.readEnveloped(p)
	} else {
		n, err = b.readWhole(p)
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// readWhole reads a body that is one message (unary Connect).
func (b *limitedBody) readWhole(p []byte) (int, error) {
	limit := b.route.MaxMessageBytes
	if b.inflate && b.src == nil {
		data, err := b.inflateFrom(b.body, -1, limit)
		if err != nil {
			return 0, err
		}
		b.src = bytes.NewReader(data)
		b.remaining = int64(len(data))
	}
	if b.remaining == 0 {
		if b.unknown {
			return 0, tooLarge(limit, false)
		}
		return 0, io.EOF
	}
	n, err := b.pass(p)
	if errors.Is(err, io.EOF) && b.ahead > 0 {
		// Shorter than the most it could be: give back the rest.
		b.acc.release(b.ahead)
		b.ahead = 0
	}
	return n, err
}

// readEnveloped reads a body of enveloped messages, one prefix and its
// message at a time.
func (b *limitedBody) readEnveloped(p []byte) (int, error) {
	if b.prefixOff < b.prefixLen {
		n := copy(p, b.prefix[b.prefixOff:b.prefixLen])
		b.prefixOff += n
		return n, nil
	}
	if b.remaining == 0 {
		return b.nextMessage(p)
	}
	return b.pass(p)
}

// nextMessage reads the prefix of the next message and passes it on. It
// is called when the handler asks for the next message, so the previous
// one is done with, except in a unary request, whose handler gets its
// message only once connect-go has seen the end of the body.
func (b *limitedBody) nextMessage(p []byte) (int, error) {
	if b.route.ClientStream {
		b.endMessage()
	}
	n, err := io.ReadFull(b.body, b.prefix[:])
	b.prefixLen, b.prefixOff = n, 0
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF // connect-go reports the incomplete prefix
		}
		if n == 0 {
			return 0, err
		}
		b.err = err // after the partial prefix
		b.prefixOff = copy(p, b.prefix[:n])
		return b.prefixOff, nil
	}
	if !b.route.ClientStream && b.messages > 0 {
		// Refused before it is read, as connect-go would after.
		return 0, connect.NewError(connect.CodeUnimplemented, errors.New("unary request has multiple messages"))
	}
	limit := b.route.MaxMessageBytes
	what := "message"
	if b.messages == 0 && b.route.FirstMessageBytes > 0 {
		limit, what = b.route.FirstMessageBytes, "first message of the stream (its header)"
	}
	b.messages++
	size := int64(binary.BigEndian.Uint32(b.prefix[1:]))
	if size > limit {
		return 0, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%s of %d bytes is larger than the %d bytes this procedure accepts", what, size, limit))
	}
	b.src = nil
	if b.prefix[0]&1 != 0 && b.inflate {
		data, err := b.inflateFrom(b.body, size, limit)
		if err != nil {
			return 0, err
		}
		b.src = bytes.NewReader(data)
		size = int64(len(data))
		b.prefix[0] &^= 1
		binary.BigEndian.PutUint32(b.prefix[1:], uint32(size))
	}
	b.remaining = size
	b.prefixOff = copy(p, b.prefix[:])
	return b.prefixOff, nil
}

// pass reads into p, at most the current message's remaining bytes, from
// the current source. The bytes are taken from the budget before they are
// read: the rest of the message, up to the limiter's maxAhead, whenever what was taken
// has been passed on.
func (b *limitedBody) pass(p []byte) (int, error) {
	if len(p) == 0 || b.remaining == 0 {
		return 0, nil
	}
	if b.ahead == 0 {
		n := min(b.remaining, b.l.maxAhead)
		if err := b.take(n); err != nil {
			return 0, err
		}
		b.ahead = n
	}
	p = p[:min(int64(len(p)), b.ahead)]
	var n int
	var err error
	if b.src != nil {
		n, err = b.src.Read(p)
	} else {
		n, err = b.body.Read(p)
	}
	b.ahead -= int64(n)
	b.remaining -= int64(n)
	b.mu.Lock()
	b.msgHeld += int64(n)
	b.mu.Unlock()
	if r, ok := b.src.(*bytes.Reader); ok && r.Len() == 0 {
		b.dropSource()
		if err == nil && !b.enveloped {
			err = io.EOF
		}
	}
	return n, err
}

// inflateFrom reads a gzip stream from r (size bytes, or to its end when
// size < 0) and inflates it, taking the compressed and then the inflated
// bytes from the budget as they arrive or are produced. It fails once the
// inflated bytes exceed limit. The compressed bytes are given back; the
// inflated ones stay taken (srcHeld) until they are passed on.
func (b *limitedBody) inflateFrom(r io.Reader, size, limit int64) ([]byte, error) {
	compLimit := size
	if size < 0 {
		compLimit = limit + 1
	}
	comp, err := b.readTaken(r, compLimit)
	defer b.acc.release(int64(len(comp)))
	switch {
	case err != nil:
		return nil, err
	case size >= 0 && int64(len(comp)) < size:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("compressed message ended after %d of %d bytes", len(comp), size))
	case size < 0 && int64(len(comp)) > limit:
		return nil, tooLarge(limit, false)
	}
	zr, err := gzip.NewReader(bytes.NewReader(comp))
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("message is not valid gzip: %w", err))
	}
	out, err := b.readTaken(zr, limit+1)
	if err != nil {
		b.acc.release(int64(len(out)))
		if ce := new(connect.Error); errors.As(err, &ce) || b.ctx.Err() != nil {
			return nil, err // no room in the budget, or the request ended
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("message is not valid gzip: %w", err))
	}
	if int64(len(out)) > limit {
		b.acc.release(int64(len(out)))
		return nil, tooLarge(limit, true)
	}
	b.mu.Lock()
	b.srcHeld = int64(len(out))
	b.mu.Unlock()
	return out, nil
}

// readTaken reads up to max bytes from r into a new slice, taking each
// read's bytes from the budget before it is made; the caller gives back
// the length of what it returns, error or not. It returns a nil error at
// the end of r (io.EOF) or at max; any other error of r is returned.
func (b *limitedBody) readTaken(r io.Reader, max int64) ([]byte, error) {
	var out []byte
	for int64(len(out)) < max {
		k := min(maxRead, max-int64(len(out)))
		if err := b.take(k); err != nil {
			return out, err
		}
		out = slices.Grow(out, int(k))
		n, err := r.Read(out[len(out) : len(out)+int(k)])
		out = out[:len(out)+n]
		b.acc.release(k - int64(n))
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// take takes n bytes from the budget for this request.
func (b *limitedBody) take(n int64) error {
	return b.l.acquireBytes(b.ctx, b.acc, n)
}

// tooLarge is the error of a message over its procedure's limit.
func tooLarge(limit int64, inflated bool) error {
	if inflated {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("message is larger than the %d bytes this procedure accepts once decompressed", limit))
	}
	return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("message is larger than the %d bytes this procedure accepts", limit))
}

// dropSource forgets the inflated message, all of it passed on, and gives
// back what it held: connect-go's copy is counted in msgHeld.
func (b *limitedBody) dropSource() {
	b.src = nil
	b.mu.Lock()
	n := b.srcHeld
	b.srcHeld = 0
	b.mu.Unlock()
	b.acc.release(n)
}

// endMessage gives back the bytes of the message the handler is done with.
func (b *limitedBody) endMessage() {
	b.mu.Lock()
	n := b.msgHeld
	b.msgHeld = 0
	b.mu.Unlock()
	b.acc.release(n)
}

// keep moves the current message's bytes to those held to the end.
func (b *limitedBody) keep() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.kept += b.msgHeld
	b.msgHeld = 0
}

// close gives back everything; the request is over.
func (b *limitedBody) close() { b.acc.close() }

// Close implements io.Closer. What the request holds is kept until the
// handler returns: the message last read may still be in use.
func (b *limitedBody) Close() error { return b.body.Close() }
