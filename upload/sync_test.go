package upload_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	"github.com/ferryhq/ferry/download"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store/diskstore"
	"github.com/ferryhq/ferry/upload"
)

// startSyncServer serves the upload and object services on a disk store
// over h2c and returns an Uploader and an ObjectService client for it.
func startSyncServer(t *testing.T) (*upload.Uploader, ferryv1connect.ObjectServiceClient) {
	t.Helper()
	st, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := upload.NewService(upload.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(svc, connect.WithReadMaxBytes(upload.DefaultMaxChunkSize+1<<20)))
	mux.Handle(ferryv1connect.NewObjectServiceHandler(download.NewObjectService(st)))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: tr}
	return upload.NewUploader(ferryv1connect.NewUploadServiceClient(hc, srv.URL, connect.WithGRPC()), upload.UploaderOptions{}),
		ferryv1connect.NewObjectServiceClient(hc, srv.URL, connect.WithGRPC())
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, objects := startSyncServer(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.txt"), "alpha")
	writeFile(t, filepath.Join(dir, "sub", "b.txt"), "bravo!")
	writeFile(t, filepath.Join(dir, "sub", "deep", "c.txt"), "charlie")

	check := func(name string, opts upload.SyncOptions, want upload.SyncResult) {
		t.Helper()
		got, err := upload.Sync(ctx, u, objects, dir, "p/", opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got.Seconds = 0
		if *got != want {
			t.Fatalf("%s: got %+v, want %+v", name, *got, want)
		}
	}
	check("dry run", upload.SyncOptions{DryRun: true}, upload.SyncResult{Files: 3, Transferred: 3, Bytes: 18})
	check("first", upload.SyncOptions{}, upload.SyncResult{Files: 3, Transferred: 3, Bytes: 18})
	check("second", upload.SyncOptions{}, upload.SyncResult{Files: 3, Skipped: 3})
	// Same size, different bytes: only the CRC32C tells.
	writeFile(t, filepath.Join(dir, "a.txt"), "ALPHA")
	check("changed", upload.SyncOptions{}, upload.SyncResult{Files: 3, Transferred: 1, Skipped: 2, Bytes: 5})
	if err := os.Remove(filepath.Join(dir, "sub", "b.txt")); err != nil {
		t.Fatal(err)
	}
	check("no delete", upload.SyncOptions{}, upload.SyncResult{Files: 2, Skipped: 2})
	check("delete dry run", upload.SyncOptions{Delete: true, DryRun: true}, upload.SyncResult{Files: 2, Skipped: 2, Deleted: 1})
	check("delete", upload.SyncOptions{Delete: true}, upload.SyncResult{Files: 2, Skipped: 2, Deleted: 1})
	remote, err := upload.ListAll(ctx, objects, "p/")
	if err != nil {
		t.Fatal(err)
	}
	if len(remote) != 2 || remote["p/a.txt"] == nil || remote["p/sub/deep/c.txt"] == nil {
		t.Fatalf("remote objects after delete: %v", remote)
	}
}

// TestSyncResultJSON: the summary carries the neutral names and, for the
// scripts that read them, the deprecated uploaded and bytes_sent with the
// same values.
func TestSyncResultJSON(t *testing.T) {
	b, err := json.Marshal(&upload.SyncResult{Files: 5, Transferred: 3, Skipped: 1, Deleted: 2, Failed: 1, Bytes: 42, Seconds: 1.5})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]float64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"files": 5, "transferred": 3, "skipped": 1, "deleted": 2, "failed": 1, "bytes": 42,
		"seconds": 1.5, "uploaded": 3, "bytes_sent": 42}
	if len(got) != len(want) {
		t.Errorf("summary %s has fields %v, want %v", b, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("summary %s: %s = %v, want %v", b, k, got[k], v)
		}
	}
}
