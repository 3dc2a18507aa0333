package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/storetest"
)

// testConfig returns the S3 server the tests use, from FERRY_TEST_S3_*
// (endpoint host:port over plain HTTP), with a new bucket name. Without
// them the test is skipped, or fails when FERRY_REQUIRE_S3=1.
func testConfig(t *testing.T) Config {
	t.Helper()
	endpoint := os.Getenv("FERRY_TEST_S3_ENDPOINT")
	if endpoint == "" {
		if os.Getenv("FERRY_REQUIRE_S3") == "1" {
			t.Fatal("FERRY_REQUIRE_S3=1 but FERRY_TEST_S3_ENDPOINT is not set")
		}
		t.Skip("no S3 server: set FERRY_TEST_S3_ENDPOINT (host:port, plain HTTP), FERRY_TEST_S3_ACCESS_KEY and FERRY_TEST_S3_SECRET_KEY")
	}
	return Config{
		Endpoint:  endpoint,
		Bucket:    "ferry-test-" + randomHex(8),
		AccessKey: os.Getenv("FERRY_TEST_S3_ACCESS_KEY"),
		SecretKey: os.Getenv("FERRY_TEST_S3_SECRET_KEY"),
		Insecure:  true,
	}
}

// newTestStore returns a Store on a bucket of its own, removed with its
// contents when the test ends.
func newTestStore(t *testing.T) *Store {
	t.Helper()
	cfg := testConfig(t)
	cfg.CreateBucket = true
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	t.Cleanup(func() { removeBucket(t, s) })
	return s
}

// removeBucket deletes the store's bucket and everything in it (MinIO's
// force delete; elsewhere a non-empty bucket stays and is only logged).
func removeBucket(t *testing.T, s *Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.core.RemoveBucketWithOptions(ctx, s.bucket, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
		t.Logf("removing bucket %s: %v", s.bucket, err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return newTestStore(t) })
}

func TestNewMissingBucket(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	_, err := New(t.Context(), cfg)
	if !errors.Is(err, ErrBucketNotFound) {
		t.Fatalf("New with a missing bucket = %v, want ErrBucketNotFound", err)
	}
	if !strings.Contains(err.Error(), cfg.Bucket) {
		t.Errorf("New with a missing bucket = %q, which does not name the bucket %q", err, cfg.Bucket)
	}
}

func TestNewCreateBucket(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.CreateBucket = true
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New with CreateBucket = %v", err)
	}
	t.Cleanup(func() { removeBucket(t, s) })
	if ok, err := s.core.BucketExists(t.Context(), cfg.Bucket); err != nil || !ok {
		t.Fatalf("BucketExists(%q) after New with CreateBucket = %v, %v; want true", cfg.Bucket, ok, err)
	}
	// A bucket that exists is used as it is, with or without CreateBucket.
	for _, create := range []bool{true, false} {
		cfg.CreateBucket = create
		if _, err := New(t.Context(), cfg); err != nil {
			t.Errorf("New(CreateBucket %v) on an existing bucket = %v", create, err)
		}
	}
}

func TestNewBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"NoEndpoint", Config{Bucket: "b"}},
		{"NoBucket", Config{Endpoint: "127.0.0.1:9000"}},
		{"BadBucketName", Config{Endpoint: "127.0.0.1:9000", Bucket: "Not_A_Bucket"}},
		{"Path", Config{Endpoint: "http://127.0.0.1:9000/s3", Bucket: "b"}},
		{"Scheme", Config{Endpoint: "ftp://127.0.0.1:9000", Bucket: "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(t.Context(), tt.cfg); err == nil {
				t.Errorf("New(%+v) succeeded, want an error", tt.cfg)
			}
		})
	}
}

