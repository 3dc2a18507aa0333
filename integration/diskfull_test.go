//go:build linux

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/minio/minio-go/v7"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/upload"
)

// tmpfsScript mounts a tmpfs of size $2 on directory $1 (made if needed) in
// the mount namespace unshare made, then runs the rest of its arguments as
// the same process.
const tmpfsScript = `mkdir -p "$1" && mount -t tmpfs -o size="$2" tmpfs "$1" && shift 2 && exec "$@"`

var (
	unshareOnce  sync.Once
	unshareFlags []string // the unshare flags that work here
	unshareErr   error
)

// tmpfsWrap returns a command that runs its arguments with a tmpfs of size
// (as mount(8) takes it: "32m") mounted on dir, seen by that process alone:
// a small disk that fills up. root gets a mount namespace of its own
// (unshare --mount), anyone else a user namespace too, where they are root.
// When neither works the test is skipped, except as root, where a mount
// must work (CI runs as root) and the test fails.
func tmpfsWrap(t testing.TB, dir, size string) []string {
	t.Helper()
	unshareOnce.Do(func() {
		var errs []error
		candidates := [][]string{{"--user", "--map-root-user", "--mount"}}
		if os.Geteuid() == 0 {
			candidates = [][]string{{"--mount"}, {"--user", "--map-root-user", "--mount"}}
		}
		for _, flags := range candidates {
			probe := filepath.Join(t.TempDir(), "probe")
			argv := append(unshareArgs(flags), "sh", "-c", tmpfsScript, "sh", probe, "1m", "true")
			out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
			if err == nil {
				unshareFlags = flags
				return
			}
			errs = append(errs, fmt.Errorf("unshare %s: %v: %s", strings.Join(flags, " "), err, out))
		}
		unshareErr = errors.Join(errs...)
	})
	if unshareErr != nil {
		if os.Geteuid() == 0 {
			t.Fatalf("cannot mount a tmpfs in a mount namespace of its own, as root: %v", unshareErr)
		}
		t.Skipf("cannot mount a tmpfs without root here (user namespaces unavailable): %v", unshareErr)
	}
	return append(unshareArgs(unshareFlags), "sh", "-c", tmpfsScript, "sh", dir, size)
}

// unshareArgs returns a new command line: unshare with flags.
func unshareArgs(flags []string) []string { return append([]string{"unshare"}, flags...) }

// inNamespace returns the path of path as the process pid sees it, in its
// mount namespace.
func inNamespace(pid int, path string) string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", pid), path)
}

