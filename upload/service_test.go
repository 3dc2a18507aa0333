package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protowire"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
)

const mib = 1 << 20

// svcEnv is an upload service on a real disk store, served in-process over
// HTTP/1.1 and h2c, with a client per protocol.
type svcEnv struct {
	store   store.Store
	svc     *Service
	url     string
	clients map[string]ferryv1connect.UploadServiceClient
	now     *svcClock
}

type svcClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *svcClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *svcClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// svcProtocols are the client options of the three protocols.
var svcProtocols = map[string][]connect.ClientOption{
	"connect": nil,
	"grpc":    {connect.WithGRPC()},
	"grpcweb": {connect.WithGRPCWeb()},
}

func newSvcEnv(t *testing.T, st store.Store) *svcEnv {
	t.Helper()
	return newSvcEnvWith(t, st, nil)
}

// newSvcEnvWith is newSvcEnv with the service's HTTP handler given to
// wrap (nil: none), as middleware.
func newSvcEnvWith(t *testing.T, st store.Store, wrap func(http.Handler) http.Handler) *svcEnv {
	t.Helper()
	if st == nil {
		var err error
		st, err = diskstore.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
	}
	clock := &svcClock{t: time.Now()}
	svc, err := NewService(Config{Store: st, MaxChunkSize: 16 * mib, TTL: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(svc, connect.WithReadMaxBytes(17*mib)))
	var h http.Handler = mux
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	h2c := newH2CClient()
	env := &svcEnv{store: st, svc: svc, url: srv.URL, now: clock, clients: map[string]ferryv1connect.UploadServiceClient{}}
	for name, opts := range svcProtocols {
		env.clients[name] = ferryv1connect.NewUploadServiceClient(h2c, srv.URL, opts...)
	}
	return env
}

// newH2CClient returns an HTTP client that speaks HTTP/2 without TLS (h2c)
// on a transport of its own.
func newH2CClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

func svcData(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

func svcChunk(index int64, data []byte) *ferryv1.Chunk {
	crc := store.CRC32C(data)
	return &ferryv1.Chunk{Index: index, Data: data, Crc32C: &crc}
}

func ptr[T any](v T) *T { return &v }

// codeOf is connect.CodeOf with 0 for a nil error.
func codeOf(err error) connect.Code {
	if err == nil {
		return 0
	}
	return connect.CodeOf(err)
}

// readAll returns the object's bytes, or nil if it does not exist.
func (e *svcEnv) readAll(t *testing.T, key string) []byte {
	t.Helper()
	r, _, err := e.store.ReadObject(context.Background(), key, 0, -1, store.ReadOptions{})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// streamUpload sends msgs on one Upload stream and returns its result.
func streamUpload(ctx context.Context, c ferryv1connect.UploadServiceClient, msgs ...*ferryv1.UploadRequest) (*ferryv1.UploadResponse, error) {
	s := c.Upload(ctx)
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			break // the server answered early; CloseAndReceive has its error
		}
	}
	res, err := s.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func createMsg(spec *ferryv1.UploadSpec) *ferryv1.UploadRequest {
	return &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{Create: spec}}}}
}
func resumeMsg(id string) *ferryv1.UploadRequest {
	return &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_UploadId{UploadId: id}}}}
}
func chunkMsg(c *ferryv1.Chunk) *ferryv1.UploadRequest {
	return &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Chunk{Chunk: c}}
}
func finishMsg(size *int64, crc *uint32) *ferryv1.UploadRequest {
	return &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{Size: size, Crc32C: crc}}}
}

// chunksOf splits data into svcChunks of size chunk (one empty chunk for empty data).
func chunksOf(data []byte, chunk int) []*ferryv1.Chunk {
	var out []*ferryv1.Chunk
	for i := 0; i == 0 || i*chunk < len(data); i++ {
		out = append(out, svcChunk(int64(i), data[i*chunk:min((i+1)*chunk, len(data))]))
	}
	return out
}

