package integration

// Fault injection: the failures after which no committed chunk may be lost
// and a transfer must resume where it stopped (server killed, connection
// reset, store briefly down, download cut short), caused for real against the ferry binary and a MinIO server, with the upload
// driven by the generated Connect clients so every byte sent is counted.

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/cenkalti/backoff/v5"
	"github.com/minio/minio-go/v7"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/upload"
)

const (
	// faultChunkSize is the chunk size in bytes of every upload in these
	// tests: S3's smallest part, 5 MiB, so objects of many chunks stay small.
	faultChunkSize = 5 * MiB
	// faultCallTimeout bounds one RPC. A call the server never answers
	// (a hung connection) fails the test instead of hanging it.
	faultCallTimeout = time.Minute
	// faultTestTimeout bounds each fault test as a whole.
	faultTestTimeout = 3 * time.Minute
)

// TestFaultServerKilled uploads a 100 MiB object in 20 chunks of 5 MiB while
// the server is killed with SIGKILL at points drawn from a seeded PRNG and
// started again on the same port in front of the same bucket. The client
// sends chunks one PutChunk at a time; after a failed call it asks GetUpload
// which chunks are committed (retrying with backoff while the server is
// down) and sends only the missing ones. Nothing committed may be lost, the
// object must be byte-identical, and the chunk bytes sent may exceed the
// object's size by at most one chunk per kill: the one in flight.
//
// FERRY_TEST_FAULT_SEED replays a run's plan (the seed is logged); where a
// kill lands also depends on how long calls take on the machine.
func TestFaultServerKilled(t *testing.T) {
	t.Parallel()
	env := requireS3(t)
	bucket := env.newBucket(t)
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))

	const (
		size  = 100 * MiB
		count = size / faultChunkSize // 20
		kills = 4
		key   = "faults/killed/object"
	)
	content := faultContent(t, size, 101)
	chunks := splitChunks(content, faultChunkSize)
	if len(chunks) != count {
		t.Fatalf("split into %d chunks, want %d", len(chunks), count)
	}
	crc := crc32.Checksum(content, castagnoli)

	// The kill plan: kill j is armed when PutChunk call plan[j] (1-based,
	// counting re-sends) begins. The calls are at least 3 apart, so the
	// server is back from one kill before the next is armed, and at most
	// count-2: those calls are always made, so every kill is armed while
	// chunks are still being sent.
	plan := rng.Perm(count - 2 - 2*(kills-1))[:kills]
	slices.Sort(plan)
	for j := range plan {
		plan[j] += 1 + 2*j
	}
	t.Logf("kills armed at PutChunk calls %v", plan)

	ctx, cancel := context.WithTimeout(context.Background(), faultTestTimeout)
	defer cancel()
	start := time.Now()
	srv := startFaultServer(t, env.serveArgs(bucket)...)
	client := ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "grpc"), srv.url, connect.WithGRPC())
	retry := faultRetryPolicy()
	calls := &faultCalls{}
	killer := newFaultKiller(srv, calls, rand.New(rand.NewPCG(seed, 2)))

	var info *ferryv1.UploadInfo
	err := retry.Do(ctx, func() error {
		resp, err := faultCall(ctx, func(ctx context.Context) (*connect.Response[ferryv1.CreateUploadResponse], error) {
			return client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: faultSpec(key, content)}))
		})
		if err == nil {
			info = resp.Msg.GetUpload()
		}
		return err
	})
	if err != nil {
		t.Fatalf("CreateUpload: %v", err)
	}
	id := info.GetUploadId()
	if info.GetSpec().GetChunkSize() != faultChunkSize || info.GetChunkCount() != count {
		t.Fatalf("upload created with chunk size %d and %d chunks, want %d and %d",
			info.GetSpec().GetChunkSize(), info.GetChunkCount(), faultChunkSize, count)
	}

	var (
		sent     int64 // chunk bytes of every PutChunk begun
		call     int   // PutChunk calls begun
		failed   []int64
		lost     int // failed calls whose chunk was not committed
		armed    int // kills armed so far
		resolved int // entries of failed whose fate GetUpload told
	)
	for round := 1; ; round++ {
		// Resume: which chunks does the store hold?
		var committed map[int64]*ferryv1.CommittedChunk
		err := retry.Do(ctx, func() error {
			var err error
			committed, err = faultCommitted(ctx, client, id)
			return err
		})
		if err != nil {
			t.Fatalf("round %d: GetUpload: %v", round, err)
		}
		faultRequireCommittedMatch(t, committed, chunks)
		for ; resolved < len(failed); resolved++ {
			i := failed[resolved]
			if committed[i] != nil {
				t.Logf("chunk %d, whose call failed, is committed: the server stored it before it died", i)
			} else {
				lost++
				t.Logf("chunk %d, whose call failed, is not committed: sending it again", i)
			}
		}
		var missing []int64
		for i := range int64(count) {
			if committed[i] == nil {
				missing = append(missing, i)
			}
		}
		t.Logf("round %d: GetUpload reports %d of %d chunks committed; sending %v", round, len(committed), count, missing)
		if len(missing) == 0 {
			break
		}
		for _, i := range missing {
			call++
			ch := chunks[i]
			calls.begin(call, i)
			if armed < len(plan) && plan[armed] == call {
				killer.arm()
				armed++
			}
			sent += int64(len(ch.GetData()))
			err := faultPutChunk(ctx, client, id, ch)
			calls.end(err == nil)
			if err != nil {
				failed = append(failed, i)
				t.Logf("call %d: PutChunk of chunk %d failed: %v (code %v)", call, i, err, connect.CodeOf(err))
				if !upload.IsTransient(ctx, err) {
					t.Fatalf("call %d: PutChunk of chunk %d failed with an error the client would not retry: %v", call, i, err)
				}
				break // back to GetUpload
			}
		}
	}
	if armed != kills {
		t.Fatalf("only %d of %d kills were armed in %d calls", armed, kills, call)
	}
	// A kill still pending lands after the last chunk: it must not lose
	// anything either.
	reports, err := killer.wait()
	for _, r := range reports {
		t.Log(r)
	}
	if err != nil {
		t.Fatal(err)
	}
	var committed map[int64]*ferryv1.CommittedChunk
	if err := retry.Do(ctx, func() error {
		var err error
		committed, err = faultCommitted(ctx, client, id)
		return err
	}); err != nil {
		t.Fatalf("GetUpload after the last kill: %v", err)
	}
	faultRequireCommitted(t, committed, chunks, faultIndexes(count))

	var obj *ferryv1.Object
	if err := retry.Do(ctx, func() error {
		resp, err := faultCall(ctx, func(ctx context.Context) (*connect.Response[ferryv1.CompleteUploadResponse], error) {
			return client.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Size: faultPtr(int64(size)), Crc32C: &crc}))
		})
		if err == nil {
			obj = resp.Msg.GetObject()
		}
		return err
	}); err != nil {
		t.Fatalf("CompleteUpload: %v", err)
	}
	faultRequireObject(t, obj, key, content)
	faultRequireDownload(ctx, t, srv.url, key, content)

	resent := sent - size
	t.Logf("seed %d: %d kills, %d PutChunk calls, %d failed (%d chunks not committed), %d chunk bytes sent for a %d-byte object (%d re-sent, %.1f chunks), %v in all",
		seed, kills, call, len(failed), lost, sent, size, resent, float64(resent)/faultChunkSize, time.Since(start).Round(time.Millisecond))
	if limit := int64(size + kills*faultChunkSize); sent > limit {
		t.Errorf("sent %d chunk bytes, want at most %d (the object, %d bytes, and one %d-byte chunk per kill)", sent, limit, size, faultChunkSize)
	}
	if len(failed) > kills {
		t.Errorf("%d PutChunk calls failed for %d kills: a call failed that no kill explains", len(failed), kills)
	}
	if resent != int64(lost)*faultChunkSize {
		t.Errorf("re-sent %d bytes, want exactly the %d chunks whose call failed before they were committed (%d bytes)", resent, lost, int64(lost)*faultChunkSize)
	}
	if len(failed) < 3 {
		t.Errorf("only %d PutChunk calls were interrupted, want at least 3", len(failed))
	}
}

