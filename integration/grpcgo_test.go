package integration

import (
	"context"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
)

// The full method names of the streaming RPCs, as a stock gRPC client
// without ferry's generated Connect code calls them.
const (
	uploadMethod   = "/ferry.v1.UploadService/Upload"
	downloadMethod = "/ferry.v1.DownloadService/Download"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// dialGRPC connects a stock grpc-go client (not connect-go) to srv over h2c.
func dialGRPC(t *testing.T, srv *server) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", srv.addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// grpcUpload sends an Upload client stream with grpc-go: a header creating
// the upload, the given chunks in the given order, and a finish.
func grpcUpload(ctx context.Context, conn *grpc.ClientConn, spec *ferryv1.UploadSpec, chunks []*ferryv1.Chunk, finish *ferryv1.UploadFinish) (*ferryv1.UploadResponse, error) {
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{StreamName: "Upload", ClientStreams: true}, uploadMethod)
	if err != nil {
		return nil, err
	}
	msgs := []*ferryv1.UploadRequest{{Message: &ferryv1.UploadRequest_Header{
		Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{Create: spec}},
	}}}
	for _, c := range chunks {
		msgs = append(msgs, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Chunk{Chunk: c}})
	}
	if finish != nil {
		msgs = append(msgs, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Finish{Finish: finish}})
	}
	for _, m := range msgs {
		if err := stream.SendMsg(m); err != nil {
			// io.EOF: the server ended the stream; RecvMsg has its status.
			if !errors.Is(err, io.EOF) {
				return nil, err
			}
			break
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	resp := new(ferryv1.UploadResponse)
	if err := stream.RecvMsg(resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// grpcDownload reads a Download server stream with grpc-go.
func grpcDownload(ctx context.Context, t *testing.T, conn *grpc.ClientConn, req *ferryv1.DownloadRequest) (*ferryv1.DownloadHeader, []byte, error) {
	t.Helper()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{StreamName: "Download", ServerStreams: true}, downloadMethod)
	if err != nil {
		return nil, nil, err
	}
	if err := stream.SendMsg(req); err != nil {
		return nil, nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, nil, err
	}
	var header *ferryv1.DownloadHeader
	var data []byte
	for {
		msg := new(ferryv1.DownloadResponse)
		err := stream.RecvMsg(msg)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return header, data, err
		}
		switch {
		case msg.GetHeader() != nil:
			if header != nil {
				t.Fatal("second header in the stream")
			}
			header = msg.GetHeader()
		case header == nil:
			t.Fatal("data before the header")
		default:
			if len(msg.GetData()) > maxDataMessage {
				t.Fatalf("data message of %d bytes, want at most %d", len(msg.GetData()), maxDataMessage)
			}
			data = append(data, msg.GetData()...)
		}
	}
	if header == nil {
		t.Fatal("stream ended without a header")
	}
	return header, data, nil
}

// splitChunks cuts content into chunks of chunkSize bytes with their CRC32C.
func splitChunks(content []byte, chunkSize int) []*ferryv1.Chunk {
	var chunks []*ferryv1.Chunk
	for i := 0; i == 0 || i*chunkSize < len(content); i++ {
		data := content[i*chunkSize : min((i+1)*chunkSize, len(content))]
		chunks = append(chunks, &ferryv1.Chunk{
			Index:  int64(i),
			Data:   data,
			Crc32C: proto.Uint32(crc32.Checksum(data, castagnoli)),
		})
	}
	return chunks
}

// TestStockGRPCClient uploads with grpc-go's client stream (chunks in
// reverse order, a chunk size of its own) and downloads with its server
// stream, so ferry is proven to speak plain gRPC and not only connect-go's.
func TestStockGRPCClient(t *testing.T) {
	t.Parallel()
	const uploadChunkSize = 5 * MiB // S3's smallest part, not the default
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv := backend.start(t)
			conn := dialGRPC(t, srv)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			path := generated(t, 2*uploadChunkSize+3*MiB+3, 7)
			content, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			wantCRC := crc32.Checksum(content, castagnoli)
			const key = "grpc-go/object.bin"
			chunks := splitChunks(content, uploadChunkSize)
			reversed := make([]*ferryv1.Chunk, len(chunks))
			for i, c := range chunks {
				reversed[len(chunks)-1-i] = c
			}
			resp, err := grpcUpload(ctx, conn, &ferryv1.UploadSpec{
				Key:         key,
				Size:        proto.Int64(int64(len(content))),
				ContentType: "application/x-ferry-test",
				ChunkSize:   uploadChunkSize,
			}, reversed, &ferryv1.UploadFinish{Size: proto.Int64(int64(len(content))), Crc32C: proto.Uint32(wantCRC)})
			if err != nil {
				t.Fatalf("upload with grpc-go: %v", err)
			}
			if resp.GetUploadId() == "" || resp.GetChunkCount() != int64(len(chunks)) || len(resp.GetCommitted()) != len(chunks) {
				t.Errorf("upload response: upload ID %q, chunk_count %d, committed %v; want an ID, %d chunks, all committed",
					resp.GetUploadId(), resp.GetChunkCount(), resp.GetCommitted(), len(chunks))
			}
			if obj := resp.GetObject(); obj.GetKey() != key || obj.GetSize() != int64(len(content)) || obj.GetCrc32C() != wantCRC {
				t.Errorf("uploaded object: key %q size %d crc32c %#x, want %q, %d, %#x",
					obj.GetKey(), obj.GetSize(), obj.GetCrc32C(), key, len(content), wantCRC)
			}

			header, data, err := grpcDownload(ctx, t, conn, &ferryv1.DownloadRequest{Key: key})
			if err != nil {
				t.Fatalf("download with grpc-go: %v", err)
			}
			if len(data) != len(content) || firstDiff(data, content) >= 0 {
				t.Fatalf("grpc-go download differs from the upload (%d bytes, want %d)", len(data), len(content))
			}
			if obj := header.GetObject(); obj.GetContentType() != "application/x-ferry-test" || obj.GetEtag() != resp.GetObject().GetEtag() {
				t.Errorf("download header: content type %q etag %q, want %q and the upload's %q",
					obj.GetContentType(), obj.GetEtag(), "application/x-ferry-test", resp.GetObject().GetEtag())
			}

			// Another client reads what grpc-go wrote.
			out := filepath.Join(t.TempDir(), "via-cli")
			mustFerry(t, "download", "--server", srv.url, "--protocol", "grpcweb", key, out)
			requireSameFile(t, path, out)

			// Errors arrive as gRPC statuses with the contract's codes.
			bad := splitChunks(content[:MiB], MiB)
			bad[0].Crc32C = proto.Uint32(bad[0].GetCrc32C() + 1)
			_, err = grpcUpload(ctx, conn, &ferryv1.UploadSpec{Key: "grpc-go/bad-crc", Size: proto.Int64(MiB)}, bad, &ferryv1.UploadFinish{})
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("chunk with a wrong CRC32C: %v, want code %v", err, codes.InvalidArgument)
			}
			_, _, err = grpcDownload(ctx, t, conn, &ferryv1.DownloadRequest{Key: "grpc-go/no-such-object"})
			if status.Code(err) != codes.NotFound {
				t.Errorf("download of an unknown key: %v, want code %v", err, codes.NotFound)
			}
		})
	}
}