// TestStreamRoundTrip uploads objects of the sizes that matter over each
// protocol, in one stream, and checks the stored bytes and attributes.
func TestStreamRoundTrip(t *testing.T) {
	t.Parallel()
	env := newSvcEnv(t, nil)
	const chunk = 5 * mib
	sizes := []int{0, 1, chunk - 1, chunk, chunk + 1, 2*chunk + 7}
	for proto, client := range env.clients {
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%s/%d", proto, size), func(t *testing.T) {
				t.Parallel()
				data := svcData(uint64(size), size)
				key := fmt.Sprintf("rt/%s/%d", proto, size)
				msgs := []*ferryv1.UploadRequest{createMsg(&ferryv1.UploadSpec{
					Key: key, Size: ptr(int64(size)), ChunkSize: chunk, ContentType: "application/x-test",
					Metadata: map[string]string{"origin": "test"},
				})}
				for _, c := range chunksOf(data, chunk) {
					msgs = append(msgs, chunkMsg(c))
				}
				msgs = append(msgs, finishMsg(nil, ptr(store.CRC32C(data))))
				res, err := streamUpload(context.Background(), client, msgs...)
				if err != nil {
					t.Fatal(err)
				}
				obj := res.GetObject()
				wantChunks := int64(max(1, (size+chunk-1)/chunk))
				if obj.GetKey() != key || obj.GetSize() != int64(size) || obj.GetCrc32C() != store.CRC32C(data) || res.GetChunkCount() != wantChunks {
					t.Fatalf("response %v, want key %q size %d crc %08x chunks %d", res, key, size, store.CRC32C(data), wantChunks)
				}
				if got := env.readAll(t, key); !bytes.Equal(got, data) {
					t.Fatalf("stored %d bytes differ from the %d sent", len(got), len(data))
				}
				info, err := env.store.StatObject(context.Background(), key)
				if err != nil || info.ContentType != "application/x-test" || info.Metadata["origin"] != "test" || !info.HasCRC32C || info.CRC32C != store.CRC32C(data) {
					t.Fatalf("stat = %+v, %v", info, err)
				}
			})
		}
	}
}

// TestUnaryParallelOutOfOrder writes one upload with PutChunk calls in
// reverse order and in parallel, re-sends a committed chunk, and completes.
func TestUnaryParallelOutOfOrder(t *testing.T) {
	t.Parallel()
	env := newSvcEnv(t, nil)
	for proto, client := range env.clients {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			data := svcData(7, 4*5*mib+123)
			key := "unary/" + proto
			cr, err := client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: key, Size: ptr(int64(len(data))), ChunkSize: 5 * mib}}))
			if err != nil {
				t.Fatal(err)
			}
			id := cr.Msg.GetUpload().GetUploadId()
			if cr.Msg.GetUpload().GetChunkCount() != 5 {
				t.Fatalf("chunk count %d, want 5", cr.Msg.GetUpload().GetChunkCount())
			}
			chunks := chunksOf(data, 5*mib)
			var g errgroup.Group
			for i := len(chunks) - 1; i >= 0; i-- {
				g.Go(func() error {
					_, err := client.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: chunks[i]}))
					return err
				})
			}
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			// Idempotent re-send.
			if _, err := client.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: chunks[2]})); err != nil {
				t.Fatal(err)
			}
			st, err := client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id, PageSize: 2}))
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Msg.GetChunks()) != 2 || st.Msg.GetNextPageToken() == "" || st.Msg.GetChunks()[1].GetIndex() != 1 {
				t.Fatalf("first page %v", st.Msg)
			}
			st2, err := client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id, PageToken: st.Msg.GetNextPageToken()}))
			if err != nil {
				t.Fatal(err)
			}
			if len(st2.Msg.GetChunks()) != 3 || st2.Msg.GetChunks()[0].GetIndex() != 2 || st2.Msg.GetNextPageToken() != "" {
				t.Fatalf("second page %v", st2.Msg)
			}
			if env.readAll(t, key) != nil {
				t.Fatal("object visible before completion")
			}
			done, err := client.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: ptr(store.CRC32C(data))}))
			if err != nil {
				t.Fatal(err)
			}
			if done.Msg.GetObject().GetSize() != int64(len(data)) || !bytes.Equal(env.readAll(t, key), data) {
				t.Fatal("stored object differs")
			}
			// Once completed, the upload reports its object and every chunk
			// committed, and completing it again returns the same object.
			st, err = client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id}))
			if err != nil || st.Msg.GetObject().GetEtag() != done.Msg.GetObject().GetEtag() || len(st.Msg.GetChunks()) != 5 || st.Msg.GetCommittedBytes() != int64(len(data)) {
				t.Fatalf("GetUpload after completion: %v, %v; want the object and 5 chunks committed", st, err)
			}
			again, err := client.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: ptr(store.CRC32C(data))}))
			if err != nil || again.Msg.GetObject().GetEtag() != done.Msg.GetObject().GetEtag() || again.Msg.GetChunkCount() != done.Msg.GetChunkCount() {
				t.Fatalf("CompleteUpload again: %v, %v; want %v", again, err, done.Msg)
			}
		})
	}
}