// TestFaultTwoServersOneBucket runs two ferry servers in front of one bucket
// and sends the chunks of each upload alternately to one and the other,
// mixing the Upload stream and unary PutChunk, then completes each upload on
// either server. It proves the state of an upload lives in the store: both
// servers report the same committed chunks, either completes, and the other
// then knows the upload is completed, and as what.
func TestFaultTwoServersOneBucket(t *testing.T) {
	t.Parallel()
	env := requireS3(t)
	bucket := env.newBucket(t)
	servers := [2]*server{startServer(t, env.serveArgs(bucket)...), startServer(t, env.serveArgs(bucket)...)}
	var clients [2]ferryv1connect.UploadServiceClient
	for i, s := range servers {
		clients[i] = ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "grpc"), s.url, connect.WithGRPC())
	}
	const a, b = 0, 1
	content := faultContent(t, 4*faultChunkSize+777, 102)
	chunks := splitChunks(content, faultChunkSize) // 5 chunks
	crc := crc32.Checksum(content, castagnoli)
	size := int64(len(content))

	t.Run("create on A, even chunks streamed to A, odd chunks put on B, completed on B", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), faultTestTimeout)
		defer cancel()
		const key = "faults/two-servers/complete-on-b"
		created, err := clients[a].CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: faultSpec(key, content)}))
		if err != nil {
			t.Fatalf("CreateUpload on A: %v", err)
		}
		id := created.Msg.GetUpload().GetUploadId()

		// One stream to A stays open while B takes the odd chunks between
		// its messages.
		stream := clients[a].Upload(ctx)
		if err := stream.Send(faultResumeHeader(id)); err != nil {
			t.Fatalf("send header to A: %v", faultStreamError(stream, err))
		}
		for _, ch := range chunks {
			if ch.GetIndex()%2 == 0 {
				if err := stream.Send(faultChunkMessage(ch)); err != nil {
					t.Fatalf("stream chunk %d to A: %v", ch.GetIndex(), faultStreamError(stream, err))
				}
				continue
			}
			if err := faultPutChunk(ctx, clients[b], id, ch); err != nil {
				t.Fatalf("PutChunk %d on B: %v", ch.GetIndex(), err)
			}
		}
		resp, err := stream.CloseAndReceive()
		if err != nil {
			t.Fatalf("Upload stream to A: %v", err)
		}
		if got, want := resp.Msg.GetCommitted(), []int64{0, 2, 4}; !slices.Equal(got, want) || resp.Msg.GetUploadId() != id {
			t.Fatalf("A's stream committed %v for upload %q, want %v for %q", got, resp.Msg.GetUploadId(), want, id)
		}
		faultRequireSameStatus(ctx, t, clients, id, chunks)

		done, err := clients[b].CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Size: &size, Crc32C: &crc}))
		if err != nil {
			t.Fatalf("CompleteUpload on B: %v", err)
		}
		faultRequireObject(t, done.Msg.GetObject(), key, content)
		if n := done.Msg.GetChunkCount(); n != int64(len(chunks)) {
			t.Errorf("chunk_count %d, want %d", n, len(chunks))
		}
		faultRequireCompleted(ctx, t, clients[a], id, done.Msg.GetObject())
		faultRequireDownload(ctx, t, servers[a].url, key, content)
	})

	t.Run("created by a stream to B, even chunks put on A, odd chunks streamed to B, finished by a stream to A", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), faultTestTimeout)
		defer cancel()
		const key = "faults/two-servers/finish-on-a"
		// The first stream creates the upload and commits chunk 1 on B.
		first := clients[b].Upload(ctx)
		for _, msg := range []*ferryv1.UploadRequest{
			{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{Create: faultSpec(key, content)}}}},
			faultChunkMessage(chunks[1]),
		} {
			if err := first.Send(msg); err != nil {
				t.Fatalf("first stream to B: %v", faultStreamError(first, err))
			}
		}
		resp, err := first.CloseAndReceive()
		if err != nil {
			t.Fatalf("first stream to B: %v", err)
		}
		id := resp.Msg.GetUploadId()
		if got := resp.Msg.GetCommitted(); !slices.Equal(got, []int64{1}) || id == "" {
			t.Fatalf("first stream to B committed %v for upload %q, want [1] and an upload ID", got, id)
		}

		second := clients[b].Upload(ctx)
		if err := second.Send(faultResumeHeader(id)); err != nil {
			t.Fatalf("send header to B: %v", faultStreamError(second, err))
		}
		for _, ch := range []*ferryv1.Chunk{chunks[0], chunks[2], chunks[3], chunks[4]} {
			if ch.GetIndex()%2 == 1 {
				if err := second.Send(faultChunkMessage(ch)); err != nil {
					t.Fatalf("stream chunk %d to B: %v", ch.GetIndex(), faultStreamError(second, err))
				}
				continue
			}
			if err := faultPutChunk(ctx, clients[a], id, ch); err != nil {
				t.Fatalf("PutChunk %d on A: %v", ch.GetIndex(), err)
			}
		}
		resp, err = second.CloseAndReceive()
		if err != nil {
			t.Fatalf("second stream to B: %v", err)
		}
		if got := resp.Msg.GetCommitted(); !slices.Equal(got, []int64{3}) {
			t.Fatalf("second stream to B committed %v, want [3]", got)
		}
		faultRequireSameStatus(ctx, t, clients, id, chunks)

		finish := clients[a].Upload(ctx)
		for _, msg := range []*ferryv1.UploadRequest{
			faultResumeHeader(id),
			{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{Size: &size, Crc32C: &crc}}},
		} {
			if err := finish.Send(msg); err != nil {
				t.Fatalf("finishing stream to A: %v", faultStreamError(finish, err))
			}
		}
		resp, err = finish.CloseAndReceive()
		if err != nil {
			t.Fatalf("finishing stream to A: %v", err)
		}
		faultRequireObject(t, resp.Msg.GetObject(), key, content)
		if n := resp.Msg.GetChunkCount(); n != int64(len(chunks)) || len(resp.Msg.GetCommitted()) != 0 {
			t.Errorf("finishing stream: chunk_count %d, committed %v; want %d and none", n, resp.Msg.GetCommitted(), len(chunks))
		}
		faultRequireCompleted(ctx, t, clients[b], id, resp.Msg.GetObject())
		faultRequireDownload(ctx, t, servers[b].url, key, content)
	})
}

