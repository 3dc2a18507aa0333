package upload

import (
	"bytes"
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
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/proto/wire"
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
	if l.Route == nil {
		l.Route = testRoutes
	}
	lim, err := NewLimiter(l, testDataLimit)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(svc, connect.WithReadMaxBytes(testDataLimit)))
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

// testDataLimit is the read limit of the upload procedures in these tests:
// MaxMessageBytes of their 5 MiB chunks.
const testDataLimit = 6 * mib

// testRoutes are the routes of ferry's procedures, as ferry serve has them.
func testRoutes(path string) (Route, bool) {
	p, ok := wire.Lookup(path)
	if !ok {
		return Route{}, false
	}
	return ProcedureRoute(p, testDataLimit), true
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

// TestNewLimiterRejectsNegative: negative limits, shares over the total and
// a budget the largest message does not fit in are configuration errors.
func TestNewLimiterRejectsNegative(t *testing.T) {
	t.Parallel()
	for _, l := range []Limits{
		{MaxInflightBytes: -1}, {MaxStreams: -1}, {Wait: -time.Second},
		{MaxInflightBytesPerTenant: -1}, {MaxStreamsPerTenant: -1},
		{MaxInflightBytes: 8 * mib, MaxInflightBytesPerTenant: 9 * mib}, // a share over the total
		{MaxStreams: 4, MaxStreamsPerTenant: 5},
		{MaxInflightBytes: 5 * mib}, // the largest message does not fit
		{MaxInflightBytes: 20 * mib, MaxInflightBytesPerTenant: 5 * mib},
	} {
		if _, err := NewLimiter(l, 6*mib); err == nil {
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

// TestLimitKeptChunk: a one-request upload keeps its chunk counted while it
// reads its finish. A second upload that starts meanwhile waits for room
// for its whole chunk, holding nothing, so the first one's finish is read
// and it completes; then the second one goes through. (When requests hold
// parts of messages and all wait, TestBudgetBreaksDeadlock shows the wait
// is broken at once.)
func TestLimitKeptChunk(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clients, lim, url := serveLimited(t, disk, Limits{MaxInflightBytes: 6 * mib, Wait: time.Hour})
	ctx := t.Context()
	cl := clients["grpc"]
	dataA, dataB := svcData(6, 5*mib), svcData(7, 5*mib)
	crcA, crcB := store.CRC32C(dataA), store.CRC32C(dataB)

	a := cl.Upload(ctx)
	for _, m := range []*ferryv1.UploadRequest{
		createMsg(&ferryv1.UploadSpec{Key: "a", Size: ptr(int64(len(dataA)))}),
		chunkMsg(svcChunk(0, dataA)),
	} {
		if err := a.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, lim.budget, "a's chunk to be read", func(s budgetState) bool { return s.used >= 5*mib })
	// b on a connection of its own: on a's, b's chunk, unread while it
	// waits for room, would fill the connection's HTTP/2 window and hold
	// back a's finish (ferry serve sizes its windows against that).
	cb := ferryv1connect.NewUploadServiceClient(newH2CClient(), url, svcProtocols["grpc"]...)
	b := make(chan error, 1)
	go func() {
		_, err := streamUpload(ctx, cb,
			createMsg(&ferryv1.UploadSpec{Key: "b", Size: ptr(int64(len(dataB)))}),
			chunkMsg(svcChunk(0, dataB)),
			finishMsg(ptr(int64(len(dataB))), &crcB))
		b <- err
	}()
	waitState(t, lim.budget, "b to wait, holding nothing", func(s budgetState) bool { return s.waiters == 1 && s.blocked == 0 })
	if err := a.Send(finishMsg(ptr(int64(len(dataA))), &crcA)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CloseAndReceive(); err != nil {
		t.Errorf("upload a, its finish read while b waits: %v", err)
	}
	if err := <-b; err != nil {
		t.Errorf("upload b, queued while a held its chunk: %v", err)
	}
}

// TestLimitOversizedMessage: a message whose prefix declares more than its
// procedure accepts is refused with RESOURCE_EXHAUSTED from its prefix,
// before any of it is read: the first message of an Upload stream (its
// header) over 64 KiB, a chunk message over the upload read limit, a
// control message over 64 KiB.
func TestLimitOversizedMessage(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	header, err := proto.Marshal(createMsg(&ferryv1.UploadSpec{Key: "big", Size: ptr(int64(10 * mib))}))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, procedure string
		before          [][]byte // messages sent whole first
		declared        uint32   // the size the next prefix declares; its bytes never come
		want            string
	}{
		{"header", ferryv1connect.UploadServiceUploadProcedure, nil, 64<<10 + 1, "first message of the stream"},
		{"chunk", ferryv1connect.UploadServiceUploadProcedure, [][]byte{header}, 16 * mib, "larger than the 6291456 bytes"},
		{"putchunk", ferryv1connect.UploadServicePutChunkProcedure, nil, 6*mib + 1, "larger than the 6291456 bytes"},
		{"control", ferryv1connect.UploadServiceGetUploadProcedure, nil, 64<<10 + 1, "larger than the 65536 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, lim, url := serveLimited(t, disk, Limits{MaxInflightBytes: 20 * mib, Wait: time.Hour})
			var body []byte
			for _, m := range c.before {
				body = append(binary.BigEndian.AppendUint32(append(body, 0), uint32(len(m))), m...)
			}
			body = binary.BigEndian.AppendUint32(append(body, 0), c.declared)
			// The body does not end before the answer: only the prefixes
			// can have been read.
			status, msg := rawGRPC(t, url, c.procedure, nil, body, true)
			if status != strconv.Itoa(int(connect.CodeResourceExhausted)) || !strings.Contains(msg, c.want) {
				t.Errorf("grpc-status %s %q, want %d and a message with %q", status, msg, connect.CodeResourceExhausted, c.want)
			}
			if st, _ := lim.budget.state(); st.peak > int64(len(body)) {
				t.Errorf("the budget held %d bytes for a request that sent %d", st.peak, len(body))
			}
		})
	}
}

// rawGRPC sends body as a gRPC request to procedure over h2c, with extra
// headers, and returns the grpc-status and grpc-message of the answer.
// With hold, the request body stays open until the answer has been read,
// as from a client that stops sending without ending its request.
func rawGRPC(t *testing.T, url, procedure string, header http.Header, body []byte, hold bool) (status, msg string) {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	end := func() {}
	if hold {
		pr, pw := io.Pipe()
		end = func() { pw.Close() }
		r = io.MultiReader(r, pr)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+procedure, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	res, err := newH2CClient().Do(req)
	if err != nil {
		end()
		t.Fatalf("%s: %v", procedure, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	end() // before Close, which waits for the request body's writer
	res.Body.Close()
	status = res.Header.Get("Grpc-Status") + res.Trailer.Get("Grpc-Status")
	msg = res.Header.Get("Grpc-Message") + res.Trailer.Get("Grpc-Message")
	return status, msg
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

// tenantClients returns a client per tenant name of the gRPC protocol,
// each sending its name in the X-Tenant header that tenantOf reads.
func tenantClients(url string, names ...string) map[string]ferryv1connect.UploadServiceClient {
	out := make(map[string]ferryv1connect.UploadServiceClient)
	for _, name := range names {
		tag := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("X-Tenant", name)
				return next(ctx, req)
			}
		})
		out[name] = ferryv1connect.NewUploadServiceClient(newH2CClient(), url, connect.WithGRPC(), connect.WithInterceptors(tag))
	}
	return out
}

func tenantOf(r *http.Request) string { return r.Header.Get("X-Tenant") }

// TestLimitTenantStreams: a tenant with its one stream place taken waits
// (and is refused after --limit-wait, naming --max-streams-per-token),
// while another tenant's transfer is served at once.
func TestLimitTenantStreams(t *testing.T) {
	t.Parallel()
	gs, _ := newLimitedEnvTenants(t, Limits{MaxStreams: 4, MaxStreamsPerTenant: 1, Wait: 200 * time.Millisecond})
	ctx := t.Context()
	cl := tenantClients(gs.url, "a", "b")
	data := svcData(21, 10*mib)
	created, err := cl["a"].CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "t", Size: ptr(int64(len(data)))}}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetUpload().GetUploadId()
	put := func(c ferryv1connect.UploadServiceClient, i int64) error {
		_, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: svcChunk(i, data[i*5*mib:(i+1)*5*mib])}))
		return err
	}
	first := make(chan error, 1)
	go func() { first <- put(cl["a"], 0) }()
	<-gs.entered // a's place is taken, held in UploadPart
	if err := put(cl["a"], 1); codeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-streams-per-token") {
		t.Errorf("tenant a's second transfer: %v, want resource_exhausted naming --max-streams-per-token", err)
	}
	second := make(chan error, 1)
	go func() { second <- put(cl["b"], 1) }()
	<-gs.entered // b's transfer reached the store beside a's
	close(gs.gate)
	for _, c := range []chan error{first, second} {
		if err := <-c; err != nil {
			t.Errorf("transfer: %v", err)
		}
	}
}

