package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
)

// putDirect writes an object straight into the store, as another server
// (or another tool on the bucket) would.
func (e *svcEnv) putDirect(t *testing.T, key string, data []byte) {
	t.Helper()
	if _, err := e.store.PutObject(t.Context(), key, bytes.NewReader(data), int64(len(data)), store.PutOptions{}); err != nil {
		t.Fatalf("PutObject(%q) = %v", key, err)
	}
}

// uploadPaths are the ways an object is created: a one-shot Upload stream
// (one PutObject), a stream of two chunks (a multipart upload created and
// completed by the stream), and the unary calls (CreateUpload, PutChunk,
// CompleteUpload).
var uploadPaths = []string{"oneshot", "stream", "unary"}

// pathData returns the bytes an upload by path sends: one small chunk for
// the one-shot path, two chunks of a 5 MiB chunk size otherwise.
func pathData(path string, seed uint64) []byte {
	if path == "oneshot" {
		return svcData(seed, 100)
	}
	return svcData(seed, 5*mib+100)
}

// uploadBy stores data under key by path and returns the RPC's error.
func uploadBy(ctx context.Context, c ferryv1connect.UploadServiceClient, path, key string, data []byte) error {
	crc := store.CRC32C(data)
	spec := &ferryv1.UploadSpec{Key: key, Size: ptr(int64(len(data))), ChunkSize: 5 * mib}
	switch path {
	case "oneshot", "stream":
		msgs := []*ferryv1.UploadRequest{createMsg(spec)}
		for _, ch := range chunksOf(data, 5*mib) {
			msgs = append(msgs, chunkMsg(ch))
		}
		_, err := streamUpload(ctx, c, append(msgs, finishMsg(ptr(int64(len(data))), &crc))...)
		return err
	}
	res, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: spec}))
	if err != nil {
		return err
	}
	id := res.Msg.GetUpload().GetUploadId()
	for _, ch := range chunksOf(data, 5*mib) {
		if _, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: ch})); err != nil {
			return err
		}
	}
	_, err = c.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Size: ptr(int64(len(data))), Crc32C: &crc}))
	return err
}

// wantConflict fails unless err is FAILED_PRECONDITION naming every one
// of names.
func wantConflict(t *testing.T, what string, err error, names ...string) {
	t.Helper()
	if codeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("%s = %v, want failed_precondition", what, err)
		return
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("%s = %q, which does not name %s", what, err, n)
		}
	}
}

// TestKeyConflict: on every path, a key is refused with
// FAILED_PRECONDITION naming the conflicting key when an object exists at
// one of its ancestors ("d/a" for "d/a/b" and "d/a/b/c") or objects exist
// under it ("d/a/b" for "d/a", "d"), and the object already there is left
// as it was. Keys that only share bytes ("d/ab", "d/a.b", "d/a-b", "d/a b")
// or that are the existing object itself are not conflicts.
func TestKeyConflict(t *testing.T) {
	t.Parallel()
	for _, path := range uploadPaths {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			e := newSvcEnv(t, nil)
			c := e.clients["grpc"]
			ctx := t.Context()
			old := []byte("the object d/a")
			e.putDirect(t, "d/a", old)
			for _, key := range []string{"d/a/b", "d/a/b/c", "d/a/" + strings.Repeat("x/", 28) + "y"} {
				err := uploadBy(ctx, c, path, key, pathData(path, 1))
				wantConflict(t, "upload of "+key+" under the object d/a", err, `"d/a"`, `"`+key+`"`)
				if got := e.readAll(t, key); got != nil {
					t.Errorf("%s was stored (%d bytes) despite the conflict", key, len(got))
				}
			}
			if got := e.readAll(t, "d/a"); !bytes.Equal(got, old) {
				t.Errorf("d/a holds %q after the refused uploads, want %q", got, old)
			}
			for i, key := range []string{"d/ab", "d/a.b", "d/a-b", "d/a b", "d/a", "e/a/b"} {
				if err := uploadBy(ctx, c, path, key, pathData(path, uint64(10+i))); err != nil {
					t.Errorf("upload of %s beside the object d/a = %v, want success", key, err)
				}
			}

			e.putDirect(t, "p/q/r", []byte("deep"))
			for _, key := range []string{"p/q", "p"} {
				err := uploadBy(ctx, c, path, key, pathData(path, 2))
				wantConflict(t, "upload of "+key+" over the object p/q/r", err, `"`+key+`/"`, `"p/q/r"`)
				if got := e.readAll(t, key); got != nil {
					t.Errorf("%s was stored despite the objects under it", key)
				}
			}
		})
	}
}

// TestKeyConflictAtCompletion: an object that appears at an ancestor, or
// under the key, after the upload was created (written by another server)
// makes completion FAILED_PRECONDITION; the upload stays open with its
// chunks, and completes once the conflicting object is deleted.
func TestKeyConflictAtCompletion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ key, other string }{
		{"d/a/b", "d/a"},
		{"d/a/b", "d"},
		{"d/a", "d/a/b/c"},
	} {
		t.Run(strings.ReplaceAll(tc.key+" then "+tc.other, "/", "_"), func(t *testing.T) {
			t.Parallel()
			e := newSvcEnv(t, nil)
			c := e.clients["connect"]
			ctx := t.Context()
			data := svcData(3, 1000)
			crc := store.CRC32C(data)
			res, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: tc.key, Size: ptr(int64(len(data)))}}))
			if err != nil {
				t.Fatalf("CreateUpload(%s) = %v", tc.key, err)
			}
			id := res.Msg.GetUpload().GetUploadId()
			if _, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: svcChunk(0, data)})); err != nil {
				t.Fatalf("PutChunk = %v", err)
			}
			e.putDirect(t, tc.other, []byte("another server's object"))
			complete := connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: &crc})
			_, err = c.CompleteUpload(ctx, complete)
			wantConflict(t, "CompleteUpload after "+tc.other+" appeared", err, `"`+tc.other+`"`)
			if got := e.readAll(t, tc.key); got != nil {
				t.Fatalf("%s became visible despite the conflict", tc.key)
			}
			info, err := c.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id}))
			if err != nil || len(info.Msg.GetChunks()) != 1 {
				t.Fatalf("GetUpload after the refused completion = %v, %v; want the upload open with its chunk", info, err)
			}
			if err := e.store.DeleteObject(ctx, tc.other); err != nil {
				t.Fatal(err)
			}
			if _, err := c.CompleteUpload(ctx, complete); err != nil {
				t.Fatalf("CompleteUpload once %s is deleted = %v", tc.other, err)
			}
			if got := e.readAll(t, tc.key); !bytes.Equal(got, data) {
				t.Errorf("%s holds %d bytes after completion, want the %d sent", tc.key, len(got), len(data))
			}
		})
	}
}

