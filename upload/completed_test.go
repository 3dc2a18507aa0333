package upload

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
)

// completedUpload creates an upload of data in chunks of 5 MiB, commits
// every chunk and completes it; it returns the upload ID and the object.
func completedUpload(t *testing.T, env *svcEnv, key string, data []byte, ifNoneMatch bool) (string, *ferryv1.Object) {
	t.Helper()
	ctx := context.Background()
	c := env.clients["grpc"]
	cr, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{
		Key: key, Size: ptr(int64(len(data))), ChunkSize: 5 * mib, IfNoneMatch: ifNoneMatch, ContentType: "text/plain", Metadata: map[string]string{"a": "b"},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	id := cr.Msg.GetUpload().GetUploadId()
	msgs := []*ferryv1.UploadRequest{resumeMsg(id)}
	for _, ch := range chunksOf(data, 5*mib) {
		msgs = append(msgs, chunkMsg(ch))
	}
	if _, err := streamUpload(ctx, c, msgs...); err != nil {
		t.Fatal(err)
	}
	done, err := c.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: ptr(store.CRC32C(data))}))
	if err != nil {
		t.Fatal(err)
	}
	return id, done.Msg.GetObject()
}

// sameObject reports whether a and b describe one version of one object.
func sameObject(a, b *ferryv1.Object) bool {
	return a != nil && b != nil && a.GetKey() == b.GetKey() && a.GetSize() == b.GetSize() && a.GetEtag() == b.GetEtag() &&
		a.Crc32C != nil && b.Crc32C != nil && a.GetCrc32C() == b.GetCrc32C() && a.GetContentType() == b.GetContentType()
}

