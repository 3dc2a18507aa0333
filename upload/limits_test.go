package upload

import (
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
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
	t.Cleanup(func() {
		select {
		case <-gs.gate:
		default:
			close(gs.gate)
		}
	})
	clients, _, _ := serveLimited(t, gs, l)
	return gs, clients
}

// serveLimited serves an upload service on st behind a Limiter with limits
// l, over HTTP/1.1 and h2c, and returns a client per protocol.
func serveLimited(t *testing.T, st store.Store, l Limits) (map[string]ferryv1connect.UploadServiceClient, *Limiter, string) {
	t.Helper()
	svc, err := NewService(Config{Store: st, ChunkSize: 5 * mib, MaxChunkSize: 5 * mib})
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
	h2c := newH2CClient()
	clients := map[string]ferryv1connect.UploadServiceClient{}
	for name, opts := range svcProtocols {
		clients[name] = ferryv1connect.NewUploadServiceClient(h2c, srv.URL, opts...)
	}
	return clients, lim, srv.URL
}

// heldPutStore is a real disk store whose PutObject of key "held" waits
// for the test to open the gate.
type heldPutStore struct {
	store.Store
	entered chan struct{}
	gate    chan struct{}
}

func (h *heldPutStore) PutObject(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) (store.ObjectInfo, error) {
	if key == "held" {
		h.entered <- struct{}{}
		select {
		case <-h.gate:
		case <-ctx.Done():
			return store.ObjectInfo{}, ctx.Err()
		}
	}
	return h.Store.PutObject(ctx, key, r, size, opts)
}

// TestLimitOneShotKeepsChunk: a one-request upload (header, its only
// chunk, finish) holds its chunk until PutObject returns, after it has read
// the messages that follow the chunk; the chunk's bytes stay counted
// against --max-inflight-bytes all that time, so a second chunk over the
// budget is refused over every protocol, then goes through once the first
// upload is stored.
func TestLimitOneShotKeepsChunk(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hs := &heldPutStore{Store: disk, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	gateOpen := false
	defer func() {
		if !gateOpen {
			close(hs.gate)
		}
	}()
	clients, _, _ := serveLimited(t, hs, Limits{MaxInflightBytes: 6 * mib, Wait: 200 * time.Millisecond})
	ctx := t.Context()
	c := clients["grpc"]
	oneShot := func(c ferryv1connect.UploadServiceClient, key string, data []byte) error {
		crc := store.CRC32C(data)
		_, err := streamUpload(ctx, c,
			createMsg(&ferryv1.UploadSpec{Key: key, Size: ptr(int64(len(data)))}),
			chunkMsg(svcChunk(0, data)),
			finishMsg(ptr(int64(len(data))), &crc))
		return err
	}
	first := make(chan error, 1)
	go func() { first <- oneShot(c, "held", svcData(3, 5*mib)) }()
	<-hs.entered // the 5 MiB chunk is held by its handler, in PutObject

	other := svcData(4, 5*mib)
	for proto, c := range clients {
		if err := oneShot(c, "other", other); codeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-inflight-bytes") {
			t.Errorf("%s: a one-request upload over the budget = %v, want resource_exhausted naming --max-inflight-bytes", proto, err)
		}
	}
	gateOpen = true
	close(hs.gate)
	if err := <-first; err != nil {
		t.Fatalf("the held upload: %v", err)
	}
	if err := oneShot(c, "other", other); err != nil {
		t.Fatalf("a one-request upload once the budget is free: %v", err)
	}
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

// TestLimitUnaryPutChunkKeepsChunk: a PutChunk over gRPC or gRPC-Web is
// one enveloped message, which connect-go reads up to the end of the body
// before its handler stores it; the chunk's bytes stay counted against
// --max-inflight-bytes until the handler returns, so while a PutChunk of
// any protocol holds its 5 MiB chunk, another chunk over the 6 MiB budget
// is refused.
func TestLimitUnaryPutChunkKeepsChunk(t *testing.T) {
	t.Parallel()
	gs, clients := newLimitedEnv(t, Limits{MaxInflightBytes: 6 * mib, Wait: 200 * time.Millisecond})
	ctx := t.Context()
	data := svcData(5, 15*mib)
	created, err := clients["grpc"].CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "unary", Size: ptr(int64(len(data)))}}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetUpload().GetUploadId()
	for i, holder := range []string{"grpc", "grpcweb", "connect"} {
		chunk := svcChunk(int64(i), data[i*5*mib:(i+1)*5*mib])
		held := make(chan error, 1)
		go func() {
			_, err := clients[holder].PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: chunk}))
			held <- err
		}()
		<-gs.entered // the chunk is held by its handler, in UploadPart
		// Bounded, so that a chunk wrongly let through (then held at the
		// gate) fails the test instead of hanging it.
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := clients["grpc"].PutChunk(tctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: chunk}))
		cancel()
		if codeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-inflight-bytes") {
			t.Errorf("while a %s PutChunk holds its chunk: another PutChunk = %v, want resource_exhausted naming --max-inflight-bytes", holder, err)
		}
		gs.gate <- struct{}{}
		if err := <-held; err != nil {
			t.Fatalf("%s PutChunk: %v", holder, err)
		}
	}
	if _, err := clients["grpc"].CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id})); err != nil {
		t.Fatalf("CompleteUpload: %v", err)
	}
}

