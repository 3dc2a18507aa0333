// Package s3store is the [store.Store] that keeps objects in a bucket of any
// S3-compatible server (AWS S3, MinIO, R2, ...) through minio-go:
// [minio.Core] for the multipart calls (CreateMultipartUpload, UploadPart,
// ListParts, CompleteMultipartUpload, AbortMultipartUpload) and the plain
// client for the rest. Keys are used as given (callers validate them with
// [store.ValidateKey], whose rules come from what is listed below); the
// bucket holds clients' objects and, under [store.ReservedPrefix], ferry's
// upload manifests.
//
// Nothing is kept in the memory of the process between calls: every answer
// comes from S3, so several servers can share one bucket.
//
// # Checksums
//
// Every multipart upload is created with x-amz-checksum-algorithm CRC32C and
// x-amz-checksum-type FULL_OBJECT. Each part is sent with
// x-amz-checksum-crc32c (base64 of the big-endian CRC32C), which S3 checks
// and reports back in ListParts. Completion sends every part's CRC32C and
// the full-object CRC32C, which S3 checks against the one it combines from
// the parts and records; StatObject and ReadObject read it back with
// x-amz-checksum-mode ENABLED. PutObject sends the CRC32C of the object's
// bytes in the same way, so those objects carry one too.
//
// The store does not rely on S3 alone to refuse a bad part. UploadPart reads
// the caller's reader through a verifying reader that counts the bytes and
// computes their CRC32C as they go, and holds back the final bytes until
// both match: otherwise the request body ends short, the HTTP request is
// aborted, and S3 never receives a complete part, so an earlier part with
// the same number stays as it was. Completion also checks, before calling
// S3, that each named part is committed with that ETag and size, and that
// the committed parts' CRC32Cs combine to the full-object CRC32C given.
//
// # What was verified against MinIO
//
// Against MinIO (server built from github.com/minio/minio
// v0.0.0-20260212201848-7aac2a2c5b7c) and minio-go v7.4.1, with the tests of
// this package and experiments:
//
//   - CreateMultipartUpload with x-amz-checksum-algorithm CRC32C and
//     x-amz-checksum-type FULL_OBJECT is accepted (minio-go carries both as
//     PutObjectOptions.UserMetadata entries, as its own multipart upload
//     does); ListParts then reports ChecksumAlgorithm CRC32C, ChecksumType
//     FULL_OBJECT and a ChecksumCRC32C per part.
//   - UploadPart with a wrong x-amz-checksum-crc32c is refused with 400
//     XAmzContentChecksumMismatch and stores nothing.
//   - A part whose body ends early (the verifying reader returning an error
//     instead of the last bytes) is discarded by the server; the earlier
//     part with that number is still listed with its old ETag and CRC32C.
//   - Once an upload has a checksum algorithm, CompleteMultipartUpload must
//     name every part's ChecksumCRC32C, or MinIO answers InvalidPart. A
//     full-object x-amz-checksum-crc32c (with x-amz-checksum-type
//     FULL_OBJECT, both as completion headers) that differs from the
//     combination of the parts is refused with XAmzContentChecksumMismatch;
//     a matching one is recorded, and HEAD or GET with checksum mode return
//     it with x-amz-checksum-type FULL_OBJECT. No fallback through user
//     metadata is needed.
//   - Exception: for an object of 0 bytes (one empty part) MinIO refuses the
//     full-object CRC32C 0 ("AAAAAA==") as a mismatch and, without it,
//     records no checksum. The store checks that case itself, sends no
//     full-object checksum, and reports CRC32C 0 for every object of 0 bytes
//     (the CRC32C of no bytes is 0 by definition).
//   - A ranged GET returns no checksum headers; ReadObject then asks with a
//     HEAD conditional on the GET's ETag.
//   - If-None-Match: * is honoured by PutObject and by
//     CompleteMultipartUpload: 412 PreconditionFailed when the key exists,
//     and the upload stays open with its parts. Concurrent conditional
//     writes of a new key leave exactly one winner.
//   - AbortMultipartUpload of an upload ID that was already aborted or
//     completed answers 204 on MinIO (AWS answers 404 NoSuchUpload), so the
//     store first lists the upload's parts to report [store.ErrUploadNotFound].
//   - A GET whose range starts at the object's size is 416 InvalidRange; the
//     store answers it with an empty reader, as the contract wants.
//   - PutObject with x-amz-checksum-crc32c: a wrong value is refused
//     (XAmzContentChecksumMismatch); a right one is recorded as a
//     FULL_OBJECT checksum, for 0 bytes too.
//   - MinIO on a file system does not list an object whose key continues
//     another object's key past a "/" ("a/b" when "a" exists), though it
//     stores and reads it (minio/minio#18148, "working as intended"). AWS
//     lists both. The store cannot work around it; the upload service
//     refuses such keys ([store.ErrKeyConflict]). With "d/a" stored, a write
//     of "d/a/xl.meta" is AccessDenied; with "d/a/xl.meta" stored, a write
//     of "d/a" is IncompleteBody (PutObject) or NoSuchKey (completion).
//   - Keys MinIO changes or refuses: a leading "/" is dropped ("/a" and
//     "//a" replace "a", on both paths). "a//b", "/" and "//" are
//     XMinioInvalidObjectName. A trailing "/" is a directory object for
//     PutObject (listed as "a/") and XMinioInvalidObjectName for
//     CreateMultipartUpload. "a\..\b", "a\.\b" and segments "." or ".."
//     with spaces around (" .", "a/ ../b") are XMinioInvalidResourceName:
//     MinIO reads "\" as a separator and trims spaces when it looks for
//     dot segments, though it stores "a\b" as it is. A segment over 255
//     bytes is XMinioInvalidObjectName, at PutObject or UploadPart for
//     ASCII; MinIO counts runes first, so a 256-byte segment of 128 "é"
//     passes CreateMultipartUpload and UploadPart and is refused only at
//     completion. A NUL is XMinioInvalidObjectName. minio-go refuses a key
//     of only white space (" ", "\t", U+00A0, U+2028, U+3000) itself,
//     before any request, with a plain error. A name ending in "__XLDIR__"
//     (MinIO's on-disk mark of a directory object) is stored but listed as
//     "x/" ("x__XLDIR__"), or not at all ("x/__XLDIR__", "x/y__XLDIR__/z").
//     Everything else tried is stored, read and listed byte for byte:
//     spaces inside and around segments, U+2028, U+0085, U+200B, U+FEFF,
//     U+202E, U+FFFE, U+FFFF, U+FDD0, private use, emoji, NFC and NFD forms
//     as two keys, "%2F", "xl.meta", "part.1", ".minio.sys/x", Windows
//     device names, 512 segments, 1024 bytes in 255-byte segments.
//     versitygw v1.8.0 (posix) differs: it stores "a//b" as "a/b", lists
//     U+FFFE and U+FFFF as U+FFFD, refuses a 256-byte segment with
//     KeyTooLongError (multipart: InternalError at completion), and refuses
//     "d/a/b" beside "d/a" and the reverse (ObjectParentIsFile,
//     ExistingObjectIsDirectory; multipart: InternalError). mapError maps
//     the name refusals to [store.ErrInvalidKey] and the conflicts to
//     [store.ErrKeyConflict].
//   - versitygw v1.8.0 reads a ListMultipartUploads key-marker as "keys
//     after this one" and looks for the upload-id-marker among the uploads
//     of the first such key, so it refuses (InvalidArgument, "Invalid
//     uploadId marker") the markers of a second page of one key's uploads,
//     which AWS and MinIO take; ListMultipartUploads then asks again with a
//     key-marker just before the key. It has no force delete of a bucket.
//     The conformance suite passes on both servers.
//   - Distributed MinIO (4 nodes of one drive, EC:2) lists a part number
//     with an empty ETag, size 0 and no checksum while that part is being
//     written twice at once and no ETag has its read quorum yet (about 1
//     listing in 250 while a part was written twice through two nodes);
//     ListParts answers such a listing with [store.ErrConflict], and the
//     part is listed committed once the writes end.
//   - MinIO lists wrongly when a listing resumes from a start-after (or a
//     V1 marker) that is a key inside a directory "x/" with a sibling that
//     sorts between "x" and "x/" by bytes ("x-b/", "x b/", "x!"): it walks
//     that sibling too, skips its objects as being before start-after but
//     counts them against the request's limit (max-keys + 5 and a sixteenth
//     more), and once they fill it leaves the rest of "x/" out of the
//     answer, which may then not even say it is truncated. With "d/a-b/1"
//     to "d/a-b/8", "d/a/x", "d/a/y", "d/z", ListObjectsV2 (or V1 with a
//     marker) after "d/a/x" with max-keys 1 to 4 answered only "d/z". A
//     start-after with no "/" below the prefix's directory is answered
//     correctly, and so are the continuation tokens of one listing, so
//     ListObjects reads a page in such ranges (see listRanges).
//
// # Errors
//
// S3 error codes are read in one place, mapError, and become the sentinels
// of package store; S3's message and code stay in the error text for logs.
// Network failures and 5xx answers are [store.ErrUnavailable]. minio-go
// retries a request a few times (with backoff, and only when its body can
// be sent again) before an error is returned. When it had to repeat a
// CompleteMultipartUpload whose first answer was lost, the repeat finds the
// upload gone; the store then accepts the object under the key as this
// call's if its size and CRC32C are the ones asked for.
//
// # Connections
//
// Parts are streamed: the caller's reader goes to the HTTP request with its
// size as Content-Length, unsigned (UNSIGNED-PAYLOAD, since the CRC32C
// protects it) and without copies beyond the transport's own buffer. The
// HTTP transport keeps up to [MaxIdleConnsPerHost] idle connections to the
// server so that many part uploads at once reuse connections instead of
// opening new ones.
package s3store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/ferryhq/ferry/store"
)