// TestCompleteIdempotent completes an upload, then asks again every way a
// retry could: CompleteUpload, an Upload stream with only a finish, one
// re-sending every chunk and a finish, PutChunk of a chunk; on the same
// server and on a restarted one (a new Service on the store). Each gets
// the object the first completion made, and GetUpload reports it with
// every chunk committed. What differs from the object (a chunk, the size,
// the CRC32C) is refused, and the object is untouched. Once the completed
// TTL has passed a sweep forgets the upload: NotFound.
func TestCompleteIdempotent(t *testing.T) {
	t.Parallel()
	for _, ifNoneMatch := range []bool{false, true} {
		env := newSvcEnv(t, nil)
		ctx := context.Background()
		data := svcData(31, 2*5*mib+1234)
		chunks := chunksOf(data, 5*mib)
		crc := store.CRC32C(data)
		id, first := completedUpload(t, env, "done", data, ifNoneMatch)

		for name, e := range map[string]*svcEnv{"same server": env, "restarted": newSvcEnv(t, env.store)} {
			for proto, c := range e.clients {
				again, err := c.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Size: ptr(int64(len(data))), Crc32C: &crc}))
				if err != nil || !sameObject(again.Msg.GetObject(), first) || again.Msg.GetChunkCount() != 3 {
					t.Errorf("%s, %s: CompleteUpload again = %v, %v; want %v", name, proto, again, err, first)
				}
				res, err := streamUpload(ctx, c, resumeMsg(id), finishMsg(nil, &crc))
				if err != nil || !sameObject(res.GetObject(), first) {
					t.Errorf("%s, %s: Upload finish again = %v, %v; want %v", name, proto, res, err, first)
				}
				msgs := []*ferryv1.UploadRequest{resumeMsg(id)}
				for _, ch := range chunks {
					msgs = append(msgs, chunkMsg(ch))
				}
				res, err = streamUpload(ctx, c, append(msgs, finishMsg(ptr(int64(len(data))), nil))...)
				if err != nil || !sameObject(res.GetObject(), first) || len(res.GetCommitted()) != 3 {
					t.Errorf("%s, %s: Upload of every chunk and finish again = %v, %v; want %v and 3 chunks committed", name, proto, res, err, first)
				}
				pc, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: chunks[1]}))
				if err != nil || pc.Msg.GetChunk().GetIndex() != 1 || pc.Msg.GetChunk().GetCrc32C() != chunks[1].GetCrc32C() {
					t.Errorf("%s, %s: PutChunk again = %v, %v; want chunk 1 committed", name, proto, pc, err)
				}
				var chunksSeen []int64
				token := ""
				for {
					st, err := c.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id, PageSize: 2, PageToken: token}))
					if err != nil {
						t.Fatalf("%s, %s: GetUpload = %v", name, proto, err)
					}
					if !sameObject(st.Msg.GetObject(), first) || st.Msg.GetChunkCount() != 3 || st.Msg.GetUpload().GetSpec().GetKey() != "done" ||
						st.Msg.GetUpload().GetSpec().GetIfNoneMatch() != ifNoneMatch || st.Msg.GetUpload().GetSpec().GetChunkSize() != 5*mib {
						t.Fatalf("%s, %s: GetUpload = %v; want the object %v and the upload's spec", name, proto, st.Msg, first)
					}
					for _, ch := range st.Msg.GetChunks() {
						chunksSeen = append(chunksSeen, ch.GetIndex())
						if want := chunks[ch.GetIndex()]; ch.GetCrc32C() != want.GetCrc32C() || ch.GetSize() != int64(len(want.GetData())) {
							t.Errorf("%s, %s: GetUpload chunk %d = %v", name, proto, ch.GetIndex(), ch)
						}
					}
					if token = st.Msg.GetNextPageToken(); token == "" {
						break
					}
				}
				if len(chunksSeen) != 3 || chunksSeen[0] != 0 || chunksSeen[2] != 2 {
					t.Errorf("%s, %s: GetUpload listed chunks %v, want 0 to 2", name, proto, chunksSeen)
				}

				refused := []struct {
					what string
					call func() error
					code connect.Code
				}{
					{"CompleteUpload with another CRC32C", func() error {
						_, err := c.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: ptr(crc + 1)}))
						return err
					}, connect.CodeInvalidArgument},
					{"CompleteUpload with another size", func() error {
						_, err := c.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Size: ptr(int64(len(data) + 1))}))
						return err
					}, connect.CodeInvalidArgument},
					{"PutChunk of other bytes", func() error {
						_, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: svcChunk(1, svcData(99, 5*mib))}))
						return err
					}, connect.CodeFailedPrecondition},
					{"PutChunk out of range", func() error {
						_, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: svcChunk(3, []byte("x"))}))
						return err
					}, connect.CodeInvalidArgument},
					{"Upload of other bytes", func() error {
						_, err := streamUpload(ctx, c, resumeMsg(id), chunkMsg(svcChunk(2, svcData(98, 1234))), finishMsg(nil, nil))
						return err
					}, connect.CodeFailedPrecondition},
				}
				for _, r := range refused {
					if err := r.call(); codeOf(err) != r.code {
						t.Errorf("%s, %s: %s = %v, want code %v", name, proto, r.what, err, r.code)
					}
				}
			}
		}
		st, err := env.store.StatObject(ctx, "done")
		if err != nil || st.ETag != first.GetEtag() {
			t.Fatalf("object after the repeated completions: %+v, %v; want ETag %q", st, err, first.GetEtag())
		}
		if got := env.readAll(t, "done"); string(got) != string(data) {
			t.Fatal("object bytes changed")
		}

		env.now.Add(2 * time.Hour) // TTL and completed TTL 1 h
		if _, err := env.svc.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = env.clients["connect"].CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id}))
		if codeOf(err) != connect.CodeNotFound {
			t.Errorf("CompleteUpload after the completed TTL = %v, want NotFound", err)
		}
		if _, err := env.store.StatObject(ctx, completionKey(id)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("completion record after the sweep: %v, want it removed", err)
		}
	}
}

