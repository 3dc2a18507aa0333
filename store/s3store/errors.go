package s3store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/ferryhq/ferry/store"
)

// ErrBucketNotFound is returned by [New] when the configured bucket does not
// exist and [Config.CreateBucket] is false.
var ErrBucketNotFound = errors.New("bucket does not exist")

// s3Sentinels maps S3 error codes to the store's sentinel errors. Codes not
// listed here (AccessDenied, NoSuchBucket, InvalidArgument, ...) are
// returned unmapped: they mean the server or the request is misconfigured,
// and retrying would not help.
var s3Sentinels = map[string]error{
	"NoSuchKey":                   store.ErrNotFound,
	"NoSuchUpload":                store.ErrUploadNotFound,
	"PreconditionFailed":          store.ErrPreconditionFailed,
	"InvalidPart":                 store.ErrInvalidPart,
	"InvalidPartOrder":            store.ErrInvalidPart,
	"EntityTooSmall":              store.ErrInvalidPart,
	"BadDigest":                   store.ErrChecksumMismatch,
	"XAmzContentChecksumMismatch": store.ErrChecksumMismatch,
	"InvalidChecksum":             store.ErrChecksumMismatch,
	"InvalidRange":                store.ErrInvalidRange,
	"ConditionalRequestConflict":  store.ErrConflict,
	// Overload and transient server trouble: the request may succeed later.
	"SlowDown":           store.ErrUnavailable,
	"SlowDownRead":       store.ErrUnavailable,
	"SlowDownWrite":      store.ErrUnavailable,
	"ServiceUnavailable": store.ErrUnavailable,
	"InternalError":      store.ErrUnavailable,
	"RequestTimeout":     store.ErrUnavailable,
	// The server did not get the whole body: the connection broke, or (seen
	// on MinIO running out of space under load) it stopped reading. The
	// store sends bodies whole (see verifyingReader), so sending again may
	// work.
	"IncompleteBody":             store.ErrUnavailable,
	"Throttling":                 store.ErrUnavailable,
	"RequestLimitExceeded":       store.ErrUnavailable,
	"XMinioServerNotInitialized": store.ErrUnavailable,
	// Out of space: MinIO's drives are at their free-space threshold
	// (HTTP 507), or a bucket quota is reached.
	"XMinioStorageFull":              store.ErrInsufficientStorage,
	"XMinioAdminBucketQuotaExceeded": store.ErrInsufficientStorage,
	// The server refuses the key's name. No key that passes
	// store.ValidateKey is refused; these keep the refusal of any other
	// invalid_argument, with the server's reason, instead of internal.
	// MinIO: "a//b", "/", a segment over 255 bytes (XMinioInvalidObjectName),
	// "a\..\b" or " . " segments (XMinioInvalidResourceName); versitygw: a
	// segment over 255 bytes (KeyTooLongError, also AWS's code for a key
	// over 1024 bytes), data under a key ending in "/"
	// (DirectoryObjectContainsData).
	"XMinioInvalidObjectName":     store.ErrInvalidKey,
	"XMinioInvalidResourceName":   store.ErrInvalidKey,
	"KeyTooLongError":             store.ErrInvalidKey,
	"InvalidObjectName":           store.ErrInvalidKey,
	"DirectoryObjectContainsData": store.ErrInvalidKey,
	// A file/directory conflict on servers that keep keys as paths:
	// versitygw refuses "d/a/b" when "d/a" exists (ObjectParentIsFile) and
	// "d/a" when "d/a/b" does (ExistingObjectIsDirectory); MinIO has
	// XMinioObjectExistsAsDirectory. The upload service checks for them
	// first; these are the answers when two servers race.
	"ObjectParentIsFile":            store.ErrKeyConflict,
	"ExistingObjectIsDirectory":     store.ErrKeyConflict,
	"XMinioObjectExistsAsDirectory": store.ErrKeyConflict,
}

