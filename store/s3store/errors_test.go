package s3store

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/ferryhq/ferry/store"
)

func TestMapError(t *testing.T) {
	t.Parallel()
	s3 := func(code string, status int) error {
		return minio.ErrorResponse{Code: code, Message: "message from S3", StatusCode: status}
	}
	urlErr := func(err error) error { return &url.Error{Op: "Put", URL: "http://127.0.0.1:9/b/k", Err: err} }
	tests := []struct {
		name string
		err  error
		want error // nil: no sentinel
	}{
		{"NoSuchKey", s3("NoSuchKey", 404), store.ErrNotFound},
		{"NoSuchUpload", s3("NoSuchUpload", 404), store.ErrUploadNotFound},
		{"PreconditionFailed", s3("PreconditionFailed", 412), store.ErrPreconditionFailed},
		{"InvalidPart", s3("InvalidPart", 400), store.ErrInvalidPart},
		{"InvalidPartOrder", s3("InvalidPartOrder", 400), store.ErrInvalidPart},
		{"EntityTooSmall", s3("EntityTooSmall", 400), store.ErrInvalidPart},
		{"BadDigest", s3("BadDigest", 400), store.ErrChecksumMismatch},
		{"XAmzContentChecksumMismatch", s3("XAmzContentChecksumMismatch", 400), store.ErrChecksumMismatch},
		{"InvalidChecksum", s3("InvalidChecksum", 400), store.ErrChecksumMismatch},
		{"InvalidRange", s3("InvalidRange", 416), store.ErrInvalidRange},
		{"ConditionalRequestConflict", s3("ConditionalRequestConflict", 409), store.ErrConflict},
		{"SlowDown", s3("SlowDown", 503), store.ErrUnavailable},
		{"ServiceUnavailable", s3("ServiceUnavailable", 503), store.ErrUnavailable},
		{"InternalError", s3("InternalError", 500), store.ErrUnavailable},
		{"Any5xx", s3("", 502), store.ErrUnavailable},
		{"XMinioStorageFull", s3("XMinioStorageFull", 507), store.ErrInsufficientStorage},
		{"BucketQuota", s3("XMinioAdminBucketQuotaExceeded", 400), store.ErrInsufficientStorage},
		{"Any507", s3("", 507), store.ErrInsufficientStorage},
		{"MinIOENOSPC", minio.ErrorResponse{Code: "InternalError", StatusCode: 500,
			Message: "message from S3: cause(no space left on device)"}, store.ErrInsufficientStorage},
		{"Wrapped", fmt.Errorf("context: %w", s3("NoSuchKey", 404)), store.ErrNotFound},
		{"AccessDenied", s3("AccessDenied", 403), nil},
		{"NoSuchBucket", s3("NoSuchBucket", 404), nil},
		{"ConnectionRefused", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), store.ErrUnavailable},
		{"ConnectionReset", urlErr(&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}), store.ErrUnavailable},
		{"BareReset", fmt.Errorf("write: %w", syscall.ECONNRESET), store.ErrUnavailable},
		{"UnexpectedEOF", io.ErrUnexpectedEOF, store.ErrUnavailable},
		{"Deadline", context.DeadlineExceeded, store.ErrUnavailable},
		{"Canceled", context.Canceled, nil},
		{"UnknownAuthority", urlErr(x509.UnknownAuthorityError{}), nil},
		{"Other", errors.New("something else"), nil},
	}
	sentinels := []error{store.ErrNotFound, store.ErrUploadNotFound, store.ErrPreconditionFailed, store.ErrInvalidPart,
		store.ErrChecksumMismatch, store.ErrInvalidRange, store.ErrConflict, store.ErrUnavailable, store.ErrInsufficientStorage}
	for _, tt := range tests {
		got := mapError("Op", "key", tt.err)
		for _, s := range sentinels {
			if errors.Is(got, s) != (s == tt.want) {
				t.Errorf("%s: mapError = %v; errors.Is(%v) = %v", tt.name, got, s, errors.Is(got, s))
			}
		}
		if !strings.Contains(got.Error(), `s3 Op "key"`) {
			t.Errorf("%s: mapError = %q, which does not name the call and key", tt.name, got)
		}
		var resp minio.ErrorResponse
		if errors.As(tt.err, &resp) && resp.Code != "" && !strings.Contains(got.Error(), "message from S3") {
			t.Errorf("%s: mapError = %q, which lost S3's message", tt.name, got)
		}
	}
	if errors.Is(mapError("Op", "key", context.Canceled), context.Canceled) != true {
		t.Error("mapError(context.Canceled) does not wrap context.Canceled")
	}
	if mapError("Op", "key", nil) != nil {
		t.Error("mapError(nil) is not nil")
	}
}
