package download_test

import (
	"context"
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

func TestSyncDownload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := upload.NewService(upload.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(svc))
	mux.Handle(ferryv1connect.NewDownloadServiceHandler(download.NewService(st)))
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
	u := upload.NewUploader(ferryv1connect.NewUploadServiceClient(hc, srv.URL, connect.WithGRPC()), upload.UploaderOptions{})
	d := download.NewDownloader(ferryv1connect.NewDownloadServiceClient(hc, srv.URL, connect.WithGRPC()), download.DownloaderOptions{})
	objects := ferryv1connect.NewObjectServiceClient(hc, srv.URL, connect.WithGRPC())

	src, dst := t.TempDir(), t.TempDir()
	files := map[string]string{"a.txt": "alpha", "sub/b.txt": "bravo!"}
	for name, data := range files {
		p := filepath.Join(src, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := upload.Sync(ctx, u, objects, src, "p/", upload.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "extra"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(name string, opts upload.SyncOptions, want upload.SyncResult) {
		t.Helper()
		got, err := download.Sync(ctx, d, objects, "p/", dst, opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got.Seconds = 0
		if *got != want {
			t.Fatalf("%s: got %+v, want %+v", name, *got, want)
		}
	}
	check("first", upload.SyncOptions{}, upload.SyncResult{Files: 2, Transferred: 2, Bytes: 11})
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(dst, filepath.FromSlash(name)))
		if err != nil || string(got) != data {
			t.Fatalf("%s: got %q, %v; want %q", name, got, err, data)
		}
	}
	check("second", upload.SyncOptions{}, upload.SyncResult{Files: 2, Skipped: 2})
	if err := os.WriteFile(filepath.Join(dst, "a.txt"), []byte("ALPHA"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("changed", upload.SyncOptions{Delete: true}, upload.SyncResult{Files: 2, Transferred: 1, Skipped: 1, Deleted: 1, Bytes: 5})
	if _, err := os.Stat(filepath.Join(dst, "extra")); !os.IsNotExist(err) {
		t.Fatalf("extra file not deleted: %v", err)
	}
}
