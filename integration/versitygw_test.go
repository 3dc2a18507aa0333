package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
)

// requireVersitygw returns the versitygw server named by
// FERRY_TEST_VERSITYGW_* (scripts/versitygw.sh starts one and prints them),
// ferry's second S3 implementation. When they are unset it skips the test,
// or fails it when FERRY_REQUIRE_S3=1 (as in CI).
func requireVersitygw(t testing.TB) s3Env {
	t.Helper()
	env := s3Env{
		endpoint:  os.Getenv("FERRY_TEST_VERSITYGW_ENDPOINT"),
		accessKey: os.Getenv("FERRY_TEST_VERSITYGW_ACCESS_KEY"),
		secretKey: os.Getenv("FERRY_TEST_VERSITYGW_SECRET_KEY"),
	}
	if env.endpoint != "" && env.accessKey != "" && env.secretKey != "" {
		return env
	}
	const msg = "FERRY_TEST_VERSITYGW_ENDPOINT, FERRY_TEST_VERSITYGW_ACCESS_KEY and FERRY_TEST_VERSITYGW_SECRET_KEY are not all set; " +
		"start versitygw with: eval \"$(bash scripts/versitygw.sh start)\""
	if os.Getenv("FERRY_REQUIRE_S3") == "1" {
		t.Fatal(msg + " (FERRY_REQUIRE_S3=1)")
	}
	t.Skip(msg)
	return s3Env{}
}

// newPlainBucket creates a bucket for this test alone on a server without
// MinIO's force delete (versitygw): when the test ends it aborts the
// bucket's open uploads, removes its objects, then the bucket.
func (e s3Env) newPlainBucket(t testing.TB) string {
	t.Helper()
	c := e.client(t)
	name := notBucketChars.ReplaceAllString(strings.ToLower(t.Name()), "-")
	name = strings.Trim(name, "-")
	if len(name) > 40 {
		name = strings.Trim(name[:40], "-")
	}
	bucket := "ferry-it-" + name + "-" + randomSuffix()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		core := minio.Core{Client: c}
		for u := range c.ListIncompleteUploads(ctx, bucket, "", true) {
			if u.Err != nil {
				break
			}
			_ = core.AbortMultipartUpload(ctx, bucket, u.Key, u.UploadID)
		}
		objects := c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true})
		for e := range c.RemoveObjects(ctx, bucket, objects, minio.RemoveObjectsOptions{}) {
			t.Logf("remove %s from bucket %s: %v", e.ObjectName, bucket, e.Err)
		}
		if err := c.RemoveBucket(ctx, bucket); err != nil {
			t.Logf("remove bucket %s: %v", bucket, err)
		}
	})
	return bucket
}

// randomSuffix returns 10 random hex digits.
func randomSuffix() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// TestRoundTripVersitygw is TestRoundTripS3 on versitygw: every transfer
// case over every protocol, uploaded, checked as one S3 part per chunk,
// downloaded and compared. The 200 MiB file goes through gRPC only (the
// protocols are the same code above the store as on MinIO).
func TestRoundTripVersitygw(t *testing.T) {
	t.Parallel()
	env := requireVersitygw(t)
	srv := startServer(t, append(env.serveArgs(env.newPlainBucket(t)), "--chunk-size", chunkSizeFlag)...)
	testRoundTrips(t, srv, true, func(protocol string, tc transferCase) bool {
		return tc.name != largeName || protocol == "grpc"
	})
}

// TestResumeVersitygw is TestCLIUploadKilled on versitygw: `ferry upload`
// killed with SIGKILL mid-upload, run again, continues the same upload,
// sends about only the chunks not committed, and stores the file byte for
// byte. Then a second upload rides out the server killed with SIGKILL and
// restarted under it, on the client's own retries.
func TestResumeVersitygw(t *testing.T) {
	t.Parallel()
	const (
		size  = 40 << 20
		chunk = 5 << 20
	)
	env := requireVersitygw(t)
	srv := startFaultServer(t, env.serveArgs(env.newPlainBucket(t))...)
	proxy := startThrottleProxy(t, srv.addr, 40<<20)
	file := generated(t, size, 171)
	cache := t.TempDir()
	cacheEnv := []string{"FERRY_CACHE_DIR=" + cache}
	args := []string{"upload", "--json", "--server", proxy.url(), "--protocol", "grpc", "--concurrency", "2", "--chunk-size", "5MiB", file, "resume/cli.bin"}

	first := startCLI(t, nil, cacheEnv, args...)
	var uploadID string
	waitFor(t, first, time.Minute, "upload state under FERRY_CACHE_DIR", func() bool {
		uploadID = recordedUploadID(t, cache)
		return uploadID != ""
	})
	client := ferryv1connect.NewUploadServiceClient(httpClient("connect"), srv.url)
	var committed map[int64]*ferryv1.CommittedChunk
	waitFor(t, first, time.Minute, "2 committed chunks", func() bool {
		var err error
		committed, err = faultCommitted(context.Background(), client, uploadID)
		return err == nil && len(committed) >= 2
	})
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.wait(t)
	committed, err := faultCommitted(context.Background(), client, uploadID)
	if err != nil {
		t.Fatalf("upload %s after the kill: %v", uploadID, err)
	}
	if len(committed) == size/chunk {
		t.Fatal("every chunk was committed before the kill: the test proves nothing; slow the proxy")
	}
	before := proxy.forwarded[0].Load()
	code, stdout, stderr := runCLI(t, nil, cacheEnv, args...)
	sent := proxy.forwarded[0].Load() - before
	if code != 0 {
		t.Fatalf("second run: status %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "continuing upload "+uploadID) {
		t.Errorf("second run did not continue upload %s: stderr %q", uploadID, stderr)
	}
	if res := decodeCLIJSON(t, stdout); !res.Resumed || res.Size != size {
		t.Errorf("second run printed %+v; want resumed, size %d", res, size)
	}
	missing := int64(size - len(committed)*chunk)
	t.Logf("killed with %d of %d chunks committed; the second run sent %d bytes for the %d missing", len(committed), size/chunk, sent, missing)
	if sent > missing+1<<20 {
		t.Errorf("second run sent %d bytes; want at most the %d bytes of the missing chunks (+ 1 MiB of protocol)", sent, missing)
	}
	requireDownloadedCLI(t, srv.url, "resume/cli.bin", file)

	// The server killed under a running upload: the CLI finishes by itself.
	cache2 := t.TempDir()
	second := startCLI(t, nil, []string{"FERRY_CACHE_DIR=" + cache2},
		"upload", "--json", "--server", proxy.url(), "--protocol", "connect", "--concurrency", "2", "--chunk-size", "5MiB", file, "resume/server-killed.bin")
	waitFor(t, second, time.Minute, "a chunk of the second upload committed", func() bool {
		id := recordedUploadID(t, cache2)
		if id == "" {
			return false
		}
		committed, err := faultCommitted(context.Background(), client, id)
		return err == nil && len(committed) > 0
	})
	if err := srv.kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.restart(); err != nil {
		t.Fatal(err)
	}
	if code := second.wait(t); code != 0 {
		t.Fatalf("upload across a server kill: status %d\n%s", code, second.stderr.String())
	}
	requireDownloadedCLI(t, srv.url, "resume/server-killed.bin", file)
}
