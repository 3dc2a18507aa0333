// Package store is ferry's object-store layer: a small interface in the
// terms of S3 (objects, keys, multipart uploads, parts, ETags), with two
// implementations and one conformance suite.
//
//   - [github.com/ferryhq/ferry/store/s3store] writes to any S3-compatible
//     server through minio-go (minio.Core for the multipart calls). It is the
//     real backend.
//   - [github.com/ferryhq/ferry/store/diskstore] keeps everything in a local
//     directory. It is the embedded default that lets `ferry serve` run on a
//     machine with no S3 at all.
//   - [github.com/ferryhq/ferry/store/storetest] is the conformance suite every
//     implementation passes; the S3 one runs it against a real MinIO server
//     and a real versitygw.
//
// The package knows nothing of RPC. Errors are neutral sentinel values
// ([ErrNotFound], [ErrUploadNotFound], ...) that callers test with
// [errors.Is]; the upload and download packages map them to Connect codes.
//
// # Checksums
//
// Every part carries a CRC32C (Castagnoli) of its bytes, checked by the store
// before the part is committed. A completed object carries a full-object
// CRC32C, the CRC32C of all its bytes in order, which the caller computes
// from the parts' CRCs with [CombineCRC32C] and the store records (S3:
// x-amz-checksum-type FULL_OBJECT). CRC32C was chosen because it composes:
// the whole-object value follows from the part values and sizes without
// reading the object again, so chunks can be verified on any server in any
// order and completion costs nothing per byte.
package store

import (
	"context"
	"errors"
	"io"
	"time"
)

// Errors returned by [Store] methods. Implementations wrap them with detail
// (fmt.Errorf("...: %w", ErrNotFound)); callers test with [errors.Is].
var (
	// ErrNotFound: no object has the key.
	ErrNotFound = errors.New("object not found")
	// ErrUploadNotFound: no multipart upload has the upload ID (never
	// created, aborted, or already completed).
	ErrUploadNotFound = errors.New("multipart upload not found")
	// ErrPreconditionFailed: a condition on the request did not hold: an
	// IfMatch ETag differs from the object's, or IfNoneMatch was set and the
	// key exists.
	ErrPreconditionFailed = errors.New("precondition failed")
	// ErrChecksumMismatch: the bytes given do not match the CRC32C given
	// with them. Nothing was stored.
	ErrChecksumMismatch = errors.New("checksum mismatch")
	// ErrInvalidPart: a part named at completion is missing, or its ETag or
	// size differs from the stored part, or a non-last part is smaller than
	// [MinPartSize]; or [Store.UploadPart] was given a part number outside
	// 1 to [MaxParts] or a size outside 0 to [MaxPartSize].
	ErrInvalidPart = errors.New("invalid part")
	// ErrSizeMismatch: the reader given to a write yielded fewer or more
	// bytes than the size given with it. Nothing was stored. When the reader
	// ended early, the error wraps [io.ErrUnexpectedEOF] too.
	ErrSizeMismatch = errors.New("data length differs from the declared size")
	// ErrInvalidRange: a read's offset is past the end of the object.
	ErrInvalidRange = errors.New("invalid range")
	// ErrConflict: a concurrent request on the same key or upload won; the
	// caller may retry.
	ErrConflict = errors.New("conflicting concurrent request")
	// ErrUnavailable: the backing store cannot be reached or is overloaded
	// right now; the request may succeed if retried.
	ErrUnavailable = errors.New("object store unavailable")
	// ErrInsufficientStorage: the store has no room left for the write (a
	// full disk or an exhausted quota: ENOSPC or EDQUOT on the disk store,
	// XMinioStorageFull, a bucket quota or HTTP 507 on S3). Nothing was
	// stored; the request may succeed once space is freed, so callers treat
	// it as retryable, with backoff.
	ErrInsufficientStorage = errors.New("object store is out of space")
)

// S3 limits that every [Store] enforces the same way, so that code tested
// against the disk store behaves the same on S3.
const (
	// MinPartSize is the smallest part S3 accepts, except for the last part
	// of an upload: 5 MiB.
	MinPartSize = 5 << 20
	// MaxPartSize is the largest part S3 accepts: 5 GiB.
	MaxPartSize = 5 << 30
	// MaxParts is the most parts one S3 multipart upload may have.
	MaxParts = 10000
	// MaxKeyLength is the longest key S3 accepts, in bytes of UTF-8.
	MaxKeyLength = 1024
)

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	// Key is the object's key.
	Key string
	// Size is the object's length in bytes.
	Size int64
	// ETag names this version of the object, without quotes. It changes
	// whenever the object's bytes change (S3 may keep it when the same bytes
	// are written again in the same parts).
	ETag string
	// ContentType is the MIME type stored with the object.
	ContentType string
	// Metadata is the user metadata stored with the object. Nil in listings.
	Metadata map[string]string
	// LastModified is when the object was written.
	LastModified time.Time
	// CRC32C is the full-object CRC32C, valid when HasCRC32C is true.
	// Listings may leave it unset.
	CRC32C uint32
	// HasCRC32C reports whether CRC32C is known.
	HasCRC32C bool
}

