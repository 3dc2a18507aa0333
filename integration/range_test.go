package integration

import (
	"context"
	"hash/crc32"
	"net/http"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
)

// backends are the stores a ferry server can sit in front of.
var backends = []struct {
	name string
	// start starts a server on the store with extra ferry serve flags.
	start func(t *testing.T, extra ...string) *server
}{
	{"s3", func(t *testing.T, extra ...string) *server { srv, _, _ := startS3Server(t, extra...); return srv }},
	{"disk", func(t *testing.T, extra ...string) *server {
		return startServer(t, append([]string{"--data", t.TempDir()}, extra...)...)
	}},
}

// httpClient returns the HTTP client a protocol's clients use: gRPC needs
// HTTP/2 (h2c, as there is no TLS here); the Connect and gRPC-Web clients
// use HTTP/1.1, as a browser on plain HTTP does.
func httpClient(protocol string) *http.Client {
	p := new(http.Protocols)
	if protocol == "grpc" {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}

// clientOptions selects the protocol of a connect-go client.
func clientOptions(protocol string) []connect.ClientOption {
	switch protocol {
	case "grpc":
		return []connect.ClientOption{connect.WithGRPC()}
	case "grpcweb":
		return []connect.ClientOption{connect.WithGRPCWeb()}
	default:
		return nil
	}
}

// download reads one Download stream to its end and checks its framing:
// exactly one header, first, then data messages of at most 1 MiB that add
// up to the length the header announced.
func download(ctx context.Context, t *testing.T, c ferryv1connect.DownloadServiceClient, req *ferryv1.DownloadRequest) (*ferryv1.DownloadHeader, []byte, error) {
	t.Helper()
	stream, err := c.Download(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, nil, err
	}
	defer stream.Close()
	var header *ferryv1.DownloadHeader
	var data []byte
	for stream.Receive() {
		msg := stream.Msg()
		switch m := msg.GetMessage().(type) {
		case *ferryv1.DownloadResponse_Header:
			if header != nil {
				t.Fatalf("second header in the stream: %v", m.Header)
			}
			header = m.Header
		case *ferryv1.DownloadResponse_Data:
			if header == nil {
				t.Fatal("data before the header")
			}
			if len(m.Data) > maxDataMessage {
				t.Fatalf("data message of %d bytes, want at most %d", len(m.Data), maxDataMessage)
			}
			data = append(data, m.Data...)
		default:
			t.Fatalf("message with neither header nor data: %v", msg)
		}
	}
	if err := stream.Err(); err != nil {
		return header, data, err
	}
	if header == nil {
		t.Fatal("stream ended without a header")
	}
	if int64(len(data)) != header.GetLength() {
		t.Fatalf("stream carried %d bytes, header announced %d", len(data), header.GetLength())
	}
	return header, data, nil
}

// TestRangedDownload reads byte ranges of an object of more than one chunk
// with each protocol, and checks the errors the contract names for bad
// ranges, unknown keys and a changed ETag.
func TestRangedDownload(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv := backend.start(t)
			path := generated(t, chunkSize+1, 4)
			content, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			size := int64(len(content))
			const key = "ranged/object"
			mustFerry(t, "upload", "--server", srv.url, path, key)
			wantCRC := crc32.Checksum(content, crc32.MakeTable(crc32.Castagnoli))

			for _, protocol := range protocols {
				t.Run(protocol, func(t *testing.T) {
					t.Parallel()
					c := ferryv1connect.NewDownloadServiceClient(httpClient(protocol), srv.url, clientOptions(protocol)...)
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()

					// The whole object first: its header gives the ETag.
					whole, data, err := download(ctx, t, c, &ferryv1.DownloadRequest{Key: key})
					if err != nil {
						t.Fatalf("download whole object: %v", err)
					}
					if got := whole.GetObject(); got.GetKey() != key || got.GetSize() != size || got.GetEtag() == "" {
						t.Errorf("header object = key %q size %d etag %q, want key %q size %d and an ETag",
							got.GetKey(), got.GetSize(), got.GetEtag(), key, size)
					}
					if whole.GetObject().Crc32C == nil || whole.GetObject().GetCrc32C() != wantCRC {
						t.Errorf("header crc32c = %#x (set: %v), want %#x", whole.GetObject().GetCrc32C(), whole.GetObject().Crc32C != nil, wantCRC)
					}
					if firstDiff(data, content) >= 0 || len(data) != len(content) {
						t.Fatalf("whole-object download differs from the upload (%d bytes, want %d)", len(data), len(content))
					}
					etag := whole.GetObject().GetEtag()

					ranges := []struct {
						name           string
						offset, length int64
						wantLength     int64
					}{
						{"first byte", 0, 1, 1},
						{"last byte", size - 1, 0, 1},
						{"across messages", 12345, 3*MiB + 7, 3*MiB + 7},
						{"across the chunk boundary, cut at the end", chunkSize - 100, 200, 101},
						{"rest from an offset", MiB, 0, size - MiB},
						{"at the end", size, 0, 0},
						{"at the end with a length", size, 10, 0},
					}
					for _, r := range ranges {
						for _, ifMatch := range []string{"", etag} {
							header, got, err := download(ctx, t, c, &ferryv1.DownloadRequest{
								Key: key, Offset: r.offset, Length: r.length, IfMatch: ifMatch,
							})
							if err != nil {
								t.Errorf("%s (if_match %q): %v", r.name, ifMatch, err)
								continue
							}
							if header.GetOffset() != r.offset || header.GetLength() != r.wantLength {
								t.Errorf("%s: header offset %d length %d, want %d and %d",
									r.name, header.GetOffset(), header.GetLength(), r.offset, r.wantLength)
							}
							want := content[r.offset : r.offset+r.wantLength]
							if len(got) != len(want) || firstDiff(got, want) >= 0 {
								t.Errorf("%s: bytes differ from the object's [%d, %d)", r.name, r.offset, r.offset+r.wantLength)
							}
						}
					}

					failures := []struct {
						name string
						req  *ferryv1.DownloadRequest
						code connect.Code
					}{
						{"offset past the end", &ferryv1.DownloadRequest{Key: key, Offset: size + 1}, connect.CodeOutOfRange},
						{"negative offset", &ferryv1.DownloadRequest{Key: key, Offset: -1}, connect.CodeInvalidArgument},
						{"negative length", &ferryv1.DownloadRequest{Key: key, Length: -1}, connect.CodeInvalidArgument},
						{"unknown key", &ferryv1.DownloadRequest{Key: "ranged/no-such-object"}, connect.CodeNotFound},
						{"invalid key", &ferryv1.DownloadRequest{Key: ".ferry/x"}, connect.CodeInvalidArgument},
						{"other ETag", &ferryv1.DownloadRequest{Key: key, IfMatch: "not-" + etag}, connect.CodeFailedPrecondition},
					}
					for _, f := range failures {
						_, got, err := download(ctx, t, c, f.req)
						if code := connect.CodeOf(err); err == nil || code != f.code {
							t.Errorf("%s: error %v (code %v), want code %v", f.name, err, code, f.code)
						}
						if len(got) != 0 {
							t.Errorf("%s: %d bytes sent before the error, want none", f.name, len(got))
						}
					}
				})
			}
		})
	}
}
