package upload

import (
	"context"
	"errors"
	"strconv"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
)

var _ ferryv1connect.UploadServiceHandler = (*Service)(nil)

// Upload implements the client-streaming UploadService.Upload: a header,
// chunks, and an optional finish. Chunks committed before a stream breaks
// stay committed; the client resumes with the upload ID it got from
// CreateUpload or from a previous response. A stream whose header created
// the upload and that fails (broken, or refused) aborts it: its client
// never learned the upload ID, so nothing could resume it. A stream naming
// a completed upload is answered from its completion record (see
// [Service.uploadCompleted]).
func (s *Service) Upload(ctx context.Context, stream *connect.ClientStream[ferryv1.UploadRequest]) (*connect.Response[ferryv1.UploadResponse], error) {
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, wire.ConnectError(err)
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("empty stream: the first message must be a header"))
	}
	header := stream.Msg().GetHeader()
	if header == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the first message must be a header"))
	}
	var m *manifest
	var err error
	var ahead []*ferryv1.UploadRequest // read by oneShot, not yet handled
	switch t := header.GetTarget().(type) {
	case *ferryv1.UploadHeader_Create:
		var res *ferryv1.UploadResponse
		if res, ahead, err = s.oneShot(ctx, stream, t.Create); res != nil {
			return connect.NewResponse(res), nil
		}
		if err == nil {
			m, err = s.create(ctx, t.Create)
		}
	case *ferryv1.UploadHeader_UploadId:
		if m, err = s.openUpload(ctx, t.UploadId); err != nil {
			var c *completion
			if c, err = s.openCompleted(ctx, t.UploadId, err); c != nil {
				return s.uploadCompleted(ctx, stream, c, nil, nil)
			}
		}
	default:
		err = wire.Errorf(wire.ErrInvalidArgument, "the header must create an upload or name one")
	}
	if err != nil {
		return nil, wire.ConnectError(err)
	}
	res, err := s.uploadStream(ctx, stream, m, ahead)
	if err != nil {
		if _, created := header.GetTarget().(*ferryv1.UploadHeader_Create); created {
			if aerr := s.abort(context.WithoutCancel(ctx), m); aerr != nil {
				s.log.WarnContext(ctx, "abort the upload of a failed stream", "upload_id", m.UploadID, "err", aerr)
			}
		}
		return nil, err
	}
	return res, nil
}

// uploadStream handles the messages of an Upload stream after its header,
// for the open upload m; ahead are messages already read. When m turns out
// completed meanwhile (by another server: this one had its manifest in
// memory), the rest of the stream is answered as [Service.uploadCompleted]
// does.
func (s *Service) uploadStream(ctx context.Context, stream *connect.ClientStream[ferryv1.UploadRequest], m *manifest, ahead []*ferryv1.UploadRequest) (*connect.Response[ferryv1.UploadResponse], error) {
	res := &ferryv1.UploadResponse{UploadId: m.UploadID}
	var finish *ferryv1.UploadFinish
	for len(ahead) > 0 || stream.Receive() {
		msg := stream.Msg()
		if len(ahead) > 0 {
			msg, ahead = ahead[0], ahead[1:]
		}
		if finish != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("no message may follow the finish"))
		}
		switch body := msg.GetMessage().(type) {
		case *ferryv1.UploadRequest_Chunk:
			if _, err := s.putChunk(ctx, m, body.Chunk); err != nil {
				if c, _ := s.completedMeanwhile(ctx, m, err); c != nil {
					return s.uploadCompleted(ctx, stream, c, append([]*ferryv1.UploadRequest{msg}, ahead...), res.Committed)
				}
				return nil, wire.ConnectError(err)
			}
			res.Committed = append(res.Committed, body.Chunk.GetIndex())
		case *ferryv1.UploadRequest_Finish:
			finish = body.Finish
		case *ferryv1.UploadRequest_Header:
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("a stream has one header, in its first message"))
		default:
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("empty message"))
		}
	}
	if err := stream.Err(); err != nil {
		return nil, wire.ConnectError(err)
	}
	if finish != nil {
		info, count, err := s.complete(ctx, m, finish.Size, finish.Crc32C)
		if err != nil {
			return nil, wire.ConnectError(err)
		}
		res.Object, res.ChunkCount = wire.Object(info), count
	}
	return connect.NewResponse(res), nil
}