// TestFaultConnectionReset cuts the connection (TCP RST to both sides) in
// the middle of a chunk's bytes, on each path a chunk can take: the gRPC
// Upload stream and unary PutChunk over gRPC, Connect and gRPC-Web. The cut
// chunk must not be committed, the chunks committed before must be intact,
// and sending the chunk again must complete a byte-identical object.
func TestFaultConnectionReset(t *testing.T) {
	t.Parallel()
	srv, _, _ := startS3Server(t)
	cases := []struct {
		name     string
		protocol string
		stream   bool
	}{
		{"grpc-stream", "grpc", true},
		{"grpc-unary", "grpc", false},
		{"connect-unary", "connect", false},
		{"grpcweb-unary", "grpcweb", false},
	}
	direct := ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "grpc"), srv.url, connect.WithGRPC())
	for n, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), faultTestTimeout)
			defer cancel()
			key := "faults/reset/" + tc.name
			content := faultContent(t, 3*faultChunkSize+4321, 110+uint64(n))
			chunks := splitChunks(content, faultChunkSize) // 4 chunks, the last short
			crc := crc32.Checksum(content, castagnoli)
			size := int64(len(content))
			proxy := startFaultProxy(t, srv.addr)

			// send sends chunks on the case's path, through the proxy, on
			// a new connection.
			send := func(id string, chs ...*ferryv1.Chunk) error {
				c := ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, tc.protocol), proxy.url(), clientOptions(tc.protocol)...)
				if !tc.stream {
					for _, ch := range chs {
						if err := faultPutChunk(ctx, c, id, ch); err != nil {
							return err
						}
					}
					return nil
				}
				return faultStreamChunks(ctx, c, id, chs...)
			}

			created, err := direct.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: faultSpec(key, content)}))
			if err != nil {
				t.Fatalf("CreateUpload: %v", err)
			}
			id := created.Msg.GetUpload().GetUploadId()
			if err := send(id, chunks[0], chunks[1]); err != nil {
				t.Fatalf("send chunks 0 and 1: %v", err)
			}

			// Cut the next connection once half of chunk 2 has passed (the
			// HTTP/2 preface, headers and envelopes are a few hundred bytes).
			const cutAt = faultChunkSize / 2
			cut := proxy.cutNext(faultClientToServer, cutAt)
			err = send(id, chunks[2])
			select {
			case c := <-cut:
				t.Logf("cut %s after %d bytes (%d bytes back); chunk 2's call: %v (code %v)",
					c.Dir, c.Forwarded[faultClientToServer], c.Forwarded[faultServerToClient], err, connect.CodeOf(err))
			case <-time.After(10 * time.Second):
				t.Fatalf("the proxy never cut the connection; chunk 2's call returned %v", err)
			}
			if err == nil {
				t.Fatal("chunk 2's call succeeded although its connection was reset mid-chunk")
			}
			if !upload.IsTransient(ctx, err) {
				t.Errorf("the reset gave %v (code %v), which upload.IsTransient does not retry", err, connect.CodeOf(err))
			}

			committed, err := faultCommitted(ctx, direct, id)
			if err != nil {
				t.Fatalf("GetUpload after the reset: %v", err)
			}
			faultRequireCommitted(t, committed, chunks, []int64{0, 1})

			if err := send(id, chunks[2], chunks[3]); err != nil {
				t.Fatalf("send chunks 2 and 3 again: %v", err)
			}
			done, err := direct.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Size: &size, Crc32C: &crc}))
			if err != nil {
				t.Fatalf("CompleteUpload: %v", err)
			}
			faultRequireObject(t, done.Msg.GetObject(), key, content)
			faultRequireDownload(ctx, t, srv.url, key, content)
		})
	}
}

