package download_test

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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/cenkalti/backoff/v5"

	"github.com/ferryhq/ferry/download"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
	"github.com/ferryhq/ferry/upload"
)

const mib = 1 << 20

// protocols are the Connect client options of the three protocols.
var protocols = []struct {
	name string
	opts []connect.ClientOption
}{
	{"connect", nil},
	{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
}

// server is a download service on a disk store, served in-process over
// HTTP/1.1 and h2c.
type server struct {
	url   string
	store store.Store
}

func newServer(t *testing.T) *server {
	t.Helper()
	st, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewDownloadServiceHandler(download.NewService(st)))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return &server{url: srv.URL, store: st}
}

// client returns a DownloadService client of the protocol, over h2c for
// gRPC and HTTP/1.1 otherwise, through rt when it is not nil, with extra
// client options. It does not ask for compressed responses: object data
// is usually incompressible.
func (s *server) client(t *testing.T, protocol string, rt *cutTransport, extra ...connect.ClientOption) ferryv1connect.DownloadServiceClient {
	t.Helper()
	base := &http.Transport{Protocols: new(http.Protocols), MaxIdleConnsPerHost: 8}
	opts := append([]connect.ClientOption{connect.WithAcceptCompression("gzip", nil, nil)}, extra...)
	for _, p := range protocols {
		if p.name == protocol {
			opts = append(opts, p.opts...)
		}
	}
	if protocol == "grpc" {
		base.Protocols.SetUnencryptedHTTP2(true)
	} else {
		base.Protocols.SetHTTP1(true)
	}
	t.Cleanup(base.CloseIdleConnections)
	var transport http.RoundTripper = base
	if rt != nil {
		rt.base = base
		transport = rt
	}
	return ferryv1connect.NewDownloadServiceClient(&http.Client{Transport: transport}, s.url, opts...)
}

// put stores data as the object key, with its CRC32C, and returns its ETag.
func (s *server) put(t *testing.T, key string, data []byte) string {
	t.Helper()
	ctx := context.Background()
	id, err := s.store.CreateMultipartUpload(ctx, key, store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	crc := store.CRC32C(data)
	part, err := s.store.UploadPart(ctx, key, id, 1, bytes.NewReader(data), int64(len(data)), crc)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.store.CompleteMultipartUpload(ctx, key, id, []store.Part{part}, store.CompleteOptions{CRC32C: crc})
	if err != nil {
		t.Fatal(err)
	}
	return info.ETag
}

// cutTransport cuts the response bodies of Download streams short, as a
// connection reset would: the next len(cuts) responses fail after cuts[i]
// bytes of body. It counts the bytes of all Download responses, and can
// flip one byte of the next response.
type cutTransport struct {
	base     http.RoundTripper
	received atomic.Int64 // bytes of Download response bodies
	mu       sync.Mutex
	cuts     []int64
	flipAt   int64 // when > 0, flip the byte at this offset of the next response
}

var errReset = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}

func (c *cutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := c.base.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/Download") {
		return res, err
	}
	body := &cutBody{ReadCloser: res.Body, left: -1, received: &c.received}
	c.mu.Lock()
	if len(c.cuts) > 0 {
		body.left = c.cuts[0]
		c.cuts = c.cuts[1:]
	}
	body.flipAt, c.flipAt = c.flipAt, 0
	c.mu.Unlock()
	res.Body = body
	return res, nil
}

type cutBody struct {
	io.ReadCloser
	left     int64 // bytes before the cut; negative: no cut
	flipAt   int64
	offset   int64
	received *atomic.Int64
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
	if b.flipAt > 0 && b.flipAt >= b.offset && b.flipAt < b.offset+int64(n) {
		p[b.flipAt-b.offset] ^= 0x80
	}
	b.offset += int64(n)
	b.received.Add(int64(n))
	return n, err
}

// buffer is an in-memory io.WriterAt.
type buffer struct {
	mu sync.Mutex
	b  []byte
}

func (w *buffer) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(w.b)) {
		w.b = append(w.b, make([]byte, end-int64(len(w.b)))...)
	}
	return copy(w.b[off:], p), nil
}

func (w *buffer) Bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b
}

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n]
}

// fastRetry waits 10 ms between attempts, so tests of failures are quick.
var fastRetry = upload.RetryPolicy{BackOff: func() backoff.BackOff { return backoff.NewConstantBackOff(10 * time.Millisecond) }}

// download runs the Downloader in one of its two modes and returns the
// bytes it wrote.
func download1(ctx context.Context, d *download.Downloader, parallel bool, key string) ([]byte, error) {
	if parallel {
		var w buffer
		_, err := d.DownloadAt(ctx, key, &w)
		return w.Bytes(), err
	}
	var w bytes.Buffer
	_, err := d.Download(ctx, key, &w)
	return w.Bytes(), err
}

