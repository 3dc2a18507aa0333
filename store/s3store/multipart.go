package s3store

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/ferryhq/ferry/store"
)

// S3 headers for checksums (AWS "Checking object integrity"); minio-go
// sends the ones given as PutObjectOptions.UserMetadata with an x-amz-
// prefix as plain headers.
const (
	hdrChecksumAlgorithm = "x-amz-checksum-algorithm"
	hdrChecksumType      = "x-amz-checksum-type"
	hdrChecksumCRC32C    = "x-amz-checksum-crc32c"
	checksumFullObject   = "FULL_OBJECT"
	checksumComposite    = "COMPOSITE"
	metaPrefix           = "x-amz-meta-"
)

// maxListParts is the most parts one ListParts request returns (S3's limit).
const maxListParts = 1000

// CreateMultipartUpload implements [store.Store]. The upload is created with
// the CRC32C checksum algorithm and the FULL_OBJECT checksum type.
func (s *Store) CreateMultipartUpload(ctx context.Context, key string, opts store.CreateOptions) (string, error) {
	meta := make(map[string]string, len(opts.Metadata)+2)
	for k, v := range opts.Metadata {
		meta[metaPrefix+strings.ToLower(k)] = v
	}
	meta[hdrChecksumAlgorithm] = "CRC32C"
	meta[hdrChecksumType] = checksumFullObject
	id, err := s.core.NewMultipartUpload(ctx, s.bucket, key, minio.PutObjectOptions{
		ContentType:  opts.ContentType,
		UserMetadata: meta,
	})
	if err != nil {
		return "", mapError("CreateMultipartUpload", key, err)
	}
	return id, nil
}

// UploadPart implements [store.Store]. r is streamed to S3 as the request
// body through a verifying reader (see the package documentation), with
// x-amz-checksum-crc32c so that S3 checks the part too. A part number
// outside 1 to [store.MaxParts] or a size outside 0 to [store.MaxPartSize]
// is [store.ErrInvalidPart], before any request.
func (s *Store) UploadPart(ctx context.Context, key, uploadID string, number int, r io.Reader, size int64, crc32c uint32) (store.Part, error) {
	switch {
	case number < 1 || number > store.MaxParts:
		return store.Part{}, fmt.Errorf("s3 UploadPart %q: %w: part number %d is outside 1 to %d", key, store.ErrInvalidPart, number, store.MaxParts)
	case size < 0 || size > store.MaxPartSize:
		return store.Part{}, fmt.Errorf("s3 UploadPart %q: %w: part size %d bytes is outside 0 to %d", key, store.ErrInvalidPart, size, int64(store.MaxPartSize))
	}
	body := newVerifyingReader(r, size, crc32c)
	if size == 0 {
		// No body is sent, so check the reader and the CRC32C here.
		if err := body.verifyEmpty(); err != nil {
			return store.Part{}, fmt.Errorf("s3 UploadPart %q part %d: %w", key, number, err)
		}
	}
	p, err := s.core.PutObjectPart(ctx, s.bucket, key, uploadID, number, body, size, minio.PutObjectPartOptions{
		// UNSIGNED-PAYLOAD: no SHA-256 pass over the data, and no
		// aws-chunked framing on plain HTTP; the CRC32C protects the bytes.
		DisableContentSha256: true,
		CustomHeader:         http.Header{http.CanonicalHeaderKey(hdrChecksumCRC32C): {encodeCRC32C(crc32c)}},
	})
	body.Close() // minio-go has closed it already; see verifyingReader
	if ferr := body.failure(); ferr != nil {
		// The reader failed or did not match: the request was cut short
		// and S3 stored nothing, whatever the HTTP error says.
		return store.Part{}, fmt.Errorf("s3 UploadPart %q part %d: %w", key, number, ferr)
	}
	if err != nil {
		return store.Part{}, mapError(fmt.Sprintf("UploadPart (part %d)", number), key, err)
	}
	return store.Part{
		Number:       number,
		Size:         size,
		ETag:         trimETag(p.ETag),
		CRC32C:       crc32c,
		LastModified: nowUTC(),
	}, nil
}