// completedMeanwhile returns the completion record of upload m when err,
// from a call on m, says its multipart upload is gone and m was completed,
// by another server or before this one's restart, while its manifest was
// cached here. Otherwise it returns nil and err.
func (s *Service) completedMeanwhile(ctx context.Context, m *manifest, err error) (*completion, error) {
	if !errors.Is(err, store.ErrUploadNotFound) {
		return nil, err
	}
	s.manifests.remove(m.UploadID)
	return s.openCompleted(ctx, m.UploadID, err)
}

// uploadCompleted answers an Upload stream that names the completed upload
// c, as its completion did: each chunk is checked against the one that
// went into the object (reported committed when it is the same, refused
// when it differs), and a finish, checked against the object, gets the
// object. So a stream retried after its answer was lost gets the answer
// the first one had. ahead are messages of the stream already read, not
// yet handled, and committed the chunks it committed before.
func (s *Service) uploadCompleted(ctx context.Context, stream *connect.ClientStream[ferryv1.UploadRequest], c *completion, ahead []*ferryv1.UploadRequest, committed []int64) (*connect.Response[ferryv1.UploadResponse], error) {
	res := &ferryv1.UploadResponse{UploadId: c.UploadID, Committed: committed}
	var finish *ferryv1.UploadFinish
	for len(ahead) > 0 || stream.Receive() {
		msg := stream.Msg()
		if len(ahead) > 0 {
			msg, ahead = ahead[0], ahead[1:]
		}
		if finish != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("no message may follow the finish"))
		}
		switch body := msg.GetMessage().(type) {
		case *ferryv1.UploadRequest_Chunk:
			if _, err := c.checkChunk(body.Chunk); err != nil {
				return nil, wire.ConnectError(err)
			}
			res.Committed = append(res.Committed, body.Chunk.GetIndex())
		case *ferryv1.UploadRequest_Finish:
			finish = body.Finish
		case *ferryv1.UploadRequest_Header:
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("a stream has one header, in its first message"))
		default:
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("empty message"))
		}
	}
	if err := stream.Err(); err != nil {
		return nil, wire.ConnectError(err)
	}
	if finish != nil {
		if err := c.checkFinish(finish.Size, finish.Crc32C); err != nil {
			return nil, wire.ConnectError(err)
		}
		res.Object, res.ChunkCount = wire.Object(c.object()), c.count()
	}
	s.log.DebugContext(ctx, "stream for a completed upload", "upload_id", c.UploadID, "chunks", len(res.Committed), "finish", finish != nil)
	return connect.NewResponse(res), nil
}

// CreateUpload implements UploadService.CreateUpload.
func (s *Service) CreateUpload(ctx context.Context, req *connect.Request[ferryv1.CreateUploadRequest]) (*connect.Response[ferryv1.CreateUploadResponse], error) {
	m, err := s.create(ctx, req.Msg.GetSpec())
	if err != nil {
		return nil, wire.ConnectError(err)
	}
	return connect.NewResponse(&ferryv1.CreateUploadResponse{Upload: s.uploadInfo(m)}), nil
}

// PutChunk implements UploadService.PutChunk. A chunk of a completed
// upload is committed (in its object) when it is the one that went into
// the object, and refused with FailedPrecondition otherwise.
func (s *Service) PutChunk(ctx context.Context, req *connect.Request[ferryv1.PutChunkRequest]) (*connect.Response[ferryv1.PutChunkResponse], error) {
	m, err := s.openUpload(ctx, req.Msg.GetUploadId())
	if err != nil {
		c, err := s.openCompleted(ctx, req.Msg.GetUploadId(), err)
		if err != nil {
			return nil, wire.ConnectError(err)
		}
		part, err := c.checkChunk(req.Msg.GetChunk())
		if err != nil {
			return nil, wire.ConnectError(err)
		}
		return connect.NewResponse(&ferryv1.PutChunkResponse{Chunk: chunkProto(part)}), nil
	}
	part, err := s.putChunk(ctx, m, req.Msg.GetChunk())
	if c, cerr := s.completedMeanwhile(ctx, m, err); c != nil {
		part, err = c.checkChunk(req.Msg.GetChunk())
	} else if cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, wire.ConnectError(err)
	}
	return connect.NewResponse(&ferryv1.PutChunkResponse{Chunk: chunkProto(part)}), nil
}