// TestLimitOneShotFinishDoesNotWait: a one-request upload keeps its chunk
// counted while it reads its finish; the finish must not wait for room
// behind a request queued for the bytes the upload holds, or both would
// stall until --limit-wait refuses them. Here a second upload queues for
// the budget while the first holds its chunk; the first then sends its
// finish, and both complete.
func TestLimitOneShotFinishDoesNotWait(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clients, lim, url := serveLimited(t, disk, Limits{MaxInflightBytes: 6 * mib, Wait: 5 * time.Second})
	ctx := t.Context()
	c := clients["grpc"]
	dataA, dataB := svcData(6, 5*mib), svcData(7, 5*mib)
	crcA, crcB := store.CRC32C(dataA), store.CRC32C(dataB)

	a := c.Upload(ctx)
	for _, m := range []*ferryv1.UploadRequest{
		createMsg(&ferryv1.UploadSpec{Key: "a", Size: ptr(int64(len(dataA)))}),
		chunkMsg(svcChunk(0, dataA)),
	} {
		if err := a.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	// Until the server has taken the budget of a's chunk.
	for lim.bytes.TryAcquire(2 * mib) {
		lim.bytes.Release(2 * mib)
		time.Sleep(time.Millisecond)
	}
	// b on a connection of its own: on a's, b's chunk, unread while it
	// waits for room, would fill the connection's HTTP/2 window and hold
	// back a's finish (ferry serve sizes its windows against that).
	h2c := newH2CClient()
	cb := ferryv1connect.NewUploadServiceClient(h2c, url, svcProtocols["grpc"]...)
	b := make(chan error, 1)
	go func() {
		_, err := streamUpload(ctx, cb,
			createMsg(&ferryv1.UploadSpec{Key: "b", Size: ptr(int64(len(dataB)))}),
			chunkMsg(svcChunk(0, dataB)),
			finishMsg(ptr(int64(len(dataB))), &crcB))
		b <- err
	}()
	// Until b waits for room (TryAcquire fails while anyone waits).
	for lim.bytes.TryAcquire(1) {
		lim.bytes.Release(1)
		time.Sleep(time.Millisecond)
	}
	if err := a.Send(finishMsg(ptr(int64(len(dataA))), &crcA)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CloseAndReceive(); err != nil {
		t.Errorf("upload a, its finish read while b waits for room: %v", err)
	}
	if err := <-b; err != nil {
		t.Errorf("upload b, queued while a held its chunk: %v", err)
	}
}

// TestLimitOversizedMessage: a message whose prefix declares more than the
// handlers' read limit (MaxMessageBytes) is refused with RESOURCE_EXHAUSTED
// from its prefix, without taking the budget: it cannot hold the budget
// while its client sends (or trickles) the bytes connect-go would discard,
// so an upload alongside it goes through.
func TestLimitOversizedMessage(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clients, lim, url := serveLimited(t, disk, Limits{MaxInflightBytes: 20 * mib, MaxMessageBytes: 6 * mib, Wait: 200 * time.Millisecond})
	ctx := t.Context()

	// A gRPC Upload whose first message claims 16 MiB, then nothing more.
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+ferryv1connect.UploadServiceUploadProcedure, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	h2c := newH2CClient()
	status := make(chan string, 1)
	go func() {
		res, err := h2c.Do(req)
		if err != nil {
			status <- err.Error()
			return
		}
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
		status <- res.Header.Get("Grpc-Status") + res.Trailer.Get("Grpc-Status")
	}()
	var prefix [5]byte
	binary.BigEndian.PutUint32(prefix[1:], 16*mib)
	if _, err := pw.Write(prefix[:]); err != nil {
		t.Fatal(err)
	}
	// Until the server has answered it, or taken the budget for it.
	var got string
	for got == "" {
		select {
		case got = <-status:
		default:
			if !lim.bytes.TryAcquire(10 * mib) {
				got = "(no answer: the budget was taken)"
				break
			}
			lim.bytes.Release(10 * mib)
			time.Sleep(time.Millisecond)
		}
	}
	if want := strconv.Itoa(int(connect.CodeResourceExhausted)); got != want {
		t.Errorf("an Upload message declaring 16 MiB over a 6 MiB read limit: grpc-status %s, want %s", got, want)
	}

	data := svcData(8, 5*mib)
	crc := store.CRC32C(data)
	if _, err := streamUpload(ctx, clients["grpc"],
		createMsg(&ferryv1.UploadSpec{Key: "alongside", Size: ptr(int64(len(data)))}),
		chunkMsg(svcChunk(0, data)),
		finishMsg(ptr(int64(len(data))), &crc)); err != nil {
		t.Errorf("an upload alongside the oversized message: %v", err)
	}
}

// TestIsEnveloped: the request bodies framed as enveloped messages are
// recognized whatever the case of their media type (connect-go accepts
// any), so each message is weighed on its own rather than the whole
// request taking the largest message's weight for its lifetime.
func TestIsEnveloped(t *testing.T) {
	t.Parallel()
	for ct, want := range map[string]bool{
		"application/grpc":              true,
		"application/grpc+proto":        true,
		"Application/GRPC":              true,
		"application/gRPC-Web+proto":    true,
		" application/connect+proto":    true,
		"application/Connect+json":      true,
		"application/proto":             false,
		"application/json":              false,
		"text/plain; charset=utf-8":     false,
		"application/grpc-web-text":     true, // refused by connect-go before it is read
		"application/connect+proto;x=y": true,
	} {
		if got := isEnveloped(ct); got != want {
			t.Errorf("isEnveloped(%q) = %v, want %v", ct, got, want)
		}
	}
}
