package download

import (
	"context"
	"errors"
	"io"
	"sync"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
)

// MaxDataMessage is the most bytes one data message carries: 1 MiB. Stock
// gRPC clients refuse received messages over 4 MiB by default.
const MaxDataMessage = 1 << 20

// Service implements [ferryv1connect.DownloadServiceHandler] on a store.
type Service struct {
	store store.Store
	bufs  sync.Pool // *[]byte of MaxDataMessage bytes
}

var _ ferryv1connect.DownloadServiceHandler = (*Service)(nil)

// NewService returns a Service that reads from s.
func NewService(s store.Store) *Service {
	return &Service{store: s, bufs: sync.Pool{New: func() any {
		b := make([]byte, MaxDataMessage)
		return &b
	}}}
}

// Download implements DownloadService.Download.
func (s *Service) Download(ctx context.Context, req *connect.Request[ferryv1.DownloadRequest], stream *connect.ServerStream[ferryv1.DownloadResponse]) error {
	msg := req.Msg
	if err := store.ValidateKey(msg.GetKey()); err != nil {
		return wire.ConnectError(err)
	}
	if msg.GetOffset() < 0 || msg.GetLength() < 0 {
		return wire.ConnectError(wire.Errorf(wire.ErrInvalidArgument, "offset and length must not be negative, got %d and %d", msg.GetOffset(), msg.GetLength()))
	}
	length := msg.GetLength()
	if length == 0 {
		length = -1 // to the end
	}
	r, info, err := s.store.ReadObject(ctx, msg.GetKey(), msg.GetOffset(), length, store.ReadOptions{IfMatch: msg.GetIfMatch()})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return wire.ConnectError(wire.Errorf(store.ErrNotFound, "object %q not found", msg.GetKey()))
	case errors.Is(err, store.ErrPreconditionFailed):
		return wire.ConnectError(wire.Errorf(store.ErrPreconditionFailed, "object %q changed: its ETag is no longer %q; download it again from offset 0", msg.GetKey(), msg.GetIfMatch()))
	case errors.Is(err, store.ErrInvalidRange):
		return wire.ConnectError(wire.Errorf(store.ErrInvalidRange, "offset %d is past the end of object %q", msg.GetOffset(), msg.GetKey()))
	case err != nil:
		return wire.ConnectError(err)
	}
	defer r.Close()
	// The bytes to send: the store checked offset <= size, so this cannot
	// go negative or overflow, and no offset+length is ever computed.
	n := max(0, info.Size-msg.GetOffset())
	if length >= 0 {
		n = min(n, length)
	}
	if err := stream.Send(&ferryv1.DownloadResponse{Message: &ferryv1.DownloadResponse_Header{Header: &ferryv1.DownloadHeader{
		Object: wire.Object(info),
		Offset: msg.GetOffset(),
		Length: n,
	}}}); err != nil {
		return err
	}
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	buf := *bp
	data := &ferryv1.DownloadResponse_Data{}
	res := &ferryv1.DownloadResponse{Message: data}
	for sent := int64(0); sent < n; {
		k, err := io.ReadFull(r, buf[:min(int64(len(buf)), n-sent)])
		if err != nil {
			// The store ended early or failed: the client resumes from what it got.
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return wire.ConnectError(wire.Errorf(store.ErrUnavailable, "object store ended the read at byte %d of %d; resume from there", msg.GetOffset()+sent, msg.GetOffset()+n))
			}
			return wire.ConnectError(err)
		}
		data.Data = buf[:k] // Send marshals before it returns, so buf may be reused.
		if err := stream.Send(res); err != nil {
			return err
		}
		sent += int64(k)
	}
	return nil
}
