package s3store

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/storetest"
)

// versitygwConfig returns the versitygw server the tests use, from
// FERRY_TEST_VERSITYGW_* (endpoint host:port over plain HTTP; see
// scripts/versitygw.sh), with a new bucket name. Without them the test is
// skipped, or fails when FERRY_REQUIRE_S3=1: ferry is tested on two S3
// implementations, MinIO and versitygw, and CI runs both.
func versitygwConfig(t *testing.T) Config {
	t.Helper()
	endpoint := os.Getenv("FERRY_TEST_VERSITYGW_ENDPOINT")
	if endpoint == "" {
		if os.Getenv("FERRY_REQUIRE_S3") == "1" {
			t.Fatal("FERRY_REQUIRE_S3=1 but FERRY_TEST_VERSITYGW_ENDPOINT is not set: start versitygw with eval \"$(bash scripts/versitygw.sh start)\"")
		}
		t.Skip("no versitygw: set FERRY_TEST_VERSITYGW_ENDPOINT (host:port, plain HTTP), FERRY_TEST_VERSITYGW_ACCESS_KEY and FERRY_TEST_VERSITYGW_SECRET_KEY")
	}
	return Config{
		Endpoint:  endpoint,
		Bucket:    "ferry-test-" + randomHex(8),
		AccessKey: os.Getenv("FERRY_TEST_VERSITYGW_ACCESS_KEY"),
		SecretKey: os.Getenv("FERRY_TEST_VERSITYGW_SECRET_KEY"),
		Insecure:  true,
	}
}

// newVersitygwStore returns a Store on a versitygw bucket of its own,
// emptied and removed when the test ends.
func newVersitygwStore(t *testing.T) *Store {
	t.Helper()
	cfg := versitygwConfig(t)
	cfg.CreateBucket = true
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	t.Cleanup(func() { emptyAndRemoveBucket(t, s) })
	return s
}

// emptyAndRemoveBucket removes every object and open multipart upload of
// the store's bucket, then the bucket: versitygw has no force delete.
func emptyAndRemoveBucket(t *testing.T, s *Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := s.core.Client
	for u := range c.ListIncompleteUploads(ctx, s.bucket, "", true) {
		if u.Err != nil {
			t.Logf("listing uploads of bucket %s: %v", s.bucket, u.Err)
			break
		}
		_ = s.core.AbortMultipartUpload(ctx, s.bucket, u.Key, u.UploadID)
	}
	objects := c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Recursive: true})
	for e := range c.RemoveObjects(ctx, s.bucket, objects, minio.RemoveObjectsOptions{}) {
		t.Logf("removing %s from bucket %s: %v", e.ObjectName, s.bucket, e.Err)
	}
	if err := c.RemoveBucket(ctx, s.bucket); err != nil {
		t.Logf("removing bucket %s: %v", s.bucket, err)
	}
}

// TestConformanceVersitygw runs the store conformance suite against
// versitygw (posix backend), ferry's second S3 implementation.
func TestConformanceVersitygw(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return newVersitygwStore(t) })
}