func TestParseEndpoint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		endpoint   string
		insecure   bool
		host       string
		secure     bool
		wantErrSub string
	}{
		{"127.0.0.1:9000", false, "127.0.0.1:9000", true, ""},
		{"127.0.0.1:9000", true, "127.0.0.1:9000", false, ""},
		{"http://127.0.0.1:9000", false, "127.0.0.1:9000", false, ""},
		{"https://s3.example.com", true, "s3.example.com", true, ""}, // the scheme wins
		{"http://minio:9000/", false, "minio:9000", false, ""},
		{"", false, "", false, "no endpoint"},
		{"http://", false, "", false, "no host"},
		{"http://h:1/bucket", false, "", false, "only scheme, host and port"},
		{"http://user:pw@h:1", false, "", false, "only scheme, host and port"},
		{"s3://h:1", false, "", false, "http or https"},
	}
	for _, tt := range tests {
		host, secure, err := parseEndpoint(tt.endpoint, tt.insecure)
		if tt.wantErrSub != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErrSub) {
				t.Errorf("parseEndpoint(%q) = %v, want an error with %q", tt.endpoint, err, tt.wantErrSub)
			}
			continue
		}
		if err != nil || host != tt.host || secure != tt.secure {
			t.Errorf("parseEndpoint(%q, insecure %v) = %q, %v, %v; want %q, %v", tt.endpoint, tt.insecure, host, secure, err, tt.host, tt.secure)
		}
	}
}

