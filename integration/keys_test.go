package integration

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
)

// keysEnv is a ferry server under test and the objects the test stored
// through it, by key, with the file each was uploaded from.
type keysEnv struct {
	srv    *server
	stored map[string]string
}

// upload runs ferry upload of file as key and records it when it succeeds.
func (e *keysEnv) upload(t *testing.T, file, key string) cliResult {
	t.Helper()
	r := ferry(t, "upload", "-q", "--server", e.srv.url, file, key)
	if r.err == nil {
		e.stored[key] = file
	}
	return r
}

// mustUpload is upload that fails the test unless it succeeds.
func (e *keysEnv) mustUpload(t *testing.T, file, key string) {
	t.Helper()
	if r := e.upload(t, file, key); r.err != nil {
		t.Fatalf("ferry upload %s %q: %v\n%s", file, key, r.err, r.stderr)
	}
}

// wantRefused fails unless r is a failed CLI run whose error has code and
// every one of words, and no "internal".
func wantRefused(t *testing.T, what string, r cliResult, code string, words ...string) {
	t.Helper()
	if r.err == nil {
		t.Errorf("%s succeeded, want %s", what, code)
		return
	}
	if !strings.Contains(r.stderr, code) || strings.Contains(r.stderr, "internal") {
		t.Errorf("%s: %v, stderr %q; want %s (not internal)", what, r.err, r.stderr, code)
	}
	for _, w := range words {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("%s: stderr %q does not say %q", what, r.stderr, w)
		}
	}
}

// wantIntact fails unless the object key holds the bytes of file.
func (e *keysEnv) wantIntact(t *testing.T, key string) {
	t.Helper()
	got := filepath.Join(t.TempDir(), "got")
	mustFerry(t, "download", "-q", "--server", e.srv.url, key, got)
	a, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(e.stored[key])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("object %q holds %d bytes that differ from the %d uploaded from %s", key, len(a), len(b), e.stored[key])
	}
}

// wantListed fails unless ferry ls lists exactly the stored keys, each
// once, with its size.
func (e *keysEnv) wantListed(t *testing.T) {
	t.Helper()
	ls := mustFerry(t, "ls", "--server", e.srv.url)
	var listed []string
	for _, line := range strings.Split(strings.TrimRight(ls.stdout, "\n"), "\n") {
		// "%12d  %s  %s": size, last modified, key (which may hold spaces).
		f := strings.SplitN(strings.TrimLeft(line, " "), "  ", 3)
		if len(f) != 3 {
			t.Fatalf("ferry ls printed %q, not size, time and key", line)
		}
		key := f[2]
		listed = append(listed, key)
		if file, ok := e.stored[key]; ok {
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if f[0] != fmt.Sprint(fi.Size()) {
				t.Errorf("ferry ls lists %q with size %s, want %d", key, f[0], fi.Size())
			}
		}
	}
	var want []string
	for k := range e.stored {
		want = append(want, k)
	}
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("ferry ls lists %q, want every stored object once: %q", listed, want)
	}
}

// TestKeys: keys that named one object twice or made objects unlistable on
// S3 are refused on both stores, over the CLI, with a clear code; what was
// stored is intact and listed. On MinIO, "/a" used to replace "a"; "d/a",
// "d/a/b" and "d/a/b/c" all uploaded but only "d/a" was listed; "a//b",
// "//", "a\..\b", " ", U+2028 and 256-byte segments failed as internal;
// "a/" failed as a multipart upload but worked in one request.
func TestKeys(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			e := &keysEnv{srv: backend.start(t), stored: map[string]string{}}
			small := generated(t, 1000, 21)     // one chunk: one PutObject
			big := generated(t, 8<<20+1000, 22) // two chunks: a multipart upload
			other := generated(t, 1000, 23)

			t.Run("LeadingSlash", func(t *testing.T) {
				e.mustUpload(t, small, "a")
				e.mustUpload(t, small, "team/x")
				for _, k := range []string{"/a", "//a", "/team/x"} {
					for _, f := range []string{other, big} {
						wantRefused(t, "ferry upload "+k, e.upload(t, f, k), "invalid_argument", `starts with "/"`)
					}
				}
				e.wantIntact(t, "a")
				e.wantIntact(t, "team/x")
			})

			t.Run("FileAndDirectory", func(t *testing.T) {
				e.mustUpload(t, small, "d/a")
				for _, k := range []string{"d/a/b", "d/a/b/c"} {
					for _, f := range []string{other, big} {
						wantRefused(t, "ferry upload "+k+" with d/a stored", e.upload(t, f, k), "failed_precondition", `"d/a"`, `"`+k+`"`)
					}
				}
				e.mustUpload(t, big, "r/a/b")
				for _, k := range []string{"r/a", "r"} {
					for _, f := range []string{other, big} {
						wantRefused(t, "ferry upload "+k+" with r/a/b stored", e.upload(t, f, k), "failed_precondition", `"`+k+`/"`, `"r/a/b"`)
					}
				}
				// Neighbours that only share bytes are not in conflict.
				for _, k := range []string{"d/a-b", "d/a.b", "d/ab", "d/a b", "r/a-b/c", "r/a0"} {
					e.mustUpload(t, small, k)
				}
				e.wantIntact(t, "d/a")
				e.wantIntact(t, "r/a/b")
			})

			t.Run("BackendRefusals", func(t *testing.T) {
				for _, k := range []string{
					"a//b", "//", "/", `a\..\b`, `a\b`, " ", "a/ /b", "\u2028", "x/a\u2028b", "a/", "d/a/",
					"x/" + strings.Repeat("s", 256), "x/" + strings.Repeat("é", 128), strings.Repeat("s", 1024),
					"x__XLDIR__", "x/__XLDIR__/y", "a\ufffe", "evil\u202etxt.exe", "a/./b", "a/ .. /b",
				} {
					for _, f := range []string{small, big} {
						wantRefused(t, fmt.Sprintf("ferry upload %q", k), e.upload(t, f, k), "invalid_argument", "invalid key")
					}
				}
			})

			t.Run("Valid", func(t *testing.T) {
				for _, k := range []string{
					"sp ace/ lead/trail /x", "pct/100%/a%2Fb+c=d~e", "uni/café", "uni/cafe\u0301", "uni/日本語 ファイル",
					"long/" + strings.Repeat("s", 255), "dots/..x/x../.hidden", "emoji/👨\u200d👩\u200d👧",
				} {
					e.mustUpload(t, small, k)
					e.wantIntact(t, k)
				}
			})

			e.wantListed(t)
		})
	}
}

