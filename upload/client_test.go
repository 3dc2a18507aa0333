package upload_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/cenkalti/backoff/v5"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
	"github.com/ferryhq/ferry/upload"
)

const (
	mib = 1 << 20
	// chunk is the chunk size of the tests: S3's smallest part, so that a
	// few chunks make a multi-chunk upload of a few MiB.
	chunk = 5 * mib
)

// protocols are the Connect client options of the three protocols.
var protocols = []struct {
	name string
	opts []connect.ClientOption
}{
	{"connect", nil},
	{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
}

// server is an upload service on a disk store, served in-process over
// HTTP/1.1 and h2c.
type server struct {
	url   string
	store *countingStore
}

func newServer(t *testing.T) *server {
	t.Helper()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := &countingStore{Store: disk, parts: map[int]int{}}
	svc, err := upload.NewService(upload.Config{Store: st, MaxChunkSize: 16 * mib})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(svc, connect.WithReadMaxBytes(17*mib)))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return &server{url: srv.URL, store: st}
}

// client returns an UploadService client of the protocol, over h2c for
// gRPC and HTTP/1.1 otherwise (as the ferry command does), through rt when
// it is not nil.
func (s *server) client(t *testing.T, protocol string, rt *cutTransport) ferryv1connect.UploadServiceClient {
	t.Helper()
	if rt == nil {
		return s.clientThrough(t, protocol, nil)
	}
	return s.clientThrough(t, protocol, func(base http.RoundTripper) http.RoundTripper {
		rt.base = base
		return rt
	})
}

// clientThrough is client with the transport wrap returns for the base
// one (nil: the base one).
func (s *server) clientThrough(t *testing.T, protocol string, wrap func(http.RoundTripper) http.RoundTripper) ferryv1connect.UploadServiceClient {
	t.Helper()
	base := &http.Transport{Protocols: new(http.Protocols), MaxIdleConnsPerHost: 8}
	var opts []connect.ClientOption
	for _, p := range protocols {
		if p.name == protocol {
			opts = p.opts
		}
	}
	if protocol == "grpc" {
		base.Protocols.SetUnencryptedHTTP2(true)
	} else {
		base.Protocols.SetHTTP1(true)
	}
	t.Cleanup(base.CloseIdleConnections)
	var transport http.RoundTripper = base
	if wrap != nil {
		transport = wrap(base)
	}
	return ferryv1connect.NewUploadServiceClient(&http.Client{Transport: transport}, s.url, opts...)
}

// object returns the bytes stored under key.
func (s *server) object(t *testing.T, key string) []byte {
	t.Helper()
	r, _, err := s.store.ReadObject(context.Background(), key, 0, -1, store.ReadOptions{})
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

// countingStore counts the parts written, by part number.
type countingStore struct {
	store.Store
	mu    sync.Mutex
	parts map[int]int // part number → UploadPart calls that committed it
}

func (s *countingStore) UploadPart(ctx context.Context, key, uploadID string, number int, r io.Reader, size int64, crc32c uint32) (store.Part, error) {
	p, err := s.Store.UploadPart(ctx, key, uploadID, number, r, size, crc32c)
	if err == nil {
		s.mu.Lock()
		s.parts[number]++
		s.mu.Unlock()
	}
	return p, err
}

// writes returns how many times each part was committed, and in all.
func (s *countingStore) writes() (map[int]int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	parts := make(map[int]int, len(s.parts))
	for n, c := range s.parts {
		parts[n] = c
		total += c
	}
	return parts, total
}

// settle waits until no part has been written for 200 ms, and returns the
// writes by part number.
func (s *countingStore) settle() map[int]int {
	_, last := s.writes()
	for {
		time.Sleep(200 * time.Millisecond)
		parts, total := s.writes()
		if total == last {
			return parts
		}
		last = total
	}
}

// cutTransport cuts the request bodies of Upload streams short, as a
// connection reset would: the next len(cuts) Upload streams fail after
// cuts[i] bytes of body. It counts the bytes of all Upload streams.
type cutTransport struct {
	base http.RoundTripper
	sent atomic.Int64 // bytes of Upload request bodies
	mu   sync.Mutex
	cuts []int64
	done int // streams cut
}

// errReset is the error a cut request body fails with.
var errReset = &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}

