package upload

import (
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
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
	prefixLen int     // bytes of prefix read
	prefixOff int     // bytes of prefix passed on
	remaining int64   // bytes of the current message still to pass on
	ahead     int64   // bytes taken for the current message, not yet passed on
	unknown   bool    // a body that is one message and has no Content-Length
	messages  int     // message prefixes read
	src       *blocks // the current message's bytes when inflated here; nil: the body

	mu      sync.Mutex
	msgHeld int64 // taken for the bytes of the current message passed on
	kept    int64 // taken for earlier messages the handler keeps (keepMessage) or holds to the end
	srcHeld int64 // taken for src: what of the inflated message is not yet passed on
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
		b.src = data
		b.remaining = data.len()
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
		b.src = data
		size = data.len()
		b.prefix[0] &^= 1
		binary.BigEndian.PutUint32(b.prefix[1:], uint32(size))
	}
	b.remaining = size
	b.prefixOff = copy(p, b.prefix[:])
	return b.prefixOff, nil
}

// pass reads into p, at most the current message's remaining bytes, from
// the current source. Bytes of the body are taken from the budget before
// they are read: the rest of the message, up to the limiter's maxAhead,
// whenever what was taken has been passed on. Bytes of an inflated message
// were taken as they were inflated (srcHeld): passing them on moves them
// to the message's count, and their block is let go, so connect-go's copy
// and the limiter's never count twice.
func (b *limitedBody) pass(p []byte) (int, error) {
	if len(p) == 0 || b.remaining == 0 {
		return 0, nil
	}
	if b.src != nil {
		n, err := b.src.Read(p[:min(int64(len(p)), b.remaining)])
		b.remaining -= int64(n)
		b.mu.Lock()
		b.srcHeld -= int64(n)
		b.msgHeld += int64(n)
		b.mu.Unlock()
		if b.src.len() == 0 {
			b.src = nil
			if err == nil && !b.enveloped {
				err = io.EOF
			}
		}
		return n, err
	}
	if b.ahead == 0 {
		n := min(b.remaining, b.l.maxAhead)
		if err := b.take(n); err != nil {
			return 0, err
		}
		b.ahead = n
	}
	n, err := b.body.Read(p[:min(int64(len(p)), b.ahead)])
	b.ahead -= int64(n)
	b.remaining -= int64(n)
	b.mu.Lock()
	b.msgHeld += int64(n)
	b.mu.Unlock()
	return n, err
}

// inflateFrom inflates a gzip stream read from r, at most size bytes of it
// (to its end when size < 0, then at most limit+1 bytes), taking the
// inflated bytes from the budget as they are produced, block by block, and
// fails once they exceed limit. The compressed bytes are read as the
// inflation needs them, so the limiter never holds them whole. The
// inflated blocks stay taken (srcHeld) until they are passed on.
func (b *limitedBody) inflateFrom(r io.Reader, size, limit int64) (*blocks, error) {
	compressed := &io.LimitedReader{R: r, N: size}
	if size < 0 {
		compressed.N = limit + 1
	}
	zr, err := gzip.NewReader(compressed)
	if err != nil {
		return nil, notGzip(err, compressed, size)
	}
	out := &blocks{}
	fail := func(err error) (*blocks, error) {
		b.acc.release(out.n)
		return nil, err
	}
	for {
		if out.n > limit {
			return fail(tooLarge(limit, true))
		}
		k := min(maxRead, limit+1-out.n)
		if err := b.take(k); err != nil {
			return fail(err)
		}
		buf := make([]byte, k)
		n, err := readSome(zr, buf)
		b.acc.release(k - int64(n))
		if n > 0 {
			out.add(buf[:n])
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ce := new(connect.Error); errors.As(err, &ce) || b.ctx.Err() != nil {
				return fail(err) // the body's own failure, or the request ended
			}
			return fail(notGzip(err, compressed, size))
		}
	}
	switch {
	case out.n > limit:
		return fail(tooLarge(limit, true))
	case size < 0 && compressed.N == 0:
		return fail(tooLarge(limit, false)) // the compressed body itself is over the limit
	case size >= 0 && compressed.N > 0:
		return fail(connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("compressed message ended after %d of %d bytes", size-compressed.N, size)))
	}
	b.mu.Lock()
	b.srcHeld = out.n
	b.mu.Unlock()
	return out, nil
}

// notGzip is the error of a message that does not inflate: cut short (a
// body that ended early) or not gzip.
func notGzip(err error, compressed *io.LimitedReader, size int64) error {
	if size >= 0 && compressed.N > 0 && errors.Is(err, io.ErrUnexpectedEOF) {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("compressed message ended after %d of %d bytes", size-compressed.N, size))
	}
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("message is not valid gzip: %w", err))
}

// readSome reads into buf until it is full or r fails (io.EOF at its end).
func readSome(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// blocks is an inflated message as the blocks it was inflated in, read
// once: a block is let go as soon as it has been read.
type blocks struct {
	bufs [][]byte
	n    int64 // bytes not yet read
}

func (bl *blocks) add(b []byte) {
	bl.bufs = append(bl.bufs, b)
	bl.n += int64(len(b))
}

func (bl *blocks) len() int64 { return bl.n }

// Read implements io.Reader.
func (bl *blocks) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(bl.bufs) > 0 {
		k := copy(p[n:], bl.bufs[0])
		n += k
		if bl.bufs[0] = bl.bufs[0][k:]; len(bl.bufs[0]) == 0 {
			bl.bufs[0] = nil
			bl.bufs = bl.bufs[1:]
		}
	}
	bl.n -= int64(n)
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
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