// TestFaultStoreDown stops the MinIO server under a ferry server in the
// middle of an upload. While it is down, PutChunk, GetUpload and the Upload
// stream must answer UNAVAILABLE (the code the contract tells clients to
// retry); a client retrying with backoff must finish the upload once MinIO
// is back on the same port with the same data, without losing the chunk
// committed before the outage. The MinIO server is the test's own, so the
// outage touches no other test.
func TestFaultStoreDown(t *testing.T) {
	t.Parallel()
	requireS3(t) // the same skip-or-fail rule as every S3 test
	m := startFaultMinIO(t)
	env := s3Env{endpoint: m.addr, accessKey: m.accessKey, secretKey: m.secretKey}
	const bucket = "ferry-it-store-down"
	ctx, cancel := context.WithTimeout(context.Background(), faultTestTimeout)
	defer cancel()
	if err := env.client(t).MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	srv := startServer(t, env.serveArgs(bucket)...)
	client := ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "grpc"), srv.url, connect.WithGRPC())

	const key = "faults/store-down/object"
	content := faultContent(t, 3*faultChunkSize+1000, 120)
	chunks := splitChunks(content, faultChunkSize) // 4 chunks
	crc := crc32.Checksum(content, castagnoli)
	size := int64(len(content))
	created, err := client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: faultSpec(key, content)}))
	if err != nil {
		t.Fatalf("CreateUpload: %v", err)
	}
	id := created.Msg.GetUpload().GetUploadId()
	if err := faultPutChunk(ctx, client, id, chunks[0]); err != nil {
		t.Fatalf("PutChunk 0: %v", err)
	}

	m.stop(t)
	downAt := time.Now()
	t.Logf("MinIO stopped")

	// Each path answers UNAVAILABLE while the store is down.
	probes := []struct {
		name string
		call func(context.Context) error
	}{
		{"PutChunk", func(ctx context.Context) error { return faultPutChunk(ctx, client, id, chunks[1]) }},
		{"GetUpload", func(ctx context.Context) error { _, err := faultCommitted(ctx, client, id); return err }},
		{"Upload stream", func(ctx context.Context) error { return faultStreamChunks(ctx, client, id, chunks[2]) }},
	}
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Go(func() {
			start := time.Now()
			ctx, cancel := context.WithTimeout(ctx, faultCallTimeout)
			defer cancel()
			err := p.call(ctx)
			t.Logf("%s with MinIO down: %v after %v", p.name, err, time.Since(start).Round(time.Millisecond))
			if code := connect.CodeOf(err); err == nil || code != connect.CodeUnavailable {
				t.Errorf("%s with MinIO down: error %v (code %v), want code %v", p.name, err, code, connect.CodeUnavailable)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		m.restart(t)
		return
	}

	// The client sends the other chunks, retrying with backoff, while the
	// store is still down; MinIO returns once the client has failed at
	// least once and the outage has lasted faultOutage.
	const faultOutage = 3 * time.Second
	var (
		mu       sync.Mutex
		attempts []error // failed attempts, in order
	)
	retry := faultRetryPolicy()
	sendErr := make(chan error, 1)
	go func() {
		for _, ch := range chunks[1:] {
			err := retry.Do(ctx, func() error {
				err := faultPutChunk(ctx, client, id, ch)
				if err != nil {
					mu.Lock()
					attempts = append(attempts, fmt.Errorf("chunk %d at +%v: %w", ch.GetIndex(), time.Since(downAt).Round(time.Millisecond), err))
					mu.Unlock()
				}
				return err
			})
			if err != nil {
				sendErr <- fmt.Errorf("chunk %d: %w", ch.GetIndex(), err)
				return
			}
		}
		sendErr <- nil
	}()
	for failed := 0; failed == 0 || time.Since(downAt) < faultOutage; {
		select {
		case err := <-sendErr:
			t.Fatalf("the retrying client finished while MinIO was down: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		mu.Lock()
		failed = len(attempts)
		mu.Unlock()
	}
	m.restart(t)
	t.Logf("MinIO back on %s after %v", m.addr, time.Since(downAt).Round(time.Millisecond))
	if err := <-sendErr; err != nil {
		t.Fatalf("the retrying client gave up: %v", err)
	}
	t.Logf("upload resumed %v after MinIO went down", time.Since(downAt).Round(time.Millisecond))
	mu.Lock()
	for _, err := range attempts {
		t.Logf("failed attempt: %v", err)
		if code := connect.CodeOf(err); code != connect.CodeUnavailable {
			t.Errorf("an attempt during the outage failed with code %v, want %v: %v", code, connect.CodeUnavailable, err)
		}
	}
	mu.Unlock()

	committed, err := faultCommitted(ctx, client, id)
	if err != nil {
		t.Fatalf("GetUpload after the outage: %v", err)
	}
	faultRequireCommitted(t, committed, chunks, faultIndexes(len(chunks)))
	done, err := client.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Size: &size, Crc32C: &crc}))
	if err != nil {
		t.Fatalf("CompleteUpload: %v", err)
	}
	faultRequireObject(t, done.Msg.GetObject(), key, content)
	faultRequireDownload(ctx, t, srv.url, key, content)
}