// ListParts implements [store.Store]. maxParts outside 1 to 1000 is taken
// as 1000. A page that lists a part without an ETag, which S3 servers do
// while the part is being written (see uncommittedPart), fails with
// [store.ErrConflict].
func (s *Store) ListParts(ctx context.Context, key, uploadID string, partNumberMarker, maxParts int) (store.ListPartsResult, error) {
	if maxParts < 1 || maxParts > maxListParts {
		maxParts = maxListParts
	}
	res, err := s.core.ListObjectParts(ctx, s.bucket, key, uploadID, partNumberMarker, maxParts)
	if err != nil {
		return store.ListPartsResult{}, mapError("ListParts", key, err)
	}
	out := store.ListPartsResult{
		Parts:                make([]store.Part, 0, len(res.ObjectParts)),
		NextPartNumberMarker: res.NextPartNumberMarker,
		IsTruncated:          res.IsTruncated,
	}
	for _, p := range res.ObjectParts {
		if trimETag(p.ETag) == "" {
			// Not committed yet: see uncommittedPart.
			return store.ListPartsResult{}, uncommittedPart(key, p.PartNumber)
		}
		crc, ok := decodeCRC32C(p.ChecksumCRC32C)
		if !ok {
			return store.ListPartsResult{}, fmt.Errorf("s3 ListParts %q: part %d has no CRC32C (%q): the upload was not created by this store", key, p.PartNumber, p.ChecksumCRC32C)
		}
		out.Parts = append(out.Parts, store.Part{
			Number:       p.PartNumber,
			Size:         p.Size,
			ETag:         trimETag(p.ETag),
			CRC32C:       crc,
			LastModified: p.LastModified,
		})
	}
	if out.IsTruncated && out.NextPartNumberMarker == 0 && len(out.Parts) > 0 {
		out.NextPartNumberMarker = out.Parts[len(out.Parts)-1].Number
	}
	return out, nil
}

// uncommittedPart is the error of a listing that holds a part without an
// ETag: [store.ErrConflict], since the part is being written by a request
// that has not finished, and listing again once it has shows the part
// committed (or not at all).
//
// Distributed MinIO lists such a part while the same part number is
// stored twice at once (a chunk retried on another server while its first
// attempt is still being written): each drive answers for the write it
// has, no ETag is on enough drives for MinIO's read quorum, and MinIO
// lists the part number with an empty ETag, size 0 and no checksum
// instead of leaving it out. Taking it for a committed part would name no
// ETag at completion; leaving it out would make a completion fail as
// incomplete although the part is stored. The caller retries instead.
func uncommittedPart(key string, number int) error {
	return fmt.Errorf("s3 ListParts %q: %w: part %d is listed without an ETag (being written by another request); list again", key, store.ErrConflict, number)
}

// allParts returns every committed part of an upload by number.
func (s *Store) allParts(ctx context.Context, key, uploadID string) (map[int]store.Part, error) {
	parts := make(map[int]store.Part)
	marker := 0
	for {
		res, err := s.ListParts(ctx, key, uploadID, marker, maxListParts)
		if err != nil {
			return nil, err
		}
		for _, p := range res.Parts {
			parts[p.Number] = p
		}
		if !res.IsTruncated {
			return parts, nil
		}
		if res.NextPartNumberMarker <= marker {
			return nil, fmt.Errorf("s3 ListParts %q: the server's part number marker does not advance (%d after %d)", key, res.NextPartNumberMarker, marker)
		}
		marker = res.NextPartNumberMarker
	}
}