// TestDiskFull fills the store of a real server and checks that a full
// store is RESOURCE_EXHAUSTED with a message that says so (issue 12,
// finding 9: a full disk answered INTERNAL), that nothing is left behind by
// the writes that failed, and that the Go client retries such a failure
// with backoff until space is freed: then the upload completes. The disk
// store runs on a tmpfs of 32 MiB (ENOSPC), MinIO on one of 64 MiB
// (XMinioStorageFull, HTTP 507).
func TestDiskFull(t *testing.T) {
	t.Parallel()
	t.Run("disk", func(t *testing.T) {
		t.Parallel()
		data := filepath.Join(t.TempDir(), "data")
		s, err := spawnWrappedServer(tmpfsWrap(t, data, "32m"), "127.0.0.1:0", []string{"--data", data})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop(t) })
		testDiskFull(t, s, inNamespace(s.cmd.Process.Pid, filepath.Join(data, "ballast")), func(t *testing.T) {
			for _, d := range []string{"tmp", "uploads"} {
				entries, err := os.ReadDir(inNamespace(s.cmd.Process.Pid, filepath.Join(data, d)))
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range entries {
					t.Errorf("the disk store's %s/ holds %s after the failed writes", d, e.Name())
				}
			}
		})
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		requireS3(t) // the same skip-or-fail rule as every S3 test
		dir := filepath.Join(t.TempDir(), "minio")
		m := startWrappedMinIO(t, tmpfsWrap(t, dir, "64m"), dir)
		env := s3Env{endpoint: m.addr, accessKey: m.accessKey, secretKey: m.secretKey}
		const bucket = "ferry-it-disk-full"
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := env.client(t)
		if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
			t.Fatalf("create bucket: %v", err)
		}
		srv := startServer(t, env.serveArgs(bucket)...)
		testDiskFull(t, srv, inNamespace(m.cmd.Process.Pid, filepath.Join(dir, "ballast")), func(t *testing.T) {})
		// MinIO out of space can fail a CreateMultipartUpload after it
		// made the upload: the creation's pending manifest lets the
		// sweeper abort it. A server with a short TTL must leave nothing
		// but the objects.
		srv.Stop(t)
		startServer(t, append(env.serveArgs(bucket), "--upload-ttl", leakSweepTTL)...)
		keys := []string{"full/refused", "full/resumed"}
		var left []string
		deadline := time.Now().Add(leakClean)
		for {
			if left = s3Leftovers(t, c, bucket, keys, 0); len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the sweeps of %v, still in the bucket: %v", leakClean, left)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// testDiskFull puts a ballast file of 16 MiB at ballast, on the store's
// file system, then fills the store behind srv with objects of 5 MiB, then
// of 64 KiB, until it refuses; checks the refusal and, with requireClean,
// that the refused writes left nothing; then uploads an object with the Go
// client, removing the ballast when the client first retries, as an
// operator freeing space would. (Deleting objects would not do: MinIO
// frees the space of deleted objects in the background, later.)
func testDiskFull(t *testing.T, srv *server, ballast string, requireClean func(t *testing.T)) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	hc := faultHTTPClient(t, "grpc")
	uploads := ferryv1connect.NewUploadServiceClient(hc, srv.url, connect.WithGRPC())
	if err := os.WriteFile(ballast, make([]byte, 24*MiB), 0o600); err != nil {
		t.Fatalf("ballast: %v", err)
	}

	var fillers []string
	for _, size := range []int64{5 * MiB, 64 << 10} {
		content := faultContent(t, size, 7)
		for i := 0; ; i++ {
			if i == 100 {
				t.Fatalf("stored 100 objects of %d bytes and the store is not full", size)
			}
			key := fmt.Sprintf("full/filler-%d-%d", size, i)
			_, err := faultPutObject(ctx, uploads, key, content)
			for tries := 0; connect.CodeOf(err) == connect.CodeUnavailable && tries < 10; tries++ {
				// MinIO running out of space can answer IncompleteBody
				// (it stopped reading): unavailable, which clients retry.
				_, err = faultPutObject(ctx, uploads, key, content)
			}
			if err == nil {
				fillers = append(fillers, key)
				continue
			}
			if code := connect.CodeOf(err); code != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "out of space") {
				t.Fatalf("upload of %d bytes to a full store: %v (code %v), want code %v saying the store is out of space", size, err, code, connect.CodeResourceExhausted)
			}
			t.Logf("the store took %d objects of %d bytes, then: %v", i, size, err)
			break
		}
	}
	if len(fillers) == 0 {
		t.Fatal("the store was full before the first object")
	}
	// A new upload fails the same way, or if its manifest still fits,
	// its chunk does.
	content := faultContent(t, 8*MiB, 8)
	_, err := upload.NewUploader(uploads, upload.UploaderOptions{ChunkSize: faultChunkSize, Retry: upload.RetryPolicy{MaxAttempts: 1}}).
		Upload(ctx, "full/refused", bytes.NewReader(content), int64(len(content)), upload.ObjectOptions{})
	if code := connect.CodeOf(err); code != connect.CodeResourceExhausted {
		t.Fatalf("upload without retries to a full store: %v (code %v), want code %v", err, code, connect.CodeResourceExhausted)
	}
	var interrupted *upload.InterruptedError
	if errors.As(err, &interrupted) {
		if _, err := uploads.AbortUpload(ctx, connect.NewRequest(&ferryv1.AbortUploadRequest{UploadId: interrupted.UploadID})); err != nil {
			t.Fatalf("abort the refused upload: %v", err)
		}
	}
	requireClean(t)

	// The client retries RESOURCE_EXHAUSTED; before its first retry the
	// ballast goes.
	var mu sync.Mutex
	var exhausted int
	retry := faultRetryPolicy()
	retry.Notify = func(err error, _ time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Errorf("retrying after %v (code %v), want only %v", err, connect.CodeOf(err), connect.CodeResourceExhausted)
			return
		}
		exhausted++
		if exhausted == 1 {
			if err := os.Remove(ballast); err != nil {
				t.Errorf("remove the ballast: %v", err)
			}
		}
	}
	u := upload.NewUploader(uploads, upload.UploaderOptions{ChunkSize: faultChunkSize, Concurrency: 2, Retry: retry})
	obj, err := u.Upload(ctx, "full/resumed", bytes.NewReader(content), int64(len(content)), upload.ObjectOptions{})
	if err != nil {
		t.Fatalf("upload while space is freed: %v", err)
	}
	faultRequireObject(t, obj, "full/resumed", content)
	faultRequireDownload(ctx, t, srv.url, "full/resumed", content)
	if exhausted == 0 {
		t.Fatal("the upload never met a full store: the test proves nothing")
	}
	t.Logf("the client retried %d times on RESOURCE_EXHAUSTED; the 24 MiB ballast was removed before the first retry", exhausted)
	requireClean(t)
}

// openMultipartUploads returns the IDs of the open multipart uploads of
// key in bucket. MinIO lists only the uploads of the exact key given as
// the prefix (AWS: of every key under it), so each key is asked for alone.
func openMultipartUploads(ctx context.Context, t testing.TB, c *minio.Client, bucket, key string) []string {
	t.Helper()
	core := &minio.Core{Client: c}
	var ids []string
	keyMarker, idMarker := "", ""
	for {
		res, err := core.ListMultipartUploads(ctx, bucket, key, keyMarker, idMarker, "", 1000)
		if err != nil {
			t.Fatalf("ListMultipartUploads(%q): %v", key, err)
		}
		for _, u := range res.Uploads {
			if u.Key == key {
				ids = append(ids, u.UploadID)
			}
		}
		if !res.IsTruncated {
			return ids
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}