// TestFaultDownloadInterrupted cuts downloads in the middle of the stream
// (TCP RST after some megabytes) with each protocol. Resuming from the last
// byte received with if_match set to the first header's ETag must give the
// rest of the object; when the object was overwritten in between, the
// resume must fail with FAILED_PRECONDITION and send no byte of the new
// object.
func TestFaultDownloadInterrupted(t *testing.T) {
	t.Parallel()
	srv, _, _ := startS3Server(t)
	direct := ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "grpc"), srv.url, connect.WithGRPC())
	for n, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), faultTestTimeout)
			defer cancel()
			key := "faults/download/" + protocol
			content := faultContent(t, 7*MiB+4321, 130+uint64(n))
			first, err := faultPutObject(ctx, direct, key, content)
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			proxy := startFaultProxy(t, srv.addr)

			// cutDownload downloads key through the proxy on a new
			// connection that is cut after 3 MiB from the server (the
			// client gets end of stream, the server a reset), and returns
			// what arrived before the cut.
			cutDownload := func() (*ferryv1.DownloadHeader, []byte) {
				t.Helper()
				const cutAt = 3 * MiB
				cut := proxy.cutNextGraceful(faultServerToClient, cutAt)
				c := ferryv1connect.NewDownloadServiceClient(faultHTTPClient(t, protocol), proxy.url(), clientOptions(protocol)...)
				header, got, err := download(ctx, t, c, &ferryv1.DownloadRequest{Key: key})
				select {
				case <-cut:
				case <-time.After(10 * time.Second):
					t.Fatalf("the proxy never cut the download; it returned %d bytes and %v", len(got), err)
				}
				t.Logf("download cut after %d bytes of data: %v (code %v)", len(got), err, connect.CodeOf(err))
				if err == nil {
					t.Fatalf("the download succeeded although its connection was reset after %d bytes", cutAt)
				}
				if header == nil || len(got) == 0 || len(got) >= len(content) {
					t.Fatalf("the cut download gave a header %v and %d of %d bytes; want a header and some but not all bytes", header, len(got), len(content))
				}
				if i := firstDiff(got, content[:len(got)]); i >= 0 {
					t.Fatalf("the cut download differs from the object at byte %d", i)
				}
				if header.GetObject().GetEtag() != first.GetEtag() {
					t.Fatalf("header ETag %q, want the uploaded object's %q", header.GetObject().GetEtag(), first.GetEtag())
				}
				return header, got
			}
			// fetch downloads key from offset through the proxy, which cuts
			// nothing unless armed.
			fetch := func(offset int64, etag string) (*ferryv1.DownloadHeader, []byte, error) {
				c := ferryv1connect.NewDownloadServiceClient(faultHTTPClient(t, protocol), proxy.url(), clientOptions(protocol)...)
				return download(ctx, t, c, &ferryv1.DownloadRequest{Key: key, Offset: offset, IfMatch: etag})
			}

			header, got := cutDownload()
			etag, offset := header.GetObject().GetEtag(), int64(len(got))
			rest, tail, err := fetch(offset, etag)
			if err != nil {
				t.Fatalf("resume at byte %d with if_match %q: %v", offset, etag, err)
			}
			if rest.GetOffset() != offset || rest.GetLength() != int64(len(content))-offset || rest.GetObject().GetEtag() != etag {
				t.Errorf("resume header: offset %d length %d ETag %q, want %d, %d and %q",
					rest.GetOffset(), rest.GetLength(), rest.GetObject().GetEtag(), offset, int64(len(content))-offset, etag)
			}
			whole := append(got, tail...)
			if len(whole) != len(content) || firstDiff(whole, content) >= 0 {
				t.Fatalf("cut download + resume: %d bytes, first difference at %d; want the %d bytes uploaded", len(whole), firstDiff(whole, content), len(content))
			}

			// Overwritten between the cut and the resume.
			header, got = cutDownload()
			etag, offset = header.GetObject().GetEtag(), int64(len(got))
			replacement := faultContent(t, 6*MiB+99, 140+uint64(n))
			second, err := faultPutObject(ctx, direct, key, replacement)
			if err != nil {
				t.Fatalf("overwrite: %v", err)
			}
			if second.GetEtag() == etag {
				t.Fatalf("the overwritten object kept the ETag %q; the precondition cannot tell them apart", etag)
			}
			rest, tail, err = fetch(offset, etag)
			if code := connect.CodeOf(err); err == nil || code != connect.CodeFailedPrecondition {
				t.Errorf("resume of an overwritten object: error %v (code %v), want code %v", err, code, connect.CodeFailedPrecondition)
			}
			if rest != nil || len(tail) != 0 {
				t.Errorf("resume of an overwritten object sent a header %v and %d bytes, want nothing", rest, len(tail))
			}
			// Starting again from offset 0, as the error says, gives the
			// new object whole.
			header, got, err = fetch(0, "")
			if err != nil {
				t.Fatalf("download from offset 0 after the overwrite: %v", err)
			}
			if header.GetObject().GetEtag() != second.GetEtag() || len(got) != len(replacement) || firstDiff(got, replacement) >= 0 {
				t.Errorf("download after the overwrite: ETag %q and %d bytes; want %q and the %d bytes of the new object",
					header.GetObject().GetEtag(), len(got), second.GetEtag(), len(replacement))
			}
		})
	}
}

// faultCalls is the PutChunk call in flight, written by the client of
// TestFaultServerKilled and read by its [faultKiller].
type faultCalls struct {
	mu    sync.Mutex
	call  int   // 1-based number of the call in flight; 0 between calls
	chunk int64 // its chunk index
	began time.Time
	last  time.Duration // how long the last successful call took
	n     uint64        // calls begun, to tell one call from the next
}

func (c *faultCalls) begin(call int, chunk int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.call, c.chunk, c.began = call, chunk, time.Now()
	c.n++
}

func (c *faultCalls) end(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		c.last = time.Since(c.began)
	}
	c.call = 0
}

// faultCallState is a snapshot of [faultCalls].
type faultCallState struct {
	call  int
	chunk int64
	began time.Time
	last  time.Duration
	n     uint64
}

func (c *faultCalls) state() faultCallState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return faultCallState{call: c.call, chunk: c.chunk, began: c.began, last: c.last, n: c.n}
}

// faultKiller kills a faultServer with SIGKILL and starts it again, one
// armed kill at a time, in its own goroutine. A kill lands in a PutChunk
// call in flight, at a random fraction of the time the last successful call
// took, so it falls while the chunk is on the wire, while the server stores
// the part, or after it stored it but before the client read the answer. If
// the call ends first, the kill moves to the next call.
type faultKiller struct {
	srv      *faultServer
	calls    *faultCalls
	rng      *rand.Rand // used by the killer's goroutine only
	armed    chan struct{}
	stopping atomic.Bool
	done     chan struct{}
	reports  []string // written by the goroutine, read after done
	failure  error
}

func newFaultKiller(srv *faultServer, calls *faultCalls, rng *rand.Rand) *faultKiller {
	k := &faultKiller{srv: srv, calls: calls, rng: rng, armed: make(chan struct{}, 16), done: make(chan struct{})}
	go k.run()
	return k
}

// arm queues a kill, to land in the call in flight or a later one. Kills
// happen in order, each after the server is back from the previous one.
func (k *faultKiller) arm() { k.armed <- struct{}{} }

// wait lets every armed kill happen (one for which no call comes lands
// between calls) and returns their reports and the first failure to kill or
// restart the server.
func (k *faultKiller) wait() ([]string, error) {
	k.stopping.Store(true)
	close(k.armed)
	<-k.done
	return k.reports, k.failure
}

func (k *faultKiller) run() {
	defer close(k.done)
	n := 0
	for range k.armed {
		n++
		if k.failure != nil {
			continue
		}
		var (
			at      faultCallState
			into    time.Duration
			skipped int
		)
		for {
			// Wait for a call in flight.
			at = k.calls.state()
			for at.call == 0 && !k.stopping.Load() {
				time.Sleep(time.Millisecond)
				at = k.calls.state()
			}
			typical := at.last
			if typical == 0 {
				typical = 50 * time.Millisecond
			}
			delay := time.Duration(k.rng.Float64() * float64(typical))
			time.Sleep(time.Until(at.began.Add(delay)))
			now := k.calls.state()
			if (now.call != 0 && now.n == at.n) || k.stopping.Load() {
				at, into = now, time.Since(now.began)
				break
			}
			skipped++ // the call ended before the kill: try the next one
		}
		if err := k.srv.kill(); err != nil {
			k.failure = fmt.Errorf("kill %d: %w", n, err)
			continue
		}
		killedAt := time.Now()
		down := time.Duration(k.rng.IntN(300)) * time.Millisecond
		time.Sleep(down)
		if err := k.srv.restart(); err != nil {
			k.failure = fmt.Errorf("restart after kill %d: %w", n, err)
			continue
		}
		what := "between calls"
		if at.call != 0 {
			what = fmt.Sprintf("%v into PutChunk call %d (chunk %d", into.Round(time.Millisecond), at.call, at.chunk)
			if at.last > 0 {
				what += fmt.Sprintf("; the last successful call took %v", at.last.Round(time.Millisecond))
			}
			what += ")"
		}
		if skipped > 0 {
			what += fmt.Sprintf(", after %d calls ended before their kill", skipped)
		}
		k.reports = append(k.reports, fmt.Sprintf("kill %d: SIGKILL %s; down %v, restarted in %v",
			n, what, time.Since(killedAt).Round(time.Millisecond), (time.Since(killedAt)-down).Round(time.Millisecond)))
	}
}