func (c *cutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/Upload") {
		body := &cutBody{ReadCloser: req.Body, left: -1, sent: &c.sent}
		c.mu.Lock()
		if len(c.cuts) > 0 {
			body.left = c.cuts[0]
			c.cuts = c.cuts[1:]
			c.done++
		}
		c.mu.Unlock()
		req = req.Clone(req.Context())
		req.Body = body
		req.GetBody = nil
	}
	return c.base.RoundTrip(req)
}

// cutBody fails with errReset after left bytes, unless left is negative.
type cutBody struct {
	io.ReadCloser
	left int64
	sent *atomic.Int64
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, errReset
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
	}
	b.sent.Add(int64(n))
	return n, err
}

// fastRetry waits 10 ms between attempts, so tests of failures are quick.
var fastRetry = upload.RetryPolicy{BackOff: func() backoff.BackOff { return backoff.NewConstantBackOff(10 * time.Millisecond) }}

// settleRetry waits 200 ms between attempts: time for the server to finish
// storing a chunk it had received whole when the stream broke, so that
// GetUpload reports it and the tests can require that no committed chunk
// is sent again.
var settleRetry = upload.RetryPolicy{BackOff: func() backoff.BackOff { return backoff.NewConstantBackOff(200 * time.Millisecond) }}

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n]
}

// readerOnly hides every method of r but Read, as standard input would.
type readerOnly struct{ r io.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }

// checkObject checks that obj describes data stored under key.
func checkObject(t *testing.T, srv *server, obj *ferryv1.Object, key string, data []byte) {
	t.Helper()
	if obj.GetKey() != key || obj.GetSize() != int64(len(data)) || obj.GetCrc32C() != store.CRC32C(data) {
		t.Errorf("object = %q, %d bytes, CRC32C %08x; want %q, %d bytes, %08x",
			obj.GetKey(), obj.GetSize(), obj.GetCrc32C(), key, len(data), store.CRC32C(data))
	}
	if got := srv.object(t, key); !bytes.Equal(got, data) {
		t.Errorf("stored %d bytes differ from the %d sent", len(got), len(data))
	}
}

func TestUploaderRoundTrip(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	cases := []struct {
		name        string
		size        int
		concurrency int
		stream      bool // io.Reader of unknown size
	}{
		{"empty", 0, 4, false},
		{"small", 1000, 4, false},
		{"one full chunk", chunk, 4, false},
		{"parallel", 2*chunk + 12345, 4, false},
		{"sequential", 2*chunk + 1, 1, false},
		{"stream empty", 0, 4, true},
		{"stream small", 777, 4, true},
		{"stream chunks", 2*chunk + 99, 2, true},
		{"stream whole chunks", 2 * chunk, 4, true},
	}
	for _, p := range protocols {
		for i, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				data := randomBytes(uint64(i), tc.size)
				key := p.name + "/" + tc.name
				var (
					mu       sync.Mutex
					lastDone int64
				)
				u := upload.NewUploader(srv.client(t, p.name, nil), upload.UploaderOptions{
					ChunkSize:   chunk,
					Concurrency: tc.concurrency,
					Progress: func(done, total int64) {
						mu.Lock()
						defer mu.Unlock()
						lastDone = done
					},
				})
				var obj *ferryv1.Object
				var err error
				if tc.stream {
					obj, err = u.UploadStream(context.Background(), key, readerOnly{bytes.NewReader(data)}, upload.ObjectOptions{ContentType: "application/x-test"})
				} else {
					obj, err = u.Upload(context.Background(), key, bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{ContentType: "application/x-test"})
				}
				if err != nil {
					t.Fatal(err)
				}
				checkObject(t, srv, obj, key, data)
				if obj.GetContentType() != "application/x-test" {
					t.Errorf("content type %q, want application/x-test", obj.GetContentType())
				}
				mu.Lock()
				if lastDone != int64(len(data)) {
					t.Errorf("last progress report: %d bytes done, want %d", lastDone, len(data))
				}
				mu.Unlock()
			})
		}
	}
}

