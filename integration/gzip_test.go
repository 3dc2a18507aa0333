package integration

import (
	"bytes"
	"context"
	"hash/crc32"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
)

// gzipCodecs are the codecs the gzip matrix runs with each protocol: the
// binary protobuf codec and, for Connect, its JSON codec too.
var gzipCodecs = []struct {
	name     string
	protocol string
	opts     []connect.ClientOption
}{
	{"connect-proto", "connect", nil},
	{"connect-json", "connect", []connect.ClientOption{connect.WithProtoJSON()}},
	{"grpc", "grpc", []connect.ClientOption{connect.WithGRPC()}},
	{"grpcweb", "grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
}

// TestEveryRPCGzip calls every RPC of ferry's three services with every
// request message gzipped (connect-go's WithSendGzip, which compresses
// every message, however small) over Connect (protobuf and JSON), gRPC and
// gRPC-Web, on both stores: compressed messages are first-class (issue 12,
// finding 13: a gzipped one-chunk Upload was refused with
// RESOURCE_EXHAUSTED on an idle server). Each RPC must answer as it does
// uncompressed, and the bytes read back must be the bytes sent.
func TestEveryRPCGzip(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv := backend.start(t)
			for _, codec := range gzipCodecs {
				t.Run(codec.name, func(t *testing.T) {
					t.Parallel()
					hc := faultHTTPClient(t, codec.protocol)
					opts := append([]connect.ClientOption{connect.WithSendGzip()}, codec.opts...)
					everyRPC(t, ferryv1connect.NewUploadServiceClient(hc, srv.url, opts...),
						ferryv1connect.NewDownloadServiceClient(hc, srv.url, opts...),
						ferryv1connect.NewObjectServiceClient(hc, srv.url, opts...), "gzip/"+codec.name+"/")
				})
			}
		})
	}
}

// everyRPC calls each RPC once with the given clients, under keys with
// prefix, and checks each answer.
func everyRPC(t *testing.T, uploads ferryv1connect.UploadServiceClient, downloads ferryv1connect.DownloadServiceClient,
	objects ferryv1connect.ObjectServiceClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Upload: one stream, an object of one chunk (the finding's case).
	small := faultContent(t, 3*MiB+17, 31)
	if _, err := faultPutObject(ctx, uploads, prefix+"stream", small); err != nil {
		t.Fatalf("Upload of a one-chunk object, gzipped: %v", err)
	}

	// CreateUpload, PutChunk (an S3 part's smallest size, and the last),
	// GetUpload, CompleteUpload.
	multi := faultContent(t, 5*MiB+5, 32)
	size, crc := int64(len(multi)), crc32.Checksum(multi, castagnoli)
	created, err := uploads.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{
		Key: prefix + "unary", Size: &size, ChunkSize: 5 * MiB, Crc32C: &crc, ContentType: "application/x-gzip-test",
	}}))
	if err != nil {
		t.Fatalf("CreateUpload, gzipped: %v", err)
	}
	id := created.Msg.GetUpload().GetUploadId()
	for _, ch := range splitChunks(multi, 5*MiB) {
		if _, err := uploads.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: ch})); err != nil {
			t.Fatalf("PutChunk %d, gzipped: %v", ch.GetIndex(), err)
		}
	}
	got, err := uploads.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id}))
	if err != nil {
		t.Fatalf("GetUpload, gzipped: %v", err)
	}
	if n := len(got.Msg.GetChunks()); n != 2 {
		t.Errorf("GetUpload lists %d committed chunks, want 2", n)
	}
	done, err := uploads.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id}))
	if err != nil {
		t.Fatalf("CompleteUpload, gzipped: %v", err)
	}
	if obj := done.Msg.GetObject(); obj.GetSize() != size || obj.GetCrc32C() != crc {
		t.Errorf("CompleteUpload: %d bytes, CRC32C %08x; want %d, %08x", obj.GetSize(), obj.GetCrc32C(), size, crc)
	}

	// AbortUpload of a second upload.
	other, err := uploads.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: prefix + "aborted"}}))
	if err != nil {
		t.Fatalf("CreateUpload, gzipped: %v", err)
	}
	if _, err := uploads.AbortUpload(ctx, connect.NewRequest(&ferryv1.AbortUploadRequest{UploadId: other.Msg.GetUpload().GetUploadId()})); err != nil {
		t.Fatalf("AbortUpload, gzipped: %v", err)
	}

	// StatObject, ListObjects, Download (whole and a range), DeleteObject.
	stat, err := objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: prefix + "unary"}))
	if err != nil {
		t.Fatalf("StatObject, gzipped: %v", err)
	}
	if obj := stat.Msg.GetObject(); obj.GetSize() != size || obj.GetContentType() != "application/x-gzip-test" {
		t.Errorf("StatObject: %d bytes, content type %q; want %d, %q", obj.GetSize(), obj.GetContentType(), size, "application/x-gzip-test")
	}
	list, err := objects.ListObjects(ctx, connect.NewRequest(&ferryv1.ListObjectsRequest{Prefix: prefix}))
	if err != nil {
		t.Fatalf("ListObjects, gzipped: %v", err)
	}
	var keys []string
	for _, o := range list.Msg.GetObjects() {
		keys = append(keys, o.GetKey())
	}
	if len(keys) != 2 || keys[0] != prefix+"stream" || keys[1] != prefix+"unary" {
		t.Errorf("ListObjects(%q) = %q, want the two objects stored", prefix, keys)
	}
	for _, c := range []struct {
		key     string
		content []byte
		offset  int64
		length  int64
	}{{prefix + "stream", small, 0, 0}, {prefix + "unary", multi, 5*MiB - 3, 8}} {
		_, data, err := download(ctx, t, downloads, &ferryv1.DownloadRequest{Key: c.key, Offset: c.offset, Length: c.length})
		if err != nil {
			t.Fatalf("Download %s, gzipped request: %v", c.key, err)
		}
		want := c.content[c.offset:]
		if c.length > 0 {
			want = want[:c.length]
		}
		if !bytes.Equal(data, want) {
			t.Errorf("Download %s (offset %d, length %d): %d bytes differ from the %d sent", c.key, c.offset, c.length, len(data), len(want))
		}
	}
	if _, err := objects.DeleteObject(ctx, connect.NewRequest(&ferryv1.DeleteObjectRequest{Key: prefix + "stream"})); err != nil {
		t.Fatalf("DeleteObject, gzipped: %v", err)
	}
	if _, err := objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: prefix + "stream"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("StatObject after DeleteObject: %v, want code %v", err, connect.CodeNotFound)
	}
}

