package s3store

import (
	"bytes"
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
	"github.com/minio/minio-go/v7/pkg/s3utils"

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
		{"XMinioInvalidObjectName", s3("XMinioInvalidObjectName", 400), store.ErrInvalidKey},
		{"XMinioInvalidResourceName", s3("XMinioInvalidResourceName", 400), store.ErrInvalidKey},
		{"KeyTooLongError", s3("KeyTooLongError", 400), store.ErrInvalidKey},
		{"InvalidObjectName", s3("InvalidObjectName", 400), store.ErrInvalidKey},
		{"DirectoryObjectContainsData", s3("DirectoryObjectContainsData", 400), store.ErrInvalidKey},
		{"ObjectParentIsFile", s3("ObjectParentIsFile", 409), store.ErrKeyConflict},
		{"ExistingObjectIsDirectory", s3("ExistingObjectIsDirectory", 409), store.ErrKeyConflict},
		{"XMinioObjectExistsAsDirectory", s3("XMinioObjectExistsAsDirectory", 400), store.ErrKeyConflict},
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
		store.ErrChecksumMismatch, store.ErrInvalidRange, store.ErrConflict, store.ErrUnavailable, store.ErrInsufficientStorage,
		store.ErrInvalidKey, store.ErrKeyConflict}
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

// TestMapErrorRefusedName: minio-go refuses some names itself, before any
// request, with a plain error (a key of only white space, over 1024 bytes,
// not UTF-8). mapError makes that store.ErrInvalidKey with minio-go's
// reason, and nothing else that happens to fail for such a key.
func TestMapErrorRefusedName(t *testing.T) {
	t.Parallel()
	for _, key := range []string{" ", "\u2028", strings.Repeat("k", 1025), "bad\xff"} {
		check := s3utils.CheckValidObjectName(key)
		if check == nil {
			t.Fatalf("s3utils.CheckValidObjectName(%q) = nil; the test needs a key minio-go refuses", key)
		}
		got := mapError("PutObject", key, check)
		if !errors.Is(got, store.ErrInvalidKey) || !strings.Contains(got.Error(), check.Error()) {
			t.Errorf("mapError(%q, minio-go's refusal %q) = %v, want ErrInvalidKey with that reason", key, check, got)
		}
		if got := mapError("PutObject", key, errors.New("something else")); errors.Is(got, store.ErrInvalidKey) {
			t.Errorf("mapError(%q, another error) = %v, want no ErrInvalidKey", key, got)
		}
	}
	// A listing prefix: empty is valid for a listing, so a failure of a
	// listing of "" is not a refused name.
	if got := mapError("ListObjects", "", errors.New("Object name cannot be empty")); errors.Is(got, store.ErrInvalidKey) {
		t.Errorf(`mapError(ListObjects "", "Object name cannot be empty") = %v, want no ErrInvalidKey`, got)
	}
	if got := mapError("ListObjects", "bad\xff", s3utils.CheckValidObjectNamePrefix("bad\xff")); !errors.Is(got, store.ErrInvalidKey) {
		t.Errorf("mapError of minio-go's refusal of a listing prefix = %v, want ErrInvalidKey", got)
	}
}

// TestRefusedKeysAreInvalidKey: keys that store.ValidateKey refuses and a
// real S3 server refuses too come back as store.ErrInvalidKey with the
// server's (or minio-go's) reason, on the PutObject path and at whichever
// step of a multipart upload the server refuses them (MinIO refuses a
// 256-byte segment of two-byte letters only at completion).
func TestRefusedKeysAreInvalidKey(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	data := []byte("refused")
	for _, key := range []string{
		"a//b", "/", "//", " ", "\u2028", "a\\..\\b", "a/ . /b",
		strings.Repeat("s", 256), "x/" + strings.Repeat("é", 128), strings.Repeat("s", 1024), strings.Repeat("k", 1025),
	} {
		if store.ValidateKey(key) == nil {
			t.Fatalf("store.ValidateKey(%q) = nil; the test wants keys ferry refuses", key)
		}
		_, err := s.PutObject(t.Context(), key, bytes.NewReader(data), int64(len(data)), store.PutOptions{})
		if !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("PutObject(%q) = %v, want ErrInvalidKey", key, err)
		}
		err = func() error {
			id, err := s.CreateMultipartUpload(t.Context(), key, store.CreateOptions{})
			if err != nil {
				return err
			}
			p, err := s.UploadPart(t.Context(), key, id, 1, bytes.NewReader(data), int64(len(data)), store.CRC32C(data))
			if err != nil {
				return err
			}
			_, err = s.CompleteMultipartUpload(t.Context(), key, id, []store.Part{p}, store.CompleteOptions{CRC32C: store.CRC32C(data)})
			return err
		}()
		if !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("multipart upload of %q = %v, want ErrInvalidKey", key, err)
		}
	}
	res, err := s.ListObjects(t.Context(), "", "", 1000)
	if err != nil {
		t.Fatalf("ListObjects = %v", err)
	}
	if len(res.Objects) != 0 {
		t.Errorf("after refused writes the bucket lists %v, want nothing", listedKeys(res.Objects))
	}
}

func listedKeys(objs []store.ObjectInfo) []string {
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	return keys
}
