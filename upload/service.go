package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
)

// Config configures a [Service].
type Config struct {
	// Store holds the uploads and the objects. Required.
	Store store.Store
	// ChunkSize is the chunk size, in bytes, given to uploads whose client
	// asks for none. Default [DefaultChunkSize] (7 MiB).
	ChunkSize int64
	// MaxChunkSize is the largest chunk size, in bytes, an upload may have.
	// A chunk is held in server memory while it is stored, so this bounds
	// memory per stream. Default [DefaultMaxChunkSize] (64 MiB); at most
	// store.MaxPartSize.
	MaxChunkSize int64
	// TTL is how long an upload may stay idle (no chunk committed) before
	// [Service.Sweep] aborts it. Default 24 hours.
	TTL time.Duration
	// CompletedTTL is how long a completed upload is remembered: for that
	// long a repeated completion of its upload ID (a retry whose first
	// answer was lost, on any server, after a restart) returns the object
	// it made, and GetUpload describes it; then [Service.Sweep] removes
	// its record and the upload ID is NotFound. Default TTL.
	CompletedTTL time.Duration
	// Logger receives the service's logs. Default slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Default time.Now; tests set it.
	Now func() time.Time
	// Authorize, when set, is called with the key of an upload named by its
	// ID (PutChunk, GetUpload, CompleteUpload, AbortUpload, and an Upload
	// stream whose header names an upload_id) once its manifest is loaded.
	// When it returns an error the request is answered NotFound exactly as
	// for an upload ID that never existed, so a caller learns nothing about
	// uploads it may not touch; the error is only logged (at debug level).
	// Default nil: every upload ID may be used. Servers with tokens set
	// auth.AuthorizeUpload.
	Authorize func(ctx context.Context, key string) error
	// MaxObjectSize is the largest object, in bytes, an upload may create:
	// a larger declared size, a chunk ending past it or a completion size
	// over it is InvalidArgument. Default 0: S3's limit of 5 TiB.
	MaxObjectSize int64
}

// Service implements ferry's upload rules on a [store.Store] and serves them
// as [ferryv1connect.UploadServiceHandler]. It keeps no state of its own
// beyond a cache of immutable manifests: several Services on several
// machines may share one store.
type Service struct {
	store        store.Store
	chunkSize    int64
	maxChunkSize int64
	ttl          time.Duration
	completedTTL time.Duration
	log          *slog.Logger
	now          func() time.Time

	manifests manifestCache
	loads     singleflight.Group

	authorize     func(ctx context.Context, key string) error
	maxObjectSize int64
}