// CompleteMultipartUpload implements [store.Store].
//
// Before asking S3, it lists the upload's parts and checks that the parts
// named are in ascending order, committed with that ETag and size, at least
// [store.MinPartSize] bytes except the last ([store.ErrInvalidPart]
// otherwise), and that their CRC32Cs combine to opts.CRC32C
// ([store.ErrChecksumMismatch] otherwise). S3 checks all of this again
// atomically, with the full-object CRC32C and If-None-Match sent with the
// request. With opts.PartsListed the listing is skipped (one request fewer
// per completion) and the parts given are checked as they are; S3 still
// refuses a part whose ETag or CRC32C is not the committed one.
//
// When minio-go had to send the request more than once (a connection lost
// after S3 completed the upload) and the repeat found the upload gone or
// the key taken, the object under key is the one this call made if its
// size and CRC32C are the ones asked for; it is then returned as success.
func (s *Store) CompleteMultipartUpload(ctx context.Context, key, uploadID string, parts []store.Part, opts store.CompleteOptions) (store.ObjectInfo, error) {
	var committed map[int]store.Part
	if opts.PartsListed {
		// The caller's parts come from ListParts: check them as they are,
		// and let S3 check their ETags and CRC32Cs atomically.
		committed = make(map[int]store.Part, len(parts))
		for _, p := range parts {
			committed[p.Number] = p
		}
	} else {
		var err error
		if committed, err = s.allParts(ctx, key, uploadID); err != nil {
			return store.ObjectInfo{}, err
		}
	}
	size, crc, err := checkParts(parts, committed)
	if err != nil {
		return store.ObjectInfo{}, fmt.Errorf("s3 CompleteMultipartUpload %q: %w", key, err)
	}
	if crc != opts.CRC32C {
		return store.ObjectInfo{}, fmt.Errorf("s3 CompleteMultipartUpload %q: %w: the parts' CRC32Cs combine to %08x, given %08x",
			key, store.ErrChecksumMismatch, crc, opts.CRC32C)
	}
	complete := make([]minio.CompletePart, len(parts))
	for i, p := range parts {
		complete[i] = minio.CompletePart{
			PartNumber:     p.Number,
			ETag:           committed[p.Number].ETag,
			ChecksumCRC32C: encodeCRC32C(committed[p.Number].CRC32C),
		}
	}
	var popts minio.PutObjectOptions
	if size > 0 {
		// MinIO refuses the (correct) CRC32C 0 of an empty object; see the
		// package documentation. It was checked above instead.
		popts.UserMetadata = map[string]string{
			hdrChecksumCRC32C: encodeCRC32C(opts.CRC32C),
			hdrChecksumType:   checksumFullObject,
		}
	}
	if opts.IfNoneMatch {
		popts.SetMatchETagExcept("*")
	}
	cctx, attempts := withAttemptCounter(ctx)
	res, err := s.core.CompleteMultipartUpload(cctx, s.bucket, key, uploadID, complete, popts)
	if err != nil {
		err = mapError("CompleteMultipartUpload", key, err)
		if attempts.Load() > 1 && (errors.Is(err, store.ErrUploadNotFound) || errors.Is(err, store.ErrPreconditionFailed)) {
			if info, ierr := s.StatObject(ctx, key); ierr == nil && info.Size == size && info.HasCRC32C && info.CRC32C == opts.CRC32C {
				return info, nil
			}
		}
		return store.ObjectInfo{}, err
	}
	info := store.ObjectInfo{
		Key:          key,
		Size:         size,
		ETag:         trimETag(res.ETag),
		LastModified: nowUTC(),
		CRC32C:       opts.CRC32C,
		HasCRC32C:    true,
	}
	// The answer has no content type, metadata or time: read them from
	// this very version, if it is still there.
	if st, err := s.stat(ctx, key, info.ETag); err == nil {
		if !st.HasCRC32C {
			st.CRC32C, st.HasCRC32C = opts.CRC32C, true
		}
		info = st
	}
	return info, nil
}

// checkParts checks the parts named at completion against the committed
// ones and returns the object's size in bytes and full-object CRC32C.
func checkParts(parts []store.Part, committed map[int]store.Part) (size int64, crc uint32, err error) {
	if len(parts) == 0 {
		return 0, 0, fmt.Errorf("%w: no parts named", store.ErrInvalidPart)
	}
	prev := 0
	for i, p := range parts {
		c, ok := committed[p.Number]
		switch {
		case i > 0 && p.Number <= prev:
			return 0, 0, fmt.Errorf("%w: part %d follows part %d: parts must be in ascending order", store.ErrInvalidPart, p.Number, prev)
		case !ok:
			return 0, 0, fmt.Errorf("%w: part %d is not committed", store.ErrInvalidPart, p.Number)
		case c.ETag != trimETag(p.ETag):
			return 0, 0, fmt.Errorf("%w: part %d has ETag %q, given %q", store.ErrInvalidPart, p.Number, c.ETag, p.ETag)
		case c.Size != p.Size:
			return 0, 0, fmt.Errorf("%w: part %d is %d bytes, given %d", store.ErrInvalidPart, p.Number, c.Size, p.Size)
		case i < len(parts)-1 && c.Size < store.MinPartSize:
			return 0, 0, fmt.Errorf("%w: part %d is %d bytes; every part but the last must be at least %d", store.ErrInvalidPart, p.Number, c.Size, store.MinPartSize)
		}
		prev = p.Number
		size += c.Size
		crc = store.CombineCRC32C(crc, c.CRC32C, c.Size)
	}
	return size, crc, nil
}