// TestUnknownSizeStream uploads with no size up front (stdin), giving it at finish.
func TestUnknownSizeStream(t *testing.T) {
	t.Parallel()
	env := newSvcEnv(t, nil)
	data := svcData(3, 2*5*mib+10)
	msgs := []*ferryv1.UploadRequest{createMsg(&ferryv1.UploadSpec{Key: "stdin", ChunkSize: 5 * mib})}
	for _, c := range chunksOf(data, 5*mib) {
		msgs = append(msgs, chunkMsg(c))
	}
	msgs = append(msgs, finishMsg(ptr(int64(len(data))), ptr(store.CRC32C(data))))
	res, err := streamUpload(context.Background(), env.clients["grpc"], msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetObject().GetSize() != int64(len(data)) || !bytes.Equal(env.readAll(t, "stdin"), data) {
		t.Fatal("stored object differs")
	}
}

// TestResumeOnAnotherInstance writes chunks of one upload alternately
// through two services that share only the store, and after a "restart"
// (a third, new service), completes it.
func TestResumeOnAnotherInstance(t *testing.T) {
	t.Parallel()
	a := newSvcEnv(t, nil)
	b := newSvcEnv(t, a.store)
	ctx := context.Background()
	data := svcData(11, 3*5*mib)
	chunks := chunksOf(data, 5*mib)
	res, err := streamUpload(ctx, a.clients["connect"], createMsg(&ferryv1.UploadSpec{Key: "multi", Size: ptr(int64(len(data))), ChunkSize: 5 * mib}), chunkMsg(chunks[0]))
	if err != nil {
		t.Fatal(err)
	}
	id := res.GetUploadId()
	if _, err := streamUpload(ctx, b.clients["grpc"], resumeMsg(id), chunkMsg(chunks[1])); err != nil {
		t.Fatal(err)
	}
	if _, err := a.clients["grpcweb"].PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: chunks[2]})); err != nil {
		t.Fatal(err)
	}
	c := newSvcEnv(t, a.store) // a restarted server: nothing in memory
	done, err := streamUpload(ctx, c.clients["grpc"], resumeMsg(id), finishMsg(nil, ptr(store.CRC32C(data))))
	if err != nil {
		t.Fatal(err)
	}
	if done.GetChunkCount() != 3 || !bytes.Equal(a.readAll(t, "multi"), data) {
		t.Fatal("stored object differs")
	}
}

// TestConcurrentConditionalComplete races uploads to one key with
// if_none_match: exactly one wins, the others get AlreadyExists.
func TestConcurrentConditionalComplete(t *testing.T) {
	t.Parallel()
	env := newSvcEnv(t, nil)
	ctx := context.Background()
	const n = 4
	var wins, exists int
	var mu sync.Mutex
	var g errgroup.Group
	for i := range n {
		g.Go(func() error {
			data := svcData(uint64(100+i), 1000)
			_, err := streamUpload(ctx, env.clients["grpc"], createMsg(&ferryv1.UploadSpec{Key: "race", Size: ptr(int64(len(data))), IfNoneMatch: true}),
				chunkMsg(svcChunk(0, data)), finishMsg(nil, nil))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
				return nil
			case connect.CodeOf(err) == connect.CodeAlreadyExists:
				exists++
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if wins != 1 || exists != n-1 {
		t.Fatalf("%d won and %d got AlreadyExists; want 1 and %d", wins, exists, n-1)
	}
}

// TestSameChunkTwoWriters sends different bytes for one chunk from two
// writers at once: the stored chunk is one of them, whole.
func TestSameChunkTwoWriters(t *testing.T) {
	t.Parallel()
	env := newSvcEnv(t, nil)
	ctx := context.Background()
	a, b := svcData(1, 5*mib), svcData(2, 5*mib)
	cr, err := env.clients["connect"].CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "two-writers", Size: ptr(int64(5 * mib))}}))
	if err != nil {
		t.Fatal(err)
	}
	id := cr.Msg.GetUpload().GetUploadId()
	var g errgroup.Group
	for _, d := range [][]byte{a, b, a, b} {
		g.Go(func() error {
			_, err := env.clients["grpc"].PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: svcChunk(0, d)}))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := env.clients["grpc"].CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id})); err != nil {
		t.Fatal(err)
	}
	if got := env.readAll(t, "two-writers"); !bytes.Equal(got, a) && !bytes.Equal(got, b) {
		t.Fatal("stored chunk is neither writer's bytes")
	}
}

