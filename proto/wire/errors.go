package wire

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/ferryhq/ferry/store"
)

// Kinds of error a server's domain code returns besides the store's
// sentinels (package upload's Service returns them), wrapped by [Errorf]
// with a message safe to show a client. [ConnectError] maps each to its
// Connect code.
var (
	// ErrInvalidArgument: the request breaks a rule (bad key, chunk of the
	// wrong size, index out of range, missing field...).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrIncomplete: completion found chunks missing or the whole-object
	// checksum differs from the client's.
	ErrIncomplete = errors.New("upload incomplete")
	// ErrAlreadyExists: the upload asked for if_none_match and an object
	// already exists under its key.
	ErrAlreadyExists = errors.New("object already exists")
)

// clientError is an error whose message is safe to send to a client. Kind is
// one of the sentinels of this package or of package store.
type clientError struct {
	kind error
	msg  string
}

func (e *clientError) Error() string { return e.msg }
func (e *clientError) Unwrap() error { return e.kind }

// Errorf returns an error of the given kind (a sentinel of this package or
// of package store) whose message, formatted as by [fmt.Sprintf], is safe
// to send to a client: [ConnectError] keeps it and gives the kind's code.
// errors.Is(err, kind) holds.
func Errorf(kind error, format string, args ...any) error {
	return &clientError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// ClientSafe reports whether err carries a message written for a client
// (by [Errorf], or a [store.ErrInvalidKey] from [store.ValidateKey]): a
// refusal of the request, not a failure of the server or its store.
func ClientSafe(err error) bool {
	var safe *clientError
	return errors.As(err, &safe) || errors.Is(err, store.ErrInvalidKey)
}

// ConnectError is the one mapping from a server's errors to Connect codes:
// it maps an error of this package, of the server packages (upload,
// download) or of package store to a *connect.Error with the matching code.
// Every handler returns its errors through it. Messages written for
// clients (by [Errorf] and by [store.ValidateKey]) are kept; any other
// error's text (which may name buckets or hosts) is replaced by a generic
// message for its code, and the error itself stays reachable as the
// *connect.Error's cause (its Cause method, and errors.Unwrap) for the
// server's logs, never sent to the client. A nil error gives nil, and a
// *connect.Error is returned as it is.
//
//	ErrInvalidArgument, store.ErrInvalidKey, store.ErrChecksumMismatch → InvalidArgument
//	store.ErrNotFound, store.ErrUploadNotFound                         → NotFound
//	ErrIncomplete, store.ErrInvalidPart, store.ErrPreconditionFailed   → FailedPrecondition
//	store.ErrKeyConflict                                               → FailedPrecondition
//	ErrAlreadyExists                                                   → AlreadyExists
//	store.ErrInvalidRange                                              → OutOfRange
//	store.ErrConflict                                                  → Aborted
//	store.ErrUnavailable                                               → Unavailable
//	store.ErrInsufficientStorage                                       → ResourceExhausted
//	context.Canceled, context.DeadlineExceeded                         → Canceled, DeadlineExceeded
//	anything else                                                      → Internal
func ConnectError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	code, generic := classify(err)
	if ClientSafe(err) {
		return connect.NewError(code, errors.New(err.Error()))
	}
	return connect.NewError(code, &hiddenError{msg: generic, cause: err})
}

// hiddenError is what a client is told in place of an error whose text is
// not meant for it; the server logs the cause.
type hiddenError struct {
	msg   string
	cause error
}

func (e *hiddenError) Error() string { return e.msg }
func (e *hiddenError) Unwrap() error { return e.cause }

// Cause returns the error the client was not told.
func (e *hiddenError) Cause() error { return e.cause }

func classify(err error) (connect.Code, string) {
	switch {
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, store.ErrInvalidKey):
		return connect.CodeInvalidArgument, "invalid argument"
	case errors.Is(err, store.ErrChecksumMismatch):
		return connect.CodeInvalidArgument, "crc32c does not match the data; nothing was stored"
	case errors.Is(err, store.ErrNotFound):
		return connect.CodeNotFound, "object not found"
	case errors.Is(err, store.ErrUploadNotFound):
		return connect.CodeNotFound, "upload not found: it never existed, expired, was aborted or completed"
	case errors.Is(err, ErrIncomplete), errors.Is(err, store.ErrInvalidPart):
		return connect.CodeFailedPrecondition, "upload incomplete"
	case errors.Is(err, store.ErrPreconditionFailed):
		return connect.CodeFailedPrecondition, "precondition failed: the object changed"
	case errors.Is(err, store.ErrKeyConflict):
		return connect.CodeFailedPrecondition, "the key conflicts with an object at one of its parents or objects under it"
	case errors.Is(err, ErrAlreadyExists):
		return connect.CodeAlreadyExists, "an object already exists under the key"
	case errors.Is(err, store.ErrInvalidRange):
		return connect.CodeOutOfRange, "offset is past the end of the object"
	case errors.Is(err, store.ErrConflict):
		return connect.CodeAborted, "a concurrent request on the same key won; retry"
	case errors.Is(err, store.ErrUnavailable):
		return connect.CodeUnavailable, "object store unavailable; retry"
	case errors.Is(err, store.ErrInsufficientStorage):
		return connect.CodeResourceExhausted, "the object store is out of space: nothing was stored; retry later, once space is freed"
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled, "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded, "deadline exceeded"
	}
	return connect.CodeInternal, "internal error"
}