// AbortMultipartUpload implements [store.Store]. MinIO answers an abort of
// an unknown upload ID with success, so the upload is looked up first; an
// abort racing another abort or a completion of the same upload may then
// still succeed. An upload the lookup does not find is aborted all the
// same before [store.ErrUploadNotFound] is returned: MinIO out of space
// can leave an upload half created, listed by ListMultipartUploads (which
// reads its directory) but unknown to ListObjectParts (which reads its
// metadata), and only an abort removes that directory (MinIO's
// AbortMultipartUpload deletes it whether or not the upload is found).
func (s *Store) AbortMultipartUpload(ctx context.Context, key, uploadID string) error {
	if _, err := s.core.ListObjectParts(ctx, s.bucket, key, uploadID, 0, 1); err != nil {
		err = mapError("AbortMultipartUpload", key, err)
		if errors.Is(err, store.ErrUploadNotFound) {
			// Best effort: the answer is the lookup's either way.
			_ = s.core.AbortMultipartUpload(ctx, s.bucket, key, uploadID)
		}
		return err
	}
	if err := s.core.AbortMultipartUpload(ctx, s.bucket, key, uploadID); err != nil {
		return mapError("AbortMultipartUpload", key, err)
	}
	return nil
}

// ListMultipartUploads implements [store.Store]: one ListMultipartUploads
// request with key as the prefix. maxUploads outside 1 to 1000 is taken as
// 1000. MinIO answers with the uploads of that exact key; AWS with those of
// every key under it, which sort after key's own and are left out.
func (s *Store) ListMultipartUploads(ctx context.Context, key, uploadIDMarker string, maxUploads int) (store.ListUploadsResult, error) {
	if maxUploads < 1 || maxUploads > maxListParts {
		maxUploads = maxListParts
	}
	keyMarker := ""
	if uploadIDMarker != "" && !strings.HasSuffix(key, "/") {
		// S3 reads upload-id-marker only with a key-marker; MinIO refuses
		// a key-marker ending in "/" with one.
		keyMarker = key
	}
	res, err := s.core.ListMultipartUploads(ctx, s.bucket, key, keyMarker, uploadIDMarker, "", maxUploads)
	if keyMarker != "" && uploadIDMarkerRefused(err) {
		// versitygw (v1.8.0) lists only the keys after key-marker and
		// looks for upload-id-marker among the uploads of the first of
		// them, so it refuses the marker of a page of key's own uploads.
		// A key-marker just before key (a proper prefix of it sorts
		// before it, and nothing under the prefix key sorts between)
		// makes key that first key. Servers that read key-marker as AWS
		// documents never refuse it, so never get here: for them the
		// upload-id-marker would not apply to this key-marker.
		res, err = s.core.ListMultipartUploads(ctx, s.bucket, key, key[:len(key)-1], uploadIDMarker, "", maxUploads)
	}
	if err != nil {
		return store.ListUploadsResult{}, mapError("ListMultipartUploads", key, err)
	}
	var out store.ListUploadsResult
	for _, u := range res.Uploads {
		if u.Key != key {
			return out, nil // another key under the prefix: key's uploads are done
		}
		out.Uploads = append(out.Uploads, store.MultipartUpload{Key: u.Key, UploadID: u.UploadID, Initiated: u.Initiated})
	}
	if res.IsTruncated && len(out.Uploads) > 0 && (res.NextKeyMarker == "" || res.NextKeyMarker == key) {
		out.IsTruncated = true
		out.NextUploadIDMarker = cmp.Or(res.NextUploadIDMarker, out.Uploads[len(out.Uploads)-1].UploadID)
	}
	return out, nil
}

// encodeCRC32C is the S3 form of a CRC32C: base64 of its 4 big-endian bytes.
func encodeCRC32C(crc uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc)
	return base64.StdEncoding.EncodeToString(b[:])
}

// decodeCRC32C parses the S3 form of a CRC32C. A composite checksum
// ("...-N") or anything else that is not 4 bytes of base64 is not one.
func decodeCRC32C(s string) (uint32, bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(b), true
}

// trimETag removes the quotes S3 puts around ETags.
func trimETag(etag string) string {
	return strings.TrimSuffix(strings.TrimPrefix(etag, `"`), `"`)
}
