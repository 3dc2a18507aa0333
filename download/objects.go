package download

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
)

// maxListPage is the most objects one ListObjects page returns, as in S3.
const maxListPage = 1000

// ObjectService implements [ferryv1connect.ObjectServiceHandler]: stat, list
// and delete of stored objects. Keys under [store.ReservedPrefix] are
// invisible through it.
type ObjectService struct {
	store store.Store
}

var _ ferryv1connect.ObjectServiceHandler = (*ObjectService)(nil)

// NewObjectService returns an ObjectService on s.
func NewObjectService(s store.Store) *ObjectService { return &ObjectService{store: s} }

// StatObject implements ObjectService.StatObject.
func (o *ObjectService) StatObject(ctx context.Context, req *connect.Request[ferryv1.StatObjectRequest]) (*connect.Response[ferryv1.StatObjectResponse], error) {
	key := req.Msg.GetKey()
	if err := store.ValidateKey(key); err != nil {
		return nil, wire.ConnectError(err)
	}
	info, err := o.store.StatObject(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, wire.ConnectError(wire.Errorf(store.ErrNotFound, "object %q not found", key))
	}
	if err != nil {
		return nil, wire.ConnectError(err)
	}
	return connect.NewResponse(&ferryv1.StatObjectResponse{Object: wire.Object(info)}), nil
}

// ListObjects implements ObjectService.ListObjects. The page token is the
// last key of the previous page, base64url-encoded.
func (o *ObjectService) ListObjects(ctx context.Context, req *connect.Request[ferryv1.ListObjectsRequest]) (*connect.Response[ferryv1.ListObjectsResponse], error) {
	prefix := req.Msg.GetPrefix()
	if err := store.ValidatePrefix(prefix); err != nil {
		return nil, wire.ConnectError(err)
	}
	size := int(req.Msg.GetPageSize())
	switch {
	case size == 0:
		size = maxListPage
	case size < 0 || size > maxListPage:
		return nil, wire.ConnectError(wire.Errorf(wire.ErrInvalidArgument, "page_size must be 0 to %d, got %d", maxListPage, size))
	}
	after := ""
	if tok := req.Msg.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || !strings.HasPrefix(string(b), prefix) {
			return nil, wire.ConnectError(wire.Errorf(wire.ErrInvalidArgument, "page_token %q is not one this service gave for prefix %q", tok, prefix))
		}
		after = string(b)
	}
	res := &ferryv1.ListObjectsResponse{}
	for len(res.Objects) < size {
		page, err := o.store.ListObjects(ctx, prefix, after, size-len(res.Objects))
		if err != nil {
			return nil, wire.ConnectError(err)
		}
		for _, info := range page.Objects {
			after = info.Key
			if strings.HasPrefix(info.Key, store.ReservedPrefix) {
				continue
			}
			res.Objects = append(res.Objects, wire.Object(info))
		}
		if !page.IsTruncated {
			return connect.NewResponse(res), nil
		}
		if strings.HasPrefix(after, store.ReservedPrefix) {
			// Skip past ferry's own keys in one step (they sort together).
			after = store.ReservedPrefix + "\U0010FFFF"
		}
	}
	res.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(after))
	return connect.NewResponse(res), nil
}

// DeleteObject implements ObjectService.DeleteObject.
func (o *ObjectService) DeleteObject(ctx context.Context, req *connect.Request[ferryv1.DeleteObjectRequest]) (*connect.Response[ferryv1.DeleteObjectResponse], error) {
	if err := store.ValidateKey(req.Msg.GetKey()); err != nil {
		return nil, wire.ConnectError(err)
	}
	if err := o.store.DeleteObject(ctx, req.Msg.GetKey()); err != nil {
		return nil, wire.ConnectError(err)
	}
	return connect.NewResponse(&ferryv1.DeleteObjectResponse{}), nil
}
