package upload

import (
	"context"
	"io"
	"maps"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
)

// countingStore is a real store that counts the calls made to it.
type countingStore struct {
	store.Store
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingStore) count(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[name]++
}

func (c *countingStore) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.calls)
}

func (c *countingStore) CreateMultipartUpload(ctx context.Context, key string, opts store.CreateOptions) (string, error) {
	c.count("CreateMultipartUpload")
	return c.Store.CreateMultipartUpload(ctx, key, opts)
}

func (c *countingStore) UploadPart(ctx context.Context, key, id string, n int, r io.Reader, size int64, crc uint32) (store.Part, error) {
	c.count("UploadPart")
	return c.Store.UploadPart(ctx, key, id, n, r, size, crc)
}

func (c *countingStore) PutObject(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) (store.ObjectInfo, error) {
	c.count("PutObject")
	return c.Store.PutObject(ctx, key, r, size, opts)
}

func newCountingEnv(t *testing.T) (*svcEnv, *countingStore) {
	t.Helper()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: disk, calls: map[string]int{}}
	return newSvcEnv(t, cs), cs
}

// TestOneShotUpload: a stream that creates an upload and carries the whole
// object in one chunk followed by a finish is stored with a single
// PutObject (no multipart upload, no manifest), over every protocol, for
// an empty object too; the object has its bytes, content type, metadata
// and CRC32C, and the upload ID answered is already gone.
func TestOneShotUpload(t *testing.T) {
	t.Parallel()
	for proto := range svcProtocols {
		for _, size := range []int{0, 1, 64 << 10, 5 * mib} {
			e, cs := newCountingEnv(t)
			c := e.clients[proto]
			data := svcData(uint64(size)+7, size)
			crc := store.CRC32C(data)
			key := "one/shot"
			meta := map[string]string{"owner": "bench"}
			res, err := streamUpload(t.Context(), c,
				createMsg(&ferryv1.UploadSpec{Key: key, Size: ptr(int64(size)), ContentType: "text/plain", Metadata: meta}),
				chunkMsg(svcChunk(0, data)),
				finishMsg(ptr(int64(size)), &crc))
			if err != nil {
				t.Fatalf("%s, %d bytes: %v", proto, size, err)
			}
			if got := cs.snapshot(); got["PutObject"] != 1 || got["CreateMultipartUpload"] != 0 || got["UploadPart"] != 0 {
				t.Errorf("%s, %d bytes: store calls %v, want one PutObject and no multipart upload", proto, size, got)
			}
			o := res.GetObject()
			if o.GetSize() != int64(size) || o.Crc32C == nil || o.GetCrc32C() != crc || res.GetChunkCount() != 1 || len(res.GetCommitted()) != 1 {
				t.Errorf("%s, %d bytes: response %v, want the object with CRC32C %08x in 1 chunk", proto, size, res, crc)
			}
			if got := e.readAll(t, key); string(got) != string(data) {
				t.Errorf("%s, %d bytes: stored %d bytes that differ from those sent", proto, size, len(got))
			}
			st, err := e.store.StatObject(t.Context(), key)
			if err != nil || st.ContentType != "text/plain" || !maps.Equal(st.Metadata, meta) || !st.HasCRC32C || st.CRC32C != crc {
				t.Errorf("%s, %d bytes: StatObject = %+v, %v; want text/plain, metadata %v, CRC32C %08x", proto, size, st, err, meta, crc)
			}
			_, err = c.GetUpload(t.Context(), connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: res.GetUploadId()}))
			if codeOf(err) != connect.CodeNotFound {
				t.Errorf("%s: GetUpload of the completed one-shot upload = %v, want not_found", proto, err)
			}
		}
	}
}

// TestOneShotRules: the one-request path keeps the rules of the ordinary
// path: a chunk whose CRC32C does not match stores nothing
// (INVALID_ARGUMENT), if_none_match on an existing key is ALREADY_EXISTS
// and leaves the object as it was, and a stream that is not exactly
// header, whole chunk, finish goes the ordinary way (no finish: the upload
// stays open with the chunk committed; a whole-object CRC32C that differs:
// FAILED_PRECONDITION, the upload stays open).
func TestOneShotRules(t *testing.T) {
	t.Parallel()
	for proto := range svcProtocols {
		e, _ := newCountingEnv(t)
		c := e.clients[proto]
		data := svcData(42, 100<<10)
		crc := store.CRC32C(data)
		spec := func(key string, ifNoneMatch bool) *ferryv1.UploadSpec {
			return &ferryv1.UploadSpec{Key: key, Size: ptr(int64(len(data))), IfNoneMatch: ifNoneMatch}
		}

		bad := svcChunk(0, data)
		bad.Crc32C = ptr(crc ^ 1)
		_, err := streamUpload(t.Context(), c, createMsg(spec("bad-crc", false)), chunkMsg(bad), finishMsg(nil, nil))
		if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "nothing was stored") {
			t.Errorf("%s: wrong chunk CRC32C: %v, want invalid_argument saying nothing was stored", proto, err)
		}
		if got := e.readAll(t, "bad-crc"); got != nil {
			t.Errorf("%s: an object was stored despite a wrong CRC32C", proto)
		}

		if _, err := streamUpload(t.Context(), c, createMsg(spec("taken", true)), chunkMsg(svcChunk(0, data)), finishMsg(nil, nil)); err != nil {
			t.Fatalf("%s: first conditional upload: %v", proto, err)
		}
		other := svcData(43, 10)
		_, err = streamUpload(t.Context(), c,
			createMsg(&ferryv1.UploadSpec{Key: "taken", Size: ptr(int64(len(other))), IfNoneMatch: true}),
			chunkMsg(svcChunk(0, other)), finishMsg(nil, nil))
		if codeOf(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), "nothing was stored") || strings.Contains(err.Error(), "aborted") {
			t.Errorf("%s: if_none_match on an existing key: %v, want already_exists saying nothing was stored (no upload existed to abort)", proto, err)
		}
		if got := e.readAll(t, "taken"); string(got) != string(data) {
			t.Errorf("%s: the existing object changed", proto)
		}

		res, err := streamUpload(t.Context(), c, createMsg(spec("open", false)), chunkMsg(svcChunk(0, data)))
		if err != nil || res.GetObject() != nil {
			t.Fatalf("%s: stream without finish = %v, %v; want the upload left open", proto, res, err)
		}
		st, err := c.GetUpload(t.Context(), connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: res.GetUploadId()}))
		if err != nil || len(st.Msg.GetChunks()) != 1 {
			t.Errorf("%s: GetUpload of the open upload = %v, %v; want chunk 0 committed", proto, st, err)
		}

		res, err = streamUpload(t.Context(), c, createMsg(spec("mismatch", false)), chunkMsg(svcChunk(0, data)), finishMsg(nil, ptr(crc^1)))
		if codeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("%s: finish with a different whole-object CRC32C: %v, %v; want failed_precondition", proto, res, err)
		}
		if got := e.readAll(t, "mismatch"); got != nil {
			t.Errorf("%s: an object was stored despite a whole-object CRC32C mismatch", proto)
		}
	}
}