// TestStockGRPCClientGzip uploads and downloads with grpc-go's own gzip
// compressor on every message (grpc.UseCompressor), as a service that
// turns compression on for its whole connection does: an object of one
// chunk (finding 13) and one made of chunks of the largest size the
// server accepts (--max-chunk-size, 16 MiB here), whose gzipped messages
// are a little larger than the chunk (random bytes do not compress) and
// must still fit the server's limits. grpc-go compresses a whole message
// before it sends any of it, which under the race detector on a busy
// machine takes longer than the default --stream-idle-timeout of a
// minute: the servers here wait longer.
func TestStockGRPCClientGzip(t *testing.T) {
	t.Parallel()
	const largest = 16 * MiB
	args := []string{"--max-chunk-size", "16MiB", "--stream-idle-timeout", "10m"}
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv := backend.start(t, args...)
			conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.UseCompressor(gzip.Name), grpc.MaxCallSendMsgSize(128*MiB)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			for _, c := range []struct {
				name      string
				size      int
				chunkSize int
			}{
				{"one-chunk", 2*MiB + 9, 5 * MiB},
				{"largest-chunks", 2*largest + 5, largest},
			} {
				path := generated(t, int64(c.size), 77)
				content, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				key := "grpc-go-gzip/" + c.name
				crc := crc32.Checksum(content, castagnoli)
				chunks := splitChunks(content, c.chunkSize)
				resp, err := grpcUpload(ctx, conn, &ferryv1.UploadSpec{Key: key, Size: proto.Int64(int64(len(content))), ChunkSize: int64(c.chunkSize)},
					chunks, &ferryv1.UploadFinish{Size: proto.Int64(int64(len(content))), Crc32C: proto.Uint32(crc)})
				if err != nil {
					t.Fatalf("%s: gzipped upload with grpc-go: %v", c.name, err)
				}
				if obj := resp.GetObject(); obj.GetSize() != int64(len(content)) || obj.GetCrc32C() != crc {
					t.Errorf("%s: stored %d bytes with CRC32C %08x, sent %d with %08x", c.name, obj.GetSize(), obj.GetCrc32C(), len(content), crc)
				}
				_, data, err := grpcDownload(ctx, t, conn, &ferryv1.DownloadRequest{Key: key})
				if err != nil {
					t.Fatalf("%s: gzipped download request with grpc-go: %v", c.name, err)
				}
				if !bytes.Equal(data, content) {
					t.Fatalf("%s: download differs from the upload (%d bytes, want %d)", c.name, len(data), len(content))
				}
			}
		})
	}
}