// TestCompleteConcurrent races identical completions of one upload, with
// and without if_none_match, over CompleteUpload and Upload streams with a
// finish: every caller gets the same object, none ALREADY_EXISTS or
// NOT_FOUND (issue 12, finding 10).
func TestCompleteConcurrent(t *testing.T) {
	t.Parallel()
	env := newSvcEnv(t, nil)
	other := newSvcEnv(t, env.store) // a second instance on the same store
	ctx := context.Background()
	for round := range 10 {
		ifNoneMatch := round%2 == 0
		data := svcData(uint64(200+round), 5*mib+round)
		crc := store.CRC32C(data)
		key := "concurrent/" + string(rune('a'+round))
		cr, err := env.clients["grpc"].CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{
			Key: key, Size: ptr(int64(len(data))), ChunkSize: 5 * mib, IfNoneMatch: ifNoneMatch,
		}}))
		if err != nil {
			t.Fatal(err)
		}
		id := cr.Msg.GetUpload().GetUploadId()
		msgs := []*ferryv1.UploadRequest{resumeMsg(id)}
		for _, ch := range chunksOf(data, 5*mib) {
			msgs = append(msgs, chunkMsg(ch))
		}
		if _, err := streamUpload(ctx, env.clients["grpc"], msgs...); err != nil {
			t.Fatal(err)
		}
		const n = 4
		objects := make([]*ferryv1.Object, n)
		start := make(chan struct{})
		var g errgroup.Group
		for i := range n {
			e := env
			if i%2 == 1 {
				e = other
			}
			g.Go(func() error {
				<-start
				if i < 2 {
					res, err := e.clients["grpc"].CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: &crc}))
					if err != nil {
						return err
					}
					objects[i] = res.Msg.GetObject()
					return nil
				}
				res, err := streamUpload(ctx, e.clients["connect"], resumeMsg(id), finishMsg(nil, &crc))
				objects[i] = res.GetObject()
				return err
			})
		}
		close(start)
		if err := g.Wait(); err != nil {
			t.Fatalf("round %d (if_none_match %v): a concurrent completion failed: %v (code %v)", round, ifNoneMatch, err, codeOf(err))
		}
		for i := 1; i < n; i++ {
			if !sameObject(objects[i], objects[0]) {
				t.Fatalf("round %d: completion %d got %v, completion 0 %v", round, i, objects[i], objects[0])
			}
		}
	}
}

// crashingStore is a real store that, armed, does one call of the named
// method and then fails it, as a server that died right after the store
// did its work: what the service would have done next never happens.
type crashingStore struct {
	store.Store
	mu    sync.Mutex
	after string // "Method" or "Method key-prefix"
}

var errCrashed = errors.New("crashed (test)")

func (c *crashingStore) crash(method, key string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.after == "" || c.after != method && !strings.HasPrefix(method+" "+key, c.after) {
		return nil
	}
	c.after = ""
	return errCrashed
}

func (c *crashingStore) arm(after string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.after = after
}

func (c *crashingStore) CompleteMultipartUpload(ctx context.Context, key, id string, parts []store.Part, opts store.CompleteOptions) (store.ObjectInfo, error) {
	info, err := c.Store.CompleteMultipartUpload(ctx, key, id, parts, opts)
	if err == nil {
		err = c.crash("CompleteMultipartUpload", key)
	}
	return info, err
}

func (c *crashingStore) PutObject(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) (store.ObjectInfo, error) {
	info, err := c.Store.PutObject(ctx, key, r, size, opts)
	if err == nil {
		err = c.crash("PutObject", key)
	}
	return info, err
}

func (c *crashingStore) DeleteObject(ctx context.Context, key string) error {
	err := c.Store.DeleteObject(ctx, key)
	if err == nil {
		err = c.crash("DeleteObject", key)
	}
	return err
}

func (c *crashingStore) CreateMultipartUpload(ctx context.Context, key string, opts store.CreateOptions) (string, error) {
	id, err := c.Store.CreateMultipartUpload(ctx, key, opts)
	if err == nil {
		err = c.crash("CreateMultipartUpload", key)
	}
	return id, err
}