// TestStoppedServer: a server that does not answer is ErrUnavailable, at
// New and for every call of a store whose server went away.
func TestStoppedServer(t *testing.T) {
	t.Parallel()
	t.Run("New", func(t *testing.T) {
		t.Parallel()
		_, err := New(t.Context(), Config{Endpoint: closedAddr(t), Bucket: "ferry-closed", Insecure: true})
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("New on a closed port = %v, want ErrUnavailable", err)
		}
	})
	t.Run("Calls", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig(t)
		cfg.CreateBucket = true
		s0, err := New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removeBucket(t, s0) })
		id, err := s0.CreateMultipartUpload(t.Context(), "k", store.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The same bucket through a proxy that is then shut down.
		p := startProxy(t, cfg.Endpoint)
		pcfg := cfg
		pcfg.Endpoint = p.addr()
		s, err := New(t.Context(), pcfg)
		if err != nil {
			t.Fatal(err)
		}
		p.close()

		data := []byte("data")
		calls := map[string]func(ctx context.Context) error{
			"CreateMultipartUpload": func(ctx context.Context) error {
				_, err := s.CreateMultipartUpload(ctx, "k", store.CreateOptions{})
				return err
			},
			"UploadPart": func(ctx context.Context) error {
				_, err := s.UploadPart(ctx, "k", id, 1, bytes.NewReader(data), int64(len(data)), store.CRC32C(data))
				return err
			},
			"ListParts": func(ctx context.Context) error {
				_, err := s.ListParts(ctx, "k", id, 0, 1000)
				return err
			},
			"CompleteMultipartUpload": func(ctx context.Context) error {
				_, err := s.CompleteMultipartUpload(ctx, "k", id, []store.Part{{Number: 1, Size: 4, ETag: "x"}}, store.CompleteOptions{})
				return err
			},
			"AbortMultipartUpload": func(ctx context.Context) error { return s.AbortMultipartUpload(ctx, "k", id) },
			"PutObject": func(ctx context.Context) error {
				_, err := s.PutObject(ctx, "k", bytes.NewReader(data), int64(len(data)), store.PutOptions{})
				return err
			},
			"ReadObject": func(ctx context.Context) error {
				_, _, err := s.ReadObject(ctx, "k", 0, -1, store.ReadOptions{})
				return err
			},
			"StatObject": func(ctx context.Context) error {
				_, err := s.StatObject(ctx, "k")
				return err
			},
			"ListObjects": func(ctx context.Context) error {
				_, err := s.ListObjects(ctx, "", "", 10)
				return err
			},
			"DeleteObject": func(ctx context.Context) error { return s.DeleteObject(ctx, "k") },
		}
		for name, call := range calls {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				if err := call(t.Context()); !errors.Is(err, store.ErrUnavailable) {
					t.Errorf("%s with the server gone = %v, want ErrUnavailable", name, err)
				}
			})
		}
	})
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// proxy forwards TCP connections to a server until it is closed, which
// also cuts the connections it carries.
type proxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l}
	p.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(u, c); u.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, u); c.Close() })
		}
	})
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) close() {
	p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestBadPartKeepsEarlierPart: a part of MinPartSize bytes uploaded again
// with a wrong CRC32C, or from a reader that fails just before its end,
// leaves the earlier part listed with its ETag and CRC32C, and the
// object completes with the earlier bytes.
func TestBadPartKeepsEarlierPart(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := t.Context()
	key := "object"
	id, err := s.CreateMultipartUpload(ctx, key, store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	good := bytes.Repeat([]byte("good"), store.MinPartSize/4)
	p1, err := s.UploadPart(ctx, key, id, 1, bytes.NewReader(good), int64(len(good)), store.CRC32C(good))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Repeat([]byte("bad!"), store.MinPartSize/4)
	_, err = s.UploadPart(ctx, key, id, 1, bytes.NewReader(bad), int64(len(bad)), store.CRC32C(good))
	if !errors.Is(err, store.ErrChecksumMismatch) {
		t.Errorf("UploadPart with another part's CRC32C = %v, want ErrChecksumMismatch", err)
	}
	_, err = s.UploadPart(ctx, key, id, 1, io.MultiReader(bytes.NewReader(bad[:len(bad)-1]), iotestErrReader{}), int64(len(bad)), store.CRC32C(bad))
	if err == nil || errors.Is(err, store.ErrChecksumMismatch) {
		t.Errorf("UploadPart from a reader failing before its last byte = %v, want the reader's error", err)
	}
	res, err := s.ListParts(ctx, key, id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Parts) != 1 || res.Parts[0].ETag != p1.ETag || res.Parts[0].CRC32C != p1.CRC32C || res.Parts[0].Size != p1.Size {
		t.Fatalf("ListParts after bad uploads = %+v, want only %+v", res.Parts, p1)
	}
	info, err := s.CompleteMultipartUpload(ctx, key, id, res.Parts, store.CompleteOptions{CRC32C: store.CRC32C(good)})
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(good)) {
		t.Errorf("completed object is %d bytes, want %d", info.Size, len(good))
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("reader broken on purpose") }

// TestFullObjectChecksumRecorded: the full-object CRC32C given at
// completion is what S3 itself records and returns (checksum type
// FULL_OBJECT), and a wrong one completes nothing.
func TestFullObjectChecksumRecorded(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := t.Context()
	key := "object"
	parts := [][]byte{bytes.Repeat([]byte{1, 2, 3, 4, 5}, store.MinPartSize/5+1), []byte("tail")}
	id, err := s.CreateMultipartUpload(ctx, key, store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var done []store.Part
	var full uint32
	for i, d := range parts {
		p, err := s.UploadPart(ctx, key, id, i+1, bytes.NewReader(d), int64(len(d)), store.CRC32C(d))
		if err != nil {
			t.Fatal(err)
		}
		done = append(done, p)
		full = store.CombineCRC32C(full, store.CRC32C(d), int64(len(d)))
	}
	if want := store.CRC32C(bytes.Join(parts, nil)); full != want {
		t.Fatalf("CombineCRC32C = %08x, CRC32C of the bytes = %08x", full, want)
	}
	_, err = s.CompleteMultipartUpload(ctx, key, id, done, store.CompleteOptions{CRC32C: full ^ 1})
	if !errors.Is(err, store.ErrChecksumMismatch) {
		t.Errorf("CompleteMultipartUpload with a wrong CRC32C = %v, want ErrChecksumMismatch", err)
	}
	if _, err := s.CompleteMultipartUpload(ctx, key, id, done, store.CompleteOptions{CRC32C: full}); err != nil {
		t.Fatal(err)
	}
	oi, err := s.core.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	if oi.ChecksumCRC32C != encodeCRC32C(full) || oi.ChecksumMode != checksumFullObject {
		t.Errorf("S3 records CRC32C %q type %q, want %q FULL_OBJECT", oi.ChecksumCRC32C, oi.ChecksumMode, encodeCRC32C(full))
	}
}

// TestAbortUnknownUpload: aborting twice reports the second time that the
// upload is gone (MinIO itself answers it with success).
func TestAbortUnknownUpload(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	id, err := s.CreateMultipartUpload(t.Context(), "k", store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AbortMultipartUpload(t.Context(), "k", id); err != nil {
		t.Fatalf("first AbortMultipartUpload = %v", err)
	}
	if err := s.AbortMultipartUpload(t.Context(), "k", id); !errors.Is(err, store.ErrUploadNotFound) {
		t.Fatalf("second AbortMultipartUpload = %v, want ErrUploadNotFound", err)
	}
}

// loseCompleteResponse is an HTTP transport that sends the first
// CompleteMultipartUpload request (POST ?uploadId=) to the server and then
// reports the connection as lost, as if the answer never arrived.
type loseCompleteResponse struct {
	rt   http.RoundTripper
	lost atomic.Bool
}

func (l *loseCompleteResponse) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(req)
	if err == nil && req.Method == http.MethodPost && req.URL.Query().Has("uploadId") && l.lost.CompareAndSwap(false, true) {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	}
	return resp, err
}

// TestCompleteAfterLostResponse: when S3 completed the upload but the
// answer was lost, minio-go sends the request again, which finds the upload
// gone (or, with IfNoneMatch, the key taken); the completion still
// succeeds, with the object it made. Without a repeat of the request, a
// second completion of the same upload is ErrUploadNotFound.
func TestCompleteAfterLostResponse(t *testing.T) {
	t.Parallel()
	for _, ifNoneMatch := range []bool{false, true} {
		t.Run(fmt.Sprintf("IfNoneMatch=%v", ifNoneMatch), func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.CreateBucket = true
			lose := &loseCompleteResponse{}
			s, err := open(t.Context(), cfg, func(rt http.RoundTripper) http.RoundTripper {
				lose.rt = rt
				return lose
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { removeBucket(t, s) })
			ctx := t.Context()
			data := []byte("completed once, answered never")
			id, err := s.CreateMultipartUpload(ctx, "k", store.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p, err := s.UploadPart(ctx, "k", id, 1, bytes.NewReader(data), int64(len(data)), store.CRC32C(data))
			if err != nil {
				t.Fatal(err)
			}
			opts := store.CompleteOptions{CRC32C: store.CRC32C(data), IfNoneMatch: ifNoneMatch}
			info, err := s.CompleteMultipartUpload(ctx, "k", id, []store.Part{p}, opts)
			if err != nil {
				t.Fatalf("CompleteMultipartUpload with its answer lost = %v, want success", err)
			}
			if !lose.lost.Load() {
				t.Fatal("the test transport did not lose the answer")
			}
			if info.Size != int64(len(data)) || !info.HasCRC32C || info.CRC32C != store.CRC32C(data) || info.ETag == "" {
				t.Errorf("CompleteMultipartUpload = %+v, want the object's size, CRC32C and ETag", info)
			}
			_, err = s.CompleteMultipartUpload(ctx, "k", id, []store.Part{p}, opts)
			if !errors.Is(err, store.ErrUploadNotFound) {
				t.Errorf("second CompleteMultipartUpload = %v, want ErrUploadNotFound", err)
			}
		})
	}
}

// TestPutObjectStreamed: an object larger than MaxBufferedPutSize is
// streamed, round-trips, and a reader that ends early writes nothing.
func TestPutObjectStreamed(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := t.Context()
	data := bytes.Repeat([]byte("streamed"), MaxBufferedPutSize/8+1)
	info, err := s.PutObject(ctx, "big", bytes.NewReader(data), int64(len(data)), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc, got, err := s.ReadObject(ctx, "big", 0, -1, store.ReadOptions{IfMatch: info.ETag})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(b, data) || got.Size != int64(len(data)) {
		t.Fatalf("read back %d bytes (Size %d), err %v; want the %d bytes written", len(b), got.Size, err, len(data))
	}
	_, err = s.PutObject(ctx, "short", bytes.NewReader(data[:len(data)-1]), int64(len(data)), store.PutOptions{})
	if !errors.Is(err, store.ErrSizeMismatch) {
		t.Errorf("PutObject from a short reader = %v, want store.ErrSizeMismatch", err)
	}
	if _, err := s.StatObject(ctx, "short"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("StatObject after a failed PutObject = %v, want ErrNotFound", err)
	}
}