// mapError turns an error from minio-go into one that wraps the matching
// store sentinel, keeping S3's code and message for logs. op names the
// call ("UploadPart"), key the object. It is the only place where S3 error
// codes are read.
//
//   - A [minio.ErrorResponse] is looked up by code in s3Sentinels; any
//     507 (Insufficient Storage), and MinIO's InternalError "...:
//     cause(no space left on device)", is [store.ErrInsufficientStorage];
//     any other 5xx status [store.ErrUnavailable].
//   - minio-go's own refusal of a key or prefix before any request (a key
//     of only white space, over 1024 bytes, not UTF-8: a plain error from
//     package s3utils) is [store.ErrInvalidKey] with minio-go's reason.
//   - The caller's context ending is returned as the context's error;
//     a deadline is also [store.ErrUnavailable], since the store did not
//     answer in time.
//   - Network failures (connection refused or reset, timeouts, a
//     connection closed mid-response) are [store.ErrUnavailable]. TLS
//     certificate errors are not: they are configuration, not an outage.
func mapError(op, key string, err error) error {
	if err == nil {
		return nil
	}
	where := "s3 " + op
	if key != "" {
		where += fmt.Sprintf(" %q", key)
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.Code != "" || resp.StatusCode != 0) {
		msg := resp.Message
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		sentinel := s3Sentinels[resp.Code]
		if resp.StatusCode == http.StatusInsufficientStorage ||
			resp.Code == "InternalError" && strings.Contains(msg, "no space left on device") {
			// MinIO answers a write that met ENOSPC on its drive
			// (before its free-space check caught up) with a plain
			// InternalError whose message names the cause.
			sentinel = store.ErrInsufficientStorage
		}
		if sentinel == nil && resp.StatusCode >= 500 {
			sentinel = store.ErrUnavailable
		}
		if sentinel == nil {
			return fmt.Errorf("%s: %s (S3 %s, HTTP %d)", where, msg, resp.Code, resp.StatusCode)
		}
		return fmt.Errorf("%s: %w: %s (S3 %s, HTTP %d)", where, sentinel, msg, resp.Code, resp.StatusCode)
	}
	if refusedName(op, key, err) {
		return fmt.Errorf("%s: %w: %w", where, store.ErrInvalidKey, err)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", where, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w: %w", where, store.ErrUnavailable, err)
	case isNetworkError(err):
		return fmt.Errorf("%s: %w: %w", where, store.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", where, err)
}

// refusedName reports whether err is minio-go's own check of name failing:
// as a listing prefix for op ListObjects, as an object key for any other.
// minio-go returns that check's error as it is, so it is recognised by its
// text for this name.
func refusedName(op, name string, err error) bool {
	check := s3utils.CheckValidObjectName
	if op == "ListObjects" {
		check = s3utils.CheckValidObjectNamePrefix
	}
	cerr := check(name)
	return cerr != nil && cerr.Error() == err.Error()
}

// isNetworkError reports whether err is a failure to reach the server or
// a connection lost on the way, as opposed to a refusal by the server or
// a TLS misconfiguration.
func isNetworkError(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalidCert      x509.CertificateInvalidError
		recordHeader     tls.RecordHeaderError
	)
	if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) ||
		errors.As(err, &invalidCert) || errors.As(err, &recordHeader) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return false
	}
	var netErr net.Error
	switch {
	case errors.As(err, &netErr): // *url.Error, *net.OpError, DNS errors, timeouts
		return true
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return true
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return true // the server closed the connection mid-response
	}
	return false
}

// uploadIDMarkerRefused reports whether err is an S3 server's refusal of a
// ListMultipartUploads upload-id-marker (versitygw: InvalidArgument,
// "Invalid uploadId marker"); see [Store.ListMultipartUploads].
func uploadIDMarkerRefused(err error) bool {
	var resp minio.ErrorResponse
	return errors.As(err, &resp) && resp.Code == "InvalidArgument" &&
		strings.Contains(strings.ToLower(resp.Message), "uploadid marker")
}
