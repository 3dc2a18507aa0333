package wire

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"connectrpc.com/connect"
)

// Retryable reports whether err, returned by an RPC made with ctx, is worth
// trying again: ctx is not done, and err's Connect code is UNAVAILABLE,
// DEADLINE_EXCEEDED, ABORTED or RESOURCE_EXHAUSTED (the codes [ConnectError]
// gives to a store that is down or slow, to a conflicting request, and to a
// server at its limits), or UNKNOWN, INTERNAL or CANCELED caused by a
// broken connection (connect-go reports a connection reset as CANCELED,
// and a stream cut short as UNKNOWN or INTERNAL). Every other code is an
// answer that the same request would get again. It is the one rule ferry's
// clients retry by; nil and a done ctx are not retryable.
func Retryable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted, connect.CodeResourceExhausted:
		return true
	case connect.CodeUnknown, connect.CodeInternal, connect.CodeCanceled:
		return BrokenConnection(err)
	}
	return false
}

// BrokenConnection reports whether err comes from a connection or HTTP/2
// stream that broke (reset, refused, closed, cut short), rather than from
// a server's answer.
func BrokenConnection(err error) bool {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, net.ErrClosed) {
		return true
	}
	if netErr := net.Error(nil); errors.As(err, &netErr) {
		return true
	}
	// net/http's bundled HTTP/2 does not export its error types.
	msg := err.Error()
	for _, s := range []string{"stream error: ", "http2: ", "connection reset", "broken pipe", "unexpected EOF"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