// TestLimitTenantBytes: a tenant cannot hold more than its share of the
// budget: while its 5 MiB chunk is held, its next chunk over its 6 MiB
// share waits and is refused, while another tenant's chunk, within the
// total, goes through.
func TestLimitTenantBytes(t *testing.T) {
	t.Parallel()
	gs, lim := newLimitedEnvTenants(t, Limits{MaxInflightBytes: 12 * mib, MaxInflightBytesPerTenant: 6 * mib, Wait: 200 * time.Millisecond})
	ctx := t.Context()
	cl := tenantClients(gs.url, "a", "b")
	data := svcData(22, 15*mib)
	created, err := cl["a"].CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "t", Size: ptr(int64(len(data)))}}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetUpload().GetUploadId()
	put := func(c ferryv1connect.UploadServiceClient, i int64) error {
		_, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: svcChunk(i, data[i*5*mib:(i+1)*5*mib])}))
		return err
	}
	first := make(chan error, 1)
	go func() { first <- put(cl["a"], 0) }()
	<-gs.entered
	if err := put(cl["a"], 1); codeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-inflight-bytes") {
		t.Errorf("tenant a over its share: %v, want resource_exhausted naming the byte limits", err)
	}
	second := make(chan error, 1)
	go func() { second <- put(cl["b"], 2) }()
	<-gs.entered
	if st, _ := lim.budget.state(); st.used < 10*mib {
		t.Errorf("with both chunks held the budget holds %d bytes, want both chunks", st.used)
	}
	close(gs.gate)
	for _, c := range []chan error{first, second} {
		if err := <-c; err != nil {
			t.Errorf("transfer: %v", err)
		}
	}
}

// gatedEnv is a gated store served behind a Limiter, with its URL.
type gatedEnv struct {
	*gatedStore
	url string
}

// newLimitedEnvTenants is newLimitedEnv with tenants named by X-Tenant.
func newLimitedEnvTenants(t *testing.T, l Limits) (gatedEnv, *Limiter) {
	t.Helper()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gs := &gatedStore{Store: disk, entered: make(chan struct{}, 16), gate: make(chan struct{})}
	l.Tenant = tenantOf
	_, lim, url := serveLimited(t, gs, l)
	return gatedEnv{gs, url}, lim
}