// TestSweep expires idle uploads and keeps active ones.
func TestSweep(t *testing.T) {
	t.Parallel()
	env := newSvcEnv(t, nil)
	ctx := context.Background()
	client := env.clients["connect"]
	create := func(key string) string {
		cr, err := client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: key, Size: ptr(int64(2 * 5 * mib)), ChunkSize: 5 * mib}}))
		if err != nil {
			t.Fatal(err)
		}
		return cr.Msg.GetUpload().GetUploadId()
	}
	idle := create("idle")
	if _, err := client.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: idle, Chunk: svcChunk(0, svcData(1, 5*mib))})); err != nil {
		t.Fatal(err)
	}
	if n, err := env.svc.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("early sweep removed %d, %v; want 0", n, err)
	}
	env.now.Add(2 * time.Hour) // the idle upload's last activity is now 2 h old (TTL 1 h)
	active := create("active") // created "now"
	n, err := env.svc.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("sweep removed %d, %v; want 1", n, err)
	}
	for id, wantCode := range map[string]connect.Code{idle: connect.CodeNotFound, active: 0} {
		_, err := client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id}))
		if codeOf(err) != wantCode {
			t.Errorf("GetUpload(%s) = %v, want code %v", id, err, wantCode)
		}
	}
	// Two sweepers at once on an expired upload: both succeed, one removes it.
	env.now.Add(2 * time.Hour)
	var g errgroup.Group
	var total int
	var mu sync.Mutex
	for range 2 {
		g.Go(func() error {
			n, err := env.svc.Sweep(ctx)
			mu.Lock()
			total += n
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if total < 1 {
		t.Fatalf("concurrent sweeps removed %d uploads, want the active one", total)
	}
	_, err = client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: active}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("expired upload: %v, want NotFound", err)
	}
}