// Part describes one committed part of a multipart upload.
type Part struct {
	// Number is the part number, 1 to [MaxParts].
	Number int
	// Size is the part's length in bytes.
	Size int64
	// ETag is the store's tag for the part, without quotes; completion must
	// name it.
	ETag string
	// CRC32C is the CRC32C of the part's bytes.
	CRC32C uint32
	// LastModified is when the part was written.
	LastModified time.Time
}

// CreateOptions are the attributes of an object, fixed when its multipart
// upload is created.
type CreateOptions struct {
	// ContentType is the MIME type; empty means application/octet-stream.
	ContentType string
	// Metadata is user metadata (S3 x-amz-meta-*). Keys are lower-case.
	Metadata map[string]string
}

// CompleteOptions control [Store.CompleteMultipartUpload].
type CompleteOptions struct {
	// CRC32C is the full-object CRC32C of the parts, in order; the store
	// records it with the object (see [CombineCRC32C]). A store that can
	// check it against the parts does, and fails with [ErrChecksumMismatch]
	// when it differs.
	CRC32C uint32
	// IfNoneMatch makes completion fail with [ErrPreconditionFailed] when an
	// object with the key already exists (S3 If-None-Match: *). The check
	// and the write are atomic.
	IfNoneMatch bool
	// PartsListed tells the store that the parts given were just read from
	// its ListParts for this upload, so their sizes and CRC32Cs are the
	// committed ones: a store that would list the parts again to check them
	// may skip that request. Parts replaced since (another ETag or CRC32C)
	// are still refused with [ErrInvalidPart]; a size that differs with the
	// same ETag is then the caller's error, not checked.
	PartsListed bool
}

// PutOptions control [Store.PutObject].
type PutOptions struct {
	// ContentType is the MIME type; empty means application/octet-stream.
	ContentType string
	// Metadata is user metadata (S3 x-amz-meta-*). Keys are lower-case.
	Metadata map[string]string
	// CRC32C, when HasCRC32C is set, is the CRC32C (Castagnoli) the bytes
	// must have: the store checks it before the object becomes visible and
	// fails with [ErrChecksumMismatch], storing nothing, when it differs.
	// The stored object then records it as its full-object CRC32C.
	CRC32C uint32
	// HasCRC32C reports whether CRC32C is set.
	HasCRC32C bool
	// IfNoneMatch makes the put fail with [ErrPreconditionFailed] when an
	// object with the key already exists. The check and the write are atomic.
	IfNoneMatch bool
}

// ReadOptions control [Store.ReadObject].
type ReadOptions struct {
	// IfMatch, when not empty, makes the read fail with
	// [ErrPreconditionFailed] unless the object's ETag equals it.
	IfMatch string
}

// ListPartsResult is one page of [Store.ListParts].
type ListPartsResult struct {
	// Parts in ascending part number.
	Parts []Part
	// NextPartNumberMarker is the marker for the next page, valid when
	// IsTruncated.
	NextPartNumberMarker int
	// IsTruncated reports whether more parts follow.
	IsTruncated bool
}

// MultipartUpload describes an open multipart upload.
type MultipartUpload struct {
	// Key is the key the upload writes.
	Key string
	// UploadID is the store's upload ID.
	UploadID string
	// Initiated is when the upload was created, by the store's clock.
	Initiated time.Time
}

// ListUploadsResult is one page of [Store.ListMultipartUploads].
type ListUploadsResult struct {
	// Uploads of the key, oldest first.
	Uploads []MultipartUpload
	// NextUploadIDMarker is the marker for the next page, valid when
	// IsTruncated.
	NextUploadIDMarker string
	// IsTruncated reports whether more uploads follow.
	IsTruncated bool
}

// ListResult is one page of [Store.ListObjects].
type ListResult struct {
	// Objects in ascending UTF-8 byte order of key.
	Objects []ObjectInfo
	// IsTruncated reports whether more objects follow; the next page starts
	// after the last key of this one.
	IsTruncated bool
}

