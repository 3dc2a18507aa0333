package integration

import (
	"bytes"
	"context"
	"math"
	"testing"
	"time"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
)

// TestRangeOverflow downloads ranges whose offset+length overflows an
// int64 (issue 12, finding 11: on S3 a length near 2^63 with an offset of 2
// or more was INTERNAL), and offsets at and after the end, from the real
// server on each store. A range past the end of the object is cut short at
// the end; an offset past the end is OUT_OF_RANGE whatever the length.
func TestRangeOverflow(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv := backend.start(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			content := bytes.Repeat([]byte("0123456789"), 1000)
			size := int64(len(content))
			const key = "overflow/object"
			uploads := ferryv1connect.NewUploadServiceClient(httpClient("grpc"), srv.url, connect.WithGRPC())
			if _, err := faultPutObject(ctx, uploads, key, content); err != nil {
				t.Fatalf("upload: %v", err)
			}
			c := ferryv1connect.NewDownloadServiceClient(httpClient("grpc"), srv.url, connect.WithGRPC())
			ok := []struct{ offset, length int64 }{
				{0, math.MaxInt64},
				{1, math.MaxInt64},
				{2, math.MaxInt64},
				{2, math.MaxInt64 - 1},
				{size - 1, math.MaxInt64},
				{size - 1, math.MaxInt64 - size + 2},
				{size, math.MaxInt64},
			}
			for _, r := range ok {
				header, got, err := download(ctx, t, c, &ferryv1.DownloadRequest{Key: key, Offset: r.offset, Length: r.length})
				if err != nil {
					t.Errorf("offset %d length %d: %v (code %v), want the rest of the object", r.offset, r.length, err, connect.CodeOf(err))
					continue
				}
				if want := content[r.offset:]; !bytes.Equal(got, want) || header.GetLength() != int64(len(want)) {
					t.Errorf("offset %d length %d: header length %d, %d bytes; want %d", r.offset, r.length, header.GetLength(), len(got), len(want))
				}
			}
			past := []struct{ offset, length int64 }{
				{size + 1, 0},
				{size + 1, math.MaxInt64},
				{math.MaxInt64, 0},
				{math.MaxInt64, 1},
				{math.MaxInt64, math.MaxInt64},
			}
			for _, r := range past {
				_, got, err := download(ctx, t, c, &ferryv1.DownloadRequest{Key: key, Offset: r.offset, Length: r.length})
				if code := connect.CodeOf(err); err == nil || code != connect.CodeOutOfRange || len(got) != 0 {
					t.Errorf("offset %d length %d: %d bytes, error %v (code %v); want code %v and no bytes", r.offset, r.length, len(got), err, code, connect.CodeOutOfRange)
				}
			}
		})
	}
}