// faultServer is a `ferry serve` process that a test may kill with SIGKILL
// and start again on the same address with the same flags (so the same
// store), as a crashed server restarted by its supervisor would be. The
// harness's startServer fails a test whose server exits early, so this
// manages its processes itself.
type faultServer struct {
	t    testing.TB
	args []string
	// addr and url are fixed by the first start.
	addr string
	url  string

	mu   sync.Mutex
	cur  *server   // the running process, nil between a kill and a restart
	past []*server // killed processes, for their logs
}

// startFaultServer starts `ferry serve` with args on a free port and stops
// whichever process runs at the end of the test.
func startFaultServer(t testing.TB, args ...string) *faultServer {
	t.Helper()
	s, err := spawnServer("127.0.0.1:0", args)
	if err != nil {
		t.Fatal(err)
	}
	fs := &faultServer{t: t, args: args, addr: s.addr, url: s.url, cur: s}
	t.Cleanup(fs.cleanup)
	return fs
}

// kill sends SIGKILL and waits for the process to die.
func (fs *faultServer) kill() error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	s := fs.cur
	if s == nil {
		return errors.New("no server is running")
	}
	if err := s.cmd.Process.Kill(); err != nil {
		return err
	}
	<-s.done
	var exit *exec.ExitError
	if !errors.As(s.err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		return fmt.Errorf("ferry serve ended with %v before SIGKILL reached it\n%s", s.err, s.logs)
	}
	fs.past = append(fs.past, s)
	fs.cur = nil
	return nil
}

// restart starts the server again on its first address.
func (fs *faultServer) restart() error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.cur != nil {
		return errors.New("the server is still running")
	}
	s, err := spawnServer(fs.addr, fs.args)
	if err != nil {
		return err
	}
	if s.addr != fs.addr {
		s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("restarted server listens on %s, want %s", s.addr, fs.addr)
	}
	fs.cur = s
	return nil
}

// cleanup stops the running process with SIGTERM, expecting a clean exit,
// and shows every process's logs if the test failed.
func (fs *faultServer) cleanup() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if s := fs.cur; s != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
			if s.err != nil {
				fs.t.Errorf("ferry serve did not exit cleanly on SIGTERM: %v", s.err)
			}
		case <-time.After(serverStopTimeout):
			_ = s.cmd.Process.Kill()
			<-s.done
			fs.t.Errorf("ferry serve did not stop within %v of SIGTERM", serverStopTimeout)
		}
		fs.past = append(fs.past, s)
	}
	if fs.t.Failed() {
		for i, s := range fs.past {
			fs.t.Logf("ferry serve process %d logs:\n%s", i+1, s.logs)
		}
	}
}

// faultMinIO is a MinIO server of one test's own, on a loopback port and a
// temporary directory, that the test stops and starts again on the same
// port with the same data.
type faultMinIO struct {
	bin       string
	wrap      []string // a command that runs the server's command line, or nil
	dir       string   // data directory
	addr      string   // host:port
	accessKey string
	secretKey string

	cmd  *exec.Cmd
	done chan struct{}
	logs *lockedBuffer
}

// startFaultMinIO starts MinIO (FERRY_TEST_MINIO_BIN, or the tools dir's)
// and stops it when the test ends. Without the binary the test is skipped,
// or fails when FERRY_REQUIRE_S3=1.
func startFaultMinIO(t testing.TB) *faultMinIO {
	t.Helper()
	return startWrappedMinIO(t, nil, filepath.Join(t.TempDir(), "data")) // removed after the stop below
}

// startWrappedMinIO is startFaultMinIO with MinIO's command line given to
// the command wrap (see spawnWrappedServer), and its data in dir.
func startWrappedMinIO(t testing.TB, wrap []string, dir string) *faultMinIO {
	t.Helper()
	bin := os.Getenv("FERRY_TEST_MINIO_BIN")
	if bin == "" {
		bin = filepath.Join(toolsDir(), "bin", "minio")
	}
	if !fileExists(bin) {
		msg := "MinIO server binary not found at " + bin + " (FERRY_TEST_MINIO_BIN or the tools dir): run bash scripts/tools.sh"
		if os.Getenv("FERRY_REQUIRE_S3") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	m := &faultMinIO{
		bin:       bin,
		wrap:      wrap,
		dir:       dir,
		accessKey: "faulttest",
		secretKey: strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36),
	}
	t.Cleanup(func() {
		if m.cmd != nil {
			m.stop(t)
		}
		if t.Failed() {
			t.Logf("MinIO logs:\n%s", m.logs)
		}
	})
	// A free port may be taken between the probe and MinIO's bind: try
	// another then.
	var err error
	for range 5 {
		var ln net.Listener
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m.addr = ln.Addr().String()
		ln.Close()
		if err = m.spawn(); err == nil {
			return m
		}
	}
	t.Fatalf("start MinIO: %v", err)
	return nil
}

