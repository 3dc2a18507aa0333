package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/upload"
)

// TestAutoResume checks that `ferry upload FILE KEY` continues the upload
// its state file names when FILE is unchanged, and aborts it and starts
// anew when FILE changed.
func TestAutoResume(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	ctx := context.Background()
	cache := t.TempDir()
	e := env("FERRY_SERVER", url, "FERRY_CACHE_DIR", cache)
	data := randomBytes(3, 10<<20+1)
	size := int64(len(data))
	client := ferryv1connect.NewUploadServiceClient(http.DefaultClient, url)

	// interrupted creates an upload of key with its first chunk committed
	// and the state file an interrupted `ferry upload file key` leaves.
	interrupted := func(t *testing.T, file, key string, modTime time.Time) string {
		t.Helper()
		created, err := client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: key, Size: &size, ChunkSize: 5 << 20}}))
		if err != nil {
			t.Fatal(err)
		}
		id := created.Msg.GetUpload().GetUploadId()
		crc := store.CRC32C(data[:5<<20])
		if _, err := client.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: &ferryv1.Chunk{Index: 0, Data: data[:5<<20], Crc32C: &crc}})); err != nil {
			t.Fatal(err)
		}
		path, err := uploadStatePath(e, url, file, key)
		if err != nil {
			t.Fatal(err)
		}
		s := &uploadState{UploadID: id, Size: size, ModTimeNS: modTime.UnixNano()}
		if err := s.save(path); err != nil {
			t.Fatal(err)
		}
		return id
	}

	cases := []struct {
		name    string
		changed bool
	}{
		{"unchanged", false},
		{"changed", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "data.bin")
			if err := os.WriteFile(file, data, 0o600); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			modTime := fi.ModTime()
			if tc.changed {
				modTime = modTime.Add(-time.Hour)
			}
			key := "auto-" + tc.name
			id := interrupted(t, file, key, modTime)
			r := ferry(t, nil, e, "upload", file, key)
			if r.code != 0 || !strings.HasPrefix(r.stdout, fmt.Sprintf("key=%q size=%d ", key, size)) {
				t.Fatalf("upload: status %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			want := "continuing upload " + id
			if tc.changed {
				want = "changed since upload " + id + " was interrupted: starting anew"
			}
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr %q; want it to say %q", r.stderr, want)
			}
			if tc.changed {
				if _, err := client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: id})); connect.CodeOf(err) != connect.CodeNotFound {
					t.Errorf("the stale upload %s: GetUpload error %v; want not_found (aborted)", id, err)
				}
			}
			path, _ := uploadStatePath(e, url, file, key)
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("the state file is left after success: %v", err)
			}
		})
	}
}

// TestDownloadAutoResume checks that `ferry download KEY FILE` continues
// from FILE.ferry-part when the ETag kept next to it is the object's, and
// starts anew when the object changed.
func TestDownloadAutoResume(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	e := env("FERRY_SERVER", url, "FERRY_CACHE_DIR", t.TempDir())
	dir := t.TempDir()
	data := randomBytes(4, 3<<20+7)
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := ferry(t, nil, e, "upload", src, "d"); r.code != 0 {
		t.Fatalf("upload: status %d, stderr %q", r.code, r.stderr)
	}
	objects := ferryv1connect.NewObjectServiceClient(http.DefaultClient, url)
	st, err := objects.StatObject(context.Background(), connect.NewRequest(&ferryv1.StatObjectRequest{Key: "d"}))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, etag, stderr string
	}{
		{"same object", st.Msg.GetObject().GetEtag(), "continuing the download from the 1048576 bytes"},
		{"changed object", `"other"`, "changed since the download was interrupted: starting anew"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "out")
			if err := os.WriteFile(out+partSuffix, data[:1<<20], 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(out+partSuffix+etagSuffix, []byte(tc.etag), 0o600); err != nil {
				t.Fatal(err)
			}
			r := ferry(t, nil, e, "download", "d", out)
			if r.code != 0 || !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("download: status %d, stderr %q; want it to say %q", r.code, r.stderr, tc.stderr)
			}
			if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
				t.Errorf("downloaded %d bytes that differ from the %d uploaded (%v)", len(got), len(data), err)
			}
			if _, err := os.Stat(out + partSuffix + etagSuffix); !os.IsNotExist(err) {
				t.Errorf("the ETag file is left after success: %v", err)
			}
		})
	}
}

// TestAutoResumeFinish checks that an interrupted upload leaves a state
// file naming its upload ID and FILE's identity, and any other outcome
// removes it.
func TestAutoResumeFinish(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ferry", "uploads", "x.json")
	var stderr bytes.Buffer
	a := autoResume{stderr: &stderr, path: path, fi: fi, chunkSize: 5 << 20}
	a.created("id-0") // recorded at once, before any chunk is sent
	if s, err := loadUploadState(path); err != nil || s == nil || s.UploadID != "id-0" || !s.matches(fi) {
		t.Fatalf("state after creation: %+v, %v", s, err)
	}
	a.finish(&upload.InterruptedError{UploadID: "id-1", Err: context.Canceled})
	s, err := loadUploadState(path)
	if err != nil || s == nil || s.UploadID != "id-1" || !s.matches(fi) || s.ChunkSize != 5<<20 {
		t.Fatalf("state after an interruption: %+v, %v", s, err)
	}
	if !strings.Contains(stderr.String(), "run the same command again") {
		t.Errorf("stderr %q does not say how to resume", stderr.String())
	}
	a.finish(nil)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the state file is left after success: %v", err)
	}
}