// MaxIdleConnsPerHost is how many idle HTTP connections to the S3 server the
// store keeps for reuse. Go's default is 2 and minio-go's 16; past that,
// every concurrent part upload opens (and then closes) a connection of its
// own.
const MaxIdleConnsPerHost = 128

// maxAttempts is how many times minio-go sends a request that fails with a
// network error or a retryable S3 answer (5xx, SlowDown) before giving up,
// waiting up to 200 ms, then 400 ms, between attempts. A request whose body
// cannot be rewound (every UploadPart) is sent once.
const maxAttempts = 3

// Config says which server and bucket a [Store] uses.
type Config struct {
	// Endpoint is the server, as "https://host:port", "http://host:port" or
	// a bare "host:port", which means HTTPS unless Insecure is set. A path
	// is not allowed.
	Endpoint string
	// Bucket is the bucket that holds the objects.
	Bucket string
	// AccessKey and SecretKey are the credentials (AWS Signature V4). Both
	// empty means anonymous requests.
	AccessKey, SecretKey string
	// Region is the bucket's region. Empty lets minio-go ask the server
	// (GetBucketLocation, once per bucket), which MinIO answers with
	// us-east-1.
	Region string
	// Insecure makes a bare Endpoint (no scheme) plain HTTP. It has no
	// effect on an Endpoint with a scheme.
	Insecure bool
	// CreateBucket makes [New] create the bucket when it does not exist.
	// When false, a missing bucket is an error ([ErrBucketNotFound]).
	CreateBucket bool
	// WrapTransport, when not nil, wraps the HTTP transport the S3 client
	// sends its requests with (e.g. to trace each request). nil: none.
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Store is a [store.Store] on an S3 bucket. It is safe for concurrent use.
type Store struct {
	core     *minio.Core
	bucket   string
	endpoint string // for error messages
}

var _ store.Store = (*Store)(nil)

// New returns a Store for cfg. It checks once, with a HEAD of the bucket,
// that the server answers, that the credentials are accepted and that the
// bucket exists (creating it if cfg.CreateBucket is set), so that a
// misconfigured server fails at start with a clear message. ctx bounds that
// check only. The error wraps [ErrBucketNotFound] for a missing bucket and
// [store.ErrUnavailable] when the server cannot be reached.
func New(ctx context.Context, cfg Config) (*Store, error) {
	return open(ctx, cfg, nil)
}

// open is [New] with a hook for tests: wrap, when not nil, wraps the HTTP
// transport.
func open(ctx context.Context, cfg Config, wrap func(http.RoundTripper) http.RoundTripper) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3store: no bucket configured")
	}
	if err := s3utils.CheckValidBucketName(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3store: bucket name %q: %w", cfg.Bucket, err)
	}
	host, secure, err := parseEndpoint(cfg.Endpoint, cfg.Insecure)
	if err != nil {
		return nil, err
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("s3store: %w", err)
	}
	tr.MaxIdleConns = 2 * MaxIdleConnsPerHost
	tr.MaxIdleConnsPerHost = MaxIdleConnsPerHost
	var rt http.RoundTripper = tr
	if cfg.WrapTransport != nil {
		rt = cfg.WrapTransport(rt)
	}
	if wrap != nil {
		rt = wrap(rt)
	}
	core, err := minio.NewCore(host, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:     secure,
		Transport:  countingTransport{rt},
		Region:     cfg.Region,
		MaxRetries: maxAttempts,
	})
	if err != nil {
		return nil, fmt.Errorf("s3store: endpoint %q: %w", cfg.Endpoint, err)
	}
	s := &Store{core: core, bucket: cfg.Bucket, endpoint: core.EndpointURL().String()}
	if err := s.checkBucket(ctx, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// checkBucket makes sure the bucket exists, creating it if cfg says so.
func (s *Store) checkBucket(ctx context.Context, cfg Config) error {
	exists, err := s.core.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("s3store: checking bucket %q at %s: %w", s.bucket, s.endpoint, mapError("HeadBucket", "", err))
	}
	if exists {
		return nil
	}
	if !cfg.CreateBucket {
		return fmt.Errorf("s3store: %w: %q at %s (create it, or enable bucket creation)", ErrBucketNotFound, s.bucket, s.endpoint)
	}
	err = s.core.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: cfg.Region})
	if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
		// Another process created it at the same time; see that it is ours.
		exists, err = s.core.BucketExists(ctx, s.bucket)
		if err == nil && !exists {
			err = fmt.Errorf("bucket %q vanished after creation", s.bucket)
		}
	}
	if err != nil {
		return fmt.Errorf("s3store: creating bucket %q at %s: %w", s.bucket, s.endpoint, mapError("CreateBucket", "", err))
	}
	return nil
}

