package integration

// Completion is idempotent (issue 12, finding 10): a retried or
// concurrent completion of one upload ID returns the same object, on both
// stores, across server instances and restarts, through the Go client and
// the ferry CLI, with and without --if-none-match.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/upload"
)

// errAnswerLost is how rpcProxy drops an answer.
var errAnswerLost = errors.New("answer dropped by the test's proxy")

// rpcProxy is an HTTP/1.1 reverse proxy in front of a ferry server (for
// the Connect and gRPC-Web protocols) that counts the calls of each
// procedure and can lose answers: the server gets the request and answers
// it in full, and the client sees its connection close instead, as when
// a load balancer or a network drops the answer.
type rpcProxy struct {
	url string

	mu     sync.Mutex
	calls  map[string]int         // by procedure name ("CompleteUpload")
	drop   map[string]int         // answers of the next n calls to lose
	onDrop func(procedure string) // called before an answer is lost, or nil
}

// startRPCProxy starts a proxy to the server at target (a base URL) and
// stops it when the test ends.
func startRPCProxy(t testing.TB, target string) *rpcProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &rpcProxy{calls: map[string]int{}, drop: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{}
	rp.ModifyResponse = func(resp *http.Response) error {
		proc := path.Base(resp.Request.URL.Path)
		p.mu.Lock()
		lose := p.drop[proc] > 0
		if lose {
			p.drop[proc]--
		}
		onDrop := p.onDrop
		p.mu.Unlock()
		if !lose {
			return nil
		}
		// Let the server finish its answer, then lose it.
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if onDrop != nil {
			onDrop(proc)
		}
		return errAnswerLost
	}
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if errors.Is(err, errAnswerLost) {
			panic(http.ErrAbortHandler) // closes the client's connection
		}
		w.WriteHeader(http.StatusBadGateway)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.calls[path.Base(r.URL.Path)]++
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

// loseNext loses the answers of the next n calls of procedure.
func (p *rpcProxy) loseNext(procedure string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop[procedure] += n
}

// count returns how many calls of procedure the proxy saw.
func (p *rpcProxy) count(procedure string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[procedure]
}

// completeBackends are the stores, each with a way to start one more
// server in front of the same store: a second instance on S3 (several
// servers share a bucket), a restart on the disk store (one server per
// directory).
var completeBackends = []struct {
	name string
	// start starts the first server and returns it with a function that
	// starts another on the same store.
	start func(t *testing.T) (*server, func() *server)
}{
	{"s3", func(t *testing.T) (*server, func() *server) {
		env := requireS3(t)
		args := env.serveArgs(env.newBucket(t))
		return startServer(t, args...), func() *server { return startServer(t, args...) }
	}},
	{"disk", func(t *testing.T) (*server, func() *server) {
		data := t.TempDir()
		first := startServer(t, "--data", data)
		return first, func() *server {
			first.Stop(t)
			return startServer(t, "--data", data)
		}
	}},
}

// completeUpload creates an if_none_match upload of content under key in
// chunks of faultChunkSize and commits every chunk, without completing it.
func completeUpload(ctx context.Context, t testing.TB, c ferryv1connect.UploadServiceClient, key string, content []byte) string {
	t.Helper()
	spec := faultSpec(key, content)
	spec.IfNoneMatch = true
	created, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: spec}))
	if err != nil {
		t.Fatalf("CreateUpload: %v", err)
	}
	id := created.Msg.GetUpload().GetUploadId()
	if err := faultStreamChunks(ctx, c, id, splitChunks(content, faultChunkSize)...); err != nil {
		t.Fatalf("send chunks: %v", err)
	}
	return id
}