// spawn starts the MinIO process on m.addr and waits until it is live.
func (m *faultMinIO) spawn() error {
	argv := append(slices.Clip(m.wrap), m.bin, "server", m.dir, "--address", m.addr, "--quiet")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.accessKey,
		"MINIO_ROOT_PASSWORD="+m.secretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	cmd.SysProcAttr = childProcAttr()
	if m.logs == nil {
		m.logs = &lockedBuffer{}
	}
	cmd.Stdout, cmd.Stderr = m.logs, m.logs
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	m.cmd, m.done = cmd, done
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			m.cmd = nil
			return fmt.Errorf("minio server on %s exited: %v", m.addr, cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get("http://" + m.addr + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	_ = cmd.Process.Kill()
	<-done
	m.cmd = nil
	return fmt.Errorf("minio server on %s not live within 60s", m.addr)
}

// stop ends the MinIO process with SIGTERM (SIGKILL after 10 s).
func (m *faultMinIO) stop(t testing.TB) {
	t.Helper()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// restart starts MinIO again on the same port with the same data.
func (m *faultMinIO) restart(t testing.TB) {
	t.Helper()
	if err := m.spawn(); err != nil {
		t.Fatalf("restart MinIO: %v", err)
	}
}

// faultSeed returns the seed of the test's PRNG: FERRY_TEST_FAULT_SEED when
// set, to replay a run, otherwise a new one. It logs the seed either way.
func faultSeed(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv("FERRY_TEST_FAULT_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FERRY_TEST_FAULT_SEED=%q: %v", s, err)
		}
		t.Logf("seed %d (from FERRY_TEST_FAULT_SEED)", seed)
		return seed
	}
	seed := rand.Uint64()
	t.Logf("seed %d (replay with FERRY_TEST_FAULT_SEED=%d)", seed, seed)
	return seed
}

// faultContent returns the bytes of the generated file of size bytes and
// seed (see generated).
func faultContent(t testing.TB, size int64, seed uint64) []byte {
	t.Helper()
	b, err := os.ReadFile(generated(t, size, seed))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// faultHTTPClient returns a new HTTP client for protocol (see httpClient),
// with connections of its own, closed when the test ends.
func faultHTTPClient(t testing.TB, protocol string) *http.Client {
	c := httpClient(protocol)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// faultRetryPolicy is how the tests' clients retry: quickly, so a restarted
// server or store is found within a few hundred milliseconds, and often
// enough to outlast any outage these tests cause.
func faultRetryPolicy() upload.RetryPolicy {
	return upload.RetryPolicy{
		BackOff: func() backoff.BackOff {
			return &backoff.ExponentialBackOff{
				InitialInterval:     20 * time.Millisecond,
				RandomizationFactor: 0.2,
				Multiplier:          1.5,
				MaxInterval:         500 * time.Millisecond,
			}
		},
		MaxAttempts: 400,
	}
}

// faultCall runs one RPC with faultCallTimeout.
func faultCall[T any](ctx context.Context, call func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, faultCallTimeout)
	defer cancel()
	return call(ctx)
}

// faultSpec is the spec of an upload of content under key, in chunks of
// faultChunkSize, with its size and CRC32C given up front.
func faultSpec(key string, content []byte) *ferryv1.UploadSpec {
	size, crc := int64(len(content)), crc32.Checksum(content, castagnoli)
	return &ferryv1.UploadSpec{Key: key, Size: &size, ChunkSize: faultChunkSize, Crc32C: &crc}
}

func faultResumeHeader(id string) *ferryv1.UploadRequest {
	return &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_UploadId{UploadId: id}}}}
}

func faultChunkMessage(ch *ferryv1.Chunk) *ferryv1.UploadRequest {
	return &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Chunk{Chunk: ch}}
}

// faultStreamError returns the server's error for a stream whose Send
// failed (Send reports only io.EOF when the server ended the stream).
func faultStreamError(stream *connect.ClientStreamForClient[ferryv1.UploadRequest, ferryv1.UploadResponse], sendErr error) error {
	if _, err := stream.CloseAndReceive(); err != nil {
		return err
	}
	return sendErr
}

// faultPutChunk commits one chunk with PutChunk and checks that the server
// reports the chunk that was sent.
func faultPutChunk(ctx context.Context, c ferryv1connect.UploadServiceClient, id string, ch *ferryv1.Chunk) error {
	resp, err := faultCall(ctx, func(ctx context.Context) (*connect.Response[ferryv1.PutChunkResponse], error) {
		return c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: ch}))
	})
	if err != nil {
		return err
	}
	if got := resp.Msg.GetChunk(); got.GetIndex() != ch.GetIndex() || got.GetSize() != int64(len(ch.GetData())) || got.GetCrc32C() != ch.GetCrc32C() {
		return fmt.Errorf("chunk %d: committed as index %d, %d bytes, crc32c %08x; sent %d bytes, crc32c %08x",
			ch.GetIndex(), got.GetIndex(), got.GetSize(), got.GetCrc32C(), len(ch.GetData()), ch.GetCrc32C())
	}
	return nil
}

// faultStreamChunks commits chunks over one Upload stream that resumes
// upload id, and checks the stream committed exactly those chunks.
func faultStreamChunks(ctx context.Context, c ferryv1connect.UploadServiceClient, id string, chs ...*ferryv1.Chunk) error {
	ctx, cancel := context.WithTimeout(ctx, faultCallTimeout)
	defer cancel()
	stream := c.Upload(ctx)
	if err := stream.Send(faultResumeHeader(id)); err != nil {
		return faultStreamError(stream, err)
	}
	var want []int64
	for _, ch := range chs {
		if err := stream.Send(faultChunkMessage(ch)); err != nil {
			return faultStreamError(stream, err)
		}
		want = append(want, ch.GetIndex())
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		return err
	}
	if got := resp.Msg.GetCommitted(); !slices.Equal(got, want) {
		return fmt.Errorf("the stream committed chunks %v, sent %v", got, want)
	}
	return nil
}

// faultPutObject stores content under key in one Upload stream (create,
// chunks, finish) and returns the object.
func faultPutObject(ctx context.Context, c ferryv1connect.UploadServiceClient, key string, content []byte) (*ferryv1.Object, error) {
	ctx, cancel := context.WithTimeout(ctx, faultCallTimeout)
	defer cancel()
	size, crc := int64(len(content)), crc32.Checksum(content, castagnoli)
	stream := c.Upload(ctx)
	msgs := []*ferryv1.UploadRequest{{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{Create: faultSpec(key, content)}}}}}
	for _, ch := range splitChunks(content, faultChunkSize) {
		msgs = append(msgs, faultChunkMessage(ch))
	}
	msgs = append(msgs, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{Size: &size, Crc32C: &crc}}})
	for _, msg := range msgs {
		if err := stream.Send(msg); err != nil {
			return nil, faultStreamError(stream, err)
		}
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	obj := resp.Msg.GetObject()
	if obj.GetSize() != size || obj.Crc32C == nil || obj.GetCrc32C() != crc || obj.GetEtag() == "" {
		return nil, fmt.Errorf("stored %q as %d bytes, crc32c %08x (set: %v), ETag %q; sent %d bytes, crc32c %08x",
			key, obj.GetSize(), obj.GetCrc32C(), obj.Crc32C != nil, obj.GetEtag(), size, crc)
	}
	return obj, nil
}