// TestUploaderBrokenStream cuts Upload streams mid-chunk and checks that
// the upload completes and that no chunk committed before a cut is sent
// again: what is sent again is the chunks that were in flight.
func TestUploaderBrokenStream(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		chunks      int
		concurrency int
		cuts        []int64 // bytes of stream body after which to cut
	}{
		{"one stream, one cut", 4, 1, []int64{2*chunk + chunk/2}},
		{"one stream, cuts in a row", 4, 1, []int64{2*chunk + 100, chunk + 100, 100}},
		{"parallel streams", 6, 3, []int64{chunk + chunk/2, chunk / 3}},
	}
	for _, p := range protocols {
		for i, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				srv := newServer(t)
				rt := &cutTransport{cuts: tc.cuts}
				u := upload.NewUploader(srv.client(t, p.name, rt), upload.UploaderOptions{
					ChunkSize:   chunk,
					Concurrency: tc.concurrency,
					Retry:       settleRetry,
				})
				data := randomBytes(uint64(100+i), tc.chunks*chunk-7)
				obj, err := u.Upload(context.Background(), "k", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{})
				if err != nil {
					t.Fatal(err)
				}
				checkObject(t, srv, obj, "k", data)
				if rt.done != len(tc.cuts) {
					t.Fatalf("%d streams cut, want %d", rt.done, len(tc.cuts))
				}
				// A chunk that reached the server whole may be committed after
				// the client asked what is committed (over HTTP/1.1 the server
				// goes on reading what the socket holds), and so be sent and
				// committed twice: at most the two chunks the socket buffers
				// hold per cut. Chunk 0, long committed when a single stream is
				// cut, must not be sent again.
				parts, total := srv.store.writes()
				if extra := total - tc.chunks; extra > 2*len(tc.cuts) {
					t.Errorf("%d part writes for %d chunks (by part number: %v): committed chunks were sent again", total, tc.chunks, parts)
				}
				if tc.concurrency == 1 && parts[1] != 1 {
					t.Errorf("chunk 0 was committed %d times, want once", parts[1])
				}
				// Each cut stream may have had all it sent in flight; anything
				// beyond that (and the few bytes of headers) was sent twice.
				var cut int64
				for _, n := range tc.cuts {
					cut += n
				}
				if sent, limit := rt.sent.Load(), int64(len(data))+cut+64<<10; sent > limit {
					t.Errorf("sent %d bytes for %d bytes of data and %d bytes lost to cuts", sent, len(data), cut)
				}
			})
		}
	}
}

// TestUploaderResume fails an upload for good, then resumes it by ID: the
// chunks the first attempt committed are not sent again.
func TestUploaderResume(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t)
			data := randomBytes(7, 4*chunk+1)
			var created []string
			failing := upload.NewUploader(srv.client(t, p.name, &cutTransport{cuts: []int64{2*chunk + chunk/2}}), upload.UploaderOptions{
				ChunkSize:   chunk,
				Concurrency: 1,
				Retry:       upload.RetryPolicy{MaxAttempts: 1},
				Created:     func(id string) { created = append(created, id) },
			})
			_, err := failing.Upload(context.Background(), "k", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{})
			var interrupted *upload.InterruptedError
			if !errors.As(err, &interrupted) {
				t.Fatalf("Upload through a cut stream: %v, want an *InterruptedError", err)
			}
			if len(created) != 1 || created[0] != interrupted.UploadID {
				t.Errorf("Created was called with %v; want once with the upload ID %s", created, interrupted.UploadID)
			}
			if !upload.IsTransient(context.Background(), err) {
				t.Errorf("IsTransient(%v) = false for a connection reset", err)
			}
			// Over HTTP/1.1 the server goes on storing the chunks it had
			// received whole after the client went away.
			before := srv.store.settle()
			if before[1] != 1 {
				t.Fatalf("chunk 0 was committed %d times before the cut, want 1", before[1])
			}

			u := upload.NewUploader(srv.client(t, p.name, nil), upload.UploaderOptions{Concurrency: 2})
			obj, err := u.Resume(context.Background(), interrupted.UploadID, bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			checkObject(t, srv, obj, "k", data)
			after, total := srv.store.writes()
			for n, c := range before {
				if after[n] != c {
					t.Errorf("part %d, committed before the resume, was written again", n)
				}
			}
			// 5 chunks, each written once; or one more when the server,
			// still storing a chunk it had received whole before the cut
			// (HTTP/1.1), committed it after the resume had asked which
			// chunks were committed, so the resume sent it too. Chunks
			// committed before the resume are never rewritten (above).
			if total != 5 && total != 6 {
				t.Errorf("%d part writes in all (%v), want 5, or 6 after a late server-side commit", total, after)
			}
		})
	}
}

