package wire_test

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"connectrpc.com/connect"

	"github.com/ferryhq/ferry/proto/wire"
)

// TestRetryable: the codes of a server or store that may answer otherwise
// next time are retried, and so are errors of a broken connection under
// any code connect-go gives them; answers that would come again are not,
// nor is anything once the caller's context is done.
func TestRetryable(t *testing.T) {
	reset := fmt.Errorf("read tcp: %w", syscall.ECONNRESET)
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"unavailable", connect.NewError(connect.CodeUnavailable, errors.New("store down")), true},
		{"deadline", connect.NewError(connect.CodeDeadlineExceeded, errors.New("slow")), true},
		{"aborted", connect.NewError(connect.CodeAborted, errors.New("conflict")), true},
		{"exhausted", connect.NewError(connect.CodeResourceExhausted, errors.New("busy")), true},
		{"canceled by a reset", connect.NewError(connect.CodeCanceled, reset), true},
		{"unknown by a cut stream", connect.NewError(connect.CodeUnknown, errors.New("http2: stream closed")), true},
		{"internal by EOF", connect.NewError(connect.CodeInternal, fmt.Errorf("read: %w", errors.New("unexpected EOF"))), true},
		{"canceled", connect.NewError(connect.CodeCanceled, errors.New("canceled")), false},
		{"internal answer", connect.NewError(connect.CodeInternal, errors.New("internal error")), false},
		{"not found", connect.NewError(connect.CodeNotFound, errors.New("no such object")), false},
		{"invalid", connect.NewError(connect.CodeInvalidArgument, errors.New("bad chunk")), false},
		{"permission", connect.NewError(connect.CodePermissionDenied, reset), false},
	}
	for _, c := range cases {
		if got := wire.Retryable(context.Background(), c.err); got != c.want {
			t.Errorf("%s: Retryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if wire.Retryable(ctx, connect.NewError(connect.CodeUnavailable, errors.New("down"))) {
		t.Error("Retryable is true with the caller's context done")
	}
}
