package upload

import (
	"bytes"
	"context"
	"errors"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
)

// oneShot is the fast path of an Upload stream that creates an upload and
// carries the whole object at once: header, chunk 0 holding every byte,
// finish, end of stream, which is how [Uploader] sends an object that fits
// in one chunk. Such a stream is stored with one [store.Store.PutObject]
// given the chunk's CRC32C, instead of five store requests (create the
// multipart upload, write the manifest, put the part, list the parts,
// complete, and delete the manifest). The rules are the same: the store
// checks the CRC32C before anything becomes visible, the object appears
// atomically, and if_none_match holds.
//
// It reads ahead at most three messages. When the stream is anything else
// (unknown size, several chunks, no finish, a CRC32C or size that
// disagrees) it returns nil and the messages it read, which the caller
// handles on the ordinary path, so every error is the one that path gives.
// A stream that breaks is that error, before anything is created: a client
// that never got an answer never learned an upload ID, so an upload made
// for it would be left open.
//
// Such a stream has no upload ID the client knows before the answer, so it
// cannot be retried idempotently: sent again after its answer was lost, it
// stores the object again (with a new ETag) or, with if_none_match, meets
// its own object and fails with ALREADY_EXISTS. [Uploader] therefore sends
// an if_none_match upload with CreateUpload first (see
// [Uploader.Upload]).
func (s *Service) oneShot(ctx context.Context, stream *connect.ClientStream[ferryv1.UploadRequest], spec *ferryv1.UploadSpec) (res *ferryv1.UploadResponse, ahead []*ferryv1.UploadRequest, err error) {
	size, chunk, err := s.checkSpec(spec)
	if err != nil || size < 0 || chunkCount(size, chunk) != 1 {
		return nil, nil, nil // the ordinary path reports err
	}
	if !stream.Receive() {
		return nil, nil, stream.Err()
	}
	ahead = append(ahead, stream.Msg())
	c := stream.Msg().GetChunk()
	if c == nil || c.GetIndex() != 0 || int64(len(c.GetData())) != size || c.Crc32C == nil {
		return nil, ahead, nil
	}
	// The chunk stays in memory while the next messages are read, until
	// PutObject returns: it must stay counted against the server's memory
	// limits (Limiter) until the request ends.
	keepMessage(ctx)
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, nil, err
		}
		return nil, ahead, nil
	}
	ahead = append(ahead, stream.Msg())
	f := stream.Msg().GetFinish()
	if f == nil || f.Size != nil && f.GetSize() != size {
		return nil, ahead, nil
	}
	keepMessage(ctx) // small, unless padded with unknown fields
	crc := c.GetCrc32C()
	for _, want := range []*uint32{spec.Crc32C, f.Crc32C} {
		if want != nil && *want != crc {
			return nil, ahead, nil // completion reports the mismatch
		}
	}
	s.log.DebugContext(ctx, "one-request upload: finish read, waiting for the end of the stream", "key", spec.GetKey())
	if stream.Receive() {
		return nil, append(ahead, stream.Msg()), nil
	}
	if err := stream.Err(); err != nil {
		return nil, nil, err // broken after the finish: nothing is stored
	}
	if err := s.checkKeyFree(ctx, spec.GetKey()); err != nil { // see conflict.go
		return nil, nil, err
	}
	info, err := s.store.PutObject(ctx, spec.GetKey(), bytes.NewReader(c.GetData()), size, store.PutOptions{
		ContentType: spec.GetContentType(),
		Metadata:    spec.GetMetadata(),
		CRC32C:      crc,
		HasCRC32C:   true,
		IfNoneMatch: spec.GetIfNoneMatch(),
	})
	switch {
	case errors.Is(err, store.ErrChecksumMismatch):
		return nil, nil, chunkMismatch(0, crc, size)
	case errors.Is(err, store.ErrPreconditionFailed) && spec.GetIfNoneMatch():
		return nil, nil, alreadyExists(spec.GetKey(), "nothing was stored")
	case err != nil:
		return nil, nil, err
	}
	info.HasCRC32C, info.CRC32C = true, crc
	if info.LastModified.IsZero() {
		info.LastModified = s.now().UTC()
	}
	s.log.DebugContext(ctx, "upload stored in one request", "key", info.Key, "size", size)
	return &ferryv1.UploadResponse{
		UploadId:   uuid.NewString(), // already complete: NotFound from now on
		Committed:  []int64{0},
		Object:     wire.Object(info),
		ChunkCount: 1,
	}, nil, nil
}
