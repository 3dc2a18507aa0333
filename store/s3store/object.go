package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/ferryhq/ferry/store"
)

// MaxBufferedPutSize is the largest object, in bytes, that [Store.PutObject]
// reads into memory before sending it when it is given no CRC32C: 16 MiB.
// Such an object is sent with its CRC32C, which S3 checks and records, and
// minio-go can send it again after a network error. A larger object is
// streamed once, checked for length only, and gets no CRC32C.
//
// An object given with its CRC32C ([store.PutOptions].HasCRC32C) is never
// buffered: it is streamed through the verifying reader of
// [Store.UploadPart], with x-amz-checksum-crc32c, so a mismatch cuts the
// request short and S3 stores nothing.
const MaxBufferedPutSize = 16 << 20

// maxListKeys is the most objects one ListObjectsV2 request returns.
const maxListKeys = 1000

// PutObject implements [store.Store]. See [MaxBufferedPutSize].
func (s *Store) PutObject(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) (store.ObjectInfo, error) {
	if size < 0 {
		return store.ObjectInfo{}, fmt.Errorf("s3 PutObject %q: negative size %d", key, size)
	}
	popts := minio.PutObjectOptions{
		ContentType:          opts.ContentType,
		DisableContentSha256: true, // the CRC32C protects the bytes, or the object is too big to hash twice
	}
	if opts.IfNoneMatch {
		popts.SetMatchETagExcept("*")
	}
	popts.UserMetadata = make(map[string]string, len(opts.Metadata)+1)
	for k, v := range opts.Metadata {
		popts.UserMetadata[metaPrefix+strings.ToLower(k)] = v
	}
	var (
		body      io.Reader
		crc       uint32
		verifying *verifyingReader
	)
	switch {
	case opts.HasCRC32C:
		crc = opts.CRC32C
		verifying = newVerifyingReader(r, size, crc)
		body = verifying
		popts.UserMetadata[hdrChecksumCRC32C] = encodeCRC32C(crc)
		if size == 0 {
			if err := verifying.verifyEmpty(); err != nil {
				return store.ObjectInfo{}, fmt.Errorf("s3 PutObject %q: %w", key, err)
			}
		}
	case size <= MaxBufferedPutSize:
		data, sum, err := readAll(r, size)
		if err != nil {
			return store.ObjectInfo{}, fmt.Errorf("s3 PutObject %q: %w", key, err)
		}
		body, crc = bytes.NewReader(data), sum
		popts.UserMetadata[hdrChecksumCRC32C] = encodeCRC32C(crc)
	default:
		verifying = newVerifyingReader(r, size, 0)
		verifying.lengthOnly = true
		body = verifying
	}
	res, err := s.core.PutObject(ctx, s.bucket, key, body, size, "", "", popts)
	if verifying != nil {
		verifying.Close() // see verifyingReader
		if ferr := verifying.failure(); ferr != nil {
			return store.ObjectInfo{}, fmt.Errorf("s3 PutObject %q: %w", key, ferr)
		}
	}
	if err != nil {
		return store.ObjectInfo{}, mapError("PutObject", key, err)
	}
	info := store.ObjectInfo{
		Key:          key,
		Size:         size,
		ETag:         trimETag(res.ETag),
		ContentType:  opts.ContentType,
		Metadata:     opts.Metadata,
		LastModified: nowUTC(),
		CRC32C:       crc,
		HasCRC32C:    verifying == nil || !verifying.lengthOnly,
	}
	if info.ContentType == "" {
		info.ContentType = "application/octet-stream"
	}
	return info, nil
}

// readAll reads exactly size bytes from r, which must end there, and
// returns them with their CRC32C.
func readAll(r io.Reader, size int64) ([]byte, uint32, error) {
	v := newVerifyingReader(r, size, 0)
	v.lengthOnly = true
	data := make([]byte, size)
	if size == 0 {
		return data, 0, v.verifyEmpty()
	}
	if _, err := io.ReadFull(v, data); err != nil {
		return nil, 0, err
	}
	return data, v.crc, nil
}

