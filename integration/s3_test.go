package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Env is the S3 server the tests run against.
type s3Env struct {
	endpoint  string // host:port, plain HTTP
	accessKey string
	secretKey string
}

// requireS3 returns the S3 server named by FERRY_TEST_S3_*. When they are
// unset it skips the test, or fails it when FERRY_REQUIRE_S3=1 (as in CI),
// so a missing server is never mistaken for a pass there.
func requireS3(t testing.TB) s3Env {
	t.Helper()
	env := s3Env{
		endpoint:  os.Getenv("FERRY_TEST_S3_ENDPOINT"),
		accessKey: os.Getenv("FERRY_TEST_S3_ACCESS_KEY"),
		secretKey: os.Getenv("FERRY_TEST_S3_SECRET_KEY"),
	}
	if env.endpoint != "" && env.accessKey != "" && env.secretKey != "" {
		return env
	}
	const msg = "FERRY_TEST_S3_ENDPOINT, FERRY_TEST_S3_ACCESS_KEY and FERRY_TEST_S3_SECRET_KEY are not all set; " +
		"start MinIO with: eval \"$(bash scripts/minio.sh start)\""
	if os.Getenv("FERRY_REQUIRE_S3") == "1" {
		t.Fatal(msg + " (FERRY_REQUIRE_S3=1)")
	}
	t.Skip(msg)
	return s3Env{}
}

// client returns a minio-go client for the test's own bookkeeping (buckets),
// never for the data paths under test.
func (e s3Env) client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(e.endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(e.accessKey, e.secretKey, ""),
		Secure: false,
	})
	if err != nil {
		t.Fatalf("minio client for %s: %v", e.endpoint, err)
	}
	return c
}

var notBucketChars = regexp.MustCompile(`[^a-z0-9-]+`)

// newBucket creates a bucket for this test alone and removes it, with
// everything in it, when the test ends.
func (e s3Env) newBucket(t testing.TB) string {
	t.Helper()
	// S3 bucket names: 3 to 63 lower-case letters, digits and hyphens.
	name := notBucketChars.ReplaceAllString(strings.ToLower(t.Name()), "-")
	name = strings.Trim(name, "-")
	if len(name) > 40 {
		name = name[:40]
	}
	suffix := make([]byte, 5)
	_, _ = rand.Read(suffix)
	bucket := "ferry-it-" + strings.Trim(name, "-") + "-" + hex.EncodeToString(suffix)

	c := e.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// ForceDelete is MinIO's: it removes the objects and open multipart
		// uploads too. Another S3 server may refuse; the bucket then stays.
		if err := c.RemoveBucketWithOptions(ctx, bucket, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
			t.Logf("remove bucket %s: %v", bucket, err)
		}
	})
	return bucket
}

// serveArgs returns the `ferry serve` flags that put the server in front of
// bucket on this S3 server.
func (e s3Env) serveArgs(bucket string) []string {
	return []string{
		"--s3-endpoint", e.endpoint,
		"--s3-insecure",
		"--s3-bucket", bucket,
		"--s3-access-key", e.accessKey,
		"--s3-secret-key", e.secretKey,
	}
}

// startS3Server starts a ferry server, with extra flags, in front of a new
// bucket of its own.
func startS3Server(t testing.TB, extra ...string) (*server, s3Env, string) {
	t.Helper()
	env := requireS3(t)
	bucket := env.newBucket(t)
	return startServer(t, append(env.serveArgs(bucket), extra...)...), env, bucket
}