// TestBadInput sends each kind of bad input and checks the code, the
// message, and that nothing committed changed: a committed chunk survives
// and the object stays invisible.
func TestBadInput(t *testing.T) {
	t.Parallel()
	env := newSvcEnv(t, nil)
	ctx := context.Background()
	client := env.clients["grpc"]
	const size = 2*5*mib + 100
	data := svcData(5, size)
	chunks := chunksOf(data, 5*mib)
	cr, err := client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "victim", Size: ptr(int64(size)), ChunkSize: 5 * mib}}))
	if err != nil {
		t.Fatal(err)
	}
	id := cr.Msg.GetUpload().GetUploadId()
	if _, err := client.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: chunks[0]})); err != nil {
		t.Fatal(err)
	}
	badCRC := ptr(store.CRC32C(chunks[0].Data) + 1)
	spec := func(mod func(*ferryv1.UploadSpec)) *ferryv1.CreateUploadRequest {
		s := &ferryv1.UploadSpec{Key: "new", Size: ptr(int64(100))}
		mod(s)
		return &ferryv1.CreateUploadRequest{Spec: s}
	}
	createErr := func(mod func(*ferryv1.UploadSpec)) func() error {
		return func() error { _, err := client.CreateUpload(ctx, connect.NewRequest(spec(mod))); return err }
	}
	put := func(uploadID string, c *ferryv1.Chunk) func() error {
		return func() error {
			_, err := client.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: uploadID, Chunk: c}))
			return err
		}
	}
	for _, tc := range []struct {
		name string
		call func() error
		code connect.Code
		msg  string
	}{
		{"empty key", createErr(func(s *ferryv1.UploadSpec) { s.Key = "" }), connect.CodeInvalidArgument, "key is empty"},
		{"key over 1024 bytes", createErr(func(s *ferryv1.UploadSpec) { s.Key = strings.Repeat("k", 1025) }), connect.CodeInvalidArgument, "limit is 1024"},
		{"control character in key", createErr(func(s *ferryv1.UploadSpec) { s.Key = "a\nb" }), connect.CodeInvalidArgument, "control character"},
		{"dot-dot segment", createErr(func(s *ferryv1.UploadSpec) { s.Key = "a/../b" }), connect.CodeInvalidArgument, `".." path segments`},
		{"reserved prefix", createErr(func(s *ferryv1.UploadSpec) { s.Key = ".ferry/uploads/" + id }), connect.CodeInvalidArgument, "reserved"},
		{"negative size", createErr(func(s *ferryv1.UploadSpec) { s.Size = ptr(int64(-1)) }), connect.CodeInvalidArgument, "size must not be negative"},
		{"chunk size under 5 MiB", createErr(func(s *ferryv1.UploadSpec) { s.Size = ptr(int64(20 * mib)); s.ChunkSize = mib }), connect.CodeInvalidArgument, "at least 5 MiB"},
		{"chunk size over the maximum", createErr(func(s *ferryv1.UploadSpec) { s.ChunkSize = 1 << 30 }), connect.CodeInvalidArgument, "over this server's maximum"},
		{"negative chunk size", createErr(func(s *ferryv1.UploadSpec) { s.ChunkSize = -5 }), connect.CodeInvalidArgument, "chunk_size must not be negative"},
		{"object over 10,000 chunks", createErr(func(s *ferryv1.UploadSpec) { s.Size = ptr(int64(1 << 50)) }), connect.CodeInvalidArgument, "too large"},
		{"overflowing size", createErr(func(s *ferryv1.UploadSpec) { s.Size = ptr(int64(1<<63 - 1)) }), connect.CodeInvalidArgument, "too large"},
		{"content type with a control character", createErr(func(s *ferryv1.UploadSpec) { s.ContentType = "text/plain\r\nx: y" }), connect.CodeInvalidArgument, "content_type must be printable ASCII"},
		{"bad metadata key", createErr(func(s *ferryv1.UploadSpec) { s.Metadata = map[string]string{"Bad Key": "v"} }), connect.CodeInvalidArgument, "metadata key"},
		{"metadata too large", createErr(func(s *ferryv1.UploadSpec) { s.Metadata = map[string]string{"k": strings.Repeat("v", 3000)} }), connect.CodeInvalidArgument, "metadata is"},
		{"unknown upload ID", put("6f1c1a4e-0d5b-4a53-9d2c-5a1f7e0b9c3d", chunks[1]), connect.CodeNotFound, "not found"},
		{"malformed upload ID", put("../../etc", chunks[1]), connect.CodeInvalidArgument, "not an upload ID"},
		{"index out of range", put(id, svcChunk(3, chunks[1].Data)), connect.CodeInvalidArgument, "out of range"},
		{"negative index", put(id, svcChunk(-1, chunks[1].Data)), connect.CodeInvalidArgument, "negative"},
		{"overflowing index", put(id, svcChunk(1<<62, chunks[1].Data)), connect.CodeInvalidArgument, "out of range"},
		{"chunk of the wrong size", put(id, svcChunk(1, chunks[1].Data[:100])), connect.CodeInvalidArgument, "must be 5242880 bytes"},
		{"last chunk of the wrong size", put(id, svcChunk(2, chunks[1].Data)), connect.CodeInvalidArgument, "must be 100 bytes"},
		{"wrong checksum over a committed chunk", put(id, &ferryv1.Chunk{Index: 0, Data: chunks[1].Data, Crc32C: badCRC}), connect.CodeInvalidArgument, "does not match"},
		{"missing checksum", put(id, &ferryv1.Chunk{Index: 1, Data: chunks[1].Data}), connect.CodeInvalidArgument, "no crc32c"},
		{"chunk over the limit", put(id, svcChunk(1, make([]byte, 17*mib+1))), connect.CodeResourceExhausted, ""},
		{"missing chunks at completion", func() error {
			_, err := client.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id}))
			return err
		}, connect.CodeFailedPrecondition, "2 of 3 chunks are missing: 1-2"},
		{"completion with another size", func() error {
			_, err := client.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Size: ptr(int64(5))}))
			return err
		}, connect.CodeInvalidArgument, "differs"},
		{"data before header", func() error {
			_, err := streamUpload(ctx, client, chunkMsg(chunks[1]))
			return err
		}, connect.CodeInvalidArgument, "first message must be a header"},
		{"two headers", func() error {
			_, err := streamUpload(ctx, client, resumeMsg(id), resumeMsg(id))
			return err
		}, connect.CodeInvalidArgument, "one header"},
		{"message after finish", func() error {
			_, err := streamUpload(ctx, client, resumeMsg(id), finishMsg(nil, nil), chunkMsg(chunks[1]))
			return err
		}, connect.CodeInvalidArgument, "follow the finish"},
		{"empty stream", func() error { _, err := streamUpload(ctx, client); return err }, connect.CodeInvalidArgument, "empty stream"},
		{"page size too large", func() error {
			_, err := client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id, PageSize: 10001}))
			return err
		}, connect.CodeInvalidArgument, "page_size"},
		{"forged page token", func() error {
			_, err := client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id, PageToken: "-7"}))
			return err
		}, connect.CodeInvalidArgument, "page_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
			// Nothing changed: chunk 0 is still committed with its CRC, and
			// nothing is visible under the key.
			st, err := client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id}))
			if err != nil {
				t.Fatal(err)
			}
			if c := st.Msg.GetChunks(); len(c) != 1 || c[0].GetIndex() != 0 || c[0].GetCrc32C() != chunks[0].GetCrc32C() {
				t.Fatalf("committed chunks changed: %v", c)
			}
			if env.readAll(t, "victim") != nil || env.readAll(t, "new") != nil {
				t.Fatal("an object became visible")
			}
		})
	}
	// The upload still completes with the right bytes after all of that.
	for _, c := range chunks[1:] {
		if err := put(id, c)(); err != nil {
			t.Fatal(err)
		}
	}
	_, err = client.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: ptr(store.CRC32C(data) ^ 1)}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "whole-object crc32c mismatch") {
		t.Fatalf("wrong whole-object checksum: %v", err)
	}
	if _, err := client.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: ptr(store.CRC32C(data))})); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env.readAll(t, "victim"), data) {
		t.Fatal("stored object differs")
	}
	// if_none_match on an existing key.
	_, err = streamUpload(ctx, client, createMsg(&ferryv1.UploadSpec{Key: "victim", Size: ptr(int64(1)), IfNoneMatch: true}), chunkMsg(svcChunk(0, []byte{1})), finishMsg(nil, nil))
	if connect.CodeOf(err) != connect.CodeAlreadyExists || !bytes.Equal(env.readAll(t, "victim"), data) {
		t.Fatalf("if_none_match over an existing key: %v", err)
	}
	// An expired upload is NotFound.
	cr, err = client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "expiring", Size: ptr(int64(1))}}))
	if err != nil {
		t.Fatal(err)
	}
	env.now.Add(3 * time.Hour)
	if _, err := env.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	err = put(cr.Msg.GetUpload().GetUploadId(), svcChunk(0, []byte{1}))()
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("expired upload: %v, want NotFound", err)
	}
}

// TestNonUTF8Key sends a CreateUpload whose key is not UTF-8. Stock clients
// refuse to encode one, so the request is written byte by byte; the server
// must refuse to decode it.
func TestNonUTF8Key(t *testing.T) {
	t.Parallel()
	env := newSvcEnv(t, nil)
	var spec, req []byte
	spec = protowire.AppendTag(spec, 1, protowire.BytesType) // UploadSpec.key
	spec = protowire.AppendString(spec, "bad\xffkey")
	req = protowire.AppendTag(req, 1, protowire.BytesType) // CreateUploadRequest.spec
	req = protowire.AppendBytes(req, spec)
	res, err := http.Post(env.url+ferryv1connect.UploadServiceCreateUploadProcedure, "application/proto", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	// The Connect protocol answers invalid_argument as HTTP 400 with a JSON error.
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"code":"invalid_argument"`) {
		t.Fatalf("status %d, body %s; want 400 invalid_argument", res.StatusCode, body)
	}
	if page, err := env.store.ListObjects(context.Background(), "", "", 10); err != nil || len(page.Objects) != 0 {
		t.Fatalf("store changed: %v, %v", page.Objects, err)
	}
}