// Store is an object store in S3's terms. Keys are not validated here
// beyond what the backend requires: callers validate them once
// (see [ValidateKey]). Every method takes a context that bounds it.
//
// All implementations must be safe for concurrent use by several goroutines
// and, for S3, by several processes: no method may rely on state kept in the
// memory of one process.
type Store interface {
	// CreateMultipartUpload starts a multipart upload for key and returns its
	// upload ID. Nothing is visible under key until completion.
	CreateMultipartUpload(ctx context.Context, key string, opts CreateOptions) (uploadID string, err error)

	// UploadPart stores part number (1 to [MaxParts]) of an upload from r,
	// which must yield exactly size bytes (0 to [MaxPartSize]) whose CRC32C
	// is crc32c. A number or size outside those ranges is [ErrInvalidPart],
	// before anything is read from r or sent. The part is committed only
	// when all size bytes were read and matched: if r fails (the error
	// wraps r's), yields a different length ([ErrSizeMismatch]), or the
	// CRC32C differs ([ErrChecksumMismatch]), no part is stored and an
	// earlier part with the same number is left as it was. Uploading a part
	// number again replaces that part atomically. Returns
	// [ErrUploadNotFound] for an unknown upload.
	UploadPart(ctx context.Context, key, uploadID string, number int, r io.Reader, size int64, crc32c uint32) (Part, error)

	// ListParts returns up to maxParts (1 to 1000) committed parts with
	// numbers greater than partNumberMarker. Returns [ErrUploadNotFound] for
	// an unknown upload, and [ErrConflict] when the store cannot tell yet
	// whether a part that is being written at that moment is committed
	// (distributed MinIO while one part number is written twice at once);
	// listing again after that write finishes answers.
	ListParts(ctx context.Context, key, uploadID string, partNumberMarker, maxParts int) (ListPartsResult, error)

	// CompleteMultipartUpload makes the object from parts, which must be in
	// ascending number and each match a committed part's number, ETag and
	// size ([ErrInvalidPart] otherwise). The object replaces any object with
	// the key atomically; see [CompleteOptions] for the conditional form.
	// Returns [ErrUploadNotFound] for an unknown upload. A completion
	// repeated after the store made the object (its first answer lost, or
	// the store interrupted between committing the object and forgetting
	// the upload) may return that object instead, as long as it is still
	// the one under key.
	CompleteMultipartUpload(ctx context.Context, key, uploadID string, parts []Part, opts CompleteOptions) (ObjectInfo, error)

	// AbortMultipartUpload discards an upload and its parts. Returns
	// [ErrUploadNotFound] for an unknown upload.
	AbortMultipartUpload(ctx context.Context, key, uploadID string) error

	// ListMultipartUploads returns up to maxUploads (1 to 1000) open
	// multipart uploads of exactly key, oldest first, starting after the
	// upload uploadIDMarker ("" for the first page). It lists one key
	// because that is all MinIO can list (S3 lists every key under a
	// prefix). ferry uses it to find uploads whose creation a crash cut
	// short, before their upload ID was recorded anywhere.
	ListMultipartUploads(ctx context.Context, key, uploadIDMarker string, maxUploads int) (ListUploadsResult, error)

	// PutObject writes an object in one request from r, which must yield
	// exactly size bytes: if r fails (the error wraps r's) or yields a
	// different length ([ErrSizeMismatch]), nothing is written. ferry uses
	// it for upload manifests and for uploads that fit in one chunk (at
	// most the largest chunk size), so it must take at least 64 MiB. The
	// object replaces any object with the key atomically; see [PutOptions]
	// for the conditional and the checksummed forms.
	PutObject(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (ObjectInfo, error)

	// ReadObject opens the byte range [offset, offset+length) of an object;
	// length < 0 means to the end, and a range past the end is cut short.
	// The caller closes the reader. Returns [ErrNotFound],
	// [ErrInvalidRange] when offset > size, or [ErrPreconditionFailed].
	ReadObject(ctx context.Context, key string, offset, length int64, opts ReadOptions) (io.ReadCloser, ObjectInfo, error)

	// StatObject returns an object's attributes, or [ErrNotFound].
	StatObject(ctx context.Context, key string) (ObjectInfo, error)

	// ListObjects returns up to maxKeys (1 to 1000) objects whose keys start
	// with prefix and sort after startAfter, in ascending byte order.
	ListObjects(ctx context.Context, prefix, startAfter string, maxKeys int) (ListResult, error)

	// DeleteObject removes an object. Removing a missing key succeeds.
	DeleteObject(ctx context.Context, key string) error
}