// faultCommitted returns the committed chunks of upload id by index, from
// every page of GetUpload.
func faultCommitted(ctx context.Context, c ferryv1connect.UploadServiceClient, id string) (map[int64]*ferryv1.CommittedChunk, error) {
	committed := map[int64]*ferryv1.CommittedChunk{}
	token := ""
	for {
		resp, err := faultCall(ctx, func(ctx context.Context) (*connect.Response[ferryv1.GetUploadResponse], error) {
			return c.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id, PageToken: token}))
		})
		if err != nil {
			return nil, err
		}
		if got := resp.Msg.GetUpload().GetUploadId(); got != id {
			return nil, fmt.Errorf("GetUpload %s described upload %q", id, got)
		}
		for _, ch := range resp.Msg.GetChunks() {
			committed[ch.GetIndex()] = ch
		}
		if token = resp.Msg.GetNextPageToken(); token == "" {
			return committed, nil
		}
	}
}

// faultRequireCommittedMatch fails the test unless every committed chunk
// has the size and CRC32C of the chunk sent with its index.
func faultRequireCommittedMatch(t testing.TB, committed map[int64]*ferryv1.CommittedChunk, chunks []*ferryv1.Chunk) {
	t.Helper()
	for i, c := range committed {
		if i < 0 || i >= int64(len(chunks)) {
			t.Fatalf("GetUpload reports chunk %d committed; the object has chunks 0 to %d", i, len(chunks)-1)
		}
		if want := chunks[i]; c.GetSize() != int64(len(want.GetData())) || c.GetCrc32C() != want.GetCrc32C() {
			t.Fatalf("committed chunk %d: %d bytes, crc32c %08x; sent %d bytes, crc32c %08x",
				i, c.GetSize(), c.GetCrc32C(), len(want.GetData()), want.GetCrc32C())
		}
	}
}

// faultRequireCommitted fails the test unless exactly the chunks want are
// committed, each with the size and CRC32C it was sent with.
func faultRequireCommitted(t testing.TB, committed map[int64]*ferryv1.CommittedChunk, chunks []*ferryv1.Chunk, want []int64) {
	t.Helper()
	var got []int64
	for i := range committed {
		got = append(got, i)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("committed chunks %v, want %v", got, want)
	}
	faultRequireCommittedMatch(t, committed, chunks)
}

// faultRequireSameStatus fails the test unless every client's server
// reports all chunks of upload id committed, as sent.
func faultRequireSameStatus(ctx context.Context, t testing.TB, clients [2]ferryv1connect.UploadServiceClient, id string, chunks []*ferryv1.Chunk) {
	t.Helper()
	for i, c := range clients {
		committed, err := faultCommitted(ctx, c, id)
		if err != nil {
			t.Fatalf("GetUpload on server %c: %v", 'A'+i, err)
		}
		faultRequireCommitted(t, committed, chunks, faultIndexes(len(chunks)))
	}
}

// faultRequireCompleted fails the test unless the other server knows
// upload id is completed as obj: GetUpload reports that object and every
// chunk committed, and completing it again returns the same object.
func faultRequireCompleted(ctx context.Context, t testing.TB, c ferryv1connect.UploadServiceClient, id string, obj *ferryv1.Object) {
	t.Helper()
	st, err := c.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id}))
	if err != nil || st.Msg.GetObject().GetEtag() != obj.GetEtag() || int64(len(st.Msg.GetChunks())) != st.Msg.GetChunkCount() {
		t.Errorf("GetUpload of the completed upload: %v, %v; want the object (ETag %q) and every chunk", st, err, obj.GetEtag())
	}
	again, err := c.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id}))
	if err != nil || again.Msg.GetObject().GetEtag() != obj.GetEtag() {
		t.Errorf("CompleteUpload of the completed upload: %v, %v; want the object (ETag %q)", again, err, obj.GetEtag())
	}
}

// faultRequireObject fails the test unless obj describes content stored
// under key: same size and whole-object CRC32C.
func faultRequireObject(t testing.TB, obj *ferryv1.Object, key string, content []byte) {
	t.Helper()
	crc := crc32.Checksum(content, castagnoli)
	if obj.GetKey() != key || obj.GetSize() != int64(len(content)) || obj.Crc32C == nil || obj.GetCrc32C() != crc {
		t.Fatalf("stored object: key %q, %d bytes, crc32c %08x (set: %v); want %q, %d bytes, crc32c %08x",
			obj.GetKey(), obj.GetSize(), obj.GetCrc32C(), obj.Crc32C != nil, key, len(content), crc)
	}
}

// faultRequireDownload downloads key from the server at url over gRPC and
// fails the test unless its header and bytes are content's.
func faultRequireDownload(ctx context.Context, t *testing.T, url, key string, content []byte) {
	t.Helper()
	c := ferryv1connect.NewDownloadServiceClient(faultHTTPClient(t, "grpc"), url, connect.WithGRPC())
	header, got, err := download(ctx, t, c, &ferryv1.DownloadRequest{Key: key})
	if err != nil {
		t.Fatalf("download %s: %v", key, err)
	}
	crc := crc32.Checksum(content, castagnoli)
	if obj := header.GetObject(); obj.GetSize() != int64(len(content)) || obj.Crc32C == nil || obj.GetCrc32C() != crc {
		t.Errorf("download header: %d bytes, crc32c %08x (set: %v); want %d bytes, crc32c %08x",
			obj.GetSize(), obj.GetCrc32C(), obj.Crc32C != nil, len(content), crc)
	}
	if got := crc32.Checksum(got, castagnoli); got != crc {
		t.Errorf("downloaded bytes have crc32c %08x, want %08x", got, crc)
	}
	if len(got) != len(content) || firstDiff(got, content) >= 0 {
		t.Fatalf("downloaded %d bytes, first difference at byte %d; want the %d bytes uploaded", len(got), firstDiff(got, content), len(content))
	}
}

// faultIndexes returns 0, 1, ..., n-1.
func faultIndexes[N int | int64](n N) []int64 {
	idx := make([]int64, n)
	for i := range idx {
		idx[i] = int64(i)
	}
	return idx
}

// faultPtr returns a pointer to v.
func faultPtr[T any](v T) *T { return &v }
