package upload

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
)

// completedPrefix is where completion records live: one object per upload
// completed within the last [Config.CompletedTTL].
const completedPrefix = store.ReservedPrefix + "completed/"

// maxCompletionBytes bounds a completion record read: the largest, of
// 10,000 chunks with 2 KiB of metadata and a 1 KiB key, is about 57 KiB.
const maxCompletionBytes = 128 << 10

// completion is the record of a completed upload, stored as JSON at
// completedPrefix+UploadID after the store made the object and before the
// manifest is removed. With it a completion repeated after its answer was
// lost, on any server and after a restart, returns the same object: it is
// what makes CompleteUpload idempotent. It is immutable.
type completion struct {
	Version  int    `json:"version"`
	UploadID string `json:"upload_id"`
	// The object made: its key, size in bytes, ETag and full-object CRC32C
	// (which every completed object has), content type and metadata.
	Key         string            `json:"key"`
	Size        int64             `json:"size"`
	ETag        string            `json:"etag"`
	CRC32C      uint32            `json:"crc32c"`
	ContentType string            `json:"content_type,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// The upload's chunk size in bytes, and its chunks' CRC32Cs in order
	// (4 big-endian bytes each, in base64), so that a chunk sent again is
	// checked against the one that went into the object. Empty when the
	// completion was recorded after a crash, from the object alone.
	ChunkSize   int64  `json:"chunk_size"`
	ChunkCRC32C string `json:"chunk_crc32c,omitempty"`
	IfNoneMatch bool   `json:"if_none_match,omitempty"`
	// When the upload was created and when its object was written.
	CreatedAt   time.Time `json:"created_at"`
	CompletedAt time.Time `json:"completed_at"`
}

func completionKey(uploadID string) string { return completedPrefix + uploadID }

// newCompletion records the completion of upload m as the object info,
// made of parts (nil when they are no longer known).
func newCompletion(m *manifest, info store.ObjectInfo, parts []store.Part) *completion {
	c := &completion{
		Version:     1,
		UploadID:    m.UploadID,
		Key:         m.Key,
		Size:        info.Size,
		ETag:        info.ETag,
		CRC32C:      info.CRC32C,
		ContentType: info.ContentType,
		Metadata:    info.Metadata,
		ChunkSize:   m.ChunkSize,
		IfNoneMatch: m.IfNoneMatch,
		CreatedAt:   m.CreatedAt,
		CompletedAt: info.LastModified.UTC(),
	}
	if c.ContentType == "" {
		c.ContentType = m.ContentType
	}
	if c.Metadata == nil {
		c.Metadata = m.Metadata
	}
	if len(parts) > 0 {
		b := make([]byte, 0, 4*len(parts))
		for _, p := range parts {
			b = binary.BigEndian.AppendUint32(b, p.CRC32C)
		}
		c.ChunkCRC32C = base64.StdEncoding.EncodeToString(b)
	}
	return c
}

// count returns the number of chunks of the object.
func (c *completion) count() int64 { return chunkCount(c.Size, c.ChunkSize) }

// object returns the object the upload made.
func (c *completion) object() store.ObjectInfo {
	return store.ObjectInfo{
		Key:          c.Key,
		Size:         c.Size,
		ETag:         c.ETag,
		ContentType:  c.ContentType,
		Metadata:     c.Metadata,
		LastModified: c.CompletedAt,
		CRC32C:       c.CRC32C,
		HasCRC32C:    true,
	}
}

// chunks returns the chunks that went into the object, as committed parts,
// or nil when the record does not know them.
func (c *completion) chunks() []store.Part {
	b, err := base64.StdEncoding.DecodeString(c.ChunkCRC32C)
	if err != nil || int64(len(b)) != 4*c.count() {
		return nil
	}
	parts := make([]store.Part, c.count())
	for i := range parts {
		parts[i] = store.Part{
			Number:       i + 1,
			Size:         chunkLen(int64(i), c.Size, c.ChunkSize),
			CRC32C:       binary.BigEndian.Uint32(b[4*i:]),
			LastModified: c.CompletedAt,
		}
	}
	return parts
}

// checkFinish checks what a repeated completion gives (nil: not given)
// against the object the upload made.
func (c *completion) checkFinish(size *int64, crc *uint32) error {
	switch {
	case size != nil && *size != c.Size:
		return wire.Errorf(wire.ErrInvalidArgument, "upload %s was completed as an object of %d bytes, not %d", c.UploadID, c.Size, *size)
	case crc != nil && *crc != c.CRC32C:
		return wire.Errorf(wire.ErrInvalidArgument, "upload %s was completed as an object with crc32c %08x, not %08x", c.UploadID, c.CRC32C, *crc)
	}
	return nil
}

// checkChunk checks a chunk sent to the completed upload against the one
// that went into its object: it is committed (in the object) only if it is
// the same. It returns the chunk as committed.
func (c *completion) checkChunk(ch *ferryv1.Chunk) (store.Part, error) {
	if ch == nil {
		return store.Part{}, wire.Errorf(wire.ErrInvalidArgument, "chunk is missing")
	}
	n := int64(len(ch.GetData()))
	if err := (geometry{size: c.Size, chunkSize: c.ChunkSize}).checkChunk(ch.GetIndex(), n); err != nil {
		return store.Part{}, err
	}
	if ch.Crc32C == nil {
		return store.Part{}, wire.Errorf(wire.ErrInvalidArgument, "chunk %d has no crc32c; it is required", ch.GetIndex())
	}
	if store.CRC32C(ch.GetData()) != ch.GetCrc32C() {
		return store.Part{}, chunkMismatch(ch.GetIndex(), ch.GetCrc32C(), n)
	}
	parts := c.chunks()
	if parts == nil {
		return store.Part{}, wire.Errorf(wire.ErrIncomplete, "upload %s is completed; its chunks can no longer be checked, so no chunk can be sent to it", c.UploadID)
	}
	p := parts[ch.GetIndex()]
	if p.CRC32C != ch.GetCrc32C() {
		return store.Part{}, wire.Errorf(wire.ErrIncomplete, "upload %s is completed, and its chunk %d had crc32c %08x, not %08x: the data changed since", c.UploadID, ch.GetIndex(), p.CRC32C, ch.GetCrc32C())
	}
	return p, nil
}

// uploadInfo describes the completed upload as GetUpload does an open one;
// it expires when its record does.
func (s *Service) completedInfo(c *completion) *ferryv1.UploadInfo {
	size, crc := c.Size, c.CRC32C
	return &ferryv1.UploadInfo{
		UploadId: c.UploadID,
		Spec: &ferryv1.UploadSpec{
			Key:         c.Key,
			Size:        &size,
			ContentType: c.ContentType,
			Metadata:    c.Metadata,
			ChunkSize:   c.ChunkSize,
			Crc32C:      &crc,
			IfNoneMatch: c.IfNoneMatch,
		},
		ChunkCount: c.count(),
		CreatedAt:  timestamppb.New(c.CreatedAt),
		ExpiresAt:  timestamppb.New(c.CompletedAt.Add(s.completedTTL)),
	}
}

// saveCompletion writes c. Not IfNoneMatch: two completions of one upload
// that both reach here made the same object, and a conditional put that
// the S3 client retries after a lost answer would fail although it
// succeeded.
func (s *Service) saveCompletion(ctx context.Context, c *completion) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = s.store.PutObject(ctx, completionKey(c.UploadID), bytes.NewReader(b), int64(len(b)), store.PutOptions{ContentType: "application/json"})
	return err
}

// readCompletion reads the completion record of upload id, or returns an
// error wrapping [store.ErrUploadNotFound] when there is none.
func (s *Service) readCompletion(ctx context.Context, id string) (*completion, error) {
	r, _, err := s.store.ReadObject(ctx, completionKey(id), 0, maxCompletionBytes, store.ReadOptions{})
	if errors.Is(err, store.ErrNotFound) {
		return nil, uploadNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var c completion
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("completion record of upload %s is corrupt: %w", id, err)
	}
	if c.UploadID != id || c.ChunkSize <= 0 || c.Size < 0 {
		return nil, fmt.Errorf("completion record of upload %s is inconsistent", id)
	}
	return &c, nil
}

// findCompletion returns the completion record of upload id, or nil and
// no error when there is none.
func (s *Service) findCompletion(ctx context.Context, id string) (*completion, error) {
	c, err := s.readCompletion(ctx, id)
	if errors.Is(err, store.ErrUploadNotFound) {
		return nil, nil
	}
	return c, err
}

// answer is what a completion answers with c's object, or with err.
func (c *completion) answer(err error) (store.ObjectInfo, int64, error) {
	if err != nil {
		return store.ObjectInfo{}, 0, err
	}
	return c.object(), c.count(), nil
}

// openCompleted returns the completion record of upload id, checked with
// the Authorize hook as [Service.openUpload] checks a manifest: when there
// is none or the caller may not see it, the error is notFound, the one the
// caller got for the open upload.
func (s *Service) openCompleted(ctx context.Context, id string, notFound error) (*completion, error) {
	if !errors.Is(notFound, store.ErrUploadNotFound) {
		return nil, notFound
	}
	c, err := s.readCompletion(ctx, id)
	if errors.Is(err, store.ErrUploadNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if s.authorize != nil {
		if err := s.authorize(ctx, c.Key); err != nil {
			s.log.DebugContext(ctx, "completed upload refused", "upload_id", id, "err", err)
			return nil, notFound
		}
	}
	return c, nil
}

// recordCompletion writes the completion record of upload m, whose object
// info was just made of parts, then removes the manifest. Both happen even
// if the client goes away meanwhile. Should the record not be written, the
// manifest is kept: a repeated completion then still finds the object by
// its size and CRC32C, and the sweeper removes the manifest after the TTL.
func (s *Service) recordCompletion(ctx context.Context, m *manifest, info store.ObjectInfo, parts []store.Part) {
	ctx = context.WithoutCancel(ctx)
	if err := s.saveCompletion(ctx, newCompletion(m, info, parts)); err != nil {
		s.log.WarnContext(ctx, "write completion record; the manifest is kept", "upload_id", m.UploadID, "key", m.Key, "err", err)
		return
	}
	if err := s.deleteManifest(ctx, m.UploadID); err != nil {
		// The sweeper removes manifests whose multipart upload is gone.
		s.log.WarnContext(ctx, "delete manifest after completion", "upload_id", m.UploadID, "err", err)
	}
}

// ours reports whether info, the object under m's key, is the one upload m
// made, of size bytes with full-object CRC32C crc, when the record of that
// is missing: it has that size and CRC32C and was written after the upload
// began (with a minute for clocks that differ).
func ours(m *manifest, info store.ObjectInfo, size int64, crc uint32) bool {
	return info.Size == size && info.HasCRC32C && info.CRC32C == crc && !info.LastModified.Before(m.CreatedAt.Add(-time.Minute))
}