// TestCompleteConcurrent completes each of ten if_none_match uploads twice
// at once, through two server instances on S3: both callers must get the
// same object (the same ETag). Before completion records, one of them got
// ALREADY_EXISTS or NOT_FOUND in 6 to 8 rounds of 10 on MinIO.
func TestCompleteConcurrent(t *testing.T) {
	t.Parallel()
	for _, backend := range completeBackends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			first, another := backend.start(t)
			servers := [2]*server{first, first}
			if backend.name == "s3" {
				servers[1] = another()
			}
			ctx, cancel := context.WithTimeout(context.Background(), faultTestTimeout)
			defer cancel()
			var clients [2]ferryv1connect.UploadServiceClient
			for i, s := range servers {
				clients[i] = ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "grpc"), s.url, connect.WithGRPC())
			}
			const rounds = 10
			same := 0
			for round := range rounds {
				content := faultContent(t, faultChunkSize+1000+int64(round), 300+uint64(round))
				crc := crc32.Checksum(content, castagnoli)
				key := fmt.Sprintf("complete/concurrent/%d", round)
				id := completeUpload(ctx, t, clients[0], key, content)
				var objects [2]*ferryv1.Object
				var errs [2]error
				start := make(chan struct{})
				var g errgroup.Group
				for i := range 2 {
					g.Go(func() error {
						<-start
						res, err := clients[i].CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: &crc}))
						if err == nil {
							objects[i] = res.Msg.GetObject()
						}
						errs[i] = err
						return nil
					})
				}
				close(start)
				_ = g.Wait()
				switch {
				case errs[0] != nil || errs[1] != nil:
					t.Logf("round %d: completions answered %v and %v", round, errs[0], errs[1])
				case objects[0].GetEtag() != objects[1].GetEtag():
					t.Logf("round %d: the completions answered ETags %q and %q", round, objects[0].GetEtag(), objects[1].GetEtag())
				default:
					same++
					faultRequireObject(t, objects[0], key, content)
				}
			}
			t.Logf("%d of %d rounds: both callers got the same object", same, rounds)
			if same != rounds {
				t.Errorf("%d of %d rounds: both callers got the same object; want all", same, rounds)
			}
		})
	}
}

// TestCompleteAnswerLost loses the answer of a completion and lets the
// client retry: the Go Uploader (CompleteUpload of a multi-chunk upload,
// and a one-chunk upload, both with IfNoneMatch), and a stock client's
// Upload stream naming the upload with its chunks and a finish, sent again
// as it was. Each retry, on the same server or another instance, gets the
// object the lost answer carried, and GetUpload reports it.
func TestCompleteAnswerLost(t *testing.T) {
	t.Parallel()
	for _, backend := range completeBackends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv, another := backend.start(t)
			proxy := startRPCProxy(t, srv.url)
			ctx, cancel := context.WithTimeout(context.Background(), faultTestTimeout)
			defer cancel()
			c := ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "connect"), proxy.url)
			u := upload.NewUploader(c, upload.UploaderOptions{ChunkSize: faultChunkSize, Retry: faultRetryPolicy()})

			for _, size := range []int64{3*faultChunkSize + 17, 1000} {
				key := fmt.Sprintf("complete/lost/%d", size)
				content := faultContent(t, size, 400+uint64(size))
				before := proxy.count("CompleteUpload")
				proxy.loseNext("CompleteUpload", 1)
				obj, err := u.Upload(ctx, key, bytes.NewReader(content), size, upload.ObjectOptions{IfNoneMatch: true})
				if err != nil {
					t.Fatalf("upload of %d bytes whose completion's answer was lost: %v", size, err)
				}
				faultRequireObject(t, obj, key, content)
				if n := proxy.count("CompleteUpload") - before; n != 2 {
					t.Errorf("upload of %d bytes: %d CompleteUpload calls, want 2 (the lost one and its retry)", size, n)
				}
				faultRequireDownload(ctx, t, srv.url, key, content)
			}

			// A stock client's one stream: header naming the upload,
			// chunks, finish. Its answer is lost; it sends it all again,
			// to another instance (or the restarted server).
			const key = "complete/lost/stream"
			content := faultContent(t, 2*faultChunkSize+5, 410)
			size, crc := int64(len(content)), crc32.Checksum(content, castagnoli)
			spec := faultSpec(key, content)
			spec.IfNoneMatch = true
			created, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: spec}))
			if err != nil {
				t.Fatal(err)
			}
			id := created.Msg.GetUpload().GetUploadId()
			send := func(c ferryv1connect.UploadServiceClient) (*ferryv1.UploadResponse, error) {
				stream := c.Upload(ctx)
				msgs := []*ferryv1.UploadRequest{faultResumeHeader(id)}
				for _, ch := range splitChunks(content, faultChunkSize) {
					msgs = append(msgs, faultChunkMessage(ch))
				}
				msgs = append(msgs, &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{Size: &size, Crc32C: &crc}}})
				for _, m := range msgs {
					if err := stream.Send(m); err != nil {
						return nil, faultStreamError(stream, err)
					}
				}
				res, err := stream.CloseAndReceive()
				if err != nil {
					return nil, err
				}
				return res.Msg, nil
			}
			proxy.loseNext("Upload", 1)
			if _, err := send(c); err == nil || !upload.IsTransient(ctx, err) {
				t.Fatalf("the stream whose answer was lost: %v (code %v), want an error the client retries", err, connect.CodeOf(err))
			}
			other := another()
			direct := ferryv1connect.NewUploadServiceClient(faultHTTPClient(t, "grpc"), other.url, connect.WithGRPC())
			res, err := send(direct)
			if err != nil {
				t.Fatalf("the stream sent again: %v (code %v)", err, connect.CodeOf(err))
			}
			faultRequireObject(t, res.GetObject(), key, content)
			if len(res.GetCommitted()) != 3 {
				t.Errorf("the stream sent again committed %v, want its 3 chunks", res.GetCommitted())
			}
			st, err := direct.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id}))
			if err != nil || st.Msg.GetObject().GetEtag() != res.GetObject().GetEtag() || len(st.Msg.GetChunks()) != 3 {
				t.Fatalf("GetUpload of the completed upload: %v, %v; want the object (ETag %q) and its 3 chunks", st, err, res.GetObject().GetEtag())
			}
			faultRequireDownload(ctx, t, other.url, key, content)
		})
	}
}