// TestKeysGRPC: a stock grpc-go client gets INVALID_ARGUMENT for keys a
// backend cannot keep and FAILED_PRECONDITION for a file/directory
// conflict, on the one-shot stream, the streamed multipart path and the
// unary CreateUpload, with a message that names the rule or the key.
func TestKeysGRPC(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv := backend.start(t)
			conn := dialGRPC(t, srv)
			ctx := t.Context()
			small := bytes.Repeat([]byte("k"), 100)
			big := bytes.Repeat([]byte("K"), 5<<20+100)
			put := func(key string, data []byte) error {
				var chunks []*ferryv1.Chunk
				for i := 0; i*(5<<20) < len(data); i++ {
					part := data[i*(5<<20) : min((i+1)*(5<<20), len(data))]
					crc := crc32.Checksum(part, castagnoli)
					chunks = append(chunks, &ferryv1.Chunk{Index: int64(i), Data: part, Crc32C: &crc})
				}
				size := int64(len(data))
				_, err := grpcUpload(ctx, conn, &ferryv1.UploadSpec{Key: key, Size: &size, ChunkSize: 5 << 20}, chunks, &ferryv1.UploadFinish{Size: &size})
				return err
			}
			wantCode := func(what string, err error, code codes.Code, word string) {
				t.Helper()
				if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), word) {
					t.Errorf("%s = %v, want %v saying %q", what, err, code, word)
				}
			}
			if err := put("g/a", small); err != nil {
				t.Fatalf("upload g/a = %v", err)
			}
			for _, data := range [][]byte{small, big} {
				wantCode("upload /g/a", put("/g/a", data), codes.InvalidArgument, `starts with "/"`)
				wantCode("upload a//b", put("a//b", data), codes.InvalidArgument, "segment 2 (at byte 2) is empty")
				wantCode("upload of a 256-byte segment", put("x/"+strings.Repeat("s", 256), data), codes.InvalidArgument, "256 bytes, the limit is 255")
				wantCode("upload g/a/b", put("g/a/b", data), codes.FailedPrecondition, `"g/a"`)
			}
			var res ferryv1.CreateUploadResponse
			err := conn.Invoke(ctx, "/ferry.v1.UploadService/CreateUpload", &ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "g/a/c"}}, &res)
			wantCode("CreateUpload g/a/c", err, codes.FailedPrecondition, `"g/a"`)
			err = conn.Invoke(ctx, "/ferry.v1.UploadService/CreateUpload", &ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: `a\..\b`}}, &res)
			wantCode(`CreateUpload a\..\b`, err, codes.InvalidArgument, "backslash")
		})
	}
}

// TestKeysListedInEveryPageSize: every object is listed whatever the page
// size, including when a page ends inside "d/a/" while a sibling "d/a-b/"
// (which sorts before "d/a/" by bytes) holds more objects than a page:
// MinIO then left the rest of "d/a/" out of the next page.
func TestKeysListedInEveryPageSize(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv := backend.start(t)
			small := generated(t, 10, 24)
			var keys []string
			for i := range 10 {
				keys = append(keys, fmt.Sprintf("d/a-b/%d", i))
			}
			keys = append(keys, "d/a/x", "d/a/y", "d/a/y-z", "d/a0", "d/z")
			for _, k := range keys {
				mustFerry(t, "upload", "-q", "--server", srv.url, small, k)
			}
			slices.Sort(keys)
			c := ferryv1connect.NewObjectServiceClient(httpClient("connect"), srv.url)
			for _, size := range []int32{1, 2, 3, 4, 1000} {
				var got []string
				req := &ferryv1.ListObjectsRequest{Prefix: "d/", PageSize: size}
				for range len(keys) + 1 {
					res, err := c.ListObjects(context.Background(), connect.NewRequest(req))
					if err != nil {
						t.Fatalf("ListObjects(page size %d) = %v", size, err)
					}
					for _, o := range res.Msg.GetObjects() {
						got = append(got, o.GetKey())
					}
					if req.PageToken = res.Msg.GetNextPageToken(); req.PageToken == "" {
						break
					}
				}
				if !slices.Equal(got, keys) {
					t.Errorf("ListObjects in pages of %d lists %q, want %q", size, got, keys)
				}
			}
		})
	}
}
