package upload

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
)

// gatedStore is a real disk store whose UploadPart waits for the test to
// open the gate, so that a chunk stays held by its handler.
type gatedStore struct {
	store.Store
	entered chan struct{} // receives once per UploadPart that started
	gate    chan struct{} // closed to let UploadParts finish
}

func (g *gatedStore) UploadPart(ctx context.Context, key, id string, n int, r io.Reader, size int64, crc uint32) (store.Part, error) {
	g.entered <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return store.Part{}, ctx.Err()
	}
	return g.Store.UploadPart(ctx, key, id, n, r, size, crc)
}

// newLimitedEnv serves an upload service on a gated disk store behind a
// Limiter with limits l, over HTTP/1.1 and h2c, and returns a client per
// protocol.
func newLimitedEnv(t *testing.T, l Limits) (*gatedStore, map[string]ferryv1connect.UploadServiceClient) {
	t.Helper()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gs := &gatedStore{Store: disk, entered: make(chan struct{}, 16), gate: make(chan struct{})}
	svc, err := NewService(Config{Store: gs, ChunkSize: 5 * mib, MaxChunkSize: 5 * mib})
	if err != nil {
		t.Fatal(err)
	}
	lim, err := NewLimiter(l)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(svc, connect.WithReadMaxBytes(6*mib)))
	srv := httptest.NewUnstartedServer(lim.Wrap(mux))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-gs.gate:
		default:
			close(gs.gate)
		}
	})
	h2c := &http.Client{Transport: &http.Transport{Protocols: new(http.Protocols)}}
	h2c.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
	clients := map[string]ferryv1connect.UploadServiceClient{}
	for name, opts := range svcProtocols {
		clients[name] = ferryv1connect.NewUploadServiceClient(h2c, srv.URL, opts...)
	}
	return gs, clients
}

// TestLimitInflightBytes: while one chunk of 5 MiB is held by its handler,
// a second chunk that would take the server past its 6 MiB budget is not
// read: it waits, then fails with RESOURCE_EXHAUSTED naming the flag, over
// every protocol, streamed (Upload) and unary (PutChunk). Once the first
// chunk is done, the same chunk goes through.
func TestLimitInflightBytes(t *testing.T) {
	t.Parallel()
	gs, clients := newLimitedEnv(t, Limits{MaxInflightBytes: 6 * mib, Wait: 200 * time.Millisecond})
	ctx := t.Context()
	data := svcData(1, 10*mib)
	c := clients["grpc"]
	created, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "big", Size: ptr(int64(len(data)))}}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetUpload().GetUploadId()
	first := make(chan error, 1)
	go func() {
		_, err := streamUpload(ctx, c, resumeMsg(id), chunkMsg(svcChunk(0, data[:5*mib])))
		first <- err
	}()
	<-gs.entered // chunk 0 is held by its handler

	second := svcChunk(1, data[5*mib:])
	for proto, c := range clients {
		_, err := streamUpload(ctx, c, resumeMsg(id), chunkMsg(second))
		if codeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-inflight-bytes") {
			t.Errorf("%s: Upload of a chunk over the budget = %v, want resource_exhausted naming --max-inflight-bytes", proto, err)
		}
		_, err = c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: second}))
		if codeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-inflight-bytes") {
			t.Errorf("%s: PutChunk of a chunk over the budget = %v, want resource_exhausted naming --max-inflight-bytes", proto, err)
		}
	}
	close(gs.gate)
	if err := <-first; err != nil {
		t.Fatalf("the held chunk: %v", err)
	}
	if _, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: second})); err != nil {
		t.Fatalf("PutChunk once the budget is free: %v", err)
	}
	<-gs.entered
	if _, err := c.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id})); err != nil {
		t.Fatalf("CompleteUpload: %v", err)
	}
}

// TestLimitStreams: with room for one transfer request, a second one waits
// and then fails with RESOURCE_EXHAUSTED naming --max-streams, while
// requests that are not transfers (GetUpload) are not limited.
func TestLimitStreams(t *testing.T) {
	t.Parallel()
	gs, clients := newLimitedEnv(t, Limits{MaxStreams: 1, Wait: 200 * time.Millisecond})
	ctx := t.Context()
	c := clients["grpc"]
	data := svcData(2, 10*mib)
	created, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "k", Size: ptr(int64(len(data)))}}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetUpload().GetUploadId()
	first := make(chan error, 1)
	go func() {
		_, err := streamUpload(ctx, c, resumeMsg(id), chunkMsg(svcChunk(0, data[:5*mib])))
		first <- err
	}()
	<-gs.entered
	for proto, c := range clients {
		_, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: svcChunk(1, data[5*mib:])}))
		if codeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-streams") {
			t.Errorf("%s: a second transfer request = %v, want resource_exhausted naming --max-streams", proto, err)
		}
		if _, err := c.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id})); err != nil {
			t.Errorf("%s: GetUpload while the transfer limit is reached: %v", proto, err)
		}
	}
	close(gs.gate)
	if err := <-first; err != nil {
		t.Fatalf("the first stream: %v", err)
	}
}

// TestNewLimiterRejectsNegative: negative limits are configuration errors.
func TestNewLimiterRejectsNegative(t *testing.T) {
	t.Parallel()
	for _, l := range []Limits{{MaxInflightBytes: -1}, {MaxStreams: -1}, {Wait: -time.Second}} {
		if _, err := NewLimiter(l); err == nil {
			t.Errorf("NewLimiter(%+v) succeeded", l)
		}
	}
}