func TestDownloaderRoundTrip(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	sizes := []int{0, 1, 1000, mib, 3*mib + 17}
	objects := make([][]byte, len(sizes))
	for i, n := range sizes {
		objects[i] = randomBytes(uint64(i), n)
		srv.put(t, "obj/"+string(rune('a'+i)), objects[i])
	}
	for _, p := range protocols {
		for _, parallel := range []bool{false, true} {
			name := p.name + "/sequential"
			if parallel {
				name = p.name + "/parallel"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var (
					mu   sync.Mutex
					done int64
				)
				d := download.NewDownloader(srv.client(t, p.name, nil), download.DownloaderOptions{
					Concurrency: 3,
					RangeSize:   mib,
					Progress: func(n, total int64) {
						mu.Lock()
						defer mu.Unlock()
						done = n
					},
				})
				for i, want := range objects {
					done = 0
					got, err := download1(context.Background(), d, parallel, "obj/"+string(rune('a'+i)))
					if err != nil {
						t.Fatalf("%d bytes: %v", len(want), err)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("%d bytes: got %d bytes that differ", len(want), len(got))
					}
					mu.Lock()
					if done != int64(len(want)) {
						t.Errorf("%d bytes: last progress report %d", len(want), done)
					}
					mu.Unlock()
				}
			})
		}
	}
}

// TestDownloaderBrokenStream cuts Download responses and checks that the
// download resumes where it stopped: at most the data message in flight at
// each cut is received twice.
func TestDownloaderBrokenStream(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	data := randomBytes(9, 4*mib+5)
	srv.put(t, "k", data)
	cuts := []int64{mib + mib/2, 100, 2*mib + 3}
	for _, p := range protocols {
		for _, parallel := range []bool{false, true} {
			name := p.name + "/sequential"
			if parallel {
				name = p.name + "/parallel"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				rt := &cutTransport{cuts: cuts}
				d := download.NewDownloader(srv.client(t, p.name, rt), download.DownloaderOptions{
					Concurrency: 2,
					RangeSize:   3 * mib,
					Retry:       fastRetry,
				})
				got, err := download1(context.Background(), d, parallel, "k")
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("got %d bytes that differ from the %d stored", len(got), len(data))
				}
				if rt.mu.Lock(); len(rt.cuts) > 0 {
					t.Errorf("%d of the %d cuts did not happen", len(rt.cuts), len(cuts))
				}
				rt.mu.Unlock()
				// A cut loses at most one data message (1 MiB) and its framing;
				// each stream also carries a small header message.
				limit := int64(len(data)) + int64(len(cuts))*(mib+4<<10)
				if n := rt.received.Load(); n > limit {
					t.Errorf("received %d bytes for %d bytes of data and %d cuts; want at most %d", n, len(data), len(cuts), limit)
				}
			})
		}
	}
}

// changingWriter replaces the object after the first bytes arrive.
type changingWriter struct {
	bytes.Buffer
	change func()
	once   sync.Once
}

func (w *changingWriter) Write(p []byte) (int, error) {
	w.once.Do(w.change)
	return w.Buffer.Write(p)
}

func TestDownloaderObjectChanged(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.put(t, "k", randomBytes(1, 3*mib))
	rt := &cutTransport{cuts: []int64{mib + mib/2}}
	d := download.NewDownloader(srv.client(t, "grpc", rt), download.DownloaderOptions{Retry: fastRetry})
	w := &changingWriter{change: func() { srv.put(t, "k", randomBytes(2, 3*mib)) }}
	_, err := d.Download(context.Background(), "k", w)
	if !errors.Is(err, download.ErrObjectChanged) || connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("download of an object replaced midway: %v, want ErrObjectChanged and FAILED_PRECONDITION", err)
	}
}

func TestDownloaderDetectsCorruption(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	data := randomBytes(3, 2*mib)
	srv.put(t, "k", data)
	for _, parallel := range []bool{false, true} {
		rt := &cutTransport{flipAt: mib / 2}
		d := download.NewDownloader(srv.client(t, "connect", rt), download.DownloaderOptions{})
		_, err := download1(context.Background(), d, parallel, "k")
		if !errors.Is(err, download.ErrChecksumMismatch) {
			t.Errorf("parallel %v: download with a flipped bit: %v, want ErrChecksumMismatch", parallel, err)
		}
	}
}