// GetUpload implements UploadService.GetUpload. page_token is the index of
// the last chunk of the previous page, in decimal. A completed upload is
// described from its completion record: every chunk committed, and the
// object it made.
func (s *Service) GetUpload(ctx context.Context, req *connect.Request[ferryv1.GetUploadRequest]) (*connect.Response[ferryv1.GetUploadResponse], error) {
	m, err := s.openUpload(ctx, req.Msg.GetUploadId())
	var done *completion
	if err != nil {
		if done, err = s.openCompleted(ctx, req.Msg.GetUploadId(), err); err != nil {
			return nil, wire.ConnectError(err)
		}
	}
	size := int(req.Msg.GetPageSize())
	switch {
	case size == 0:
		size = 1000
	case size < 0 || size > store.MaxParts:
		return nil, wire.ConnectError(wire.Errorf(wire.ErrInvalidArgument, "page_size must be 0 to %d, got %d", store.MaxParts, size))
	}
	marker := 0
	if tok := req.Msg.GetPageToken(); tok != "" {
		last, err := strconv.Atoi(tok)
		if err != nil || last < 0 || last >= store.MaxParts {
			return nil, wire.ConnectError(wire.Errorf(wire.ErrInvalidArgument, "page_token %q is not one this service gave", tok))
		}
		marker = last + 1 // part number of the last chunk listed
	}
	if done != nil {
		return connect.NewResponse(s.completedUpload(done, marker, size)), nil
	}
	parts, next, err := s.listChunks(ctx, m, marker, size)
	if err != nil {
		if done, err = s.completedMeanwhile(ctx, m, err); done != nil {
			return connect.NewResponse(s.completedUpload(done, marker, size)), nil
		}
		return nil, wire.ConnectError(err)
	}
	res := &ferryv1.GetUploadResponse{Upload: s.uploadInfo(m, parts...)}
	for _, p := range parts {
		res.Chunks = append(res.Chunks, chunkProto(p))
		res.CommittedBytes += p.Size
	}
	if next > 0 {
		res.NextPageToken = strconv.Itoa(next - 1)
	}
	return connect.NewResponse(res), nil
}

// completedUpload is the page of GetUpload for the completed upload c: its
// chunks with part numbers over marker, at most size of them.
func (s *Service) completedUpload(c *completion, marker, size int) *ferryv1.GetUploadResponse {
	res := &ferryv1.GetUploadResponse{Upload: s.completedInfo(c), Object: wire.Object(c.object()), ChunkCount: c.count()}
	parts := c.chunks()
	if marker < len(parts) {
		parts = parts[marker:]
	} else {
		parts = nil
	}
	if len(parts) > size {
		parts = parts[:size]
		res.NextPageToken = strconv.Itoa(parts[len(parts)-1].Number - 1)
	}
	for _, p := range parts {
		res.Chunks = append(res.Chunks, chunkProto(p))
		res.CommittedBytes += p.Size
	}
	return res
}

// CompleteUpload implements UploadService.CompleteUpload. Completing a
// completed upload again returns the object it made, for as long as its
// completion record is kept (see [Config.CompletedTTL]).
func (s *Service) CompleteUpload(ctx context.Context, req *connect.Request[ferryv1.CompleteUploadRequest]) (*connect.Response[ferryv1.CompleteUploadResponse], error) {
	m, err := s.openUpload(ctx, req.Msg.GetUploadId())
	if err != nil {
		c, err := s.openCompleted(ctx, req.Msg.GetUploadId(), err)
		if err != nil {
			return nil, wire.ConnectError(err)
		}
		if err := c.checkFinish(req.Msg.Size, req.Msg.Crc32C); err != nil {
			return nil, wire.ConnectError(err)
		}
		return connect.NewResponse(&ferryv1.CompleteUploadResponse{Object: wire.Object(c.object()), ChunkCount: c.count()}), nil
	}
	info, count, err := s.complete(ctx, m, req.Msg.Size, req.Msg.Crc32C)
	if err != nil {
		return nil, wire.ConnectError(err)
	}
	return connect.NewResponse(&ferryv1.CompleteUploadResponse{Object: wire.Object(info), ChunkCount: count}), nil
}

// AbortUpload implements UploadService.AbortUpload.
func (s *Service) AbortUpload(ctx context.Context, req *connect.Request[ferryv1.AbortUploadRequest]) (*connect.Response[ferryv1.AbortUploadResponse], error) {
	m, err := s.openUpload(ctx, req.Msg.GetUploadId())
	if err != nil {
		return nil, wire.ConnectError(err)
	}
	if err := s.abort(ctx, m); err != nil {
		return nil, wire.ConnectError(err)
	}
	return connect.NewResponse(&ferryv1.AbortUploadResponse{}), nil
}