// ReadObject implements [store.Store]. It is one GET, with a Range header
// unless the range starts at 0. The GET's errors come back from this call,
// not from the first Read. A ranged GET carries no checksum, so the
// object's CRC32C then comes from a HEAD of the same version. A range that
// starts at 0 (the first request of every download) is read with a plain
// GET, which carries the checksum, cut at length: a small object then
// costs one request instead of two; for a larger one the rest of the body
// is dropped with the connection when the reader is closed. A length that
// would take the range past the largest int64 reads to the end.
func (s *Store) ReadObject(ctx context.Context, key string, offset, length int64, opts store.ReadOptions) (io.ReadCloser, store.ObjectInfo, error) {
	if offset < 0 {
		return nil, store.ObjectInfo{}, fmt.Errorf("s3 ReadObject %q: %w: negative offset %d", key, store.ErrInvalidRange, offset)
	}
	if length == 0 {
		info, err := s.stat(ctx, key, opts.IfMatch)
		if err != nil {
			return nil, store.ObjectInfo{}, err
		}
		if offset > info.Size {
			return nil, store.ObjectInfo{}, fmt.Errorf("s3 ReadObject %q: %w: offset %d is past the end (%d bytes)", key, store.ErrInvalidRange, offset, info.Size)
		}
		return io.NopCloser(bytes.NewReader(nil)), info, nil
	}
	gopts := minio.GetObjectOptions{Checksum: true}
	if opts.IfMatch != "" {
		if err := gopts.SetMatchETag(opts.IfMatch); err != nil {
			return nil, store.ObjectInfo{}, fmt.Errorf("s3 ReadObject %q: %w", key, err)
		}
	}
	if length > math.MaxInt64-offset {
		// offset+length would overflow: no object is that long, so the
		// range is to the end.
		length = -1
	}
	ranged := offset > 0
	var err error
	switch {
	case offset > 0 && length > 0:
		err = gopts.SetRange(offset, offset+length-1) // no overflow: checked above
	case offset > 0:
		err = gopts.SetRange(offset, 0) // bytes=offset-
	}
	if err != nil {
		return nil, store.ObjectInfo{}, fmt.Errorf("s3 ReadObject %q: %w", key, err)
	}
	rc, oi, h, err := s.core.GetObject(ctx, s.bucket, key, gopts)
	if err != nil {
		err = mapError("ReadObject", key, err)
		if !errors.Is(err, store.ErrInvalidRange) {
			return nil, store.ObjectInfo{}, err
		}
		// S3 refuses a range that starts at the end; the contract wants
		// no bytes there, and ErrInvalidRange only past it.
		info, serr := s.stat(ctx, key, opts.IfMatch)
		if serr != nil {
			return nil, store.ObjectInfo{}, serr
		}
		if offset != info.Size {
			return nil, store.ObjectInfo{}, fmt.Errorf("%w (offset %d, object %d bytes)", err, offset, info.Size)
		}
		return io.NopCloser(bytes.NewReader(nil)), info, nil
	}
	info := toObjectInfo(oi)
	if !ranged && length > 0 && info.Size > length {
		rc = &limitedReadCloser{Reader: io.LimitReader(rc, length), Closer: rc}
	}
	if ranged {
		if total, ok := contentRangeSize(h.Get("Content-Range")); ok {
			info.Size = total
		}
		if !info.HasCRC32C {
			if st, err := s.stat(ctx, key, info.ETag); err == nil {
				info.CRC32C, info.HasCRC32C = st.CRC32C, st.HasCRC32C
			}
		}
	}
	return rc, info, nil
}

// limitedReadCloser reads the first bytes of a body and closes the body.
type limitedReadCloser struct {
	io.Reader
	io.Closer
}

// contentRangeSize returns the complete length from a Content-Range header
// ("bytes 0-99/1000").
func contentRangeSize(h string) (int64, bool) {
	i := strings.LastIndexByte(h, '/')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(h[i+1:], 10, 64)
	return n, err == nil
}

// StatObject implements [store.Store].
func (s *Store) StatObject(ctx context.Context, key string) (store.ObjectInfo, error) {
	return s.stat(ctx, key, "")
}

// stat is a HEAD of key, conditional on ifMatch when it is not empty.
func (s *Store) stat(ctx context.Context, key, ifMatch string) (store.ObjectInfo, error) {
	sopts := minio.StatObjectOptions{Checksum: true}
	if ifMatch != "" {
		if err := sopts.SetMatchETag(ifMatch); err != nil {
			return store.ObjectInfo{}, fmt.Errorf("s3 StatObject %q: %w", key, err)
		}
	}
	oi, err := s.core.StatObject(ctx, s.bucket, key, sopts)
	if err != nil {
		return store.ObjectInfo{}, mapError("StatObject", key, err)
	}
	return toObjectInfo(oi), nil
}

// toObjectInfo converts minio-go's description of an object.
func toObjectInfo(oi minio.ObjectInfo) store.ObjectInfo {
	info := store.ObjectInfo{
		Key:          oi.Key,
		Size:         oi.Size,
		ETag:         trimETag(oi.ETag),
		ContentType:  oi.ContentType,
		LastModified: oi.LastModified,
	}
	if len(oi.UserMetadata) > 0 {
		info.Metadata = make(map[string]string, len(oi.UserMetadata))
		for k, v := range oi.UserMetadata {
			info.Metadata[strings.ToLower(k)] = v
		}
	}
	if oi.ChecksumMode != checksumComposite {
		info.CRC32C, info.HasCRC32C = decodeCRC32C(oi.ChecksumCRC32C)
	}
	if info.Size == 0 {
		// The CRC32C of no bytes is 0, recorded or not (MinIO records
		// none for an empty multipart object).
		info.CRC32C, info.HasCRC32C = 0, true
	}
	return info
}

// DeleteObject implements [store.Store].
func (s *Store) DeleteObject(ctx context.Context, key string) error {
	if err := s.core.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return mapError("DeleteObject", key, err)
	}
	return nil
}
