package download

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
)

type dlEnv struct {
	store   store.Store
	dl      map[string]ferryv1connect.DownloadServiceClient
	objects ferryv1connect.ObjectServiceClient
}

func newDLEnv(t *testing.T) *dlEnv {
	t.Helper()
	st, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewDownloadServiceHandler(NewService(st)))
	mux.Handle(ferryv1connect.NewObjectServiceHandler(NewObjectService(st)))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: tr}
	env := &dlEnv{store: st, dl: map[string]ferryv1connect.DownloadServiceClient{
		"connect": ferryv1connect.NewDownloadServiceClient(h2c, srv.URL),
		"grpc":    ferryv1connect.NewDownloadServiceClient(h2c, srv.URL, connect.WithGRPC()),
		"grpcweb": ferryv1connect.NewDownloadServiceClient(h2c, srv.URL, connect.WithGRPCWeb()),
	}, objects: ferryv1connect.NewObjectServiceClient(h2c, srv.URL, connect.WithGRPC())}
	return env
}

// put stores data under key as a one-part multipart upload with its CRC32C.
func (e *dlEnv) put(t *testing.T, key string, data []byte) store.ObjectInfo {
	t.Helper()
	ctx := context.Background()
	id, err := e.store.CreateMultipartUpload(ctx, key, store.CreateOptions{ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.store.UploadPart(ctx, key, id, 1, bytes.NewReader(data), int64(len(data)), store.CRC32C(data))
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.store.CompleteMultipartUpload(ctx, key, id, []store.Part{p}, store.CompleteOptions{CRC32C: store.CRC32C(data)})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// download returns the header and the bytes of one Download call, and
// checks that no data message is over MaxDataMessage.
func download(ctx context.Context, c ferryv1connect.DownloadServiceClient, req *ferryv1.DownloadRequest) (*ferryv1.DownloadHeader, []byte, error) {
	s, err := c.Download(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	var hdr *ferryv1.DownloadHeader
	var buf bytes.Buffer
	for s.Receive() {
		switch m := s.Msg().GetMessage().(type) {
		case *ferryv1.DownloadResponse_Header:
			if hdr != nil || buf.Len() > 0 {
				return nil, nil, fmt.Errorf("header is not the first message")
			}
			hdr = m.Header
		case *ferryv1.DownloadResponse_Data:
			if len(m.Data) > MaxDataMessage || len(m.Data) == 0 {
				return nil, nil, fmt.Errorf("data message of %d bytes", len(m.Data))
			}
			buf.Write(m.Data)
		}
	}
	return hdr, buf.Bytes(), s.Err()
}

func TestDownloadRanges(t *testing.T) {
	t.Parallel()
	env := newDLEnv(t)
	data := make([]byte, 3*MaxDataMessage+17)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	info := env.put(t, "obj", data)
	env.put(t, "empty", nil)
	n := int64(len(data))
	for proto, c := range env.dl {
		for _, tc := range []struct {
			key            string
			offset, length int64
			want           []byte
		}{
			{"obj", 0, 0, data},
			{"obj", 5, 0, data[5:]},
			{"obj", 5, 10, data[5:15]},
			{"obj", MaxDataMessage - 1, MaxDataMessage + 2, data[MaxDataMessage-1 : 2*MaxDataMessage+1]},
			{"obj", n - 1, 100, data[n-1:]},
			{"obj", n, 0, nil},
			{"empty", 0, 0, nil},
		} {
			t.Run(fmt.Sprintf("%s/%s@%d+%d", proto, tc.key, tc.offset, tc.length), func(t *testing.T) {
				t.Parallel()
				hdr, got, err := download(context.Background(), c, &ferryv1.DownloadRequest{Key: tc.key, Offset: tc.offset, Length: tc.length})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, tc.want) {
					t.Fatalf("got %d bytes, want %d (content differs or length)", len(got), len(tc.want))
				}
				if hdr.GetOffset() != tc.offset || hdr.GetLength() != int64(len(tc.want)) {
					t.Fatalf("header offset %d length %d, want %d %d", hdr.GetOffset(), hdr.GetLength(), tc.offset, len(tc.want))
				}
				if tc.key == "obj" && (hdr.GetObject().GetEtag() != info.ETag || hdr.GetObject().GetCrc32C() != store.CRC32C(data) || hdr.GetObject().GetSize() != n) {
					t.Fatalf("header object %v", hdr.GetObject())
				}
			})
		}
	}
}

func TestDownloadErrors(t *testing.T) {
	t.Parallel()
	env := newDLEnv(t)
	info := env.put(t, "obj", []byte("hello"))
	c := env.dl["grpc"]
	for _, tc := range []struct {
		name string
		req  *ferryv1.DownloadRequest
		code connect.Code
		msg  string
	}{
		{"missing key", &ferryv1.DownloadRequest{Key: "nope"}, connect.CodeNotFound, `"nope" not found`},
		{"invalid key", &ferryv1.DownloadRequest{Key: "../x"}, connect.CodeInvalidArgument, ".."},
		{"reserved key", &ferryv1.DownloadRequest{Key: ".ferry/uploads/x"}, connect.CodeInvalidArgument, "reserved"},
		{"negative offset", &ferryv1.DownloadRequest{Key: "obj", Offset: -1}, connect.CodeInvalidArgument, "negative"},
		{"negative length", &ferryv1.DownloadRequest{Key: "obj", Length: -1}, connect.CodeInvalidArgument, "negative"},
		{"offset past end", &ferryv1.DownloadRequest{Key: "obj", Offset: 6}, connect.CodeOutOfRange, "past the end"},
		{"changed object", &ferryv1.DownloadRequest{Key: "obj", IfMatch: info.ETag + "x"}, connect.CodeFailedPrecondition, "changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := download(context.Background(), c, tc.req)
			if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
		})
	}
	// The matching ETag works.
	if _, got, err := download(context.Background(), c, &ferryv1.DownloadRequest{Key: "obj", Offset: 1, IfMatch: info.ETag}); err != nil || string(got) != "ello" {
		t.Fatalf("if_match with the right ETag: %q, %v", got, err)
	}
}

func TestObjectService(t *testing.T) {
	t.Parallel()
	env := newDLEnv(t)
	ctx := context.Background()
	keys := []string{"a/1", "a/2", "a/3", "b", "é"}
	for _, k := range keys {
		env.put(t, k, []byte(k))
	}
	// ferry's own state must never show.
	if _, err := env.store.PutObject(ctx, store.ReservedPrefix+"uploads/x", strings.NewReader("{}"), 2, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	list := func(prefix string, size int32) []string {
		var got []string
		tok := ""
		for {
			res, err := env.objects.ListObjects(ctx, connect.NewRequest(&ferryv1.ListObjectsRequest{Prefix: prefix, PageSize: size, PageToken: tok}))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Msg.GetObjects()) > int(size) && size > 0 {
				t.Fatalf("page of %d objects, asked for %d", len(res.Msg.GetObjects()), size)
			}
			for _, o := range res.Msg.GetObjects() {
				got = append(got, o.GetKey())
			}
			if tok = res.Msg.GetNextPageToken(); tok == "" {
				return got
			}
		}
	}
	for _, tc := range []struct {
		prefix string
		size   int32
		want   []string
	}{
		{"", 0, keys}, {"", 1, keys}, {"", 2, keys}, {"a/", 2, keys[:3]}, {".", 1, nil}, {"zzz", 0, nil},
	} {
		if got := list(tc.prefix, tc.size); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("list(%q, %d) = %q, want %q", tc.prefix, tc.size, got, tc.want)
		}
	}
	st, err := env.objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: "b"}))
	if err != nil || st.Msg.GetObject().GetSize() != 1 || st.Msg.GetObject().GetCrc32C() != store.CRC32C([]byte("b")) || st.Msg.GetObject().GetContentType() != "text/plain" {
		t.Fatalf("stat = %v, %v", st, err)
	}
	if _, err := env.objects.DeleteObject(ctx, connect.NewRequest(&ferryv1.DeleteObjectRequest{Key: "b"})); err != nil {
		t.Fatal(err)
	}
	if _, err := env.objects.DeleteObject(ctx, connect.NewRequest(&ferryv1.DeleteObjectRequest{Key: "b"})); err != nil {
		t.Fatalf("deleting a missing key: %v, want success", err)
	}
	if _, err := env.objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: "b"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("stat after delete: %v", err)
	}
	for _, bad := range []func() error{
		func() error {
			_, err := env.objects.ListObjects(ctx, connect.NewRequest(&ferryv1.ListObjectsRequest{Prefix: ".ferry/"}))
			return err
		},
		func() error {
			_, err := env.objects.ListObjects(ctx, connect.NewRequest(&ferryv1.ListObjectsRequest{PageToken: "!!"}))
			return err
		},
		func() error {
			_, err := env.objects.ListObjects(ctx, connect.NewRequest(&ferryv1.ListObjectsRequest{PageSize: 1001}))
			return err
		},
		func() error {
			_, err := env.objects.DeleteObject(ctx, connect.NewRequest(&ferryv1.DeleteObjectRequest{Key: ".ferry/uploads/x"}))
			return err
		},
	} {
		if err := bad(); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("got %v, want InvalidArgument", err)
		}
	}
}