// NewService returns a Service for cfg, with defaults filled in. It fails
// when cfg.Store is nil or the sizes are out of S3's bounds.
func NewService(cfg Config) (*Service, error) {
	s := &Service{
		store:        cfg.Store,
		chunkSize:    cfg.ChunkSize,
		maxChunkSize: cfg.MaxChunkSize,
		ttl:          cfg.TTL,
		completedTTL: cfg.CompletedTTL,
		log:          cfg.Logger,
		now:          cfg.Now,

		authorize:     cfg.Authorize,
		maxObjectSize: cfg.MaxObjectSize,
	}
	if s.maxObjectSize == 0 {
		s.maxObjectSize = s3MaxObjectSize
	}
	if s.store == nil {
		return nil, errors.New("upload: Config.Store is nil")
	}
	if s.chunkSize == 0 {
		s.chunkSize = DefaultChunkSize
	}
	if s.maxChunkSize == 0 {
		s.maxChunkSize = max(DefaultMaxChunkSize, s.chunkSize)
	}
	if s.ttl == 0 {
		s.ttl = 24 * time.Hour
	}
	if s.completedTTL == 0 {
		s.completedTTL = s.ttl
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	switch {
	case s.chunkSize < store.MinPartSize:
		return nil, fmt.Errorf("upload: chunk size %d is under S3's minimum part size of %d bytes", s.chunkSize, store.MinPartSize)
	case s.maxChunkSize < s.chunkSize || s.maxChunkSize > store.MaxPartSize:
		return nil, fmt.Errorf("upload: max chunk size %d must be between the chunk size %d and S3's maximum part size of %d bytes", s.maxChunkSize, s.chunkSize, int64(store.MaxPartSize))
	case s.ttl < 0:
		return nil, fmt.Errorf("upload: TTL %v is negative", s.ttl)
	case s.completedTTL < 0:
		return nil, fmt.Errorf("upload: completed TTL %v is negative", s.completedTTL)
	}
	return s, nil
}

// s3MaxObjectSize is the largest object S3 stores: 5 TiB.
const s3MaxObjectSize = 5 << 40

// openUpload loads the manifest of upload id and checks it with the
// Authorize hook: an upload the caller may not touch is not found, with
// the same message as one that never existed.
func (s *Service) openUpload(ctx context.Context, id string) (*manifest, error) {
	m, err := s.loadManifest(ctx, id)
	if err != nil || s.authorize == nil {
		return m, err
	}
	if err := s.authorize(ctx, m.Key); err != nil {
		s.log.DebugContext(ctx, "upload refused", "upload_id", id, "err", err)
		return nil, uploadNotFound(id)
	}
	return m, nil
}

// checkObjectSize refuses an object of size bytes, or a chunk ending at
// byte size, over the configured maximum.
func (s *Service) checkObjectSize(size int64) error {
	if size > s.maxObjectSize {
		return wire.Errorf(wire.ErrInvalidArgument, "object size %d bytes exceeds this server's maximum of %d bytes", size, s.maxObjectSize)
	}
	return nil
}

// MaxChunkSize returns the largest chunk, in bytes, the service accepts.
func (s *Service) MaxChunkSize() int64 { return s.maxChunkSize }

// MaxMessageBytes returns the largest request message, in bytes, of the
// procedures that carry chunks (Upload, PutChunk) on a service whose
// largest chunk is maxChunkSize bytes: the chunk and 1 MiB for the rest of
// the message and its envelope. Servers set their read limit for those
// procedures to it; any larger message is refused before it is read.
func MaxMessageBytes(maxChunkSize int64) int64 { return maxChunkSize + 1<<20 }

// create validates spec and starts an upload in three steps: a pending
// manifest (the upload's key and ID, no multipart upload yet), the store's
// multipart upload, then the manifest that names it. The pending manifest
// lets [Service.Sweep] find and abort a multipart upload whose creation a
// crash cut short before it was recorded. If the manifest cannot be
// written the multipart upload is aborted, so nothing leaks.
func (s *Service) create(ctx context.Context, spec *ferryv1.UploadSpec) (*manifest, error) {
	size, chunk, err := s.checkSpec(spec)
	if err != nil {
		return nil, err
	}
	if err := s.checkKeyFree(ctx, spec.GetKey()); err != nil { // see conflict.go
		return nil, err
	}
	m := &manifest{
		Version:     1,
		UploadID:    uuid.NewString(),
		Key:         spec.GetKey(),
		Size:        size,
		ChunkSize:   chunk,
		ContentType: spec.GetContentType(),
		Metadata:    spec.GetMetadata(),
		CRC32C:      spec.Crc32C,
		IfNoneMatch: spec.GetIfNoneMatch(),
		CreatedAt:   s.now().UTC(),
	}
	if err := s.saveManifest(ctx, m); err != nil { // pending: no StoreUploadID yet
		return nil, err
	}
	storeID, err := s.store.CreateMultipartUpload(ctx, m.Key, store.CreateOptions{
		ContentType: m.ContentType,
		Metadata:    m.Metadata,
	})
	if err != nil {
		if storeFault(err) {
			// The store may have made the upload all the same (MinIO does
			// when it runs out of space midway): the pending manifest
			// stays, for the sweeper to abort it.
			return nil, err
		}
		if derr := s.deleteManifest(context.WithoutCancel(ctx), m.UploadID); derr != nil {
			s.log.WarnContext(ctx, "delete pending manifest", "upload_id", m.UploadID, "err", derr)
		}
		return nil, err
	}
	m.StoreUploadID = storeID
	if err := s.saveManifest(ctx, m); err != nil {
		if aerr := s.abort(context.WithoutCancel(ctx), m); aerr != nil {
			s.log.WarnContext(ctx, "abort after failed manifest write", "key", m.Key, "err", aerr)
		}
		return nil, err
	}
	s.log.DebugContext(ctx, "upload created", "upload_id", m.UploadID, "key", m.Key, "size", size, "chunk_size", chunk)
	return m, nil
}

// storeFault reports whether err, from a store call, is the store's own
// failure (unreachable, out of space, broken) rather than a refusal of the
// request: then the call may have done its work all the same, and may
// succeed if tried again.
func storeFault(err error) bool {
	return !wire.ClientSafe(err)
}

// checkSpec validates the spec of a new upload and returns its size (-1
// when not given) and the chunk size it gets.
func (s *Service) checkSpec(spec *ferryv1.UploadSpec) (size, chunk int64, err error) {
	if spec == nil {
		return 0, 0, wire.Errorf(wire.ErrInvalidArgument, "upload spec is missing")
	}
	if err := store.ValidateKey(spec.GetKey()); err != nil {
		return 0, 0, err
	}
	size = -1
	if spec.Size != nil {
		size = spec.GetSize()
		if size < 0 {
			return 0, 0, wire.Errorf(wire.ErrInvalidArgument, "size must not be negative, got %d", size)
		}
	}
	chunk, err = chooseChunkSize(size, spec.GetChunkSize(), s.chunkSize, s.maxChunkSize)
	if err != nil {
		return 0, 0, err
	}
	if err := s.checkObjectSize(size); err != nil {
		return 0, 0, err
	}
	if err := checkContentType(spec.GetContentType()); err != nil {
		return 0, 0, err
	}
	if err := checkMetadata(spec.GetMetadata()); err != nil {
		return 0, 0, err
	}
	return size, chunk, nil
}

// putChunk checks chunk c against the rules of upload m and commits it. The
// store verifies the CRC32C while it streams the part, and stores nothing
// when it differs.
func (s *Service) putChunk(ctx context.Context, m *manifest, c *ferryv1.Chunk) (store.Part, error) {
	if c == nil {
		return store.Part{}, wire.Errorf(wire.ErrInvalidArgument, "chunk is missing")
	}
	n := int64(len(c.GetData()))
	if err := m.geometry().checkChunk(c.GetIndex(), n); err != nil {
		return store.Part{}, err
	}
	if err := s.checkObjectSize(c.GetIndex()*m.ChunkSize + n); err != nil {
		return store.Part{}, err
	}
	if c.Crc32C == nil {
		return store.Part{}, wire.Errorf(wire.ErrInvalidArgument, "chunk %d has no crc32c; it is required", c.GetIndex())
	}
	part, err := s.store.UploadPart(ctx, m.Key, m.StoreUploadID, int(c.GetIndex())+1, bytes.NewReader(c.GetData()), n, c.GetCrc32C())
	switch {
	case errors.Is(err, store.ErrChecksumMismatch):
		return store.Part{}, chunkMismatch(c.GetIndex(), c.GetCrc32C(), n)
	case errors.Is(err, store.ErrUploadNotFound):
		return store.Part{}, uploadNotFound(m.UploadID)
	}
	return part, err
}

// listChunks returns up to max committed parts of upload m after part
// number marker, and the marker of the next page (0 at the end).
func (s *Service) listChunks(ctx context.Context, m *manifest, marker, max int) ([]store.Part, int, error) {
	var parts []store.Part
	for len(parts) < max {
		res, err := s.store.ListParts(ctx, m.Key, m.StoreUploadID, marker, min(max-len(parts), 1000))
		if errors.Is(err, store.ErrUploadNotFound) {
			return nil, 0, uploadNotFound(m.UploadID)
		}
		if err != nil {
			return nil, 0, err
		}
		parts = append(parts, res.Parts...)
		if !res.IsTruncated {
			return parts, 0, nil
		}
		marker = res.NextPartNumberMarker
	}
	return parts, marker, nil
}

// complete verifies upload m and makes its object visible. size and crc are
// what the client gives at completion (nil: not given).
func (s *Service) complete(ctx context.Context, m *manifest, size *int64, crc *uint32) (store.ObjectInfo, int64, error) {
	total := m.Size
	switch {
	case size != nil && *size < 0:
		return store.ObjectInfo{}, 0, wire.Errorf(wire.ErrInvalidArgument, "size must not be negative, got %d", *size)
	case size != nil && total >= 0 && *size != total:
		return store.ObjectInfo{}, 0, wire.Errorf(wire.ErrInvalidArgument, "size %d differs from the %d bytes given when the upload was created", *size, total)
	case size != nil:
		total = *size
	case total < 0:
		return store.ObjectInfo{}, 0, wire.Errorf(wire.ErrInvalidArgument, "size is required: the upload was created without one")
	}
	if err := s.checkObjectSize(total); err != nil {
		return store.ObjectInfo{}, 0, err
	}
	count := chunkCount(total, m.ChunkSize)
	if count > store.MaxParts {
		return store.ObjectInfo{}, 0, wire.Errorf(wire.ErrInvalidArgument, "%d bytes in chunks of %d bytes is %d chunks; S3 allows at most %d parts", total, m.ChunkSize, count, store.MaxParts)
	}
	want := m.CRC32C
	if crc != nil {
		if want != nil && *want != *crc {
			return store.ObjectInfo{}, 0, wire.Errorf(wire.ErrInvalidArgument, "crc32c %08x differs from the %08x given when the upload was created", *crc, *want)
		}
		want = crc
	}

	parts, _, err := s.listChunks(ctx, m, 0, store.MaxParts)
	if errors.Is(err, store.ErrUploadNotFound) {
		return s.completedBefore(ctx, m, total, want)
	}
	if err != nil {
		return store.ObjectInfo{}, 0, err
	}
	var objectCRC uint32
	var missing []int64
	next := int64(0) // next chunk index expected
	for _, p := range parts {
		i := int64(p.Number - 1)
		if i >= count {
			return store.ObjectInfo{}, 0, wire.Errorf(wire.ErrIncomplete, "chunk %d is past the end of an object of %d bytes (%d chunks); abort the upload", i, total, count)
		}
		for ; next < i; next++ {
			missing = append(missing, next)
		}
		next = i + 1
		if wantLen := chunkLen(i, total, m.ChunkSize); p.Size != wantLen {
			return store.ObjectInfo{}, 0, wire.Errorf(wire.ErrIncomplete, "chunk %d is %d bytes, but an object of %d bytes needs %d; send it again", i, p.Size, total, wantLen)
		}
		objectCRC = store.CombineCRC32C(objectCRC, p.CRC32C, p.Size)
	}
	for ; next < count; next++ {
		missing = append(missing, next)
	}
	if len(missing) > 0 {
		return store.ObjectInfo{}, 0, wire.Errorf(wire.ErrIncomplete, "%d of %d chunks are missing: %s", len(missing), count, formatIndexes(missing))
	}
	if want != nil && *want != objectCRC {
		return store.ObjectInfo{}, 0, wire.Errorf(wire.ErrIncomplete, "whole-object crc32c mismatch: the stored chunks give %08x, the client expects %08x; the upload stays open", objectCRC, *want)
	}

	if err := s.checkKeyFree(ctx, m.Key); err != nil { // see conflict.go; the upload stays open
		return store.ObjectInfo{}, 0, err
	}
	info, err := s.store.CompleteMultipartUpload(ctx, m.Key, m.StoreUploadID, parts, store.CompleteOptions{
		CRC32C:      objectCRC,
		IfNoneMatch: m.IfNoneMatch,
		PartsListed: true, // just listed above
	})
	switch {
	case errors.Is(err, store.ErrPreconditionFailed) && m.IfNoneMatch, errors.Is(err, store.ErrUploadNotFound):
		return s.settle(ctx, m, parts, total, objectCRC, err)
	case errors.Is(err, store.ErrInvalidPart):
		return store.ObjectInfo{}, 0, wire.Errorf(store.ErrConflict, "a chunk of upload %s changed during completion; retry", m.UploadID)
	case err != nil:
		return store.ObjectInfo{}, 0, err
	}
	info.HasCRC32C, info.CRC32C = true, objectCRC
	s.recordCompletion(ctx, m, info, parts)
	s.log.DebugContext(ctx, "upload completed", "upload_id", m.UploadID, "key", m.Key, "size", info.Size, "chunks", count)
	return info, count, nil
}

// completedBefore answers a completion of upload m whose multipart upload
// was gone before it began: a completion repeated after its answer was
// lost, or after a crash. With the completion record, the upload is done
// and the recorded object is the answer. Without it (a crash came between
// the store's completion and the record), the object under the key counts
// as this upload's when it has the size and whole-object CRC32C the upload
// was to have, and its record is written now. Otherwise the upload is not
// found (aborted, expired).
func (s *Service) completedBefore(ctx context.Context, m *manifest, size int64, crc *uint32) (store.ObjectInfo, int64, error) {
	s.manifests.remove(m.UploadID)
	c, err := s.readCompletion(ctx, m.UploadID)
	if err == nil {
		if err := c.checkFinish(&size, crc); err != nil {
			return store.ObjectInfo{}, 0, err
		}
		if err := s.deleteManifest(context.WithoutCancel(ctx), m.UploadID); err != nil {
			s.log.WarnContext(ctx, "delete manifest of a completed upload", "upload_id", m.UploadID, "err", err)
		}
		return c.object(), c.count(), nil
	}
	if !errors.Is(err, store.ErrUploadNotFound) {
		return store.ObjectInfo{}, 0, err
	}
	if crc == nil {
		return store.ObjectInfo{}, 0, uploadNotFound(m.UploadID)
	}
	info, err := s.store.StatObject(ctx, m.Key)
	if errors.Is(err, store.ErrNotFound) || err == nil && !ours(m, info, size, *crc) {
		return store.ObjectInfo{}, 0, uploadNotFound(m.UploadID)
	}
	if err != nil {
		return store.ObjectInfo{}, 0, err
	}
	s.recordCompletion(ctx, m, info, nil)
	return info, chunkCount(size, m.ChunkSize), nil
}

// settle answers a completion of upload m that the store refused because
// the multipart upload was gone or, with if_none_match, the key was taken:
// either another completion of this same upload won (concurrent, or an
// earlier attempt whose answer was lost), and its object is the answer,
// or another write took the key (or an abort won). parts are the chunks
// listed for this completion, of size bytes and full-object CRC32C crc.
func (s *Service) settle(ctx context.Context, m *manifest, parts []store.Part, size int64, crc uint32, cause error) (store.ObjectInfo, int64, error) {
	count := chunkCount(size, m.ChunkSize)
	if c, err := s.findCompletion(ctx, m.UploadID); c != nil || err != nil {
		return c.answer(err)
	}
	_, err := s.store.ListParts(ctx, m.Key, m.StoreUploadID, 0, 1)
	switch {
	case errors.Is(err, store.ErrUploadNotFound):
		// Our multipart upload is gone: completed (by the winner, whose
		// record may not be written yet) or aborted.
		info, err := s.store.StatObject(ctx, m.Key)
		if err == nil && ours(m, info, size, crc) {
			s.recordCompletion(ctx, m, info, parts)
			return info, count, nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.ObjectInfo{}, 0, err
		}
		// The winner's record, written since, if another write replaced
		// its object meanwhile.
		if c, err := s.findCompletion(ctx, m.UploadID); c != nil || err != nil {
			return c.answer(err)
		}
		return store.ObjectInfo{}, 0, uploadNotFound(m.UploadID)
	case err != nil:
		return store.ObjectInfo{}, 0, err
	case errors.Is(cause, store.ErrPreconditionFailed):
		// Our upload is still open: another object has the key.
		if aerr := s.abort(context.WithoutCancel(ctx), m); aerr != nil {
			s.log.WarnContext(ctx, "abort after if_none_match failure", "upload_id", m.UploadID, "err", aerr)
		}
		return store.ObjectInfo{}, 0, alreadyExists(m.Key, "the upload was aborted")
	}
	return store.ObjectInfo{}, 0, wire.Errorf(store.ErrConflict, "upload %s changed during its completion; retry", m.UploadID)
}

// abort discards upload m: its multipart upload, then its manifest.
func (s *Service) abort(ctx context.Context, m *manifest) error {
	err := s.store.AbortMultipartUpload(ctx, m.Key, m.StoreUploadID)
	if err != nil && !errors.Is(err, store.ErrUploadNotFound) {
		return err
	}
	return s.deleteManifest(ctx, m.UploadID)
}

// formatIndexes writes sorted indexes as ranges ("0, 3-7, 9"), at most ten.
func formatIndexes(idx []int64) string {
	var b strings.Builder
	for i, ranges := 0, 0; i < len(idx); ranges++ {
		if ranges == 10 {
			b.WriteString(", ...")
			break
		}
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", idx[i], idx[j])
		} else {
			fmt.Fprintf(&b, "%d", idx[i])
		}
		i = j + 1
	}
	return b.String()
}