func TestDownloaderResumeAt(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	data := randomBytes(4, 3*mib+100)
	etag := srv.put(t, "k", data)
	wrong := bytes.Clone(data)
	wrong[10] ^= 1
	cases := []struct {
		name    string
		prefix  []byte
		ifMatch string
		want    error
	}{
		{"nothing yet", nil, "", nil},
		{"half", data[:len(data)/2], etag, nil},
		{"all", data, "", nil},
		{"wrong bytes", wrong[:mib], "", download.ErrChecksumMismatch},
		{"other version", data[:mib], "0123", download.ErrObjectChanged},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(path, tc.prefix, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			d := download.NewDownloader(srv.client(t, "grpc", nil), download.DownloaderOptions{RangeSize: mib})
			obj, err := d.ResumeAt(context.Background(), "k", f, int64(len(tc.prefix)), tc.ifMatch)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ResumeAt: %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				return
			}
			if obj.GetSize() != int64(len(data)) {
				t.Errorf("object size %d, want %d", obj.GetSize(), len(data))
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
				t.Errorf("file has %d bytes that differ from the object (%v)", len(got), err)
			}
		})
	}
}

// TestDownloaderInterrupted checks that a download that fails for good
// tells how many bytes from the start are in place, and that resuming from
// there completes the file.
func TestDownloaderInterrupted(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	data := randomBytes(5, 5*mib)
	srv.put(t, "k", data)
	rt := &cutTransport{cuts: []int64{3*mib/2 + 10, 3*mib/2 + 10, 3*mib/2 + 10}}
	d := download.NewDownloader(srv.client(t, "grpcweb", rt), download.DownloaderOptions{
		Concurrency: 1,
		RangeSize:   2 * mib,
		Retry:       upload.RetryPolicy{MaxAttempts: 1},
	})
	path := filepath.Join(t.TempDir(), "file")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = d.DownloadAt(context.Background(), "k", f)
	var interrupted *download.InterruptedError
	if !errors.As(err, &interrupted) {
		t.Fatalf("DownloadAt through a cut stream: %v, want an *InterruptedError", err)
	}
	if !upload.IsTransient(context.Background(), err) {
		t.Errorf("IsTransient(%v) = false for a connection reset", err)
	}
	if interrupted.Written <= 0 || interrupted.Written >= int64(len(data)) {
		t.Fatalf("Written = %d, want some of the %d bytes", interrupted.Written, len(data))
	}
	if err := f.Truncate(interrupted.Written); err != nil {
		t.Fatal(err)
	}
	d = download.NewDownloader(srv.client(t, "grpcweb", nil), download.DownloaderOptions{})
	if _, err := d.ResumeAt(context.Background(), "k", f, interrupted.Written, interrupted.ETag); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
		t.Errorf("file has %d bytes that differ from the object (%v)", len(got), err)
	}
}

// TestDownloaderCheckpoint checks the checkpoints of a parallel download:
// the first with the ETag and 0 bytes, then a growing gapless prefix that
// ends at the object's size, and that at each checkpoint the bytes it
// claims are already in the file, as a caller that records them relies on.
func TestDownloaderCheckpoint(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	data := randomBytes(6, 9*mib+123)
	etag := srv.put(t, "k", data)
	w := &buffer{}
	var (
		calls []int64
		bad   []string
	)
	d := download.NewDownloader(srv.client(t, "grpc", nil), download.DownloaderOptions{
		Concurrency: 4,
		RangeSize:   1 * mib,
		Checkpoint: func(gotETag string, written int64) {
			if gotETag != etag {
				bad = append(bad, "etag "+gotETag)
			}
			if got := w.Bytes(); int64(len(got)) < written || !bytes.Equal(got[:written], data[:written]) {
				bad = append(bad, "bytes not in place at a checkpoint")
			}
			calls = append(calls, written)
		},
	})
	if _, err := d.DownloadAt(context.Background(), "k", w); err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Errorf("checkpoints: %v", bad)
	}
	if len(calls) < 2 || calls[0] != 0 || calls[len(calls)-1] != int64(len(data)) {
		t.Fatalf("checkpoints %v; want 0 first and %d last", calls, len(data))
	}
	for i := 1; i < len(calls); i++ {
		if calls[i] <= calls[i-1] {
			t.Errorf("checkpoints %v do not grow", calls)
		}
	}
}

func TestDownloaderNotFound(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	for _, p := range protocols {
		d := download.NewDownloader(srv.client(t, p.name, nil), download.DownloaderOptions{})
		for _, parallel := range []bool{false, true} {
			_, err := download1(context.Background(), d, parallel, "missing")
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("%s, parallel %v: %v, want NOT_FOUND", p.name, parallel, err)
			}
		}
	}
}