// probeStore counts the StatObject and ListObjects calls of the conflict
// check, the most in flight at once, and can fail StatObject.
type probeStore struct {
	store.Store
	stats, lists       atomic.Int32
	inFlight, maxSeen  atomic.Int32
	failStat, failList error
}

func (p *probeStore) enter() func() {
	n := p.inFlight.Add(1)
	for {
		m := p.maxSeen.Load()
		if n <= m || p.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	return func() { p.inFlight.Add(-1) }
}

func (p *probeStore) StatObject(ctx context.Context, key string) (store.ObjectInfo, error) {
	defer p.enter()()
	p.stats.Add(1)
	if p.failStat != nil {
		return store.ObjectInfo{}, p.failStat
	}
	return p.Store.StatObject(ctx, key)
}

func (p *probeStore) ListObjects(ctx context.Context, prefix, startAfter string, maxKeys int) (store.ListResult, error) {
	defer p.enter()()
	p.lists.Add(1)
	if p.failList != nil {
		return store.ListResult{}, p.failList
	}
	return p.Store.ListObjects(ctx, prefix, startAfter, maxKeys)
}

// TestKeyConflictCost: the check of a key of the most segments allowed
// costs one StatObject per ancestor (31) and one ListObjects of one key,
// with at most maxConflictRequests of them in flight; a one-shot upload
// checks once, a multipart upload at creation and at completion.
func TestKeyConflictCost(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := &probeStore{Store: disk}
	e := newSvcEnv(t, p)
	key := strings.Repeat("s/", store.MaxKeySegments-1) + "leaf"
	if err := store.ValidateKey(key); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path   string
		checks int32
	}{{"oneshot", 1}, {"stream", 2}} {
		p.stats.Store(0)
		p.lists.Store(0)
		if err := uploadBy(t.Context(), e.clients["grpc"], tc.path, key, pathData(tc.path, 4)); err != nil {
			t.Fatalf("%s upload of a %d-segment key = %v", tc.path, store.MaxKeySegments, err)
		}
		if got, want := p.stats.Load(), tc.checks*(store.MaxKeySegments-1); got != want {
			t.Errorf("%s upload: %d StatObject calls, want %d (one per ancestor per check)", tc.path, got, want)
		}
		if got := p.lists.Load(); got != tc.checks {
			t.Errorf("%s upload: %d ListObjects calls, want %d", tc.path, got, tc.checks)
		}
	}
	if m := p.maxSeen.Load(); m > maxConflictRequests {
		t.Errorf("%d store requests in flight at once, want at most %d", m, maxConflictRequests)
	}
}

// TestKeyConflictStoreErrors: when the store cannot answer the check, the
// upload fails with the store's code (UNAVAILABLE, retryable), not as a
// conflict, and nothing is created.
func TestKeyConflictStoreErrors(t *testing.T) {
	t.Parallel()
	for _, fail := range []string{"stat", "list"} {
		for _, path := range uploadPaths {
			disk, err := diskstore.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			p := &probeStore{Store: disk}
			down := fmt.Errorf("s3 %s: %w", fail, store.ErrUnavailable)
			if fail == "stat" {
				p.failStat = down
			} else {
				p.failList = down
			}
			e := newSvcEnv(t, p)
			err = uploadBy(t.Context(), e.clients["grpc"], path, "d/a/b", pathData(path, 5))
			if codeOf(err) != connect.CodeUnavailable {
				t.Errorf("%s upload while %s fails = %v, want unavailable", path, fail, err)
			}
			res, lerr := disk.ListObjects(t.Context(), "", "", 10)
			if lerr != nil {
				t.Fatal(lerr)
			}
			for _, o := range res.Objects {
				if !strings.HasPrefix(o.Key, store.ReservedPrefix) {
					t.Errorf("%s upload while %s fails stored %q", path, fail, o.Key)
				}
			}
		}
	}
}

// TestConnectErrorKeyConflict: a store's ErrKeyConflict (a backend that
// refused a write for a file/directory conflict) is FAILED_PRECONDITION
// with a generic message, not internal.
func TestConnectErrorKeyConflict(t *testing.T) {
	t.Parallel()
	err := wire.ConnectError(errors.Join(errors.New("s3 PutObject \"d/a/b\" at http://10.0.0.1:9000"), store.ErrKeyConflict))
	if codeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("wire.ConnectError(store.ErrKeyConflict) = %v, want failed_precondition", err)
	}
	if strings.Contains(err.Error(), "10.0.0.1") {
		t.Errorf("wire.ConnectError(store.ErrKeyConflict) = %q, which leaks the store's text", err)
	}
}
