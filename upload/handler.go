package upload

import (
	"context"
	"errors"
	"strconv"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
)

var _ ferryv1connect.UploadServiceHandler = (*Service)(nil)

// Upload implements the client-streaming UploadService.Upload: a header,
// chunks, and an optional finish. Chunks committed before a stream breaks
// stay committed; the client resumes with the upload ID it got from
// CreateUpload or from a previous response.
func (s *Service) Upload(ctx context.Context, stream *connect.ClientStream[ferryv1.UploadRequest]) (*connect.Response[ferryv1.UploadResponse], error) {
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, ConnectError(err)
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
		m, err = s.openUpload(ctx, t.UploadId)
	default:
		err = errorf(ErrInvalidArgument, "the header must create an upload or name one")
	}
	if err != nil {
		return nil, ConnectError(err)
	}
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
				return nil, ConnectError(err)
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
		return nil, ConnectError(err)
	}
	if finish != nil {
		info, count, err := s.complete(ctx, m, finish.Size, finish.Crc32C)
		if err != nil {
			return nil, ConnectError(err)
		}
		res.Object, res.ChunkCount = ObjectProto(info), count
	}
	return connect.NewResponse(res), nil
}

// CreateUpload implements UploadService.CreateUpload.
func (s *Service) CreateUpload(ctx context.Context, req *connect.Request[ferryv1.CreateUploadRequest]) (*connect.Response[ferryv1.CreateUploadResponse], error) {
	m, err := s.create(ctx, req.Msg.GetSpec())
	if err != nil {
		return nil, ConnectError(err)
	}
	return connect.NewResponse(&ferryv1.CreateUploadResponse{Upload: s.uploadInfo(m)}), nil
}

// PutChunk implements UploadService.PutChunk.
func (s *Service) PutChunk(ctx context.Context, req *connect.Request[ferryv1.PutChunkRequest]) (*connect.Response[ferryv1.PutChunkResponse], error) {
	m, err := s.openUpload(ctx, req.Msg.GetUploadId())
	if err != nil {
		return nil, ConnectError(err)
	}
	part, err := s.putChunk(ctx, m, req.Msg.GetChunk())
	if err != nil {
		return nil, ConnectError(err)
	}
	return connect.NewResponse(&ferryv1.PutChunkResponse{Chunk: chunkProto(part)}), nil
}

// GetUpload implements UploadService.GetUpload. page_token is the index of
// the last chunk of the previous page, in decimal.
func (s *Service) GetUpload(ctx context.Context, req *connect.Request[ferryv1.GetUploadRequest]) (*connect.Response[ferryv1.GetUploadResponse], error) {
	m, err := s.openUpload(ctx, req.Msg.GetUploadId())
	if err != nil {
		return nil, ConnectError(err)
	}
	size := int(req.Msg.GetPageSize())
	switch {
	case size == 0:
		size = 1000
	case size < 0 || size > store.MaxParts:
		return nil, ConnectError(errorf(ErrInvalidArgument, "page_size must be 0 to %d, got %d", store.MaxParts, size))
	}
	marker := 0
	if tok := req.Msg.GetPageToken(); tok != "" {
		last, err := strconv.Atoi(tok)
		if err != nil || last < 0 || last >= store.MaxParts {
			return nil, ConnectError(errorf(ErrInvalidArgument, "page_token %q is not one this service gave", tok))
		}
		marker = last + 1 // part number of the last chunk listed
	}
	parts, next, err := s.listChunks(ctx, m, marker, size)
	if err != nil {
		return nil, ConnectError(err)
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

// CompleteUpload implements UploadService.CompleteUpload.
func (s *Service) CompleteUpload(ctx context.Context, req *connect.Request[ferryv1.CompleteUploadRequest]) (*connect.Response[ferryv1.CompleteUploadResponse], error) {
	m, err := s.openUpload(ctx, req.Msg.GetUploadId())
	if err != nil {
		return nil, ConnectError(err)
	}
	info, count, err := s.complete(ctx, m, req.Msg.Size, req.Msg.Crc32C)
	if err != nil {
		return nil, ConnectError(err)
	}
	return connect.NewResponse(&ferryv1.CompleteUploadResponse{Object: ObjectProto(info), ChunkCount: count}), nil
}

// AbortUpload implements UploadService.AbortUpload.
func (s *Service) AbortUpload(ctx context.Context, req *connect.Request[ferryv1.AbortUploadRequest]) (*connect.Response[ferryv1.AbortUploadResponse], error) {
	m, err := s.openUpload(ctx, req.Msg.GetUploadId())
	if err != nil {
		return nil, ConnectError(err)
	}
	if err := s.abort(ctx, m); err != nil {
		return nil, ConnectError(err)
	}
	return connect.NewResponse(&ferryv1.AbortUploadResponse{}), nil
}