// parseEndpoint splits an endpoint into the host:port minio-go wants and
// whether to use HTTPS.
func parseEndpoint(endpoint string, insecure bool) (host string, secure bool, err error) {
	if endpoint == "" {
		return "", false, errors.New("s3store: no endpoint configured")
	}
	if !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
		if insecure {
			endpoint = "http://" + strings.TrimPrefix(endpoint, "https://")
		}
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, fmt.Errorf("s3store: endpoint %q: %w", endpoint, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", false, fmt.Errorf("s3store: endpoint %q: scheme must be http or https", endpoint)
	case u.Host == "":
		return "", false, fmt.Errorf("s3store: endpoint %q has no host", endpoint)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.User != nil:
		return "", false, fmt.Errorf("s3store: endpoint %q: want only scheme, host and port", endpoint)
	}
	return u.Host, u.Scheme == "https", nil
}

// attemptsKey is the context key of the *atomic.Int32 that
// [countingTransport] increments for each HTTP request sent.
type attemptsKey struct{}

// countingTransport counts the HTTP requests a call makes, so the store
// can tell whether minio-go sent a request again after an error (see
// [Store.CompleteMultipartUpload]).
type countingTransport struct{ rt http.RoundTripper }

// RoundTrip implements http.RoundTripper.
func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if n, ok := req.Context().Value(attemptsKey{}).(*atomic.Int32); ok {
		n.Add(1)
	}
	return t.rt.RoundTrip(req)
}

// withAttemptCounter returns a context under which the HTTP requests sent
// are counted in the returned counter.
func withAttemptCounter(ctx context.Context) (context.Context, *atomic.Int32) {
	n := new(atomic.Int32)
	return context.WithValue(ctx, attemptsKey{}, n), n
}

// nowUTC is the time the store reports when S3 does not give one (the
// answer to UploadPart carries no Last-Modified).
func nowUTC() time.Time { return time.Now().UTC() }