// TestCompleteCLI runs `ferry upload --if-none-match` (as the README
// tells users to, again after a failure) when a completion's answer is
// lost, and when the CLI is killed after the server completed its upload
// but before it heard so: both end in success, printing the object, and
// the second run sends no chunk again. Before completion records, the
// first failed with not_found and the run after it with already_exists,
// against its own object.
func TestCompleteCLI(t *testing.T) {
	t.Parallel()
	for _, backend := range completeBackends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := backend.start(t)
			proxy := startRPCProxy(t, srv.url)
			file := generated(t, 3*faultChunkSize+99, 420)
			args := func(key string) []string {
				return []string{"upload", "--json", "--if-none-match", "--server", proxy.url, "--protocol", "connect", "--chunk-size", "5MiB", file, key}
			}

			// The answer lost: the CLI's own retry succeeds.
			env := []string{"FERRY_CACHE_DIR=" + t.TempDir()}
			proxy.loseNext("CompleteUpload", 1)
			code, stdout, stderr := runCLI(t, nil, env, args("complete/cli/lost")...)
			if code != 0 {
				t.Fatalf("ferry upload whose completion's answer was lost: status %d\n%s", code, stderr)
			}
			if res := decodeCLIJSON(t, stdout); res.Key != "complete/cli/lost" || res.Size != fileSize(t, file) {
				t.Errorf("printed %+v", res)
			}
			requireDownloadedCLI(t, srv.url, "complete/cli/lost", file)

			// Killed after the server completed the upload, before the
			// answer reached it; run again.
			cache := t.TempDir()
			env = []string{"FERRY_CACHE_DIR=" + cache}
			key := "complete/cli/killed"
			first := startCLI(t, nil, env, args(key)...)
			proxy.mu.Lock()
			proxy.drop["CompleteUpload"]++
			proxy.onDrop = func(string) {
				_ = first.cmd.Process.Kill()
				<-first.done
			}
			proxy.mu.Unlock()
			first.wait(t)
			proxy.mu.Lock()
			proxy.onDrop = nil
			proxy.mu.Unlock()
			if proxy.drop["CompleteUpload"] != 0 {
				t.Fatalf("the first run ended before its completion: %v\n%s", first.err, first.stderr.String())
			}
			id := recordedUploadID(t, cache)
			if id == "" {
				t.Fatal("the killed run left no upload state")
			}
			chunksBefore := proxy.count("Upload") + proxy.count("PutChunk")
			code, stdout, stderr = runCLI(t, nil, env, args(key)...)
			if code != 0 {
				t.Fatalf("ferry upload run again after the kill: status %d\n%s", code, stderr)
			}
			if !strings.Contains(stderr, "continuing upload "+id) {
				t.Errorf("the second run did not continue upload %s: %q", id, stderr)
			}
			if res := decodeCLIJSON(t, stdout); res.Key != key || res.Size != fileSize(t, file) || !res.Resumed {
				t.Errorf("printed %+v; want %s, %d bytes, resumed", res, key, fileSize(t, file))
			}
			if n := proxy.count("Upload") + proxy.count("PutChunk") - chunksBefore; n != 0 {
				t.Errorf("the second run made %d chunk calls, want none: the upload was complete", n)
			}
			if got := recordedUploadID(t, cache); got != "" {
				t.Errorf("upload state %s is left after success", got)
			}
			requireDownloadedCLI(t, srv.url, key, file)
		})
	}
}

// waitUntil polls cond every 20 ms until it holds, failing the test after
// timeout with what.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