// TestUploaderResumeChangedFile resumes with data whose committed chunk
// differs: that chunk is sent again, so the object is the new data.
func TestUploaderResumeChangedFile(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	ctx := context.Background()
	client := srv.client(t, "connect", nil)
	size := int64(2*chunk + 5)
	res, err := client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "k", Size: &size, ChunkSize: chunk}}))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetUpload().GetUploadId()
	old := randomBytes(1, int(size))
	crc := store.CRC32C(old[:chunk])
	if _, err := client.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: &ferryv1.Chunk{Index: 0, Data: old[:chunk], Crc32C: &crc}})); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(2, int(size))
	obj, err := upload.NewUploader(client, upload.UploaderOptions{}).Resume(ctx, id, bytes.NewReader(data), size)
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, srv, obj, "k", data)
}

// tamperingClient reports a different CRC32C for the completed object.
type tamperingClient struct {
	ferryv1connect.UploadServiceClient
}

func (c tamperingClient) CompleteUpload(ctx context.Context, req *connect.Request[ferryv1.CompleteUploadRequest]) (*connect.Response[ferryv1.CompleteUploadResponse], error) {
	res, err := c.UploadServiceClient.CompleteUpload(ctx, req)
	if err == nil {
		*res.Msg.Object.Crc32C ^= 1
	}
	return res, err
}

func TestUploaderVerifiesObject(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	u := upload.NewUploader(tamperingClient{srv.client(t, "connect", nil)}, upload.UploaderOptions{ChunkSize: chunk})
	data := randomBytes(3, chunk+1)
	_, err := u.Upload(context.Background(), "k", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{})
	if !errors.Is(err, upload.ErrObjectMismatch) {
		t.Fatalf("Upload with a wrong CRC32C reported: %v, want ErrObjectMismatch", err)
	}
}

func TestUploaderErrors(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	ctx := context.Background()
	u := upload.NewUploader(srv.client(t, "grpc", nil), upload.UploaderOptions{ChunkSize: chunk, Retry: fastRetry})
	data := randomBytes(4, chunk+1)
	cases := []struct {
		name string
		run  func() error
		code connect.Code
	}{
		{"reserved key", func() error {
			_, err := u.Upload(ctx, ".ferry/x", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{})
			return err
		}, connect.CodeInvalidArgument},
		{"small reserved key", func() error {
			_, err := u.Upload(ctx, ".ferry/x", bytes.NewReader(data[:10]), 10, upload.ObjectOptions{})
			return err
		}, connect.CodeInvalidArgument},
		{"unknown upload", func() error {
			_, err := u.Resume(ctx, "00000000-0000-4000-8000-000000000000", bytes.NewReader(data), int64(len(data)))
			return err
		}, connect.CodeNotFound},
		{"if none match", func() error {
			if _, err := u.Upload(ctx, "exists", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{}); err != nil {
				return err
			}
			_, err := u.Upload(ctx, "exists", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{IfNoneMatch: true})
			return err
		}, connect.CodeAlreadyExists},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if code := connect.CodeOf(err); err == nil || code != tc.code {
				t.Fatalf("error %v (code %v), want code %v", err, code, tc.code)
			}
			if upload.IsTransient(ctx, err) {
				t.Errorf("IsTransient(%v) = true", err)
			}
		})
	}
}

// limitedReader records how far reading ran ahead of the chunks the store
// committed.
type limitedReader struct {
	r     io.Reader
	st    *countingStore
	read  int64
	ahead int64 // most bytes read beyond the committed ones
}

func (l *limitedReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.read += int64(n)
	_, parts := l.st.writes()
	l.ahead = max(l.ahead, l.read-int64(parts)*chunk)
	return n, err
}

// TestUploadStreamMemory checks that UploadStream holds at most
// Concurrency chunks, plus the first 5 MiB it reads to tell a small input.
func TestUploadStreamMemory(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	const concurrency = 2
	data := randomBytes(5, 4*chunk)
	r := &limitedReader{r: bytes.NewReader(data), st: srv.store}
	u := upload.NewUploader(srv.client(t, "grpc", nil), upload.UploaderOptions{ChunkSize: chunk, Concurrency: concurrency})
	obj, err := u.UploadStream(context.Background(), "k", r, upload.ObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, srv, obj, "k", data)
	if limit := int64(concurrency)*chunk + 1; r.ahead > limit {
		t.Errorf("read %d bytes ahead of the committed chunks, want at most %d", r.ahead, limit)
	}
}