// TestCompleteAfterCrash stops a completion right after each store step
// (the store's completion, the completion record, the manifest's removal)
// as a crash would, then completes again on a new Service (a restarted
// server): the object is the one the first attempt made, with and without
// if_none_match, and afterwards nothing but the record is left.
func TestCompleteAfterCrash(t *testing.T) {
	t.Parallel()
	steps := []string{
		"CompleteMultipartUpload",
		"PutObject " + completedPrefix,
		"DeleteObject " + manifestPrefix,
	}
	for _, step := range steps {
		for _, ifNoneMatch := range []bool{false, true} {
			disk, err := diskstore.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			cs := &crashingStore{Store: disk}
			env := newSvcEnv(t, cs)
			ctx := context.Background()
			data := svcData(41, 5*mib+77)
			crc := store.CRC32C(data)
			cr, err := env.clients["grpc"].CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{
				Key: "crash", Size: ptr(int64(len(data))), ChunkSize: 5 * mib, IfNoneMatch: ifNoneMatch,
			}}))
			if err != nil {
				t.Fatal(err)
			}
			id := cr.Msg.GetUpload().GetUploadId()
			msgs := []*ferryv1.UploadRequest{resumeMsg(id)}
			for _, ch := range chunksOf(data, 5*mib) {
				msgs = append(msgs, chunkMsg(ch))
			}
			if _, err := streamUpload(ctx, env.clients["grpc"], msgs...); err != nil {
				t.Fatal(err)
			}
			cs.arm(step)
			first, firstErr := env.clients["grpc"].CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: &crc}))
			stored, err := disk.StatObject(ctx, "crash")
			if err != nil {
				t.Fatalf("after a crash at %s: the object is not stored: %v", step, err)
			}
			restarted := newSvcEnv(t, disk)
			again, err := restarted.clients["grpc"].CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: &crc}))
			if err != nil || again.Msg.GetObject().GetEtag() != stored.ETag || again.Msg.GetObject().GetSize() != int64(len(data)) {
				t.Errorf("crash after %s (if_none_match %v): completion after the restart = %v, %v; want the object, ETag %q", step, ifNoneMatch, again, err, stored.ETag)
			}
			if firstErr == nil && first.Msg.GetObject().GetEtag() != stored.ETag {
				t.Errorf("crash after %s: the first completion answered %v, but %q is stored", step, first.Msg.GetObject(), stored.ETag)
			}
			if _, err := disk.StatObject(ctx, manifestKey(id)); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("crash after %s: the manifest is still there after the second completion: %v", step, err)
			}
			if _, err := disk.StatObject(ctx, completionKey(id)); err != nil {
				t.Errorf("crash after %s: no completion record after the second completion: %v", step, err)
			}
			if res, err := disk.ListMultipartUploads(ctx, "crash", "", 1000); err != nil || len(res.Uploads) != 0 {
				t.Errorf("crash after %s: open multipart uploads %+v, %v; want none", step, res.Uploads, err)
			}
		}
	}
}

// TestCreateInterrupted stops a creation right after the store's
// multipart upload is made (the pending manifest written, the final one
// not): the sweep aborts that multipart upload once its pending manifest
// is older than the TTL, and removes the manifest, while an upload of the
// same key in use is kept, and no multipart upload of a key with a
// creation younger than the TTL is touched.
func TestCreateInterrupted(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cs := &crashingStore{Store: disk}
	env := newSvcEnv(t, cs)
	ctx := context.Background()
	c := env.clients["grpc"]
	spec := func(key string) *ferryv1.CreateUploadRequest {
		return &ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: key, Size: ptr(int64(10 * mib)), ChunkSize: 5 * mib}}
	}
	openUploads := func(key string) int {
		t.Helper()
		res, err := disk.ListMultipartUploads(ctx, key, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Uploads)
	}
	for _, key := range []string{"orphan", "busy"} {
		cs.arm("CreateMultipartUpload")
		if _, err := c.CreateUpload(ctx, connect.NewRequest(spec(key))); err == nil {
			t.Fatal("CreateUpload succeeded through a crash")
		}
		if openUploads(key) != 1 {
			t.Fatalf("the interrupted creation of %q made %d multipart uploads, want 1", key, openUploads(key))
		}
	}
	if n, err := env.svc.Sweep(ctx); err != nil || n != 0 || openUploads("orphan") != 1 {
		t.Fatalf("sweep before the TTL: removed %d, %v; %d uploads of orphan left; want nothing removed", n, err, openUploads("orphan"))
	}
	env.now.Add(2 * time.Hour)
	// An upload of the same key, in use; and a creation of "busy" in
	// progress (its pending manifest, young).
	live, err := c.CreateUpload(ctx, connect.NewRequest(spec("orphan")))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.svc.saveManifest(ctx, &manifest{Version: 1, UploadID: "00000000-0000-4000-8000-000000000001", Key: "busy", Size: -1, ChunkSize: 5 * mib, CreatedAt: env.now.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := disk.ListMultipartUploads(ctx, "orphan", "", 1000)
	if err != nil || len(res.Uploads) != 1 {
		t.Fatalf("uploads of orphan after the sweep: %+v, %v; want the one in use", res.Uploads, err)
	}
	if _, err := c.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: live.Msg.GetUpload().GetUploadId()})); err != nil {
		t.Fatalf("the upload in use after the sweep: %v", err)
	}
	if _, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: live.Msg.GetUpload().GetUploadId(), Chunk: svcChunk(0, svcData(5, 5*mib))})); err != nil {
		t.Fatalf("a chunk of the upload in use after the sweep: %v", err)
	}
	if openUploads("busy") != 1 {
		t.Fatal("the sweep aborted an upload of a key whose creation is in progress")
	}
	pending := 0
	if err := env.svc.eachObject(ctx, manifestPrefix, func(obj store.ObjectInfo) {
		if m, err := env.svc.readManifest(ctx, strings.TrimPrefix(obj.Key, manifestPrefix)); err == nil && m.pending() {
			pending++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if pending != 2 {
		t.Fatalf("%d pending manifests after the sweep, want 2 (busy's: the interrupted one and the young one)", pending)
	}
}

// TestCreateStreamBrokenAborts breaks Upload streams whose header creates
// the upload (after the finish of a one-chunk object, and after the
// chunks of a larger one): their clients never learn the upload ID, so
// the server aborts the upload: no manifest and no multipart upload stay,
// and nothing is stored (issue 12, finding 12).
func TestCreateStreamBrokenAborts(t *testing.T) {
	t.Parallel()
	done := make(chan string, 8)
	env := newSvcEnvWith(t, nil, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r)
			done <- r.URL.Path
		})
	})
	cases := map[string][]*ferryv1.Chunk{
		"one-chunk":  {svcChunk(0, svcData(1, 1000))},
		"two-chunks": chunksOf(svcData(2, 6*mib), 5*mib),
	}
	for name, chunks := range cases {
		size := int64(0)
		for _, ch := range chunks {
			size += int64(len(ch.GetData()))
		}
		ctx, cancel := context.WithCancel(context.Background())
		stream := env.clients["grpc"].Upload(ctx)
		msgs := []*ferryv1.UploadRequest{createMsg(&ferryv1.UploadSpec{Key: name, Size: &size, ChunkSize: 5 * mib})}
		for _, ch := range chunks {
			msgs = append(msgs, chunkMsg(ch))
		}
		if name == "one-chunk" {
			msgs = append(msgs, finishMsg(nil, nil))
		}
		for _, m := range msgs {
			if err := stream.Send(m); err != nil {
				t.Fatalf("%s: send: %v", name, err)
			}
		}
		// The stream breaks before it ends: canceled, not closed (a close
		// could reach the server first and end the stream cleanly).
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("%s: the server never finished the broken stream", name)
		}
		if _, err := stream.CloseAndReceive(); err == nil {
			t.Fatalf("%s: a broken stream succeeded", name)
		}
		if res, err := env.store.ListMultipartUploads(context.Background(), name, "", 1000); err != nil || len(res.Uploads) != 0 {
			t.Errorf("%s: open multipart uploads after the broken stream: %+v, %v", name, res.Uploads, err)
		}
		page, err := env.store.ListObjects(context.Background(), "", "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range page.Objects {
			t.Errorf("%s: %q stored after the broken stream", name, obj.Key)
		}
	}
}

// TestCompletedAuthorize: a completed upload is checked with the Authorize
// hook on its key, as an open one is: a caller refused gets NotFound with
// the message of an upload ID that never existed, on every RPC.
func TestCompletedAuthorize(t *testing.T) {
	t.Parallel()
	env := newSvcEnv(t, nil)
	ctx := context.Background()
	data := svcData(51, 5*mib+3)
	id, _ := completedUpload(t, env, "secret/done", data, false)

	refusing, err := NewService(Config{Store: env.store, Authorize: func(_ context.Context, key string) error {
		if strings.HasPrefix(key, "secret/") {
			return errors.New("no rights on secret/")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	unknown := "00000000-0000-4000-8000-00000000abcd"
	calls := map[string]func(id string) error{
		"GetUpload": func(id string) error {
			_, err := refusing.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id}))
			return err
		},
		"CompleteUpload": func(id string) error {
			_, err := refusing.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id}))
			return err
		},
		"PutChunk": func(id string) error {
			_, err := refusing.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: svcChunk(0, data[:5*mib])}))
			return err
		},
	}
	for name, call := range calls {
		err := call(id)
		want := strings.ReplaceAll(call(unknown).Error(), unknown, id)
		if codeOf(err) != connect.CodeNotFound || err.Error() != want {
			t.Errorf("%s of a completed upload the caller may not touch: %v; want %q", name, err, want)
		}
	}
}
